//! The per-rank tensor code of torchtitan 0.3.0's MoE layer, in libtorch with its autograd:
//! the router, the routing-map counts, the local reorder, the grouped experts (with
//! torchtitan's bf16 casts), the combine, the shared experts and the load-balance hook step.
//! The reference runs these once on the whole input; the sharded run runs them on each rank's
//! pieces with the collectives between them (sharded.rs).

use crate::error::{Fail, Stage};
use router::{RouterConfig, ScoreFunc};
use tch::{Kind, Tensor};

/// What the router returns: top-k scores (T-shaped like x's leading dims, K), ids, scores.
pub struct Routed {
    pub topk_scores: Tensor,
    pub ids: Tensor,
    pub scores: Tensor,
}

/// The kind the router computes in: float32, except a bf16 case on CPU, where autocast refuses
/// float32 and the gate runs in bf16.
pub fn router_kind(x: &Tensor) -> Kind {
    x.kind()
}

/// TokenChoiceTopKRouter.forward on x (B, L, D): the same steps as the router subject's
/// reference (`router::reference::run`), in the dtype the real layer computes in, differentiable.
pub fn route(cfg: &RouterConfig, x: &Tensor, gate: &Tensor, expert_bias: Option<&Tensor>) -> Result<Routed, Fail> {
    let f = |r: Result<Tensor, tch::TchError>| r.map_err(|e| Fail::torch(Stage::Forward, e));
    let kind = router_kind(x);
    let logits = f(x.f_matmul(&gate.to_kind(kind).tr()))?;
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, kind),
    };
    let mut choice = match expert_bias {
        Some(b) => &scores + b,
        None => scores.shallow_clone(),
    };
    if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
        let s = choice.size();
        let (b, l) = (s[0], s[1]);
        let grouped = choice.reshape([b, l, g.num_groups as i64, p as i64]);
        let (top2, _) = grouped.f_topk(2, -1, true, true).map_err(|e| Fail::torch(Stage::Forward, e))?;
        let gscores = top2.sum_dim_intlist([-1i64].as_slice(), false, top2.kind());
        let (_, gidx) =
            gscores.f_topk(g.num_limited as i64, -1, true, false).map_err(|e| Fail::torch(Stage::Forward, e))?;
        let mask = gscores.ones_like().to_kind(Kind::Bool).scatter_value(-1, &gidx, 0i64);
        choice = grouped.masked_fill(&mask.unsqueeze(-1), f64::NEG_INFINITY).reshape([b, l, cfg.experts as i64]);
    }
    let (_, mut ids) = choice.f_topk(cfg.top_k as i64, -1, true, false).map_err(|e| Fail::torch(Stage::Forward, e))?;
    let mut topk_scores = f(scores.f_gather(-1, &ids, false))?;
    if cfg.options.force_load_balance {
        let s = scores.size();
        let (b, l, k) = (s[0], s[1], cfg.top_k as i64);
        ids =
            Tensor::arange(b * l * k, (Kind::Int64, scores.device())).reshape([b, l, k]).remainder(cfg.experts as i64);
        topk_scores = f(scores.f_gather(-1, &ids, false))?;
    }
    if cfg.options.route_norm {
        let den = topk_scores.sum_dim_intlist([-1i64].as_slice(), true, topk_scores.kind()) + 1e-20;
        topk_scores = &topk_scores / den;
    }
    topk_scores = &topk_scores * cfg.options.route_scale;
    Ok(Routed { topk_scores, ids, scores })
}

/// `zeros_like(scores, bool).scatter_(-1, ids, True).sum(dim=(0, 1))`: tokens per expert (E,)
/// int64, a token routed twice to one expert counted once.
pub fn counts(ids: &Tensor, experts: usize) -> Tensor {
    let s = ids.size();
    let mut shape = s[..s.len() - 1].to_vec();
    shape.push(experts as i64);
    let map = Tensor::zeros(shape.as_slice(), (Kind::Bool, ids.device())).scatter_value(-1, ids, 1i64);
    let lead: Vec<i64> = (0..(s.len() as i64 - 1)).collect();
    map.sum_dim_intlist(lead.as_slice(), false, Kind::Int64)
}

/// `_local_reorder`: the stable argsort of the flattened ids; returns (token index of each slot
/// in expert order (N,), the scores in that order (N,), the routed rows x[token_idx] (N, D)).
pub fn reorder(x_td: &Tensor, scores_tk: &Tensor, ids_tk: &Tensor, k: usize) -> (Tensor, Tensor, Tensor) {
    let perm = ids_tk.reshape([-1]).argsort_stable(true, 0, false);
    let s = scores_tk.reshape([-1]).index_select(0, &perm);
    let tok = perm.floor_divide_scalar(k as i64);
    let rows = x_td.index_select(0, &tok);
    (tok, s, rows)
}

/// The three grouped GEMMs of GroupedExperts.forward on rows sorted by local expert, with
/// `sizes[i]` rows for local expert i: bf16 inputs and weights, bf16 products (float32
/// accumulation rounded once), silu and the product in bf16, the result cast to x's dtype.
/// Rows past the last group (never on the standard path) come out zero.
pub fn experts(x: &Tensor, sizes: &[i64], w1: &Tensor, w2: &Tensor, w3: &Tensor) -> Result<Tensor, Fail> {
    let (d, f) = (w1.size()[2], w1.size()[1]);
    if d % 8 != 0 || f % 8 != 0 {
        return Err(Fail::new(Stage::Forward, "RuntimeError", "strides should be multiple of 16 bytes"));
    }
    let bf = |t: &Tensor| t.to_kind(Kind::BFloat16);
    let gmm =
        |a: &Tensor, b_t: &Tensor| a.to_kind(Kind::Float).matmul(&b_t.to_kind(Kind::Float)).to_kind(Kind::BFloat16);
    let xb = bf(x);
    let mut pieces = Vec::new();
    let mut start = 0i64;
    for (i, &n) in sizes.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let rows = xb.narrow(0, start, n);
        let i = i as i64;
        let h1 = gmm(&rows, &bf(&w1.get(i)).tr()).silu();
        let h = h1 * gmm(&rows, &bf(&w3.get(i)).tr());
        pieces.push(gmm(&h, &bf(&w2.get(i)).tr()));
        start += n;
    }
    let total = x.size()[0];
    if start < total {
        pieces.push(Tensor::zeros([total - start, d], (Kind::BFloat16, x.device())));
    }
    let out =
        if pieces.is_empty() { Tensor::zeros([0, d], (Kind::BFloat16, x.device())) } else { Tensor::cat(&pieces, 0) };
    Ok(out.to_kind(x.kind()))
}

/// The combine: each routed row scaled in float32 by its score and cast back, then
/// `zeros_like(x).scatter_add(0, token_idx, rows)`.
pub fn combine(y: &Tensor, scores_sorted: &Tensor, tok: &Tensor, x_td: &Tensor) -> Tensor {
    let d = x_td.size()[1];
    let scaled = (y.to_kind(Kind::Float) * scores_sorted.to_kind(Kind::Float).reshape([-1, 1])).to_kind(y.kind());
    let idx = tok.reshape([-1, 1]).expand([-1, d], false);
    x_td.zeros_like().scatter_add(0, &idx, &scaled)
}

/// The shared experts' FeedForward on x (.., D): `w2(silu(w1(x)) * w3(x))`, bias-free linears
/// in the parameter dtype.
pub fn shared(x: &Tensor, w1: &Tensor, w2: &Tensor, w3: &Tensor) -> Tensor {
    let h = x.matmul(&w1.tr()).silu() * x.matmul(&w3.tr());
    h.matmul(&w2.tr())
}

/// One load-balance hook step: the global counts (float32) move the bias by
/// `coeff · sign(mean − n)`, centred.
pub fn hook(bias: &Tensor, counts: &Tensor, coeff: f64) -> Tensor {
    let n = counts.to_kind(Kind::Float);
    let delta = (n.mean(Kind::Float) - &n).sign() * coeff;
    let delta = &delta - delta.mean(Kind::Float);
    bias + delta
}
