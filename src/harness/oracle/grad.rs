//! The gradient oracles of a backward case (docs/backward.md):
//!
//! - `grad`: a gradient, reduced by its placements (Partial summed, Shard concatenated, any
//!   rank's Replicate), differs from the reference gradient beyond the rounding both sides can
//!   make; classified as `missing_reduction` (it crossed a boundary that put a Replicate label
//!   on unequal locals, or it is 1/n of the reference on n ranks), `reduced_twice` (n times the
//!   reference: reduced once too often) or `wrong`;
//! - `replica`: a Replicate-labelled gradient whose locals differ across the ranks (bitwise);
//! - `grad_placement`: a parameter's gradient that is neither its placement (R) nor P(sum); an
//!   activation's that is neither its forward placement nor P(sum) nor a shard of it.
//!
//! Each key names the boundary sites the gradient crossed, from the loss to the tensor, so a
//! bucket is one path through one boundary revision. A case whose reference choice is a
//! near-tie, or whose program chose other experts than the reference, is not compared (and is
//! counted): a different choice changes the gradient's support, which is the forward's matter.

use super::tolerance::Bounds;
use super::{Class, Judgement, Verdict};
use crate::dtensor::autograd::{Grad, Site};
use crate::dtensor::{DTensor, DType};
use crate::harness::case::Case;
use crate::harness::runner::Run;
use crate::placement::{short_list, Placement, ReduceOp};
use crate::router::backward::reference::Expected;
use serde_json::json;
use tch::{Kind, Tensor};

fn push(
    j: &mut Judgement,
    class: Class,
    name: &str,
    key: String,
    expected: serde_json::Value,
    actual: serde_json::Value,
    detail: String,
) {
    j.verdicts.push(Verdict { class, output: Some(name.into()), expected, actual, detail, key, backward: true });
}

pub fn check(case: &Case, run: &Run, j: &mut Judgement) {
    let (Some(spec), Some(bw)) = (&case.backward, &run.backward) else { return };
    j.grads.cases = 1;
    let (p, r) = match (&bw.program, &bw.reference) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(e), Ok(_)) => {
            let detail = format!("only the {} program raised: {e}", spec.boundary);
            let (expected, actual, key) = (json!("ok"), json!(e.kind()), e.key());
            j.verdicts.push(Verdict {
                class: Class::Error,
                output: None,
                expected,
                actual,
                detail,
                key,
                backward: true,
            });
            return;
        }
        _ => return,
    };
    if !decided(case, run) {
        j.grads.near_tie = 1;
        return;
    }
    if !same_choice(&p.ids, &r.ids) {
        j.grads.forward_differs = 1;
        return;
    }
    j.grads.checked = 1;
    let dtensors: Vec<(&str, &DTensor, &Grad)> = p
        .grads
        .iter()
        .filter_map(|(name, g)| match &g.val {
            crate::dtensor::autograd::Val::D(d) => Some((*name, d, g)),
            crate::dtensor::autograd::Val::L(_) => None,
        })
        .collect();
    // The boundaries where a Replicate label was put on unequal locals: a wrong gradient that
    // crossed one of them is missing a reduction, whatever its values look like.
    let mut unreduced: Vec<&str> = Vec::new();
    for &(name, d, g) in &dtensors {
        placement(case, name, d, &path(&g.sites), j);
        if replica(name, d, g, &path(&g.sites), j) {
            unreduced.extend(g.sites.iter().filter(|s| s.what.starts_with("to_local")).map(|s| s.name.as_str()));
        }
    }
    let tokens = case.dims.batch * case.dims.seq;
    for &(name, d, g) in &dtensors {
        if let Some(want) = r.expected(name) {
            let missing = g.sites.iter().any(|s| unreduced.contains(&s.name.as_str()));
            value(name, d, g, &want, tokens, missing, j);
        }
    }
}

/// Site names from the loss to the tensor, for keys.
fn path(sites: &[Site]) -> String {
    let names: Vec<&str> = sites.iter().map(|s| s.name.as_str()).collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(">")
    }
}

/// What each site did, for details.
fn route(sites: &[Site]) -> String {
    let parts: Vec<String> = sites.iter().map(|s| format!("{}: {}", s.name, s.what)).collect();
    parts.join("; ")
}

/// Every token's choice was decided by more than the rounding bound (experts and groups).
fn decided(case: &Case, run: &Run) -> bool {
    let m = &run.margins;
    let b = Bounds::new(m, case.dims.model);
    (0..m.topk.len()).all(|t| b.topk_decided(m, t) && b.group_decided(m, t))
}

/// The same set of experts on every token.
fn same_choice(a: &Tensor, b: &Tensor) -> bool {
    let k = *a.size().last().unwrap_or(&1);
    let sorted = |t: &Tensor| {
        let (s, _) = t.reshape([-1, k]).to_device(tch::Device::Cpu).sort(1, false);
        s
    };
    a.numel() == b.numel() && sorted(a).equal(&sorted(b))
}

fn placement(case: &Case, name: &str, d: &DTensor, path: &str, j: &mut Judgement) {
    let fwd = case.backward.as_ref().map(|b| b.moe_input()).unwrap_or(Placement::Replicate);
    let ok = d.placements.iter().all(|p| match (name, p) {
        (_, Placement::Partial(ReduceOp::Sum) | Placement::Replicate) => true,
        // An activation's gradient may be sharded like its forward, or on tokens.
        ("x", p) => *p == fwd || matches!(p, Placement::Shard(0 | 1) | Placement::StridedShard { .. }),
        _ => false,
    });
    if !ok {
        let key = format!("{}@{path}", short_list(&d.placements));
        let detail = format!("{name}.grad is {}: not a placement its gradient may have", short_list(&d.placements));
        push(
            j,
            Class::GradPlacement,
            name,
            key,
            json!("R, P(sum) or the forward placement"),
            json!(d.placements),
            detail,
        );
    }
}

/// Reports R-labelled gradients whose locals differ; returns whether they did.
fn replica(name: &str, d: &DTensor, g: &Grad, path: &str, j: &mut Judgement) -> bool {
    let mut unequal = false;
    for (md, p) in d.placements.iter().enumerate() {
        if !p.is_replicate() {
            continue;
        }
        for fiber in d.mesh.fibers(md) {
            let first = &d.locals[fiber[0]];
            if let Some(&other) = fiber[1..].iter().find(|&&r| !d.locals[r].equal(first)) {
                unequal = true;
                let detail = format!(
                    "{name}.grad is labelled R on mesh dim {md} but rank {other}'s local differs from rank {}'s ({})",
                    fiber[0],
                    route(&g.sites)
                );
                push(
                    j,
                    Class::Replica,
                    name,
                    format!("R@{path}"),
                    json!("equal locals"),
                    json!(format!("rank {other} differs")),
                    detail,
                );
                return unequal;
            }
        }
    }
    unequal
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).expect("floats")
}

/// The reduced gradient against the float64 reference, within a bound made of the dtype's
/// precision times the size of the terms summed (which exceeds the gradient where route_norm's
/// terms cancel), plus what the float32 rounding of the logits can move it (which the
/// exponential in sigmoid and softmax turns into a relative error of the order of the logits),
/// plus float32's underflow threshold.
fn value(name: &str, d: &DTensor, g: &Grad, want: &Expected, tokens: usize, missing: bool, j: &mut Judgement) {
    let at = path(&g.sites);
    let full = match d.full_tensor() {
        Ok(t) if t.size() == want.grad.size() => t,
        Ok(t) => {
            let detail =
                format!("{name}.grad reduces to shape {:?}, the reference's is {:?}", t.size(), want.grad.size());
            push(j, Class::Grad, name, format!("shape@{at}"), json!(want.grad.size()), json!(t.size()), detail);
            return;
        }
        Err(e) => {
            let detail = format!("{name}.grad ({}) cannot be reduced: {e}", short_list(&d.placements));
            push(
                j,
                Class::Grad,
                name,
                format!("unreducible@{at}"),
                json!("a reducible gradient"),
                json!(e.to_string()),
                detail,
            );
            return;
        }
    };
    let (ours, r64) = (f64s(&full), f64s(want.grad));
    let max = |t: &Tensor| f64s(t).iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let scale = max(want.grad).max(max(want.terms));
    // Sums of up to one term per token in float32; in a low-precision dtype, the gradient is
    // rounded there, and so is every rank's share before it is summed.
    let (t, n) = (tokens as f64, d.mesh.size() as f64);
    let eps =
        DType::F32.eps() * (16.0 + 2.0 * t) + if d.dtype == DType::F32 { 0.0 } else { 4.0 * (1.0 + n) * d.dtype.eps() };
    // Below float32's normal range the relative precision is gone: an absolute floor.
    let floor = (16.0 + 2.0 * t) * f64::from(f32::MIN_POSITIVE);
    let tol = eps * scale + max(want.logits) + floor;
    let off = |a: f64, b: f64, tol: f64| (a - b).abs() > tol || a.is_nan() != b.is_nan();
    let Some(i) = ours.iter().zip(&r64).position(|(&a, &b)| off(a, b, tol)) else { return };
    let times = |k: f64| n > 1.0 && !ours.iter().zip(&r64).any(|(&a, &b)| off(a, k * b, k * tol));
    // Unequal shares under one label, or n equal shares that each hold 1/n, miss a reduction.
    let class = if missing || times(1.0 / n) {
        "missing_reduction"
    } else if times(n) {
        "reduced_twice"
    } else {
        "wrong"
    };
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let ratio = dot(&ours, &r64) / dot(&r64, &r64).max(f64::MIN_POSITIVE);
    let detail = format!(
        "{name}.grad ({}) reduced is {} at element {i}, the reference {} (tolerance {tol:.3e}); <g,ref>/<ref,ref> = {ratio:.3} on {n} ranks; {}",
        short_list(&d.placements),
        ours[i],
        r64[i],
        route(&g.sites)
    );
    push(j, Class::Grad, name, format!("{class}@{at}"), json!(r64[i]), json!(ours[i]), detail);
}
