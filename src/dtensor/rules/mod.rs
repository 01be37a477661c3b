//! Sharding propagation: for each op, the strategies PyTorch would offer (one family per file),
//! and the one selection procedure all families share.
//!
//! A strategy is `[outs..., ins...]` placements over the whole mesh. Table-driven families write
//! rows for one mesh dim ([`Row`]) and [`expand`] takes their cartesian product across mesh dims,
//! as PyTorch's `expand_to_full_mesh_op_strategy` does; strategies built that way are dropped when
//! an input cannot be sharded that way (`is_tensor_shardable`). Families that derive one strategy
//! from their input (pointwise, reductions, views, factories) skip that filter, as in PyTorch.
//!
//! Nothing here touches libtorch: rules see shapes, dtypes and placements only.

pub mod like;
pub mod matrix;
pub mod pointwise;
pub mod reduction;
pub mod rulesets;
pub mod scatter_gather;
pub mod sort;
pub mod view;

pub use rulesets::RuleSet;

use super::error::{DTensorError, Result};
use super::meta::Meta;
use super::op::Op;
use crate::placement::cost::redistribute_cost;
use crate::placement::{layout, Mesh, Placement};

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

/// Which strategies the shardability filter (`is_tensor_shardable`) drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Derived from the input itself: nothing to filter.
    None,
    /// Expanded rows: any strategy with an input too short for its shards.
    All,
    /// Pointwise rows (`allow_uneven_sharding`): only inputs that would be redistributed into a
    /// layout too short for them; an input already laid out that way is accepted as is.
    Redistributed,
}

/// What a family offers for one call.
#[derive(Clone, Debug)]
pub struct Proposal {
    pub out_metas: Vec<Meta>,
    pub strategies: Vec<Strategy>,
    pub filter: Filter,
}

impl Proposal {
    /// A family that derives exactly one strategy from its inputs.
    pub fn single(out_metas: Vec<Meta>, s: Strategy) -> Proposal {
        Proposal { out_metas, strategies: vec![s], filter: Filter::None }
    }
}

/// One row of a single-mesh-dim rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub outs: Vec<Placement>,
    pub ins: Vec<Placement>,
}

impl Row {
    pub fn new(outs: &[Placement], ins: &[Placement]) -> Row {
        Row { outs: outs.to_vec(), ins: ins.to_vec() }
    }
    /// The all-Replicate row every expanded rule starts with.
    pub fn replicate(n_out: usize, n_in: usize) -> Row {
        Row { outs: vec![Placement::Replicate; n_out], ins: vec![Placement::Replicate; n_in] }
    }
}

/// Cartesian product of `rows` over `mesh_ndim` mesh dims, the first mesh dim varying slowest
/// (itertools.product order, which decides ties).
pub fn expand(rows: &[Row], mesh_ndim: usize) -> Vec<Strategy> {
    let n_out = rows[0].outs.len();
    let n_in = rows[0].ins.len();
    let total = rows.len().pow(mesh_ndim as u32);
    (0..total)
        .map(|mut code| {
            let mut pick = vec![0; mesh_ndim];
            for md in (0..mesh_ndim).rev() {
                pick[md] = code % rows.len();
                code /= rows.len();
            }
            Strategy {
                outs: (0..n_out).map(|k| pick.iter().map(|&r| rows[r].outs[k]).collect()).collect(),
                ins: (0..n_in).map(|k| pick.iter().map(|&r| rows[r].ins[k]).collect()).collect(),
            }
        })
        .collect()
}

/// The strategies an op offers for these arguments, and its output metadata (which also checks
/// shapes the way PyTorch's meta functions do).
pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    match op {
        Op::View { .. } | Op::Unsqueeze { .. } | Op::Expand { .. } => view::propose(op, args, mesh, rules),
        Op::T | Op::Mm | Op::Addmm => matrix::propose(op, args, mesh),
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
        | Op::MaskedFill(_) => pointwise::propose(op, args, mesh),
        Op::Softmax { .. } | Op::SoftmaxBackward { .. } | Op::Sum { .. } | Op::Cumsum { .. } => {
            reduction::propose(op, args)
        }
        Op::Topk { .. } | Op::Sort { .. } => sort::propose(op, args, mesh),
        Op::Gather { .. } | Op::ScatterValue { .. } | Op::ScatterSrc { .. } | Op::ScatterAdd { .. } => {
            scatter_gather::propose(op, args, mesh, rules)
        }
        Op::ZerosLike(_) | Op::OnesLike(_) | Op::NewZeros { .. } => like::propose(op, args),
    }
}

/// Total cost of moving every input to the placements `s` asks for.
pub fn strategy_cost(s: &Strategy, args: &[Arg], mesh: &Mesh) -> f64 {
    s.ins
        .iter()
        .zip(args)
        .map(|(want, a)| redistribute_cost(mesh, &a.placements, want, &a.meta.shape, a.meta.dtype.itemsize()))
        .sum()
}

/// PyTorch's choice: filter (shardability for expanded rules, then the in-place rule), then take
/// the first strategy that needs no redistribution, else the first free one, else the cheapest.
pub fn select(op: &Op, p: &Proposal, args: &[Arg], mesh: &Mesh) -> Result<Strategy> {
    let mut cands: Vec<&Strategy> = p
        .strategies
        .iter()
        .filter(|s| {
            s.ins.iter().zip(args).all(|(pl, a)| match p.filter {
                Filter::None => true,
                Filter::All => layout::is_shardable(&a.meta.shape, mesh, pl),
                Filter::Redistributed => *pl == a.placements || layout::is_shardable(&a.meta.shape, mesh, pl),
            })
        })
        .collect();
    if op.is_inplace() {
        let cur = &args[0].placements;
        cands.retain(|s| &s.ins[0] == cur && &s.outs[0] == cur);
        if cands.is_empty() {
            return Err(DTensorError::InPlacePlacementChange { op: op.aten_name(), placements: cur.clone() });
        }
    }
    match cands.len() {
        0 => return Err(DTensorError::NoStrategy { op: op.aten_name() }),
        1 => return Ok(cands[0].clone()),
        _ => {}
    }
    if let Some(s) = cands.iter().find(|s| s.ins.iter().zip(args).all(|(want, a)| *want == a.placements)) {
        return Ok((*s).clone());
    }
    let costs: Vec<f64> = cands.iter().map(|s| strategy_cost(s, args, mesh)).collect();
    if let Some(i) = costs.iter().position(|&c| c == 0.0) {
        return Ok(cands[i].clone());
    }
    let mut best = 0;
    for (i, &c) in costs.iter().enumerate() {
        if c < costs[best] {
            best = i;
        }
    }
    Ok(cands[best].clone())
}

/// Normalises a possibly negative dim against `ndim`, with PyTorch's IndexError text.
pub fn norm_dim(dim: i64, ndim: usize) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Placement::*;

    #[test]
    fn expand_is_a_cartesian_product_with_first_mesh_dim_slowest() {
        let rows = [Row::replicate(1, 1), Row::new(&[Shard(0)], &[Shard(0)])];
        let s = expand(&rows, 2);
        let outs: Vec<Vec<Placement>> = s.iter().map(|s| s.outs[0].clone()).collect();
        assert_eq!(
            outs,
            vec![
                vec![Replicate, Replicate],
                vec![Replicate, Shard(0)],
                vec![Shard(0), Replicate],
                vec![Shard(0), Shard(0)]
            ]
        );
    }
}
