//! The reference gradients: libtorch's autograd on the unsharded router with the loss
//! `Σ_{t,k} ts[t,k] · V[t, ids[t,k]]`, in float64, at the experts the forward reference chose
//! (the choice carries no gradient, so only the gate values' path is differentiated); and the
//! size of the terms every gradient element sums, which bounds what float32 rounding can do.

use super::loss;
use crate::dtensor::local::torch_err;
use crate::dtensor::Result;
use crate::router::config::ScoreFunc;
use crate::router::reference::Weights;
use crate::router::RouterConfig;
use tch::{Kind, Tensor};

/// Gradients by name (`gate.weight`, `gate.bias`, `x`), in float64.
pub struct RefGrads {
    pub grads: Vec<(&'static str, Tensor)>,
    /// The size of the terms each gradient element sums (the backward with every value and
    /// Jacobian entry made absolute, in float64): what bounds the rounding of a sum, which can
    /// far exceed the gradient where terms cancel (saturated softmax, route_norm).
    pub terms: Vec<(&'static str, Tensor)>,
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
    let terms = terms(cfg, x, w, ids, abs_weights);
    Ok(RefGrads { grads, terms, ids: ids.shallow_clone() })
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
/// Σ|dlogits|.
fn terms(
    cfg: &RouterConfig,
    x: &Tensor,
    w: &Weights,
    ids: &Tensor,
    abs_weights: &Tensor,
) -> Vec<(&'static str, Tensor)> {
    let d = |t: &Tensor| t.to_kind(Kind::Double);
    let (x64, w64) = (d(x), d(w.gate));
    let logits = x64.matmul(&w64.tr());
    let logits = match w.gate_bias {
        Some(b) => logits + d(b),
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
    let e = cfg.experts as i64;
    let gl2 = gl.reshape([-1, e]);
    let x2 = x64.abs().reshape([-1, x64.size()[x64.dim() - 1]]);
    let mut v = vec![("gate.weight", gl2.tr().matmul(&x2))];
    if w.gate_bias.is_some() {
        v.push(("gate.bias", gl2.sum_dim_intlist([0i64].as_slice(), false, Kind::Double)));
    }
    v.push(("x", gl.matmul(&w64.abs())));
    v
}

impl RefGrads {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.grads.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }

    pub fn terms(&self, name: &str) -> Option<&Tensor> {
        self.terms.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
    }
}
