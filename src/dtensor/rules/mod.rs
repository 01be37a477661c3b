//! Sharding propagation: for each op, the strategies PyTorch would offer (one family per file),
//! and the one selection procedure all families share.
//!
//! A strategy is `[outs..., ins...]` placements over the whole mesh. Families either write rows
//! for one mesh dim and expand them as PyTorch does ([`single_dim`]: single-dim strategies with
//! placeholders, or full-mesh strategies that expand concrete rows themselves), or derive their
//! strategies from the inputs directly (views, reductions and factories in some releases). Which
//! registration an op has, per release, follows PyTorch: a single-dim strategy wins over a
//! full-mesh one (`propagate_op_sharding_non_cached` looks it up first).
//!
//! [`select`] then does what `expand_to_full_mesh_op_strategy` and `_select_min_cost_strategy`
//! do, in their order: drop expanded candidates that mix Partial kinds, break an in-place op's
//! self, or shard an input too short for it; then take a negative-cost candidate, else the last
//! candidate that moves nothing, else the first free one, else the first cheapest.
//!
//! Nothing here touches libtorch: rules see shapes, dtypes and placements only.

pub mod like;
pub mod matrix;
pub mod pointwise;
pub mod reduction;
pub mod rulesets;
pub mod scatter_gather;
pub mod single_dim;
pub mod sort;
pub mod view;

pub use rulesets::RuleSet;
pub use single_dim::{Cell, Row};

use super::error::{DTensorError, Result};
use super::meta::Meta;
use super::op::Op;
use placement::cost::redistribute_cost;
use placement::plan::PlanRules;
use placement::{layout, Mesh, Placement};

/// One tensor argument as the rules see it: global metadata and current placements.
#[derive(Clone, Debug, PartialEq)]
pub struct Arg {
    pub meta: Meta,
    pub placements: Vec<Placement>,
}

/// Placements for every output and every tensor input, over the whole mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Strategy {
    pub outs: Vec<Vec<Placement>>,
    pub ins: Vec<Vec<Placement>>,
}

/// Which filters `expand_to_full_mesh_op_strategy` applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Derived from the inputs by the strategy function itself: nothing is filtered.
    None,
    /// Expanded rows: mixed Partial kinds, the in-place rule, and `is_tensor_shardable` on every
    /// input; with `uneven` (`allow_uneven_sharding`) an input the candidate leaves as it is
    /// passes even when it is too short for its shards.
    Expanded { uneven: bool },
}

/// What a family offers for one call.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub out_metas: Vec<Meta>,
    pub strategies: Vec<Strategy>,
    pub filter: Filter,
    /// Costs the strategy function set itself (new_factory's -0.1), instead of redistribution
    /// costs.
    pub costs: Option<Vec<f64>>,
    /// The release (error texts, planner); [`propose`] sets it.
    pub rules: RuleSet,
}

impl Proposal {
    /// A family that derives exactly one strategy from its inputs.
    pub fn single(out_metas: Vec<Meta>, s: Strategy) -> Proposal {
        Proposal { out_metas, strategies: vec![s], filter: Filter::None, costs: None, rules: RuleSet::Torch213 }
    }

    /// Derived strategies with the costs the strategy function gave them.
    pub(crate) fn with_costs(out_metas: Vec<Meta>, strategies: Vec<Strategy>, costs: Vec<f64>) -> Proposal {
        Proposal { out_metas, strategies, filter: Filter::None, costs: Some(costs), rules: RuleSet::Torch213 }
    }

    /// Expanded rows (single-dim or full-mesh), filtered and chosen by cost.
    pub(crate) fn expanded(out_metas: Vec<Meta>, strategies: Vec<Strategy>, uneven: bool) -> Proposal {
        Proposal { out_metas, strategies, filter: Filter::Expanded { uneven }, costs: None, rules: RuleSet::Torch213 }
    }
}

/// The strategies an op offers for these arguments, and its output metadata (which also checks
/// shapes the way PyTorch's meta functions do).
pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let mut p = match op {
        Op::View { .. } | Op::Unsqueeze { .. } | Op::Expand { .. } => view::propose(op, args, mesh, rules),
        Op::T | Op::Mm | Op::Addmm => matrix::propose(op, args, mesh, rules),
        Op::Sigmoid
        | Op::SigmoidBackward
        | Op::Neg
        | Op::ToDtype(_)
        | Op::Add
        | Op::Sub
        | Op::Mul
        | Op::Div
        | Op::AddScalar(_)
        | Op::MulScalar(_)
        | Op::DivScalar(_)
        | Op::MaskedFill(_) => pointwise::propose(op, args, mesh, rules),
        Op::Softmax { .. } | Op::SoftmaxBackward { .. } | Op::Sum { .. } | Op::Cumsum { .. } => {
            reduction::propose(op, args, mesh, rules)
        }
        Op::Topk { .. } | Op::Sort { .. } => sort::propose(op, args, mesh, rules),
        Op::Gather { .. } | Op::ScatterValue { .. } | Op::ScatterSrc { .. } | Op::ScatterAdd { .. } => {
            scatter_gather::propose(op, args, mesh, rules)
        }
        Op::ZerosLike(_) | Op::OnesLike(_) | Op::NewZeros { .. } => like::propose(op, args, mesh, rules),
    }?;
    p.rules = rules;
    Ok(p)
}

/// Total cost of moving every input to the placements `s` asks for (`generate_redistribute_costs`
/// summed as `_select_min_cost_strategy` sums them).
pub(crate) fn strategy_cost(s: &Strategy, args: &[Arg], mesh: &Mesh, rules: PlanRules) -> f64 {
    let mut total = 0.0;
    for (want, a) in s.ins.iter().zip(args) {
        total += redistribute_cost(mesh, &a.placements, want, &a.meta.shape, a.meta.dtype.itemsize(), rules);
    }
    total
}

/// `expand_to_full_mesh_op_strategy`'s mixed-partial filter: one spec may not hold two kinds of
/// Partial (a `_MaskPartial` is its own kind), except sum with avg.
fn mixes_partials(spec: &[Placement]) -> bool {
    use placement::ReduceOp::{Avg, Sum};
    let mask = |p: Placement| matches!(p, Placement::MaskPartial { .. });
    let linear = |p: Placement| matches!(p, Placement::Partial(Sum | Avg));
    let mut first: Option<Placement> = None;
    for &p in spec.iter().filter(|p| p.is_partial()) {
        match first {
            None => first = Some(p),
            Some(f) if mask(f) == mask(p) && f.reduce_op() == p.reduce_op() => {}
            Some(f) if linear(f) && linear(p) => {}
            Some(_) => return true,
        }
    }
    false
}

/// The candidates PyTorch keeps (filters in `expand_to_full_mesh_op_strategy`'s order), or the
/// error it raises when none is left.
fn filtered<'a>(op: &Op, p: &'a Proposal, args: &[Arg], mesh: &Mesh) -> Result<Vec<&'a Strategy>> {
    let Filter::Expanded { uneven } = p.filter else { return Ok(p.strategies.iter().collect()) };
    let mut blocked = false;
    let mut kept = Vec::with_capacity(p.strategies.len());
    for s in &p.strategies {
        if s.outs.iter().chain(&s.ins).any(|spec| mixes_partials(spec)) {
            continue;
        }
        if op.is_inplace() && (s.ins[0] != args[0].placements || s.outs[0] != args[0].placements) {
            blocked = true;
            continue;
        }
        let shardable = s
            .ins
            .iter()
            .zip(args)
            .all(|(pl, a)| layout::is_shardable(&a.meta.shape, mesh, pl) || (uneven && *pl == a.placements));
        if shardable {
            kept.push(s);
        }
    }
    if kept.is_empty() {
        return Err(if blocked {
            DTensorError::InPlacePlacementChange { op: op.aten_name(), placements: args[0].placements.clone() }
        } else if p.rules.empty_expansion_raises() {
            DTensorError::NoValidStrategy { op: op.aten_name() }
        } else {
            DTensorError::EmptyStrategies
        });
    }
    Ok(kept)
}

/// PyTorch's choice (`_select_min_cost_strategy`): the cheapest negative-cost candidate, else the
/// last free candidate that moves no input, else the first free candidate, else the first of
/// the cheapest.
pub fn select(op: &Op, p: &Proposal, args: &[Arg], mesh: &Mesh) -> Result<Strategy> {
    let cands = filtered(op, p, args, mesh)?;
    if cands.len() == 1 {
        return Ok(cands[0].clone());
    }
    let keeps = |s: &Strategy| s.ins.iter().zip(args).all(|(want, a)| *want == a.placements);
    let plan = p.rules.plan();
    if let Some(fixed) = &p.costs {
        // Only derived strategies set their own costs, so nothing was filtered out.
        let mut neg: Option<usize> = None;
        for (i, &c) in fixed.iter().enumerate() {
            if c < 0.0 && neg.is_none_or(|n| c < fixed[n]) {
                neg = Some(i);
            }
        }
        let pick = neg
            .or_else(|| (0..cands.len()).rev().find(|&i| fixed[i] == 0.0 && keeps(cands[i])))
            .or_else(|| fixed.iter().position(|&c| c == 0.0))
            .unwrap_or_else(|| first_min(fixed));
        return Ok(cands[pick].clone());
    }
    // A candidate that moves nothing costs 0, so the last one of them wins outright.
    if let Some(s) = cands.iter().rev().find(|s| keeps(s)) {
        return Ok((*s).clone());
    }
    let mut costs = Vec::with_capacity(cands.len());
    for s in &cands {
        let c = strategy_cost(s, args, mesh, plan);
        if c == 0.0 {
            return Ok((*s).clone());
        }
        costs.push(c);
    }
    Ok(cands[first_min(&costs)].clone())
}

/// `costs.index(min(costs))`.
fn first_min(costs: &[f64]) -> usize {
    let mut best = 0;
    for (i, &c) in costs.iter().enumerate() {
        if c < costs[best] {
            best = i;
        }
    }
    best
}

/// Normalises a possibly negative dim against `ndim`, with PyTorch's IndexError text.
pub(crate) fn norm_dim(dim: i64, ndim: usize) -> Result<usize> {
    let n = ndim.max(1) as i64;
    let d = if dim < 0 { dim + n } else { dim };
    if d < 0 || d >= n {
        return Err(DTensorError::Local {
            kind: "IndexError",
            message: format!("Dimension out of range (expected to be in range of [{}, {}], but got {dim})", -n, n - 1),
        });
    }
    Ok(d as usize)
}

/// The number of shards of a spec (`DTensorSpec.num_shards`: mesh dim sizes of every shard-like
/// placement).
pub fn num_shards(mesh: &Mesh, ps: &[Placement]) -> usize {
    ps.iter().enumerate().filter(|(_, p)| p.is_shard()).map(|(i, _)| mesh.dim_size(i)).product()
}

/// Helpers for the families' unit tests.
#[cfg(test)]
pub mod testing {
    use super::*;
    use crate::meta::DType;

    pub fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        argd(shape, ps, DType::F32)
    }

    pub(crate) fn argd(shape: &[usize], ps: &[Placement], dt: DType) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), dt), placements: ps.to_vec() }
    }

    /// A mesh of 2 ranks per dim, as many dims as the first argument has placements.
    pub(crate) fn mesh_for(args: &[Arg]) -> Mesh {
        let n = args[0].placements.len();
        Mesh::new(vec![2; n], ["dp", "tp", "ep"][..n].iter().map(|s| s.to_string()).collect()).unwrap()
    }

    /// The chosen strategy on a mesh of 2 ranks per dim.
    pub fn pick(op: &Op, args: &[Arg], rules: RuleSet) -> Result<Strategy> {
        let m = mesh_for(args);
        select(op, &propose(op, args, &m, rules)?, args, &m)
    }

    /// The inputs the chosen strategy moves, as `(index, from, to)`.
    pub fn moves(s: &Strategy, args: &[Arg]) -> Vec<(usize, Vec<Placement>, Vec<Placement>)> {
        s.ins
            .iter()
            .zip(args)
            .enumerate()
            .filter(|(_, (w, a))| **w != a.placements)
            .map(|(i, (w, a))| (i, a.placements.clone(), w.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DType;
    use placement::Placement::*;
    use placement::ReduceOp;

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    fn strat(o: Placement, i: Placement) -> Strategy {
        Strategy { outs: vec![vec![o]], ins: vec![vec![i]] }
    }

    /// `_select_min_cost_strategy` (identical in 2.12.1, 2.13.0, 2.14.0): the no-redistribute
    /// index is overwritten in the loop, so the LAST candidate keeping every input wins; a
    /// negative cost beats everything; else the FIRST zero-cost one; else the first minimum.
    #[test]
    fn selection_order_is_pytorchs() {
        let m = Mesh::tp(2);
        let a = [arg(&[4, 4], &[Shard(0)])];
        let op = Op::Neg;
        let mut p =
            Proposal::expanded(vec![], vec![strat(Shard(0), Shard(0)), strat(Partial(ReduceOp::Sum), Shard(0))], true);
        assert_eq!(select(&op, &p, &a, &m).unwrap().outs[0], vec![Partial(ReduceOp::Sum)]);
        // Two candidates keep the replicated input: the last one wins.
        let r = [arg(&[4, 4], &[Replicate])];
        p.strategies = vec![strat(Replicate, Replicate), strat(Shard(1), Shard(1)), strat(Shard(0), Replicate)];
        assert_eq!(select(&op, &p, &r, &m).unwrap().outs[0], vec![Shard(0)], "the last keeping the input");
        // None keeps it: chunking a replicated input is free, and the first free one wins.
        p.strategies = vec![strat(Shard(1), Shard(1)), strat(Shard(0), Shard(0))];
        assert_eq!(select(&op, &p, &r, &m).unwrap().ins[0], vec![Shard(1)], "the first free one");
        // First minimum among equal costs: gather on either of two equal all_gathers.
        p.strategies = vec![strat(Replicate, Replicate), strat(Shard(1), Shard(1)), strat(Replicate, Replicate)];
        assert_eq!(select(&op, &p, &a, &m).unwrap().ins[0], vec![Replicate]);
        // A negative fixed cost wins over a candidate that moves nothing.
        let f = Proposal {
            costs: Some(vec![0.0, -0.1]),
            ..Proposal::expanded(vec![], vec![strat(Replicate, Shard(0)), strat(Shard(0), Shard(0))], true)
        };
        let f = Proposal { filter: Filter::None, ..f };
        assert_eq!(select(&op, &f, &a, &m).unwrap().outs[0], vec![Shard(0)]);
    }

    #[test]
    fn mixed_partials_are_dropped_except_sum_with_avg() {
        assert!(mixes_partials(&[Partial(ReduceOp::Sum), Partial(ReduceOp::Max)]));
        assert!(!mixes_partials(&[Partial(ReduceOp::Sum), Partial(ReduceOp::Avg)]));
        assert!(mixes_partials(&[Partial(ReduceOp::Sum), MaskPartial { id: 3, dim: 0, size: 4 }]));
    }

    #[test]
    fn empty_expansion_errors_by_release() {
        let m = Mesh::tp(2);
        let a = [arg(&[1, 4], &[Replicate])];
        for (rules, text) in [
            (RuleSet::Torch213, "min() arg is an empty sequence"),
            (RuleSet::Torch214, "aten.neg.default: no valid sharding strategy for the input placements."),
        ] {
            let p = Proposal { rules, ..Proposal::expanded(vec![], vec![strat(Shard(0), Shard(0))], false) };
            let e = select(&Op::Neg, &p, &a, &m).unwrap_err();
            assert_eq!((e.kind(), e.to_string().as_str()), ("RuntimeError", text));
        }
    }
}
