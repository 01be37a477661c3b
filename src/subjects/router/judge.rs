//! The router's gradient checks (docs/backward.md): which gradients of a backward case are
//! comparable, which placements each may have, and the tolerance of its values; the shared
//! gradient oracle judges them.
//!
//! A case whose reference choice is a near-tie, or whose program chose other experts than the
//! reference, is not compared (and is counted): a different choice changes the gradient's
//! support, which is the forward's matter.

use crate::run::{BackwardExtra, Extra};
use crate::spec::RouterSpec;
use crate::tolerance::Bounds;
use dtensor::autograd::Val;
use dtensor::DType;
use harness::oracle::grad::{self, GradCheck};
use harness::oracle::{Class, Judgement, Verdict};
use harness::run::{Named, Run};
use placement::{Placement, ReduceOp};
use serde_json::json;
use tch::{Kind, Tensor};

/// The gradient verdicts of a backward case.
pub fn grads(s: &RouterSpec, run: &Run, x: &Extra, j: &mut Judgement) {
    let (Some(spec), Some(bw), Some(bx)) = (&s.backward, &run.backward, &x.backward) else { return };
    j.grads.cases = 1;
    let (p, r) = match (&bw.program, &bw.reference) {
        (Ok(p), Ok(r)) => (p, r),
        (Err(e), Ok(_)) => {
            j.verdicts.push(Verdict {
                class: Class::Error,
                output: None,
                expected: json!("ok"),
                actual: json!(e.kind()),
                detail: format!("only the {} program raised: {e}", spec.boundary),
                key: e.key(),
                backward: true,
            });
            return;
        }
        _ => return,
    };
    let compared = if !decided(s, x) {
        j.grads.near_tie = 1;
        false
    } else if !same_choice(p.choice.as_ref(), bx.ref_ids.as_ref()) {
        j.grads.forward_differs = 1;
        false
    } else {
        j.grads.checked = 1;
        true
    };
    let fwd = spec.moe_input();
    // An activation's gradient may be sharded like its forward, or on tokens; every gradient
    // may be Replicate or a pending sum.
    let param = |p: &Placement| matches!(p, Placement::Partial(ReduceOp::Sum) | Placement::Replicate);
    let activation =
        |p: &Placement| param(p) || *p == fwd || matches!(p, Placement::Shard(0 | 1) | Placement::StridedShard { .. });
    let tokens = s.dims.batch * s.dims.seq;
    let mut checks = Vec::new();
    for (name, g) in p.grads.iter() {
        let Val::D(d) = &g.val else { continue };
        let (x_like, tol) = (name == "x", tolerance(name, d, bx, r, tokens));
        checks.push(GradCheck {
            name,
            grad: d,
            sites: &g.sites,
            reference: tol.and(r.get(name)),
            tol: tol.unwrap_or(0.0),
            expected: p.expected.as_ref().and_then(|e| e.placements_of(name)),
            allowed: if x_like { &activation } else { &param },
            allowed_text: "R, P(sum) or the forward placement",
        });
    }
    // Placements follow from the program alone: judged on near-ties too.
    harness::timing::oracle("subject's own: gradients", || {
        if compared {
            grad::check(&checks, j);
        } else {
            grad::check_placements(&checks, j);
        }
    });
}

/// Every token's choice was decided by more than the rounding bound (experts and groups).
fn decided(s: &RouterSpec, x: &Extra) -> bool {
    let m = &x.margins;
    let b = Bounds::new(m, s.dims.model);
    (0..m.topk.len()).all(|t| b.topk_decided(m, t) && b.group_decided(m, t))
}

/// The same set of experts on every token.
fn same_choice(a: Option<&Tensor>, b: Option<&Tensor>) -> bool {
    let (Some(a), Some(b)) = (a, b) else { return false };
    let k = *a.size().last().unwrap_or(&1);
    let sorted = |t: &Tensor| {
        let (s, _) = t.reshape([-1, k]).to_device(tch::Device::Cpu).sort(1, false);
        s
    };
    a.numel() == b.numel() && sorted(a).equal(&sorted(b))
}

fn max_abs(t: &Tensor) -> f64 {
    let v = Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).to_kind(Kind::Double).contiguous().view(-1));
    v.expect("floats").iter().fold(0.0f64, |m, x| m.max(x.abs()))
}

/// How far the reduced gradient may be from the float64 reference: the dtype's precision times
/// the size of the terms summed (which exceeds the gradient where route_norm's terms cancel),
/// plus what the float32 rounding of the logits can move it (which the exponential in sigmoid
/// and softmax turns into a relative error of the order of the logits), plus float32's
/// underflow threshold.
/// `None` when the reference has no such gradient (nothing to compare).
fn tolerance(name: &str, d: &dtensor::DTensor, bx: &BackwardExtra, r: &Named<Tensor>, tokens: usize) -> Option<f64> {
    let (grad, terms, logits) = (r.get(name)?, bx.terms.get(name)?, bx.logits.get(name)?);
    let scale = max_abs(grad).max(max_abs(terms));
    // Sums of up to one term per token in float32; in a low-precision dtype, the gradient is
    // rounded there, and so is every rank's share before it is summed.
    let (t, n) = (tokens as f64, d.mesh.size() as f64);
    let low = if d.dtype == DType::F32 { 0.0 } else { 4.0 * (1.0 + n) * d.dtype.eps() };
    let eps = DType::F32.eps() * (16.0 + 2.0 * t) + low;
    // Below float32's normal range the relative precision is gone: an absolute floor.
    let floor = (16.0 + 2.0 * t) * f64::from(f32::MIN_POSITIVE);
    Some(eps * scale + max_abs(logits) + floor)
}
