//! A confirm result in words: what real PyTorch did (status, outputs, collectives, gradients),
//! the verdict classes on both sides, and each difference.

use super::real::{RealOutcome, RealOutput};
use super::{ConfirmResult, Status};

fn shape(s: &[usize]) -> String {
    format!("({})", s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
}

fn output(name: &str, o: &RealOutput) -> String {
    let globals = if o.rank_global_shapes.iter().all(|s| *s == o.global_shape) {
        shape(&o.global_shape)
    } else {
        format!("per rank {}", o.rank_global_shapes.iter().map(|s| shape(s)).collect::<Vec<_>>().join(" "))
    };
    let locals: Vec<String> = o.local_shapes.iter().map(|s| shape(s)).collect();
    format!("{name} [{}] {globals} locals {}", o.placements.join(", "), locals.join(" "))
}

/// The collectives as `op(dim d)@value xN`, in order of first appearance.
fn comms(list: &[super::real::RealComm]) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for c in list {
        let dim = c.mesh_dim.map(|d| format!("(dim {d})")).unwrap_or_default();
        let k = format!("{}{dim}@{}", super::real::comm_name(&c.op), c.tensor.as_deref().unwrap_or("?"));
        match seen.iter_mut().find(|(s, _)| *s == k) {
            Some(e) => e.1 += 1,
            None => seen.push((k, 1)),
        }
    }
    if seen.is_empty() {
        return "none".into();
    }
    seen.into_iter().map(|(k, n)| if n == 1 { k } else { format!("{k} x{n}") }).collect::<Vec<_>>().join(", ")
}

fn real_lines(real: &RealOutcome, out: &mut Vec<(String, String)>) {
    if let Some(s) = &real.sharded {
        let status = match (&s.ok, &s.error) {
            (true, _) => "ok".to_string(),
            (false, Some(e)) => format!("{}: {}", e.kind, e.message),
            (false, None) => "raised".into(),
        };
        out.push(("real".into(), status));
        for name in s.outputs.keys() {
            if let Some(o) = real.output(name) {
                out.push(("".into(), output(name, &o)));
            }
        }
        out.push(("comms".into(), comms(&s.comms)));
    }
    if let Some(b) = &real.backward {
        let status = match (&b.ok, &b.error) {
            (true, _) => {
                let grads: Vec<String> = b
                    .grads
                    .iter()
                    .filter_map(|(n, g)| g.as_ref().map(|g| format!("{n} [{}]", g.placements.join(", "))))
                    .collect();
                format!("ok; grads {}", grads.join(", "))
            }
            (false, Some(e)) => format!("{}: {}", e.kind, e.message),
            (false, None) => "raised".into(),
        };
        out.push(("backward".into(), status));
        out.push(("bw comms".into(), comms(&b.comms)));
    }
}

/// Several lines: a head line, then labelled detail lines.
pub fn text(r: &ConfirmResult) -> String {
    let what = r.file.as_deref().unwrap_or("case");
    let engine = r.engine.as_deref().map(|e| format!(", {e}")).unwrap_or_default();
    let status = match r.status {
        Status::Agrees => "agrees".to_string(),
        Status::Differs => format!("DIFFERS ({})", r.diffs.len()),
        Status::NotRun => format!("not run: {}", r.reason.as_deref().unwrap_or("?")),
    };
    let mut s = format!("{what}: torch {} ({}{engine}): {status}\n", r.release, r.rules);
    let mut lines = Vec::new();
    if let Some(real) = r.outcome.as_ref().and_then(|o| RealOutcome::parse(o).ok()) {
        real_lines(&real, &mut lines);
    }
    let show = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    if r.status != Status::NotRun {
        let theirs = r.real.as_deref().map(show).unwrap_or_else(|| "not computed".into());
        lines.push(("verdicts".into(), format!("real {theirs}; model {}", show(&r.ours))));
    }
    for d in &r.diffs {
        lines.push(("differs".into(), d.to_string()));
    }
    for n in &r.notes {
        lines.push(("note".into(), n.clone()));
    }
    for (k, v) in lines {
        s.push_str(&format!("  {k:<9} {v}\n"));
    }
    s
}

/// The closing tally: per release, how many cases agree, differ, did not run.
pub fn summary(results: &[ConfirmResult]) -> String {
    let mut releases: Vec<&str> = results.iter().map(|r| r.release.as_str()).collect();
    releases.sort();
    releases.dedup();
    let mut s = String::new();
    for rel in releases {
        let of: Vec<&ConfirmResult> = results.iter().filter(|r| r.release == rel).collect();
        let n = |st: Status| of.iter().filter(|r| r.status == st).count();
        s.push_str(&format!(
            "torch {rel}: {} of {} case(s) agree, {} differ, {} not run\n",
            n(Status::Agrees),
            of.len(),
            n(Status::Differs),
            n(Status::NotRun)
        ));
    }
    s
}
