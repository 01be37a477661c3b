//! How a real outcome is compared with the model's replay of its case: the one implementation
//! that `confirm`, the cross-check tests (`tests/crosscheck.rs`, `tests/backward.rs`) and the
//! golden tests use.
//!
//! - forward: ok or the same error (kind and first line); per output the placements, global,
//!   per-rank global and local shapes and dtype; the values, with the value oracle's tolerances
//!   and near-tie rules (our gathered outputs stand where the reference stands); the collectives
//!   (labelled: op, router value and mesh dim; else counted per op);
//! - backward: ok or the same error; per gradient the placements, every rank's local tensor and
//!   the reduced value (relative tolerance 1e-4, 2e-2 for bf16/f16); the reference gradients
//!   (the same, with an absolute floor for float32 cancellation);
//!   the backward's collectives counted per op;
//! - verdict classes: our oracles run on the real outputs (see [`super::realrun`]).
//!
//! gloo has no all_to_all: real ranks run a Shard->Shard move as all_gather + chunk, so an
//! all_to_all counts as an all_gather on both sides.

use super::real::{self, RealBackward, RealGrad, RealOutcome, RealSharded, RealTensor};
use crate::subjects::AnyChecked;
use dtensor::autograd::Val;
use dtensor::{CommRecord, DType};
use harness::oracle::{self, Judgement};
use harness::outcome::{ErrorInfo, Outcome, ShardedOutput};
use harness::subject::Subject;
use serde::Serialize;
use std::collections::BTreeMap;
use tch::Tensor;

/// One difference between the model and real PyTorch.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Diff {
    /// What differs: `ok`, `error`, `counts.placements`, `scores.values`, `comms`, `grad x.locals`, ...
    pub what: String,
    pub ours: String,
    pub real: String,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: real {}, ours {}", self.what, self.real, self.ours)
    }
}

fn diff(what: impl Into<String>, ours: impl ToString, real: impl ToString) -> Diff {
    Diff { what: what.into(), ours: ours.to_string(), real: real.to_string() }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn error_diff(what: &str, ours: Option<&ErrorInfo>, real: Option<&real::RealError>) -> Option<Diff> {
    let (o, r) = (ours?, real?);
    let same = o.kind == r.kind && first_line(&o.message) == first_line(&r.message);
    (!same).then(|| diff(what, format!("{}: {}", o.kind, first_line(&o.message)), format!("{}: {}", r.kind, r.message)))
}

fn status(ok: bool, error: Option<&ErrorInfo>, rs: &RealSharded, what: &str, diffs: &mut Vec<Diff>) -> bool {
    let describe = |ok: bool, kind: Option<&str>, msg: Option<&str>| {
        if ok {
            "ok".to_string()
        } else {
            format!("{}: {}", kind.unwrap_or("?"), first_line(msg.unwrap_or("")))
        }
    };
    if ok != rs.ok {
        let o = describe(ok, error.map(|e| e.kind.as_str()), error.map(|e| e.message.as_str()));
        let r =
            describe(rs.ok, rs.error.as_ref().map(|e| e.kind.as_str()), rs.error.as_ref().map(|e| e.message.as_str()));
        diffs.push(diff(what, o, r));
        return false;
    }
    if !ok {
        diffs.extend(error_diff(&format!("{what} error"), error, rs.error.as_ref()));
        return false;
    }
    true
}

/// The forward: status, output specs, values and collectives.
pub fn forward(c: &AnyChecked, real: &RealOutcome) -> Vec<Diff> {
    let Some(rs) = &real.sharded else { return vec![diff("sharded", "a run", "none recorded")] };
    let ours = c.outcome();
    let mut diffs = Vec::new();
    if status(ours.sharded.ok, ours.sharded.error.as_ref(), rs, "sharded", &mut diffs) {
        specs(&ours, real, &mut diffs);
        if diffs.is_empty() {
            values(c, real, &mut diffs);
        }
    }
    comms(&ours.sharded.comms, rs, &mut diffs);
    diffs
}

fn specs(ours: &Outcome, real: &RealOutcome, diffs: &mut Vec<Diff>) {
    let names = |o: Vec<&String>| o.into_iter().cloned().collect::<Vec<_>>().join(",");
    let (on, rn): (Vec<&String>, Vec<&String>) = (
        ours.sharded.outputs.0.iter().map(|(n, _)| n).collect(),
        real.sharded.as_ref().unwrap().outputs.keys().collect(),
    );
    let (mut on_s, mut rn_s) = (on.clone(), rn.clone());
    on_s.sort();
    rn_s.sort();
    if on_s != rn_s {
        diffs.push(diff("outputs", names(on), names(rn)));
        return;
    }
    for (name, o) in &ours.sharded.outputs.0 {
        let Some(r) = real.output(name) else {
            diffs.push(diff(name.to_string(), "an output", "unreadable"));
            continue;
        };
        spec(name, o, &r, diffs);
    }
}

fn spec(name: &str, o: &ShardedOutput, r: &real::RealOutput, diffs: &mut Vec<Diff>) {
    let ps: Vec<String> = o.placements.iter().map(|p| p.to_string()).collect();
    let list = |v: &[String]| format!("[{}]", v.join(", "));
    if ps != r.placements {
        diffs.push(diff(format!("{name}.placements"), list(&ps), list(&r.placements)));
    }
    if o.global_shape != r.global_shape {
        diffs.push(diff(format!("{name}.global_shape"), json(&o.global_shape), json(&r.global_shape)));
    }
    if o.rank_global_shapes != r.rank_global_shapes {
        let (a, b) = (&o.rank_global_shapes, &r.rank_global_shapes);
        diffs.push(diff(format!("{name}.rank_global_shapes"), json(a), json(b)));
    }
    if o.local_shapes != r.local_shapes {
        diffs.push(diff(format!("{name}.local_shapes"), json(&o.local_shapes), json(&r.local_shapes)));
    }
    if let Some(d) = &r.dtype {
        if real::dtype(Some(d), o.dtype) != o.dtype {
            diffs.push(diff(format!("{name}.dtype"), o.dtype, d));
        }
    }
}

/// A shape (or list of shapes) as the outcome writes it.
fn json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The values, through the value oracle: our gathered outputs as the reference side, the real
/// ones (replicated on the case's mesh) as the sharded side. Its comparing verdicts are the
/// differences.
fn values(c: &AnyChecked, real: &RealOutcome, diffs: &mut Vec<Diff>) {
    let Ok(s) = &c.run.sharded else { return };
    let Some(ours) = s.try_map(|d| d.full_tensor().ok()) else { return };
    let Some(theirs) = super::realrun::replicated(c, real, &ours) else {
        diffs.push(diff("values", "gathered outputs", "values missing or of another shape"));
        return;
    };
    let mut j = Judgement::default();
    c.case.subject.values(&c.case, &c.run, &c.extra, &ours, &theirs, &mut j);
    // Self-consistency checks of one side (counts against its own map, offsets against its own
    // ids per rank) are not comparisons: the verdict classes carry them, with every rank's locals.
    for v in j.verdicts.into_iter().filter(|v| v.key != "inconsistent") {
        let what = format!("{}.values", v.output.as_deref().unwrap_or("outputs"));
        diffs.push(diff(what, v.expected, format!("{} ({})", v.actual, v.detail)));
    }
}

/// Collectives: (op, router value, mesh dim) when the real side labels them, else counts per op.
fn comms(ours: &[CommRecord], rs: &RealSharded, diffs: &mut Vec<Diff>) {
    if let Some(counts) = rs.comm_counts.as_ref().filter(|_| rs.comms.is_empty()) {
        let (o, r) = (count(ours.iter().map(|c| c.op.clone())), count(counts_of(counts)));
        if o != r {
            diffs.push(diff("comms", show_counts(&o), show_counts(&r)));
        }
        return;
    }
    let with_dim = rs.comms.iter().all(|c| c.mesh_dim.is_some());
    let key = |op: &str, tensor: &str, dim: usize| {
        let op = if op == "all_to_all" { "all_gather" } else { op };
        if with_dim {
            format!("{op}(dim {dim})@{tensor}")
        } else {
            format!("{op}@{tensor}")
        }
    };
    let o = count(ours.iter().map(|c| key(&c.op, &c.tensor, c.mesh_dim)));
    let r = count(
        rs.comms
            .iter()
            .map(|c| key(&real::comm_name(&c.op), c.tensor.as_deref().unwrap_or("?"), c.mesh_dim.unwrap_or(0))),
    );
    if o != r {
        diffs.push(diff("comms", show_counts(&o), show_counts(&r)));
    }
}

fn counts_of(m: &BTreeMap<String, u64>) -> impl Iterator<Item = String> + '_ {
    m.iter().flat_map(|(op, n)| std::iter::repeat_n(real::comm_name(op), *n as usize))
}

/// Counts per name, an all_to_all counted as an all_gather (gloo).
fn count(names: impl Iterator<Item = String>) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for n in names {
        let n = if n == "all_to_all" { "all_gather".to_string() } else { n };
        *m.entry(n).or_default() += 1;
    }
    m
}

pub fn show_counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, n)| if *n == 1 { k.clone() } else { format!("{k} x{n}") }).collect::<Vec<_>>().join(", ")
}

/// Elementwise within `rel` of the larger magnitude in either tensor.
fn close(a: &[f64], b: &[f64], rel: f64) -> Result<(), String> {
    close_or_within(a, b, rel, 0.0)
}

/// As [`close`], but a difference up to `floor` always passes.
fn close_or_within(a: &[f64], b: &[f64], rel: f64, floor: f64) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} values vs {}", a.len(), b.len()));
    }
    let scale = a.iter().chain(b).filter(|x| x.is_finite()).fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
    let bad = |x: f64, y: f64| !(x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= (rel * scale).max(floor));
    match a.iter().zip(b).position(|(x, y)| bad(*x, *y)) {
        Some(i) => Err(format!("element {i}: {} vs {} (scale {scale:.3e})", a[i], b[i])),
        None => Ok(()),
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).contiguous().view(-1)).unwrap_or_default()
}

/// The backward: status, gradients (placements, locals, reduced), reference, collectives.
pub fn backward(c: &AnyChecked, real: &RealOutcome) -> Vec<Diff> {
    let (Some(bw), Some(rb)) = (&c.run.backward, &real.backward) else {
        return match (&c.run.backward, &real.backward) {
            (None, None) => vec![],
            (o, r) => vec![diff("backward", o.is_some(), r.is_some())],
        };
    };
    let rel = if c.case.dtype == DType::F32 { 1e-4 } else { 2e-2 };
    let mut diffs = Vec::new();
    let p = match (&bw.program, rb.ok) {
        (Ok(p), true) => p,
        (Err(e), false) => {
            diffs.extend(error_diff("backward error", Some(&e.into()), rb.error.as_ref()));
            return diffs;
        }
        (Ok(_), false) => {
            let e = rb.error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)).unwrap_or_default();
            return vec![diff("backward", "ok", e)];
        }
        (Err(e), true) => return vec![diff("backward", format!("{}: {}", e.kind(), first_line(&e.to_string())), "ok")],
    };
    for (name, rg) in &rb.grads {
        let ours = p.grads.get(name).map(|g| &g.val);
        match (ours, rg) {
            (Some(Val::D(d)), Some(rg)) => grad(name, d, rg, rel, &mut diffs),
            (None, None) => {}
            (o, r) => diffs.push(diff(format!("grad {name}"), o.is_some(), r.is_some())),
        }
    }
    reference(c, rb, rel, &mut diffs);
    let o = count(p.comms.iter().map(|c| c.op.clone()));
    let r = match &rb.comm_counts {
        Some(m) if rb.comms.is_empty() => count(counts_of(m)),
        _ => count(rb.comms.iter().map(|c| real::comm_name(&c.op))),
    };
    if o != r {
        diffs.push(diff("backward comms", show_counts(&o), show_counts(&r)));
    }
    diffs
}

fn grad(name: &str, d: &dtensor::DTensor, rg: &RealGrad, rel: f64, diffs: &mut Vec<Diff>) {
    let ps: Vec<String> = d.placements.iter().map(|p| p.to_string()).collect();
    if ps != rg.placements {
        diffs.push(diff(format!("grad {name}.placements"), format!("{ps:?}"), format!("{:?}", rg.placements)));
        return;
    }
    for (r, (rl, ol)) in rg.locals.iter().zip(&d.locals).enumerate() {
        if let Err(e) = close(&f64s(ol), &rl.floats(), rel) {
            diffs.push(diff(format!("grad {name}.locals[{r}]"), "", e));
        }
    }
    if let (Some(rv), Ok(full)) = (rg.reduced_values(), d.full_tensor()) {
        if let Err(e) = close(&f64s(&full), &rv, rel) {
            diffs.push(diff(format!("grad {name}.reduced"), "", e));
        }
    }
}

/// PyTorch's autograd on the unsharded router (float32) against our float64 reference.
///
/// Relative to the largest value, plus an absolute floor: float32 autograd sums terms of the
/// inputs' scale (drawn near 1), each rounded at float32's epsilon, so a gradient that cancels to
/// about zero (softmax with top_k = 1, where every score is 1) keeps an absolute error of a few
/// epsilons of that scale while its own largest value may be 1e-8. The floor is 32 epsilons of
/// the larger of 1 and the case's largest reference gradient; sharded gradients get no floor.
fn reference(c: &AnyChecked, rb: &RealBackward, rel: f64, diffs: &mut Vec<Diff>) {
    let Some(Ok(ours)) = c.run.backward.as_ref().map(|b| &b.reference) else { return };
    let pairs: Vec<(&String, Vec<f64>, Vec<f64>)> = rb
        .reference
        .iter()
        .filter_map(|(name, rr)| {
            let t = serde_json::from_value::<RealTensor>(rr.clone()).ok()?;
            Some((name, f64s(ours.get(name)?), t.floats()))
        })
        .collect();
    let largest = pairs
        .iter()
        .flat_map(|(_, o, r)| o.iter().chain(r))
        .filter(|x| x.is_finite())
        .fold(1.0f64, |m, x| m.max(x.abs()));
    let floor = 32.0 * f64::from(f32::EPSILON) * largest;
    for (name, o, r) in &pairs {
        if let Err(e) = close_or_within(o, r, rel, floor) {
            diffs.push(diff(format!("reference grad {name}"), "", e));
        }
    }
}

/// Verdict classes, as `class` or `class:output`, sorted.
pub fn classes(j: &Judgement) -> Vec<String> {
    j.classes()
}

/// Our verdict classes and the ones our oracles give on the real run; `None` for the real ones
/// when the recording lacks what the oracles need (every rank's locals, labelled collectives).
pub fn verdict_classes(c: &AnyChecked, real: &RealOutcome) -> (Vec<String>, Option<Vec<String>>) {
    let ours = classes(&c.judgement);
    let theirs = super::realrun::run(c, real).map(|(run, extra)| classes(&oracle::judge(&c.case, &run, &extra)));
    (ours, theirs)
}

/// Everything: forward, backward, and verdict classes when they can be had.
pub fn all(c: &AnyChecked, real: &RealOutcome) -> Vec<Diff> {
    let mut d = forward(c, real);
    d.extend(backward(c, real));
    if let (ours, Some(theirs)) = verdict_classes(c, real) {
        if ours != theirs {
            diffs_classes(&ours, &theirs, &mut d);
        }
    }
    d
}

fn diffs_classes(ours: &[String], theirs: &[String], d: &mut Vec<Diff>) {
    let show = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    d.push(diff("verdict classes", show(ours), show(theirs)));
}

#[cfg(test)]
mod tests {
    use super::{close, close_or_within};

    #[test]
    fn the_floor_passes_cancellation_noise_and_nothing_more() {
        // A softmax top-1 gradient: real float32 gives 0, float64 a few 1e-9, scale 1e-8.
        let (real, ours) = ([0.0, 1.0e-8], [-2.7e-9, 1.0e-8]);
        assert!(close(&ours, &real, 1e-4).is_err());
        assert!(close_or_within(&ours, &real, 1e-4, 3.8e-6).is_ok());
        // A real difference above the floor still fails, and the relative bound still holds.
        assert!(close_or_within(&[1.0e-5, 0.0], &[0.0, 0.0], 1e-4, 3.8e-6).is_err());
        assert!(close_or_within(&[10.0, 1.0], &[10.0, 1.002], 1e-4, 3.8e-6).is_err());
    }
}
