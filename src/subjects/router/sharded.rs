//! The router on the simulated DTensor: the same steps as the reference, every op going
//! through DTensor's sharding propagation, the scatter sites written as the selected revision
//! wrote them. Each step labels the communication it causes with the value it computes.

use super::body::{self, Direct, Exec, Site};
use super::config::RouterConfig;
use super::{RouterOutputs, RouterRev};
use dtensor::{call_mixed, Ctx, DTensor, DType, Op, Result, TArg};
use tch::{Kind, Tensor};

/// (group-mask site #1, routing-map site #2) for each revision.
pub fn sites(rev: RouterRev) -> (Site, Site) {
    match rev {
        RouterRev::LocalMapCounts => (Site::InPlace, Site::LocalMap),
        RouterRev::InplaceScatter => (Site::InPlace, Site::InPlace),
        RouterRev::OutOfPlaceScatter => (Site::OutOfPlace, Site::OutOfPlace),
        RouterRev::LocalMapBoth => (Site::LocalMap, Site::LocalMap),
    }
}

/// The router's parameters on the mesh.
pub struct Params<'a> {
    pub gate: &'a DTensor,
    pub gate_bias: Option<&'a DTensor>,
    pub expert_bias: Option<&'a DTensor>,
}

/// Runs the sharded router. `x` is (B, L, D), `gate` (E, D), the biases (E,).
pub fn run(
    ctx: &mut Ctx,
    cfg: &RouterConfig,
    rev: RouterRev,
    x: &DTensor,
    p: &Params,
) -> Result<RouterOutputs<DTensor>> {
    let (site1, site2) = sites(rev);
    let mut ex = Direct(ctx);
    // The gate linear in float32 (its 3-D view is where a short sequence fails, docs/design.md).
    ex.label("logits");
    let logits = body::linear(&mut ex, x, p.gate, p.gate_bias)?;
    ex.label("scores");
    let scores = body::score(&mut ex, &logits, cfg)?;
    let (mut ids, group_mask) = body::choose(&mut ex, &scores, p.expert_bias, cfg, site1)?;
    ex.label("topk_scores");
    let mut gathered = ex.op1(Op::Gather { dim: -1 }, &[&scores, &ids])?;
    if cfg.options.force_load_balance {
        (ids, gathered) = force_balance(ex.0, cfg, &scores)?;
    }
    let topk_scores = body::scale(&mut ex, gathered, cfg)?;
    ex.label("routing_map");
    let zeros = ex.op1(Op::ZerosLike(Some(DType::Bool)), &[&scores])?;
    let routing_map = ex.scatter(site2, &zeros, &scores, &ids, true)?;
    ex.label("counts");
    let counts = ex.op1(Op::Sum { dims: vec![0, 1], keepdim: false }, &[&routing_map])?;
    Ok(RouterOutputs { topk_scores, topk_ids: ids, scores, routing_map, counts, group_mask })
}

/// The debug round-robin override: a plain int64 index built from the DTensor's global shape
/// meets DTensor scores (DTensor accepts only a one-element plain tensor).
fn force_balance(ctx: &mut Ctx, cfg: &RouterConfig, scores: &DTensor) -> Result<(DTensor, DTensor)> {
    let (k, e) = (cfg.top_k as i64, cfg.experts as i64);
    let (sb, sl) = (scores.shape[0] as i64, scores.shape[1] as i64);
    let dev = scores.locals[0].device();
    let plain = Tensor::arange(sb * sl * k, (Kind::Int64, dev)).reshape([sb, sl, k]).remainder(e);
    let ts = call_mixed(ctx, &Op::Gather { dim: -1 }, &[TArg::D(scores), TArg::Plain(&plain)])?.swap_remove(0);
    let r = vec![placement::Placement::Replicate; scores.mesh.ndim()];
    let locals = (0..scores.mesh.size()).map(|_| plain.shallow_clone()).collect();
    let ids = DTensor::from_local(locals, &scores.mesh, &r, Some(vec![sb as usize, sl as usize, k as usize]))?;
    Ok((ids, ts))
}
