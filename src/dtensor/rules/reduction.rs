//! Reductions, scans and softmax (`_ops/_math_ops.py`).
//!
//! 2.12/2.13 derive one strategy from the input (`common_reduction_strategy`,
//! `softmax_strategy`, `softmax_backward_strategy`):
//! - `sum(dims)`: a Partial whose op is not "sum" makes the reduction non-linear, and then every
//!   Partial and every shard on a reduced dim is replicated first; otherwise the placements pass
//!   (a `_MaskPartial` too: its op is "sum", and the output keeps the same object). A shard on a
//!   reduced dim becomes P(sum), one on a kept dim is re-indexed.
//! - `cumsum(dim)`: non-linear: every Partial and a shard on `dim` are replicated. PyTorch
//!   compares shard dims with `dim` as passed, so a negative dim matches nothing.
//! - `_softmax(dim)`: the softmax dim and every Partial are replicated; the backward follows the
//!   more sharded (`num_shards`) of grad and output, replicated the same way.
//!
//! 2.14 re-registered all of them as single-dim strategies with `allow_uneven_sharding=True`
//! (torch214-audit.md §1): `_shard_except_dim_strategy` rows `[Ph(d)]*n` for every d except the
//! active dim (softmax, its backward, cumsum, plus `[P(sum)]*2`, `[P(avg)]*2` for cumsum), and
//! `_reduction_single_dim_strategy` for sum. Being cost-based they can move a shard to another
//! mesh dim (golden 12) or reduce-scatter a Partial.

use super::rulesets::Family;
use super::single_dim::{p, single_dim, Ph, Row};
use super::{norm_dim, num_shards, Arg, Proposal, RuleSet, Strategy};
use crate::error::Result;
use crate::meta::Meta;
use crate::op::Op;
use placement::{Mesh, Placement, ReduceOp};

/// `replicate_reduction_dims`: every Partial, and every shard of one of `dims`, replicated.
fn replicate_dims(ps: &[Placement], dims: &[i64]) -> Vec<Placement> {
    ps.iter()
        .map(|&p| match p.shard_dim() {
            _ if p.is_partial() => Placement::Replicate,
            Some(d) if dims.contains(&d) => Placement::Replicate,
            _ => p,
        })
        .collect()
}

/// `_shard_except_dim_strategy`: every dim but `active` may be sharded, on all places alike.
fn shard_except(nd: usize, active: usize, n_out: usize, n_in: usize) -> Vec<Row> {
    let keep = crate::plant::active("softmax-keeps-shard");
    (0..nd).filter(|&d| d != active || keep).map(|d| Row::new(&vec![Ph(d); n_out], &vec![Ph(d); n_in])).collect()
}

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let a = &args[0];
    let nd = a.meta.ndim();
    match op {
        Op::Softmax { dim } => {
            let d = norm_dim(*dim, nd)?;
            if rules.single_dim(Family::Softmax) {
                let rows = shard_except(nd, d, 1, 1);
                return Ok(Proposal::expanded(vec![a.meta.clone()], single_dim(&rows, 1, args, mesh.ndim()), true));
            }
            let ps = if crate::plant::active("softmax-keeps-shard") {
                a.placements.clone()
            } else {
                replicate_dims(&a.placements, &[d as i64])
            };
            Ok(Proposal::single(vec![a.meta.clone()], Strategy { outs: vec![ps.clone()], ins: vec![ps] }))
        }
        Op::SoftmaxBackward { dim, input_dtype } => {
            let d = norm_dim(*dim, nd)?;
            let meta = Meta::new(a.meta.shape.clone(), *input_dtype);
            if rules.single_dim(Family::Softmax) {
                let rows = shard_except(nd, d, 1, 2);
                return Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, args, mesh.ndim()), true));
            }
            let (g, o) = (&args[0].placements, &args[1].placements);
            let follow = if num_shards(mesh, g) >= num_shards(mesh, o) { g } else { o };
            let ps = replicate_dims(follow, &[d as i64]);
            Ok(Proposal::single(vec![meta], Strategy { outs: vec![ps.clone()], ins: vec![ps.clone(), ps] }))
        }
        Op::Cumsum { dim, dtype } => {
            let meta = Meta::new(a.meta.shape.clone(), dtype.unwrap_or(a.meta.dtype.sum_dtype()));
            let d = norm_dim(*dim, nd)?;
            if rules.single_dim(Family::Cumsum) {
                let mut rows = shard_except(nd, d, 1, 1);
                // A prefix sum is linear: pending sums and averages pass through.
                rows.push(Row::new(&[p(ReduceOp::Sum)], &[p(ReduceOp::Sum)]));
                rows.push(Row::new(&[p(ReduceOp::Avg)], &[p(ReduceOp::Avg)]));
                return Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, args, mesh.ndim()), true));
            }
            let ins = replicate_dims(&a.placements, &[*dim]);
            let outs = after_reduction(&ins, &[*dim], &(0..nd).map(Some).collect::<Vec<_>>());
            Ok(Proposal::single(vec![meta], Strategy { outs: vec![outs], ins: vec![ins] }))
        }
        Op::Sum { dims, keepdim } => sum(a, dims, *keepdim, mesh, rules),
        _ => unreachable!("reduction::propose called for {op:?}"),
    }
}

/// `map_placements_after_reduction`: a shard on a reduced (or vanished) dim becomes P(sum), one
/// on a kept dim moves to its new index; Replicate and Partials pass.
fn after_reduction(ps: &[Placement], reduced: &[i64], map: &[Option<usize>]) -> Vec<Placement> {
    ps.iter()
        .map(|&p| match p.shard_dim() {
            Some(_) if crate::plant::active("sum-shard-stays-shard") => Placement::Shard(0),
            Some(d) => match map[d as usize] {
                Some(nd) if !reduced.contains(&d) => p.with_dim(nd as i64),
                _ => Placement::Partial(ReduceOp::Sum),
            },
            None => p,
        })
        .collect()
}

fn sum(a: &Arg, dims: &[i64], keepdim: bool, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let nd = a.meta.ndim();
    let mut rd: Vec<usize> = if dims.is_empty() {
        (0..nd).collect()
    } else {
        dims.iter().map(|&d| norm_dim(d, nd)).collect::<Result<_>>()?
    };
    rd.sort_unstable();
    rd.dedup();
    let shape: Vec<usize> =
        (0..nd).filter_map(|i| if rd.contains(&i) { keepdim.then_some(1) } else { Some(a.meta.shape[i]) }).collect();
    let meta = Meta::new(shape, a.meta.dtype.sum_dtype());
    // Input dim -> output dim (`_infer_reduce_dims_map`).
    let mut map = Vec::with_capacity(nd);
    let mut next = 0;
    for i in 0..nd {
        if rd.contains(&i) && !keepdim {
            map.push(None);
        } else {
            map.push(Some(next));
            next += 1;
        }
    }
    if rules.single_dim(Family::Sum) {
        let rows: Vec<Row> = (0..nd)
            .map(|d| match map[d] {
                _ if rd.contains(&d) && crate::plant::active("sum-shard-stays-shard") => Row::new(&[Ph(0)], &[Ph(d)]),
                // A shard on a reduced dim leaves each rank a partial sum.
                _ if rd.contains(&d) => Row::new(&[p(ReduceOp::Sum)], &[Ph(d)]),
                // A shard on a kept dim is a shard of the result.
                Some(o) => Row::new(&[Ph(o)], &[Ph(d)]),
                None => unreachable!("only reduced dims vanish"),
            })
            // Sums of pending sums are pending sums.
            .chain(std::iter::once(Row::new(&[p(ReduceOp::Sum)], &[p(ReduceOp::Sum)])))
            .collect();
        return Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, std::slice::from_ref(a), mesh.ndim()), true));
    }
    let rd_i: Vec<i64> = rd.iter().map(|&d| d as i64).collect();
    let linear = a.placements.iter().all(|p| p.reduce_op().is_none_or(|op| op == ReduceOp::Sum));
    let ins = if linear { a.placements.clone() } else { replicate_dims(&a.placements, &rd_i) };
    let outs = after_reduction(&ins, &rd_i, &map);
    Ok(Proposal::single(vec![meta], Strategy { outs: vec![outs], ins: vec![ins] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DType;
    use placement::Placement::*;

    fn arg(shape: &[usize], ps: &[Placement], dt: DType) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), dt), placements: ps.to_vec() }
    }

    fn propose(op: &Op, args: &[Arg]) -> Result<Proposal> {
        let mesh = match args[0].placements.len() {
            1 => Mesh::tp(2),
            _ => Mesh::new(vec![1, 2], vec!["dp".into(), "tp".into()]).unwrap(),
        };
        super::propose(op, args, &mesh, RuleSet::Torch213)
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

    use crate::rules::testing::{arg as targ, moves, pick};

    const PS: Placement = Partial(ReduceOp::Sum);

    fn outs(op: Op, args: &[Arg], rules: RuleSet) -> Vec<Placement> {
        pick(&op, args, rules).unwrap().outs[0].clone()
    }

    /// backward-rules.md §3.3 `_softmax_backward_data` (out_ops.*): one candidate following the
    /// more sharded input in 2.12/2.13, cost-based single-dim in 2.14.
    #[test]
    fn softmax_backward_by_release() {
        let op = Op::SoftmaxBackward { dim: -1, input_dtype: DType::F32 };
        let two = |g: &[Placement], o: &[Placement]| [targ(&[4, 8], g), targ(&[4, 8], o)];
        for rules in RuleSet::ALL.iter().copied() {
            let new = rules >= RuleSet::Torch214;
            assert_eq!(outs(op.clone(), &two(&[PS], &[Replicate]), rules), vec![Replicate]);
            assert_eq!(outs(op.clone(), &two(&[PS], &[Shard(0)]), rules), vec![Shard(0)]);
            assert_eq!(outs(op.clone(), &two(&[Replicate], &[Shard(1)]), rules), vec![Replicate]);
            let want = if new { vec![Shard(0)] } else { vec![Replicate] };
            assert_eq!(outs(op.clone(), &two(&[PS], &[Shard(1)]), rules), want, "{rules} g P out S(1)");
            assert_eq!(outs(op.clone(), &two(&[Shard(1)], &[Shard(0)]), rules), want, "{rules} g S(1) out S(0)");
            let g = [targ(&[2, 4, 8], &[Shard(0), PS]), targ(&[2, 4, 8], &[Shard(0), Replicate])];
            let want = if new { vec![Shard(0), Shard(1)] } else { vec![Shard(0), Replicate] };
            assert_eq!(outs(op.clone(), &g, rules), want, "{rules} 2x2");
        }
    }

    /// torch214-audit.md §2.1 (out_special.*): softmax over dim 2 of a (2,2,4) on 2x2.
    #[test]
    fn softmax_2_14_moves_the_shard() {
        let op = Op::Softmax { dim: -1 };
        for rules in RuleSet::ALL.iter().copied() {
            let new = rules >= RuleSet::Torch214;
            let a = [targ(&[2, 2, 4], &[Shard(2), Replicate])];
            let want = if new { vec![Replicate, Shard(0)] } else { vec![Replicate, Replicate] };
            assert_eq!(outs(op.clone(), &a, rules), want, "{rules} golden 12");
            let a = [targ(&[2, 2, 4], &[Shard(0), PS])];
            let want = if new { vec![Shard(0), Shard(1)] } else { vec![Shard(0), Replicate] };
            assert_eq!(outs(op.clone(), &a, rules), want, "{rules} [S(0), P]");
            assert_eq!(
                outs(op.clone(), &[targ(&[2, 2, 4], &[Replicate, Shard(2)])], rules),
                vec![Replicate, Replicate]
            );
            assert_eq!(outs(op.clone(), &[targ(&[2, 2, 4], &[Shard(2), Shard(0)])], rules), vec![Replicate, Shard(0)]);
            assert_eq!(outs(op.clone(), &[targ(&[1, 8], &[Shard(0)])], rules), vec![Shard(0)], "(1,E) S(0) kept");
        }
    }

    /// torch214-audit.md §2.2: `sum` passes a `_MaskPartial` (op "sum") through in 2.12/2.13 as
    /// the same object, and reduces it in 2.14 (MaskP -> P(sum) costs inf). A Partial of another
    /// op makes the sum non-linear: every Partial and reduced shard is replicated first.
    #[test]
    fn sum_partials_by_release() {
        let op = Op::Sum { dims: vec![-1], keepdim: true };
        let mask = MaskPartial { id: 7, dim: 2, size: 4 };
        for rules in RuleSet::ALL.iter().copied() {
            let a = [targ(&[1, 2, 1], &[mask])];
            let s = pick(&op, &a, rules).unwrap();
            if rules >= RuleSet::Torch214 {
                assert_eq!((s.outs[0].clone(), moves(&s, &a).len()), (vec![Replicate], 1));
            } else {
                assert_eq!((s.outs[0].clone(), moves(&s, &a).len()), (vec![mask], 0));
            }
            assert_eq!(outs(op.clone(), &[targ(&[2, 4, 2], &[Partial(ReduceOp::Max)])], rules), vec![Replicate]);
            assert_eq!(outs(op.clone(), &[targ(&[2, 4, 2], &[Shard(2)])], rules), vec![PS]);
            let counts = Op::Sum { dims: vec![0, 1], keepdim: false };
            assert_eq!(outs(counts.clone(), &[targ(&[2, 4, 8], &[Shard(2)])], rules), vec![Shard(0)]);
            assert_eq!(outs(counts, &[targ(&[2, 4, 8], &[Shard(1)])], rules), vec![PS]);
        }
        // 2.12/2.13: P(avg) is not the sum's op, so the shard on the reduced dim is replicated too.
        let a = [targ(&[2, 4, 2], &[Partial(ReduceOp::Avg), Shard(2)])];
        assert_eq!(outs(op, &a, RuleSet::Torch213), vec![Replicate, Replicate]);
    }

    /// torch214-audit.md §1 cumsum (out_fwd.*) and a real 2.12.1/2.13.0 check: `scan_strategy`
    /// compares shard dims with the dim as passed, so `cumsum(-1)` keeps a shard on the last dim
    /// (and sums each shard on its own); 2.14 replicates it, keeps P(sum), and may move a shard.
    #[test]
    fn cumsum_by_release() {
        for rules in RuleSet::ALL.iter().copied() {
            let new = rules >= RuleSet::Torch214;
            let p = [targ(&[8], &[PS])];
            assert_eq!(
                outs(Op::Cumsum { dim: 0, dtype: None }, &p, rules),
                if new { vec![PS] } else { vec![Replicate] }
            );
            let a = [targ(&[2, 2, 4], &[Shard(2), Replicate])];
            let want = if new { vec![Replicate, Shard(0)] } else { vec![Replicate, Replicate] };
            assert_eq!(outs(Op::Cumsum { dim: 2, dtype: None }, &a, rules), want);
            let a = [targ(&[2, 5], &[Shard(1)])];
            let want = if new { vec![Replicate] } else { vec![Shard(1)] };
            assert_eq!(outs(Op::Cumsum { dim: -1, dtype: None }, &a, rules), want, "{rules} cumsum(-1)");
            assert_eq!(outs(Op::Cumsum { dim: 1, dtype: None }, &a, rules), vec![Replicate]);
        }
    }
}
