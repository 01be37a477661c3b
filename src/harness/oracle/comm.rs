//! `comm`: collectives at a site where the program promises none. The subject lists its
//! promises for the case's rule set in [`Run::promises`] (the router: from torch 2.13 on,
//! DTensor scatters token-sharded operands locally; local_map sites never communicate).
//! And for a backward case whose subject derives its backward ([`GradExpect`]): the backward's
//! collectives against the derived ones, as a multiset of (kind, mesh axis, bytes), bytes
//! compared where both sides know them.

use super::{Class, Judgement, Verdict};
use crate::run::{GradExpect, Run};
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
    let kinds = |v: &[&CommRecord]| {
        let mut k: Vec<String> = v.iter().map(|c| format!("{}@{}", c.op, c.mesh_dim)).collect();
        k.sort();
        k.dedup();
        if k.is_empty() {
            "-".to_string()
        } else {
            k.join("+")
        }
    };
    let (m, x) = (kinds(&missing), kinds(&extra));
    let key = if m == x { format!("backward:{m}:bytes") } else { format!("backward:{m}->{x}") };
    j.verdicts.push(Verdict {
        class: Class::Comm,
        output: Some("backward".into()),
        expected: json!(want.comms),
        actual: json!(p.comms),
        detail: detail(want, &missing, &extra),
        key,
        backward: true,
    });
}

/// The derived collectives nothing matched, and the issued ones that match none (kind and mesh
/// axis equal, bytes equal where both are known).
fn unmatched<'a>(want: &'a [CommRecord], got: &'a [CommRecord]) -> (Vec<&'a CommRecord>, Vec<&'a CommRecord>) {
    let mut left: Vec<&CommRecord> = got.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        let same = |g: &&CommRecord| {
            g.op == w.op && g.mesh_dim == w.mesh_dim && (g.bytes == 0 || w.bytes == 0 || g.bytes == w.bytes)
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

fn detail(want: &GradExpect, missing: &[&CommRecord], extra: &[&CommRecord]) -> String {
    let show = |v: &[&CommRecord]| {
        let parts: Vec<String> =
            v.iter().map(|c| format!("{} on mesh dim {} ({} B, {})", c.op, c.mesh_dim, c.bytes, c.tensor)).collect();
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    };
    format!(
        "the backward should issue {} more and issued {} that {} does not ({} expected in all)",
        show(missing),
        show(extra),
        want.source,
        want.comms.len()
    )
}
