//! The unsharded reference: torchtitan's router math on full tensors in plain libtorch, in
//! float32 whatever the input dtype, plus a float64 shadow used only to measure how close each
//! token's choice was to a tie.
//!
//! Ties are broken by libtorch's own `topk` (the same kernel the sharded ranks run), so the
//! reference and the sharded router agree on a tied row whenever they see the same values; see
//! docs/ties.md for what that kernel does with equal scores.

use super::config::{RouterConfig, ScoreFunc};
use super::RouterOutputs;
use dtensor::local::torch_err;
use dtensor::DTensorError;
use tch::{Kind, Tensor};

/// The router's weights on full tensors: the gate (E, D) and its optional bias (E,) in the case
/// dtype, and the expert bias (E,) in float32.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub gate: &'a Tensor,
    pub gate_bias: Option<&'a Tensor>,
    pub expert_bias: Option<&'a Tensor>,
}

/// `x·Wᵀ (+ b)` in float32.
pub fn logits(x: &Tensor, w: &Weights) -> Result<Tensor, DTensorError> {
    let x32 = x.to_kind(Kind::Float);
    let w32 = w.gate.to_kind(Kind::Float);
    let l = x32.f_matmul(&w32.tr()).map_err(torch_err)?;
    Ok(match w.gate_bias {
        Some(b) => l + b.to_kind(Kind::Float),
        None => l,
    })
}

/// Runs the reference router. `x` is (B, L, D).
pub fn run(cfg: &RouterConfig, x: &Tensor, w: &Weights) -> Result<RouterOutputs<Tensor>, DTensorError> {
    let f = |r: Result<Tensor, tch::TchError>| r.map_err(torch_err);
    let bias = w.expert_bias;
    let logits = logits(x, w)?;
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Float),
    };
    let mut choice = match bias {
        Some(b) => &scores + b,
        None => scores.shallow_clone(),
    };
    let mut group_mask = None;
    if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
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
    if cfg.options.force_load_balance {
        let s = scores.size();
        let (b, l, k) = (s[0], s[1], cfg.top_k as i64);
        ids =
            Tensor::arange(b * l * k, (Kind::Int64, scores.device())).reshape([b, l, k]).remainder(cfg.experts as i64);
        topk_scores = f(scores.f_gather(-1, &ids, false))?;
    }
    if cfg.options.route_norm {
        let den = topk_scores.sum_dim_intlist([-1i64].as_slice(), true, Kind::Float) + 1e-20;
        topk_scores = &topk_scores / den;
    }
    topk_scores *= cfg.options.route_scale;
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
    /// The choice scores (score + expert bias), (tokens, E) row-major, before any group mask:
    /// what an undecided token's choice is checked against.
    pub choice: Vec<f64>,
    /// With expert groups: each group's score (its top two choice scores summed), (tokens, G).
    pub group_scores: Vec<f64>,
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

/// Below this many multiply-adds in the gate matmul, the shadow runs as plain Rust loops: a small
/// case's shadow is a few dozen libtorch calls whose dispatch costs far more than the arithmetic.
const SMALL_SHADOW_FMAS: usize = 1 << 18;

/// The float64 shadow of the router's choice: margins at the K-th expert and the Gk-th group.
pub fn margins(cfg: &RouterConfig, x: &Tensor, w: &Weights) -> Margins {
    let size = x.size();
    let (d, rows) = (*size.last().unwrap_or(&1) as usize, (x.numel() / (*size.last().unwrap_or(&1)).max(1) as usize));
    if x.device() == tch::Device::Cpu && rows * d * cfg.experts <= SMALL_SHADOW_FMAS {
        margins_small(cfg, x, w)
    } else {
        margins_torch(cfg, x, w)
    }
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Float).to_kind(Kind::Double).contiguous().view(-1)).expect("f64 values")
}

/// Largest first, NaN above everything (libtorch's topk order).
fn desc(a: &f64, b: &f64) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => b.partial_cmp(a).unwrap(),
    }
}

/// Gap between the k-th and (k+1)-th largest of `v` (as `gaps`).
fn gap(v: &[f64], k: usize) -> f64 {
    if k >= v.len() {
        return f64::INFINITY;
    }
    let mut s = v.to_vec();
    s.sort_by(desc);
    let g = s[k - 1] - s[k];
    if g.is_nan() {
        0.0
    } else {
        g
    }
}

/// `margins_torch` in Rust loops, for small CPU cases; the same numbers up to f64 rounding.
fn margins_small(cfg: &RouterConfig, x: &Tensor, w: &Weights) -> Margins {
    let (xs, ws) = (f64s(x), f64s(w.gate));
    let bs = w.expert_bias.map(f64s);
    let gb = w.gate_bias.map(f64s);
    let e = cfg.experts;
    let d = ws.len() / e.max(1);
    let rows = xs.len().checked_div(d).unwrap_or(0);
    let mut m = Margins {
        topk: Vec::with_capacity(rows),
        group: Vec::with_capacity(rows),
        scale: Vec::with_capacity(rows),
        absdot: Vec::with_capacity(rows),
        choice: Vec::with_capacity(rows * e),
        group_scores: Vec::new(),
    };
    let mut choice = vec![0.0f64; e];
    for r in 0..rows {
        let xr = &xs[r * d..(r + 1) * d];
        let mut absdot = f64::NEG_INFINITY;
        for (j, c) in choice.iter_mut().enumerate() {
            let wr = &ws[j * d..(j + 1) * d];
            let b0 = gb.as_ref().map_or(0.0, |g| g[j]);
            let (mut dot, mut abs) = (b0, b0.abs());
            for (a, b) in xr.iter().zip(wr) {
                dot += a * b;
                abs += (a * b).abs();
            }
            *c = dot;
            absdot = absdot.max(abs);
        }
        m.absdot.push(if e == 0 { 0.0 } else { absdot });
        match cfg.options.score_func {
            ScoreFunc::Sigmoid => choice.iter_mut().for_each(|c| *c = 1.0 / (1.0 + (-*c).exp())),
            ScoreFunc::Softmax => {
                let mx = choice.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                choice.iter_mut().for_each(|c| *c = (*c - mx).exp());
                let sum: f64 = choice.iter().sum();
                choice.iter_mut().for_each(|c| *c /= sum);
            }
        }
        if let Some(b) = &bs {
            choice.iter_mut().zip(b).for_each(|(c, b)| *c += b);
        }
        m.scale
            .push(choice.iter().fold(0.0f64, |a, c| if c.is_nan() || a.is_nan() { f64::NAN } else { a.max(c.abs()) }));
        m.choice.extend_from_slice(&choice);
        let mut group = f64::INFINITY;
        if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
            let sums: Vec<f64> = (0..g.num_groups)
                .map(|gi| {
                    let mut v = choice[gi * p..(gi + 1) * p].to_vec();
                    v.sort_by(desc);
                    v[0] + v[1]
                })
                .collect();
            group = gap(&sums, g.num_limited);
            m.group_scores.extend_from_slice(&sums);
            let mut order: Vec<usize> = (0..g.num_groups).collect();
            // A stable order keeps ties in index order; tied groups make the token undecided
            // (group margin 0), so which one is kept does not change a verdict.
            order.sort_by(|&a, &b| desc(&sums[a], &sums[b]));
            for &gi in &order[g.num_limited..] {
                choice[gi * p..(gi + 1) * p].iter_mut().for_each(|c| *c = f64::NEG_INFINITY);
            }
        }
        m.group.push(group);
        m.topk.push(if cfg.options.force_load_balance { f64::INFINITY } else { gap(&choice, cfg.top_k) });
    }
    m
}

/// The shadow in libtorch float64 ops, for large or GPU cases.
pub(crate) fn margins_torch(cfg: &RouterConfig, x: &Tensor, w: &Weights) -> Margins {
    let bias = w.expert_bias;
    let x64 = x.to_kind(Kind::Float).to_kind(Kind::Double);
    let w64 = w.gate.to_kind(Kind::Float).to_kind(Kind::Double);
    let e = cfg.experts as i64;
    let gb64 = w.gate_bias.map(|b| b.to_kind(Kind::Float).to_kind(Kind::Double));
    let logits = x64.matmul(&w64.tr()).view([-1, e]);
    let logits = match &gb64 {
        Some(b) => logits + b,
        None => logits,
    };
    let abs = x64.abs().matmul(&w64.abs().tr()).view([-1, e]);
    let abs = match &gb64 {
        Some(b) => abs + b.abs(),
        None => abs,
    };
    let absdot: Vec<f64> = Vec::<f64>::try_from(abs.amax([-1i64].as_slice(), false).contiguous()).expect("f64");
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => logits.sigmoid(),
        ScoreFunc::Softmax => logits.softmax(-1, Kind::Double),
    };
    let mut choice = match bias {
        Some(b) => &scores + b.to_kind(Kind::Double),
        None => scores,
    };
    let rows = choice.size()[0];
    let scale: Vec<f64> = Vec::<f64>::try_from(choice.abs().amax([-1i64].as_slice(), false).contiguous()).expect("f64");
    let flat = |t: &Tensor| Vec::<f64>::try_from(t.to_device(tch::Device::Cpu).contiguous().view(-1)).expect("f64");
    let choice_all = flat(&choice);
    let mut group_scores = Vec::new();
    let mut group = vec![f64::INFINITY; rows as usize];
    if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
        let grouped = choice.view([rows, g.num_groups as i64, p as i64]);
        let (top2, _) = grouped.topk(2, -1, true, true);
        let gs = top2.sum_dim_intlist([-1i64].as_slice(), false, Kind::Double);
        group = gaps(&gs, g.num_limited);
        group_scores = flat(&gs);
        let (_, gidx) = gs.topk(g.num_limited as i64, -1, true, false);
        let mask = gs.ones_like().to_kind(Kind::Bool).scatter_value(-1, &gidx, 0i64);
        choice = grouped.masked_fill(&mask.unsqueeze(-1), f64::NEG_INFINITY).view([rows, e]);
    }
    let topk =
        if cfg.options.force_load_balance { vec![f64::INFINITY; rows as usize] } else { gaps(&choice, cfg.top_k) };
    Margins { topk, group, scale, absdot, choice: choice_all, group_scores }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::RouterGen;
    use crate::inputs::RouterInputs;
    use crate::spec::RouterSpec;
    use harness::case::Case;
    use harness::data;
    use harness::generate::GenCommon;
    use harness::stream::nth;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x == y || (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-12 * (1.0 + x.abs().max(y.abs()))
            })
    }

    #[test]
    fn the_rust_shadow_gives_the_libtorch_shadow() {
        let mut small = 0;
        for i in 0..400 {
            let case: Case<RouterSpec> = nth(21, i, &GenCommon::default(), &RouterGen::default());
            let cfg = case.subject.router_config().unwrap();
            let inp = RouterInputs::of(&data::inputs(&case, tch::Device::Cpu));
            let (a, b) = (margins(&cfg, &inp.x, &inp.weights()), margins_torch(&cfg, &inp.x, &inp.weights()));
            small += (inp.x.numel() * cfg.experts <= SMALL_SHADOW_FMAS) as usize;
            for (what, p, q) in [
                ("topk", &a.topk, &b.topk),
                ("group", &a.group, &b.group),
                ("scale", &a.scale, &b.scale),
                ("absdot", &a.absdot, &b.absdot),
                ("choice", &a.choice, &b.choice),
                ("group_scores", &a.group_scores, &b.group_scores),
            ] {
                assert!(close(p, q), "case {i}: {what} {p:?} vs {q:?}\n{}", case.to_json());
            }
        }
        assert!(small > 300, "the small path ran on {small} cases only");
    }
}
