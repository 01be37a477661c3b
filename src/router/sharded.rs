//! The router on the simulated DTensor: the same steps as the reference, every op going
//! through DTensor's sharding propagation, the scatter sites written as the selected revision
//! wrote them. Each step labels the communication it causes with the value it computes.

use super::config::{RouterConfig, ScoreFunc};
use super::{RouterOutputs, RouterRev};
use crate::dtensor::local_map::local_map;
use crate::dtensor::{call, call_mixed, Ctx, DTensor, DType, Op, Result, TArg};
use tch::{Kind, Tensor};

/// One scatter site: `self.scatter_(-1, index, value)` as the revision writes it. `local_map`
/// revisions take in/out placements from the live DTensors and scatter each rank's local piece.
fn scatter_site(
    ctx: &mut Ctx,
    how: Site,
    this: &DTensor,
    placements_of: &DTensor,
    index: &DTensor,
    value: bool,
) -> Result<DTensor> {
    let v = if value { 1.0 } else { 0.0 };
    match how {
        Site::InPlace | Site::OutOfPlace => {
            ctx.op1(Op::ScatterValue { dim: -1, value: v, inplace: how == Site::InPlace }, &[this, index])
        }
        Site::LocalMap => {
            let ins = [placements_of.placements.clone(), index.placements.clone()];
            let outs = [placements_of.placements.clone()];
            let mut r = local_map(ctx, &[this, index], &ins, &outs, false, |_, t| {
                crate::dtensor::local::scatter_value(t[0], -1, t[1], v).map(|t| vec![t])
            })?;
            Ok(r.swap_remove(0))
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Site {
    InPlace,
    OutOfPlace,
    LocalMap,
}

/// (group-mask site #1, routing-map site #2) for each revision.
fn sites(rev: RouterRev) -> (Site, Site) {
    match rev {
        RouterRev::LocalMapCounts => (Site::InPlace, Site::LocalMap),
        RouterRev::InplaceScatter => (Site::InPlace, Site::InPlace),
        RouterRev::OutOfPlaceScatter => (Site::OutOfPlace, Site::OutOfPlace),
        RouterRev::LocalMapBoth => (Site::LocalMap, Site::LocalMap),
    }
}

/// Runs the sharded router. `x` is (B, L, D), `gate` (E, D), `bias` (E,) float32.
pub fn run(
    ctx: &mut Ctx,
    cfg: &RouterConfig,
    rev: RouterRev,
    x: &DTensor,
    gate: &DTensor,
    bias: Option<&DTensor>,
) -> Result<RouterOutputs<DTensor>> {
    let (site1, site2) = sites(rev);
    let (b, l, d) = (x.shape[0] as i64, x.shape[1] as i64, x.shape[2] as i64);
    let e = cfg.experts as i64;

    // Gate linear in float32; F.linear without bias on a 3-D input decomposes into
    // t, view to (B*L, D), mm, _unsafe_view back (docs/design.md).
    ctx.label("scores");
    let to32 = |ctx: &mut Ctx, t: &DTensor| {
        if t.dtype == DType::F32 {
            Ok(t.clone())
        } else {
            ctx.op1(Op::ToDtype(DType::F32), &[t])
        }
    };
    let x32 = to32(ctx, x)?;
    let w32 = to32(ctx, gate)?;
    let wt = ctx.op1(Op::T, &[&w32])?;
    let x2 = ctx.op1(Op::View { shape: vec![b * l, d], unsafe_view: false }, &[&x32])?;
    let logits2 = ctx.op1(Op::Mm, &[&x2, &wt])?;
    let logits = ctx.op1(Op::View { shape: vec![b, l, e], unsafe_view: true }, &[&logits2])?;
    let scores = match cfg.options.score_func {
        ScoreFunc::Sigmoid => ctx.op1(Op::Sigmoid, &[&logits])?,
        ScoreFunc::Softmax => ctx.op1(Op::Softmax { dim: -1 }, &[&logits])?,
    };

    ctx.label("scores_for_choice");
    let mut choice = match bias {
        Some(bias) => ctx.op1(Op::Add, &[&scores, bias])?,
        None => scores.clone(),
    };

    let mut group_mask = None;
    if let (Some(g), Some(p)) = (cfg.options.groups, cfg.experts_per_group()) {
        ctx.label("group_scores");
        let (gn, gk) = (g.num_groups as i64, g.num_limited);
        let grouped = ctx.op1(Op::View { shape: vec![b, l, gn, p as i64], unsafe_view: false }, &[&choice])?;
        let top2 = call(ctx, &Op::Topk { k: 2, dim: -1, largest: true, sorted: true }, &[&grouped])?.swap_remove(0);
        let gscores = ctx.op1(Op::Sum { dims: vec![-1], keepdim: false }, &[&top2])?;
        let gidx = call(ctx, &Op::Topk { k: gk, dim: -1, largest: true, sorted: false }, &[&gscores])?.swap_remove(1);
        ctx.label("group_mask");
        let ones = ctx.op1(Op::OnesLike(Some(DType::Bool)), &[&gscores])?;
        let mask = scatter_site(ctx, site1, &ones, &ones, &gidx, false)?;
        ctx.label("scores_for_choice");
        let mask4 = ctx.op1(Op::Unsqueeze { dim: -1 }, &[&mask])?;
        let masked = ctx.op1(Op::MaskedFill(f64::NEG_INFINITY), &[&grouped, &mask4])?;
        choice = ctx.op1(Op::View { shape: vec![b, l, e], unsafe_view: false }, &[&masked])?;
        group_mask = Some(mask);
    }

    ctx.label("topk_ids");
    let mut ids =
        call(ctx, &Op::Topk { k: cfg.top_k, dim: -1, largest: true, sorted: false }, &[&choice])?.swap_remove(1);
    ctx.label("topk_scores");
    let mut topk_scores = ctx.op1(Op::Gather { dim: -1 }, &[&scores, &ids])?;
    if cfg.options.force_load_balance {
        // A plain int64 index built from the DTensor's global shape meets DTensor scores.
        let k = cfg.top_k as i64;
        let (sb, sl) = (scores.shape[0] as i64, scores.shape[1] as i64);
        let dev = scores.locals[0].device();
        let plain = Tensor::arange(sb * sl * k, (Kind::Int64, dev)).reshape([sb, sl, k]).remainder(e);
        topk_scores =
            call_mixed(ctx, &Op::Gather { dim: -1 }, &[TArg::D(&scores), TArg::Plain(&plain)])?.swap_remove(0);
        // Only a one-element index gets here (DTensor accepts those as replicated scalars).
        let r = vec![crate::placement::Placement::Replicate; scores.mesh.ndim()];
        let locals = (0..scores.mesh.size()).map(|_| plain.shallow_clone()).collect();
        ids = DTensor::from_local(locals, &scores.mesh, &r, Some(vec![sb as usize, sl as usize, k as usize]))?;
    }
    if cfg.options.route_norm {
        let s = ctx.op1(Op::Sum { dims: vec![-1], keepdim: true }, &[&topk_scores])?;
        let den = ctx.op1(Op::AddScalar(1e-20), &[&s])?;
        topk_scores = ctx.op1(Op::Div, &[&topk_scores, &den])?;
    }
    topk_scores = ctx.op1(Op::MulScalar(cfg.options.route_scale), &[&topk_scores])?;

    ctx.label("routing_map");
    let zeros = ctx.op1(Op::ZerosLike(Some(DType::Bool)), &[&scores])?;
    let routing_map = scatter_site(ctx, site2, &zeros, &scores, &ids, true)?;
    ctx.label("counts");
    let counts = ctx.op1(Op::Sum { dims: vec![0, 1], keepdim: false }, &[&routing_map])?;
    Ok(RouterOutputs { topk_scores, topk_ids: ids, scores, routing_map, counts, group_mask })
}
