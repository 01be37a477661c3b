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
    if cfg.options.force_load_balance {
        let s = scores.size();
        let (b, l, k) = (s[0], s[1], cfg.top_k as i64);
        ids =
            Tensor::arange(b * l * k, (Kind::Int64, scores.device())).reshape([b, l, k]).remainder(cfg.experts as i64);
    }
    let topk_scores = weights(cfg, &scores, &ids)?;
    Ok(Routed { topk_scores, ids, scores })
}

/// The router on x with the choice made already (`ids`, from an earlier run on the same
/// input): the scores in x's dtype and their top-k weights at `ids`. The reference's exact
/// shadow routes so, as float64 scores could order a near-tie otherwise.
pub fn route_at(cfg: &RouterConfig, x: &Tensor, gate: &Tensor, ids: &Tensor) -> Result<Routed, Fail> {
    let logits = x.f_matmul(&gate.to_kind(x.kind()).tr()).map_err(|e| Fail::torch(Stage::Forward, e))?;
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, x.kind()),
    };
    let topk_scores = weights(cfg, &scores, ids)?;
    Ok(Routed { topk_scores, ids: ids.shallow_clone(), scores })
}

/// The top-k weights: the scores at the chosen ids, normalised (route_norm) and scaled.
fn weights(cfg: &RouterConfig, scores: &Tensor, ids: &Tensor) -> Result<Tensor, Fail> {
    let mut w = scores.f_gather(-1, ids, false).map_err(|e| Fail::torch(Stage::Forward, e))?;
    if cfg.options.route_norm {
        let den = w.sum_dim_intlist([-1i64].as_slice(), true, w.kind()) + 1e-20;
        w = &w / den;
    }
    Ok(&w * cfg.options.route_scale)
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

/// `score_before_experts` (torchtitan 0.2.x's switch, `tt-0.2.2` only): the routed rows scaled
/// by their scores before the experts (in `p`'s accumulation kind, cast back), and scores of one
/// for the combine, which then sums the K outputs of a token. Otherwise the rows and scores as
/// they are.
pub fn score_first(p: Precision, sp: &crate::MoeSpec, rows: Tensor, ss: Tensor) -> (Tensor, Tensor) {
    if !sp.router.score_before_experts {
        return (rows, ss);
    }
    let acc = p.acc();
    let scaled = (rows.to_kind(acc) * ss.to_kind(acc).reshape([-1, 1])).to_kind(rows.kind());
    let ones = ss.ones_like().detach();
    (scaled, ones)
}

/// The three grouped GEMMs of GroupedExperts.forward on rows sorted by local expert, with
/// `sizes[i]` rows for local expert i: bf16 inputs and weights, bf16 products (float32
/// accumulation rounded once), silu and the product in bf16, the result cast to x's dtype.
/// Rows past the last group (never on the standard path) come out zero.
///
/// Few autograd nodes, as libtorch's fixed cost per node dominates at these sizes: the rows go
/// into one zero-padded (E, M, D) buffer (M the largest group) by one `index_put`, each GEMM is
/// one `bmm` over all experts with each weight cast (bf16, then float32) and transposed once,
/// the elementwise steps run once on the padded buffer, and one `index` takes the rows back.
/// Every value, and every gradient, is the same bit for bit as one call chain per expert (the
/// test `experts_batched_casts_are_bitwise_the_per_expert_chain`): casts and bf16 products are
/// exact per element, the padding rows are exact zeros (zero products, zero gradients, which
/// add nothing to a weight's gradient), bf16 silu and its backward take no path that depends
/// on the tensor's length, and the two GEMMs on the rows each cast their own float32 copy, so
/// the rows' gradient rounds each GEMM's part to bf16 and adds them in bf16, as per expert.
pub fn experts(x: &Tensor, sizes: &[i64], w1: &Tensor, w2: &Tensor, w3: &Tensor) -> Result<Tensor, Fail> {
    experts_in(Precision::Upstream, x, sizes, w1, w2, w3)
}

/// How a kernel rounds: as upstream (bf16 operands and products, float32 accumulation), or
/// not at all (float64 throughout: the reference's exact shadow, which measures how far
/// upstream's rounding moves a case's outputs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Precision {
    Upstream,
    Exact,
}

impl Precision {
    /// The kind operands and products are rounded to.
    fn low(self) -> Kind {
        match self {
            Precision::Upstream => Kind::BFloat16,
            Precision::Exact => Kind::Double,
        }
    }

    /// The kind products accumulate and scale in.
    pub fn acc(self) -> Kind {
        match self {
            Precision::Upstream => Kind::Float,
            Precision::Exact => Kind::Double,
        }
    }
}

/// [`experts`] rounding as `p` says.
pub fn experts_in(
    p: Precision,
    x: &Tensor,
    sizes: &[i64],
    w1: &Tensor,
    w2: &Tensor,
    w3: &Tensor,
) -> Result<Tensor, Fail> {
    let (d, f) = (w1.size()[2], w1.size()[1]);
    if d % 8 != 0 || f % 8 != 0 {
        return Err(Fail::new(Stage::Forward, "RuntimeError", "strides should be multiple of 16 bytes"));
    }
    let (total, e) = (x.size()[0], w1.size()[0]);
    let used: i64 = sizes.iter().sum();
    let (low, acc) = (p.low(), p.acc());
    let m = sizes.iter().copied().max().unwrap_or(0);
    let mut out = if m == 0 {
        Tensor::zeros([0, d], (low, x.device()))
    } else {
        // Row r of expert i's group sits at (i, r - start_i) of the padded (E, M, ·) buffers.
        let (mut gi, mut gj) = (Vec::with_capacity(used as usize), Vec::with_capacity(used as usize));
        for (i, &n) in sizes.iter().enumerate() {
            gi.extend(std::iter::repeat_n(i as i64, n as usize));
            gj.extend(0..n);
        }
        let at = [Some(Tensor::from_slice(&gi).to(x.device())), Some(Tensor::from_slice(&gj).to(x.device()))];
        let rows = if used < total { x.narrow(0, 0, used) } else { x.shallow_clone() };
        let padded = Tensor::zeros([e, m, d], (low, x.device())).index_put(&at, &rows.to_kind(low), false);
        let wt = |w: &Tensor| w.to_kind(low).to_kind(acc).transpose(1, 2);
        let h1 = padded.to_kind(acc).bmm(&wt(w1));
        let h3 = padded.to_kind(acc).bmm(&wt(w3));
        let h = h1.to_kind(low).silu() * h3.to_kind(low);
        h.to_kind(acc).bmm(&wt(w2)).index(&at).to_kind(low)
    };
    if used < total {
        out = Tensor::cat(&[out, Tensor::zeros([total - used, d], (low, x.device()))], 0);
    }
    Ok(out.to_kind(x.kind()))
}

/// The combine: each routed row scaled in float32 by its score and cast back, then
/// `zeros_like(x).scatter_add(0, token_idx, rows)`.
pub fn combine(y: &Tensor, scores_sorted: &Tensor, tok: &Tensor, x_td: &Tensor) -> Tensor {
    combine_in(Precision::Upstream, y, scores_sorted, tok, x_td)
}

/// [`combine`], scaling in `p`'s accumulation kind.
pub fn combine_in(p: Precision, y: &Tensor, scores_sorted: &Tensor, tok: &Tensor, x_td: &Tensor) -> Tensor {
    let d = x_td.size()[1];
    let acc = p.acc();
    let scaled = (y.to_kind(acc) * scores_sorted.to_kind(acc).reshape([-1, 1])).to_kind(y.kind());
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
