//! Reductions and scans (`_math_ops.py`). Each derives one strategy from its input:
//! - `sum(dims)`: a shard on a reduced dim becomes `Partial(sum)`; a shard on a kept dim is
//!   re-indexed (dims before it that were reduced away are dropped unless `keepdim`); an input
//!   `Partial(sum|avg)` passes through (the sum is linear), any other Partial is reduced first.
//! - `softmax(dim)`: the softmax dim cannot stay sharded, and no Partial survives a non-linear op:
//!   both are replicated first.
//! - `cumsum(dim)`: the scan dim is replicated and every Partial reduced first (PyTorch treats
//!   the scan as non-linear; VERIFIED on 2.12.1 and 2.13.0).

use super::{norm_dim, Arg, Proposal, Strategy};
use crate::dtensor::error::Result;
use crate::dtensor::meta::Meta;
use crate::dtensor::op::Op;
use crate::placement::{Placement, ReduceOp};

/// Input placements with the given dims (and, when `partials`, every Partial) replicated.
fn replicate_dims(ps: &[Placement], dims: &[usize], partials: bool) -> Vec<Placement> {
    ps.iter()
        .map(|&p| match p {
            Placement::Partial(_) if partials => Placement::Replicate,
            _ if p.shard_dim().is_some_and(|d| dims.contains(&(d as usize))) => Placement::Replicate,
            _ => p,
        })
        .collect()
}

pub fn propose(op: &Op, args: &[Arg]) -> Result<Proposal> {
    let a = &args[0];
    let nd = a.meta.ndim();
    match op {
        Op::Softmax { dim } => {
            let d = norm_dim(*dim, nd)?;
            let ps = if crate::dtensor::plant::active("softmax-keeps-shard") {
                a.placements.clone()
            } else {
                replicate_dims(&a.placements, &[d], true)
            };
            Ok(Proposal::single(vec![a.meta.clone()], Strategy { outs: vec![ps.clone()], ins: vec![ps] }))
        }
        // 2.12/2.13: one strategy, following the more sharded of grad and output, with the softmax
        // dim and every Partial replicated (`softmax_backward_strategy`).
        Op::SoftmaxBackward { dim, .. } => {
            let d = norm_dim(*dim, nd)?;
            let shards = |ps: &[Placement]| ps.iter().filter(|p| p.is_shard()).count();
            let follow = if shards(&args[0].placements) >= shards(&args[1].placements) { &args[0] } else { &args[1] };
            let ps = replicate_dims(&follow.placements, &[d], true);
            Ok(Proposal::single(vec![a.meta.clone()], Strategy { outs: vec![ps.clone()], ins: vec![ps.clone(), ps] }))
        }
        Op::Cumsum { dim, dtype } => {
            // A scan is not treated as linear: every Partial is reduced first (VERIFIED).
            let d = norm_dim(*dim, nd)?;
            let ins: Vec<Placement> = replicate_dims(&a.placements, &[d], true);
            let dt = dtype.unwrap_or(a.meta.dtype.sum_dtype());
            Ok(Proposal::single(
                vec![Meta::new(a.meta.shape.clone(), dt)],
                Strategy { outs: vec![ins.clone()], ins: vec![ins] },
            ))
        }
        Op::Sum { dims, keepdim } => {
            let mut rd: Vec<usize> = if dims.is_empty() {
                (0..nd).collect()
            } else {
                dims.iter().map(|&d| norm_dim(d, nd)).collect::<Result<_>>()?
            };
            rd.sort_unstable();
            rd.dedup();
            let ins: Vec<Placement> = a
                .placements
                .iter()
                .map(|&p| match p {
                    Placement::Partial(r) if !r.is_linear() => Placement::Replicate,
                    p => p,
                })
                .collect();
            let outs: Vec<Placement> = ins
                .iter()
                .map(|&p| match p.shard_dim() {
                    Some(d)
                        if rd.contains(&(d as usize)) && !crate::dtensor::plant::active("sum-shard-stays-shard") =>
                    {
                        Placement::Partial(ReduceOp::Sum)
                    }
                    Some(_) if crate::dtensor::plant::active("sum-shard-stays-shard") => Placement::Shard(0),
                    Some(d) if !keepdim => p.with_dim(d - rd.iter().filter(|&&r| r < d as usize).count() as i64),
                    _ => p,
                })
                .collect();
            let shape: Vec<usize> = (0..nd)
                .filter_map(|i| if rd.contains(&i) { keepdim.then_some(1) } else { Some(a.meta.shape[i]) })
                .collect();
            Ok(Proposal::single(
                vec![Meta::new(shape, a.meta.dtype.sum_dtype())],
                Strategy { outs: vec![outs], ins: vec![ins] },
            ))
        }
        _ => unreachable!("reduction::propose called for {op:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtensor::meta::DType;
    use crate::placement::Placement::*;

    fn arg(shape: &[usize], ps: &[Placement], dt: DType) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), dt), placements: ps.to_vec() }
    }

    #[test]
    fn counts_of_a_token_sharded_map_are_partial_int64() {
        let p = propose(
            &Op::Sum { dims: vec![0, 1], keepdim: false },
            &[arg(&[2, 4, 8], &[Replicate, Shard(1)], DType::Bool)],
        )
        .unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Replicate, Partial(ReduceOp::Sum)]);
        assert_eq!(p.out_metas[0], Meta::new(vec![8], DType::I64));
    }

    #[test]
    fn kept_shard_dims_are_reindexed() {
        let p =
            propose(&Op::Sum { dims: vec![0], keepdim: false }, &[arg(&[2, 4, 8], &[Shard(2)], DType::F32)]).unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Shard(1)]);
        let p =
            propose(&Op::Sum { dims: vec![-1], keepdim: true }, &[arg(&[2, 4, 3], &[Shard(1)], DType::F32)]).unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Shard(1)]);
        assert_eq!(p.out_metas[0].shape, vec![2, 4, 1]);
    }

    #[test]
    fn softmax_replicates_its_dim_and_partials() {
        let p = propose(&Op::Softmax { dim: -1 }, &[arg(&[2, 4, 8], &[Shard(2)], DType::F32)]).unwrap();
        assert_eq!(p.strategies[0].ins[0], vec![Replicate]);
        let p = propose(&Op::Softmax { dim: -1 }, &[arg(&[2, 4, 8], &[Shard(1)], DType::F32)]).unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Shard(1)]);
        let p = propose(&Op::Softmax { dim: -1 }, &[arg(&[2, 4, 8], &[Partial(ReduceOp::Sum)], DType::F32)]).unwrap();
        assert_eq!(p.strategies[0].ins[0], vec![Replicate]);
    }
}
