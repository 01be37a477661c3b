//! The unsharded reference: torchtitan's router math on full tensors in plain libtorch, in
//! float32 whatever the input dtype, plus a float64 shadow used only to measure how close each
//! token's choice was to a tie.
//!
//! Ties are broken by libtorch's own `topk` (the same kernel the sharded ranks run), so the
//! reference and the sharded router agree on a tied row whenever they see the same values; see
//! docs/ties.md for what that kernel does with equal scores.

use super::config::{RouterConfig, ScoreFunc};
use super::RouterOutputs;
use crate::dtensor::local::torch_err;
use crate::dtensor::DTensorError;
use tch::{Kind, Tensor};

/// Runs the reference router. `x` is (B, L, D), `gate` is (E, D), `bias` is (E,) float32.
pub fn run(cfg: &RouterConfig, x: &Tensor, gate: &Tensor, bias: Option<&Tensor>) -> Result<RouterOutputs<Tensor>, DTensorError> {
    let f = |r: Result<Tensor, tch::TchError>| r.map_err(torch_err);
    let x32 = x.to_kind(Kind::Float);
    let w32 = gate.to_kind(Kind::Float);
    let logits = f(x32.f_matmul(&w32.tr()))?;
    let scores = match cfg.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Float),
    };
    let mut choice = match bias {
        Some(b) => &scores + b,
        None => scores.shallow_clone(),
    };
    let mut group_mask = None;
    if let (Some(g), Some(p)) = (cfg.groups, cfg.experts_per_group()) {
        let (b, l) = (choice.size()[0], choice.size()[1]);
        let grouped = choice.view([b, l, g.num_groups as i64, p as i64]);
        let (top2, _) = grouped.f_topk(2, -1, true, true).map_err(torch_err)?;
        let gscores = top2.sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
        let (_, gidx) = gscores.f_topk(g.num_limited as i64, -1, true, false).map_err(torch_err)?;
        let mask = gscores.ones_like().to_kind(Kind::Bool).scatter_value(-1, &gidx, 0i64);
        choice = grouped.masked_fill(&mask.unsqueeze(-1), f64::NEG_INFINITY).view([b, l, cfg.experts as i64]);
        group_mask = Some(mask);
    }
    let (_, mut ids) = choice.f_topk(cfg.top_k as i64, -1, true, false).map_err(torch_err)?;
    let mut topk_scores = f(scores.f_gather(-1, &ids, false))?;
    if cfg.force_load_balance {
        let s = scores.size();
        let (b, l, k) = (s[0], s[1], cfg.top_k as i64);
        ids = Tensor::arange(b * l * k, (Kind::Int64, scores.device())).reshape([b, l, k]).remainder(cfg.experts as i64);
        topk_scores = f(scores.f_gather(-1, &ids, false))?;
    }
    if cfg.route_norm {
        let den = topk_scores.sum_dim_intlist([-1i64].as_slice(), true, Kind::Float) + 1e-20;
        topk_scores = &topk_scores / den;
    }
    topk_scores = topk_scores * cfg.route_scale;
    let routing_map = scores.zeros_like().to_kind(Kind::Bool).scatter_value(-1, &ids, 1i64);
    let counts = routing_map.sum_dim_intlist([0i64, 1].as_slice(), false, Kind::Int64);
    Ok(RouterOutputs { topk_scores, topk_ids: ids, scores, routing_map, counts, group_mask })
}

/// How close each token's choices came to a tie, from a float64 recomputation.
#[derive(Clone, Debug, PartialEq)]
pub struct Margins {
    /// Per token (B*L, row-major): gap between the K-th and (K+1)-th largest choice score
    /// (infinite when K = E).
    pub topk: Vec<f64>,
    /// Per token: gap between the Gk-th and (Gk+1)-th group score (infinite without groups or
    /// when Gk = G).
    pub group: Vec<f64>,
    /// Largest |choice score| per token, for scaling error bounds.
    pub scale: Vec<f64>,
    /// Per token: max over experts of sum_i |x_i| |w_ei|, the scale of the gate matmul's
    /// rounding error.
    pub absdot: Vec<f64>,
}

/// Gap between the k-th and (k+1)-th largest entry of each row of a (rows, n) f64 tensor.
fn gaps(t: &Tensor, k: usize) -> Vec<f64> {
    let n = *t.size().last().unwrap() as usize;
    if k >= n {
        return vec![f64::INFINITY; t.size()[0] as usize];
    }
    let (v, _) = t.topk(k as i64 + 1, -1, true, true);
    let a = v.select(-1, k as i64 - 1);
    let b = v.select(-1, k as i64);
    let d: Vec<f64> = Vec::<f64>::try_from((&a - &b).contiguous().view(-1)).expect("f64 gaps");
    // -inf - -inf is NaN: both candidates were masked, which is a tie.
    d.into_iter().map(|g| if g.is_nan() { 0.0 } else { g }).collect()
}

/// The float64 shadow of the router's choice: margins at the K-th expert and the Gk-th group.
pub fn margins(cfg: &RouterConfig, x: &Tensor, gate: &Tensor, bias: Option<&Tensor>) -> Margins {
    let x64 = x.to_kind(Kind::Float).to_kind(Kind::Double);
    let w64 = gate.to_kind(Kind::Float).to_kind(Kind::Double);
    let e = cfg.experts as i64;
    let logits = x64.matmul(&w64.tr()).view([-1, e]);
    let absdot: Vec<f64> = Vec::<f64>::try_from(x64.abs().matmul(&w64.abs().tr()).view([-1, e]).amax([-1i64].as_slice(), false).contiguous()).expect("f64");
    let scores = match cfg.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Double),
    };
    let mut choice = match bias {
        Some(b) => &scores + b.to_kind(Kind::Double),
        None => scores,
    };
    let rows = choice.size()[0];
    let scale: Vec<f64> = Vec::<f64>::try_from(choice.abs().amax([-1i64].as_slice(), false).contiguous()).expect("f64");
    let mut group = vec![f64::INFINITY; rows as usize];
    if let (Some(g), Some(p)) = (cfg.groups, cfg.experts_per_group()) {
        let grouped = choice.view([rows, g.num_groups as i64, p as i64]);
        let (top2, _) = grouped.topk(2, -1, true, true);
        let gs = top2.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
        group = gaps(&gs, g.num_limited);
        let (_, gidx) = gs.topk(g.num_limited as i64, -1, true, false);
        let mask = gs.ones_like().to_kind(Kind::Bool).scatter_value(-1, &gidx, 0i64);
        choice = grouped.masked_fill(&mask.unsqueeze(-1), f64::NEG_INFINITY).view([rows, e]);
    }
    let topk = if cfg.force_load_balance { vec![f64::INFINITY; rows as usize] } else { gaps(&choice, cfg.top_k) };
    Margins { topk, group, scale, absdot }
}
