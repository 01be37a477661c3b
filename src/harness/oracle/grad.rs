//! The gradient oracles of a backward case, on the gradients a subject names
//! ([`GradCheck`]); the subject decides which gradients are comparable (a near-tie choice
//! changes a gradient's support: the forward's matter), which placements each may have, and the
//! tolerance of its values.
//!
//! - `grad`: a gradient, reduced by its placements (Partial summed, Shard concatenated, any
//!   rank's Replicate), differs from the reference gradient beyond the tolerance; classified as
//!   `missing_reduction` (it crossed a boundary that put a Replicate label on unequal locals, or
//!   it is 1/n of the reference on n ranks), `reduced_twice` (n times the reference: reduced once
//!   too often) or `wrong`;
//! - `replica`: a Replicate-labelled gradient whose locals differ across the ranks (bitwise);
//! - `grad_placement`: a gradient placement other than the one the subject derived for it
//!   ([`GradCheck::expected`], exact), or, where it derives none, one it does not allow.
//!
//! Each key names the boundary sites the gradient crossed, from the loss to the tensor, so a
//! bucket is one path through one boundary revision.

use super::{Class, Judgement, Verdict};
use dtensor::autograd::Site;
use dtensor::DTensor;
use placement::{short_list, Placement};
use serde_json::json;
use tch::{Kind, Tensor};

/// One gradient to judge.
pub struct GradCheck<'a> {
    pub name: &'a str,
    pub grad: &'a DTensor,
    /// The boundary sites it crossed, from the loss to the tensor.
    pub sites: &'a [Site],
    /// The reference gradient (float64), when its values are compared.
    pub reference: Option<&'a Tensor>,
    /// How far the reduced gradient may be from the reference.
    pub tol: f64,
    /// The placements the subject derived for this gradient, apart from the autograd that
    /// produced it; when given, the gradient must have exactly these.
    pub expected: Option<&'a [Placement]>,
    /// Where no placements are derived: whether the gradient may have placement `p` on some
    /// mesh dim.
    pub allowed: &'a dyn Fn(&Placement) -> bool,
    /// The allowed placements in words, for the verdict.
    pub allowed_text: &'a str,
}

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

/// Judges the gradients: placements, replicas, then values (a value that crossed a boundary
/// whose Replicate label covered unequal locals is missing a reduction, whatever it looks like).
pub fn check(checks: &[GradCheck], j: &mut Judgement) {
    let mut unreduced: Vec<&str> = Vec::new();
    for c in checks {
        placement(c, j);
        if replica(c, j) {
            unreduced.extend(c.sites.iter().filter(|s| s.what.starts_with("to_local")).map(|s| s.name.as_str()));
        }
    }
    for c in checks {
        if let Some(want) = c.reference {
            let missing = c.sites.iter().any(|s| unreduced.contains(&s.name.as_str()));
            value(c, want, missing, j);
        }
    }
}

/// Site names from the loss to the tensor, for keys.
pub fn path(sites: &[Site]) -> String {
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

/// Only the placement verdicts: for gradients whose values are not compared (a near-tie),
/// whose placements still follow from the program alone.
pub fn check_placements(checks: &[GradCheck], j: &mut Judgement) {
    checks.iter().for_each(|c| placement(c, j));
}

fn placement(c: &GradCheck, j: &mut Judgement) {
    let d = c.grad;
    if let Some(want) = c.expected {
        let ndim = d.shape.len();
        let norm = |ps: &[Placement]| placement::normalize_all(ps, ndim).ok();
        if norm(want) == norm(&d.placements) && norm(want).is_some() {
            return;
        }
        let key = format!("{}->{}@{}", short_list(want), short_list(&d.placements), path(c.sites));
        let detail = format!(
            "{}.grad is {} where DTensor's autograd gives {} ({})",
            c.name,
            short_list(&d.placements),
            short_list(want),
            route(c.sites)
        );
        push(j, Class::GradPlacement, c.name, key, json!(want), json!(d.placements), detail);
        return;
    }
    if d.placements.iter().all(|p| (c.allowed)(p)) {
        return;
    }
    let key = format!("{}@{}", short_list(&d.placements), path(c.sites));
    let detail = format!("{}.grad is {}: not a placement its gradient may have", c.name, short_list(&d.placements));
    push(j, Class::GradPlacement, c.name, key, json!(c.allowed_text), json!(d.placements), detail);
}

/// Reports R-labelled gradients whose locals differ; returns whether they did.
fn replica(c: &GradCheck, j: &mut Judgement) -> bool {
    let d = c.grad;
    for (md, p) in d.placements.iter().enumerate() {
        if !p.is_replicate() {
            continue;
        }
        for fiber in d.mesh.fibers(md) {
            let first = &d.locals[fiber[0]];
            if let Some(&other) = fiber[1..].iter().find(|&&r| !d.locals[r].equal(first)) {
                let detail = format!(
                    "{}.grad is labelled R on mesh dim {md} but rank {other}'s local differs from rank {}'s ({})",
                    c.name,
                    fiber[0],
                    route(c.sites)
                );
                let key = format!("R@{}", path(c.sites));
                push(
                    j,
                    Class::Replica,
                    c.name,
                    key,
                    json!("equal locals"),
                    json!(format!("rank {other} differs")),
                    detail,
                );
                return true;
            }
        }
    }
    false
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).expect("floats")
}

/// The gradient reduced by its placements, or the verdict saying why it cannot be compared.
fn reduced(c: &GradCheck, want: &Tensor, j: &mut Judgement) -> Option<Tensor> {
    let (d, at) = (c.grad, path(c.sites));
    match d.full_tensor() {
        Ok(t) if t.size() == want.size() => Some(t),
        Ok(t) => {
            let detail =
                format!("{}.grad reduces to shape {:?}, the reference's is {:?}", c.name, t.size(), want.size());
            push(j, Class::Grad, c.name, format!("shape@{at}"), json!(want.size()), json!(t.size()), detail);
            None
        }
        Err(e) => {
            let detail = format!("{}.grad ({}) cannot be reduced: {e}", c.name, short_list(&d.placements));
            let (exp, act) = (json!("a reducible gradient"), json!(e.to_string()));
            push(j, Class::Grad, c.name, format!("unreducible@{at}"), exp, act, detail);
            None
        }
    }
}

/// The reduced gradient against the reference, within the subject's tolerance.
fn value(c: &GradCheck, want: &Tensor, missing: bool, j: &mut Judgement) {
    let Some(full) = reduced(c, want, j) else { return };
    let (ours, r64, tol) = (f64s(&full), f64s(want), c.tol);
    let off = |a: f64, b: f64, tol: f64| (a - b).abs() > tol || a.is_nan() != b.is_nan();
    let Some(i) = ours.iter().zip(&r64).position(|(&a, &b)| off(a, b, tol)) else { return };
    let n = c.grad.mesh.size() as f64;
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
        "{}.grad ({}) reduced is {} at element {i}, the reference {} (tolerance {tol:.3e}); <g,ref>/<ref,ref> = {ratio:.3} on {n} ranks; {}",
        c.name,
        short_list(&c.grad.placements),
        ours[i],
        r64[i],
        route(c.sites)
    );
    push(j, Class::Grad, c.name, format!("{class}@{}", path(c.sites)), json!(r64[i]), json!(ours[i]), detail);
}
