//! `comm`: collectives at a site where the program promises none. The subject lists its
//! promises for the case's rule set in [`Run::promises`] (the router: from torch 2.13 on,
//! DTensor scatters token-sharded operands locally; local_map sites never communicate).
//! And for a backward case whose subject derives its backward ([`GradExpect`]): the backward's
//! collectives against the derived ones, as a multiset of (kind, mesh axis, bytes), bytes
//! compared where both sides know them. And for a subject that derives its whole comm log
//! ([`check_log`], the MoE layer on spmd_types): the same match phase by phase, on named groups.

use super::{Class, Judgement, Verdict};
use crate::run::Run;
use dtensor::CommRecord;
use serde_json::json;

pub fn check(run: &Run, j: &mut Judgement) {
    for p in &run.promises {
        let found: Vec<_> = run.comms.iter().filter(|c| c.tensor == p.site).collect();
        if found.is_empty() {
            continue;
        }
        let mut ops: Vec<String> = found.iter().map(|c| c.op.clone()).collect();
        ops.dedup();
        j.verdicts.push(Verdict {
            class: Class::Comm,
            output: Some(p.site.clone()),
            expected: json!([]),
            actual: json!(found),
            detail: format!("{} collective(s) at the {} {}", found.len(), p.site, p.why),
            key: ops.join("+"),
            backward: false,
        });
    }
}

/// The backward's collectives against the subject's derivation.
pub fn check_backward(run: &Run, j: &mut Judgement) {
    let Some(Ok(p)) = run.backward.as_ref().map(|b| &b.program) else { return };
    let Some(want) = &p.expected else { return };
    let (missing, extra) = unmatched(&want.comms, &p.comms);
    if missing.is_empty() && extra.is_empty() {
        return;
    }
    j.verdicts.push(Verdict {
        class: Class::Comm,
        output: Some("backward".into()),
        expected: json!(want.comms),
        actual: json!(p.comms),
        detail: detail(&want.source, want.comms.len(), "backward", &missing, &extra),
        key: key("backward", &missing, &extra),
        backward: true,
    });
}

/// Where a collective ran: its named group, else its mesh dim.
fn at(c: &CommRecord) -> String {
    c.axis.clone().unwrap_or_else(|| c.mesh_dim.to_string())
}

/// `phase:missing->extra` by kind and group (`phase:kinds:bytes` where only bytes differ).
fn key(phase: &str, missing: &[&CommRecord], extra: &[&CommRecord]) -> String {
    let kinds = |v: &[&CommRecord]| {
        let mut k: Vec<String> = v.iter().map(|c| format!("{}@{}", c.op, at(c))).collect();
        k.sort();
        k.dedup();
        if k.is_empty() {
            "-".to_string()
        } else {
            k.join("+")
        }
    };
    let (m, x) = (kinds(missing), kinds(extra));
    if m == x {
        format!("{phase}:{m}:bytes")
    } else {
        format!("{phase}:{m}->{x}")
    }
}

/// A subject's whole comm log against the one it derives from the case ([`CommRecord::tensor`]
/// names each record's phase, e.g. `forward`, `backward`, `hook`): phase by phase, the same
/// multiset match as the backward's (kind, mesh dim and group equal, bytes where both know
/// them); one verdict per phase that differs, `backward` set for the backward phase.
pub fn check_log(want: &[CommRecord], got: &[CommRecord], source: &str, j: &mut Judgement) {
    let mut phases: Vec<&str> = Vec::new();
    for c in want.iter().chain(got) {
        if !phases.contains(&c.tensor.as_str()) {
            phases.push(&c.tensor);
        }
    }
    for phase in phases {
        let of = |v: &[CommRecord]| v.iter().filter(|c| c.tensor == phase).cloned().collect::<Vec<_>>();
        let (w, g) = (of(want), of(got));
        let (missing, extra) = unmatched(&w, &g);
        if missing.is_empty() && extra.is_empty() {
            continue;
        }
        j.verdicts.push(Verdict {
            class: Class::Comm,
            output: Some(phase.to_string()),
            expected: json!(w),
            actual: json!(g),
            detail: detail(source, w.len(), phase, &missing, &extra),
            key: key(phase, &missing, &extra),
            backward: phase == "backward",
        });
    }
}

/// The derived collectives nothing matched, and the issued ones that match none (kind and mesh
/// axis equal, bytes equal where both are known).
fn unmatched<'a>(want: &'a [CommRecord], got: &'a [CommRecord]) -> (Vec<&'a CommRecord>, Vec<&'a CommRecord>) {
    let mut left: Vec<&CommRecord> = got.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        let same = |g: &&CommRecord| {
            g.op == w.op
                && g.mesh_dim == w.mesh_dim
                && g.axis == w.axis
                && (g.bytes == 0 || w.bytes == 0 || g.bytes == w.bytes)
        };
        match left.iter().position(same) {
            Some(i) => {
                left.remove(i);
            }
            None => missing.push(w),
        }
    }
    (missing, left)
}

fn detail(source: &str, n: usize, phase: &str, missing: &[&CommRecord], extra: &[&CommRecord]) -> String {
    let show = |v: &[&CommRecord]| {
        let parts: Vec<String> = v
            .iter()
            .map(|c| match &c.axis {
                Some(a) => format!("{} on {a} ({} B)", c.op, c.bytes),
                None => format!("{} on mesh dim {} ({} B, {})", c.op, c.mesh_dim, c.bytes, c.tensor),
            })
            .collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    };
    format!(
        "the {phase} should issue {} more and issued {} that {source} does not ({n} expected in all)",
        show(missing),
        show(extra),
    )
}
