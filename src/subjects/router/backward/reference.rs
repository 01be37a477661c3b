//! The reference gradients: libtorch's autograd on the unsharded router with the loss
//! `Σ_{t,k} ts[t,k] · V[t, ids[t,k]]`, in float64, at the experts the forward reference chose
//! (the choice carries no gradient, so only the gate values' path is differentiated); and the
//! size of the terms every gradient element sums, which bounds what float32 rounding can do.

use super::loss;
use crate::config::ScoreFunc;
use crate::reference::Weights;
use crate::RouterConfig;
use dtensor::local::torch_err;
use dtensor::Result;
use tch::{Kind, Tensor};

/// Tensors by gradient name (`gate.weight`, `gate.bias`, `x`).
pub type Named = Vec<(&'static str, Tensor)>;

/// Gradients by name, in float64.
pub struct RefGrads {
    pub grads: Vec<(&'static str, Tensor)>,
    /// The size of the terms each gradient element sums (the backward with every value and
    /// Jacobian entry made absolute, in float64): what bounds the rounding of a sum, which can
    /// far exceed the gradient where terms cancel (saturated softmax, route_norm).
    pub terms: Vec<(&'static str, Tensor)>,
    /// How far the float32 rounding of the logits can move each gradient element.
    pub logits: Vec<(&'static str, Tensor)>,
    /// The reference's choice, (B, L, K).
    pub ids: Tensor,
}

fn leaf(t: &Tensor, kind: Kind) -> Tensor {
    t.to_kind(kind).detach().set_requires_grad(true)
}

fn named(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Vec<(&'static str, Tensor)> {
    let g = |t: &Tensor| t.grad().detach();
    let mut v = vec![("gate.weight", g(w))];
    v.extend(b.map(|b| ("gate.bias", g(b))));
    v.push(("x", g(x)));
    v
}

/// `Σ ts · V[t, ids]` for gate values `ts` (…, K) chosen as `ids`, V (T, E).
fn loss_of(ts: &Tensor, ids: &Tensor, v: &Tensor) -> Result<Tensor> {
    let k = *ids.size().last().unwrap_or(&1);
    let picked = v.f_gather(1, &ids.reshape([-1, k]), false).map_err(torch_err)?;
    Ok((ts.reshape([-1, k]) * picked.to_kind(ts.kind())).sum(ts.kind()))
}

/// The reference gradients at the forward reference's choice `ids` for the loss seeded
/// `loss_seed`; `abs_weights` (Σ_r |V_r|, [`loss::abs_weights`]) sizes the rounding bound.
pub fn grads(
    cfg: &RouterConfig,
    x: &Tensor,
    w: &Weights,
    ids: &Tensor,
    loss_seed: u64,
    abs_weights: &Tensor,
) -> Result<RefGrads> {
    let size = x.size();
    let (t, e) = ((size[0] * size[1]) as usize, cfg.experts);
    let v = loss::v_tensor(loss_seed, t, e, x.device());
    let grads = shadow(cfg, x, w, ids, &v)?;
    let (terms, logits) = terms(cfg, x, w, ids, abs_weights);
    Ok(RefGrads { grads, terms, logits, ids: ids.shallow_clone() })
}

/// libtorch's autograd in float64 through the gate values at the chosen `ids` (the choice
/// itself carries no gradient).
fn shadow(
    cfg: &RouterConfig,
    x: &Tensor,
    w: &Weights,
    ids: &Tensor,
    v: &Tensor,
) -> Result<Vec<(&'static str, Tensor)>> {
    let (xl, wl) = (leaf(x, Kind::Double), leaf(w.gate, Kind::Double));
    let bl = w.gate_bias.map(|b| leaf(b, Kind::Double));
    let logits = xl.f_matmul(&wl.tr()).map_err(torch_err)?;
    let logits = match &bl {
        Some(b) => logits + b,
        None => logits,
    };
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Double),
    };
    let mut ts = scores.f_gather(-1, ids, false).map_err(torch_err)?;
    if cfg.options.route_norm {
        ts = &ts / (ts.sum_dim_intlist([-1i64].as_slice(), true, Kind::Double) + 1e-20);
    }
    let ts = ts * cfg.options.route_scale;
    loss_of(&ts, ids, &v.to_kind(Kind::Double))?.f_backward().map_err(torch_err)?;
    Ok(named(&xl, &wl, bl.as_ref()))
}

/// The backward in float64 with absolute values throughout: the loss weights' magnitudes at the
/// chosen experts, scaled;
/// route_norm's |g|/den + Σ|g·ts|/den²; gather's scatter; softmax's |y|(|g| + Σ|y·g|) or
/// sigmoid's |g|·y (which covers the rounding of 1 - y); then |dlogits|ᵀ|x|, |dlogits||W| and
/// Σ|dlogits|. Second, the derivative's size (|g|·y(1-y), or softmax's y(|g|(1-y) + Σ_{j≠i}
/// y_j|g_j|)) scaled per token by 8δ_t, where δ_t bounds the float32 rounding of that token's
/// logits (u·(D+2)·max_e(|x||W|ᵀ + |b|)): through exp, a logit error δ moves the scores, and
/// what is computed from them, by a relative 2δ at most.
fn terms(cfg: &RouterConfig, x: &Tensor, w: &Weights, ids: &Tensor, abs_weights: &Tensor) -> (Named, Named) {
    let d = |t: &Tensor| t.to_kind(Kind::Double);
    let (x64, w64) = (d(x), d(w.gate));
    let logits = x64.matmul(&w64.tr());
    let mut sizes = x64.abs().matmul(&w64.abs().tr());
    let logits = match w.gate_bias {
        Some(b) => {
            sizes += d(b).abs();
            logits + d(b)
        }
        None => logits,
    };
    let y = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Double),
    };
    let k = *ids.size().last().unwrap_or(&1);
    let mut g =
        d(abs_weights).gather(1, &ids.reshape([-1, k]), false).reshape(ids.size()) * cfg.options.route_scale.abs();
    if cfg.options.route_norm {
        let ts = y.gather(-1, ids, false);
        let den = ts.sum_dim_intlist([-1i64].as_slice(), true, Kind::Double) + 1e-20;
        let cross = (&g * &ts).sum_dim_intlist([-1i64].as_slice(), true, Kind::Double);
        g = &g / &den + cross / (&den * &den);
    }
    let gs = y.zeros_like().scatter_add(-1, ids, &g);
    let gl = match cfg.options.score_func {
        ScoreFunc::Sigmoid => &gs * &y,
        ScoreFunc::Softmax => &y * (&gs + (&y * &gs).sum_dim_intlist([-1i64].as_slice(), true, Kind::Double)),
    };
    // The derivative's own size, without the slack for rounding 1 - y: what a relative change
    // of the scores moves.
    let sums = |t: &Tensor| t.sum_dim_intlist([-1i64].as_slice(), true, Kind::Double);
    let slope = match cfg.options.score_func {
        ScoreFunc::Sigmoid => &gs * &y * (1.0 - &y),
        ScoreFunc::Softmax => &y * (&gs * (1.0 - &y) + sums(&(&y * &gs)) - &y * &gs),
    };
    let model = x64.size()[x64.dim() - 1];
    let u = f64::from(f32::EPSILON) * (model as f64 + 2.0);
    let delta = sizes.amax([-1i64].as_slice(), true) * (8.0 * u);
    let through = |gl: &Tensor| through_linear(gl, &x64, &w64, cfg.experts, w.gate_bias.is_some());
    (through(&gl), through(&(slope * delta)))
}

/// |dlogits| back through the gate Linear: to W, b and x.
fn through_linear(gl: &Tensor, x64: &Tensor, w64: &Tensor, experts: usize, bias: bool) -> Named {
    let gl2 = gl.reshape([-1, experts as i64]);
    let x2 = x64.abs().reshape([-1, x64.size()[x64.dim() - 1]]);
    let mut v = vec![("gate.weight", gl2.tr().matmul(&x2))];
    if bias {
        v.push(("gate.bias", gl2.sum_dim_intlist([0i64].as_slice(), false, Kind::Double)));
    }
    v.push(("x", gl.matmul(&w64.abs())));
    v
}
