//! Pointwise ops (`_ops/_pointwise_ops.py`, byte-identical in 2.12.1, 2.13.0 and 2.14.0; `_to_copy`
//! in `_ops/_tensor_ops.py`): single-dim strategies with `allow_uneven_sharding=True`.
//!
//! Rows `[out, in...]` for one mesh dim, after the inserted all-R:
//! - `Ph(d)` on every output dim d, each tensor input `Ph` of the dim it broadcasts to d from, or
//!   R where it broadcasts (`_common_pointwise_single_dim_strategy`); with no shard kind among
//!   the inputs these disappear, so a Partial input can only be reduced to Replicate;
//! - the op's Partial rows ([`partial_rows`]), kept only when their length fits the number of
//!   tensor arguments (so `x + 1e-20`, one tensor, gets none of add's three-place rows, while
//!   `x * 2.5` gets mul's two-place ones).
//!
//! Tag-discovered ops with no special rules (sigmoid_backward, masked_fill) have no Partial
//! rows at all.

use super::single_dim::{p, single_dim, Cell, Ph, Row, R};
use super::{Arg, Proposal, RuleSet};
use crate::error::{DTensorError, Result};
use crate::meta::{torch_size, DType, Meta};
use crate::op::Op;
use placement::{Mesh, ReduceOp};

/// `_partial_needs_reduce_for_dtype_cast`: whether a Partial of `op` must be reduced before the
/// cast (a cast to bool, or a sum/avg/product cast from float to an integer type).
fn cast_needs_reduce(op: ReduceOp, src: DType, dst: DType) -> bool {
    if src == dst {
        return false;
    }
    if dst == DType::Bool {
        return true;
    }
    if matches!(op, ReduceOp::Max | ReduceOp::Min) {
        return false;
    }
    src.is_float() && !dst.is_float()
}

/// Partial rows of an op `[out, in...]`, in PyTorch's order (each list names its upstream table).
fn partial_rows(op: &Op, args: &[Arg], rules: RuleSet) -> Vec<Row> {
    use ReduceOp::*;
    let row = |o: ReduceOp, ins: &[Cell]| Row::new(&[p(o)], ins);
    match op {
        // `_to_copy`: a cast commutes with each reduction it does not need reduced first;
        // 2.14 dropped product (`_PARTIAL_PASS_THROUGH_REDUCE_OPS`).
        Op::ToDtype(dst) => {
            let mut ops = vec![Sum, Avg, Min, Max];
            if rules.to_copy_passes_product() {
                ops.push(Product);
            }
            ops.into_iter()
                .filter(|&o| !cast_needs_reduce(o, args[0].meta.dtype, *dst))
                .map(|o| row(o, &[p(o)]))
                .collect()
        }
        // `_UNARY_LINEAR_RULES` (mul/div by a Python scalar): scaling commutes with sum and avg.
        Op::MulScalar(_) | Op::DivScalar(_) => vec![row(Sum, &[p(Sum)]), row(Avg, &[p(Avg)])],
        // `_NEG_RULES`: linear (sum, avg), and decreasing (-max = min of -, -min = max of -).
        Op::Neg => vec![row(Sum, &[p(Sum)]), row(Avg, &[p(Avg)]), row(Min, &[p(Max)]), row(Max, &[p(Min)])],
        // `_NON_DECREASING_RULES`: f(max_i x_i) = max_i f(x_i), likewise min.
        Op::Sigmoid => vec![row(Max, &[p(Max)]), row(Min, &[p(Min)])],
        // `_BINARY_ADDITIVE_RULES`: sums and avgs add up; a replicated addend keeps avg, max, min
        // (not sum: it would be added once per rank); R + P(avg) holds for any alpha.
        Op::Add | Op::Sub => vec![
            row(Sum, &[p(Sum), p(Sum)]),
            row(Avg, &[p(Avg), p(Avg)]),
            row(Avg, &[p(Avg), R]),
            row(Max, &[p(Max), R]),
            row(Min, &[p(Min), R]),
            row(Avg, &[R, p(Avg)]),
        ],
        // `_MUL_RULES`: a product is linear in either factor with the other replicated.
        Op::Mul => vec![row(Sum, &[p(Sum), R]), row(Avg, &[p(Avg), R]), row(Sum, &[R, p(Sum)]), row(Avg, &[R, p(Avg)])],
        // `_DIV_RULES`: linear in the numerator only.
        Op::Div => vec![row(Sum, &[p(Sum), R]), row(Avg, &[p(Avg), R])],
        _ => vec![],
    }
}

/// Broadcast shape as TensorIterator computes it (add, mul, ...), with its error text.
pub(crate) fn broadcast_iter(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let n = a.len().max(b.len());
    let mut out = vec![1; n];
    for i in 0..n {
        let da = if i + a.len() >= n { a[i + a.len() - n] } else { 1 };
        let db = if i + b.len() >= n { b[i + b.len() - n] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(DTensorError::Shape(format!(
                "The size of tensor a ({da}) must match the size of tensor b ({db}) at non-singleton dimension {i}"
            )));
        };
    }
    Ok(out)
}

/// `torch._refs._broadcast_shapes`, the shape check behind masked_fill's meta function.
pub(crate) fn broadcast_refs(shapes: &[&[usize]]) -> Result<Vec<usize>> {
    let n = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut common = vec![1usize; n];
    for (arg, s) in shapes.iter().enumerate() {
        for k in 1..=s.len() {
            let (ci, si) = (n - k, s.len() - k);
            if common[ci] == 1 {
                common[ci] = s[si];
            } else if s[si] != 1 && common[ci] != s[si] {
                let list: Vec<String> = common.iter().map(|d| d.to_string()).collect();
                return Err(DTensorError::Shape(format!(
                    "Attempting to broadcast a dimension of length {} at -{k}! Mismatching argument at index {arg} had {}; but expected shape should be broadcastable to [{}]",
                    s[si],
                    torch_size(s),
                    list.join(", ")
                )));
            }
        }
    }
    Ok(common)
}

/// For each output dim, the input dim it reads without broadcasting (PyTorch's
/// `infer_broadcast_dims_map`), or None.
fn dims_map(common: &[usize], input: &[usize]) -> Vec<Option<usize>> {
    let mut m = vec![None; common.len()];
    for k in 1..=input.len() {
        if input[input.len() - k] == common[common.len() - k] {
            m[common.len() - k] = Some(input.len() - k);
        }
    }
    m
}

fn out_dtype(op: &Op, args: &[Arg]) -> DType {
    match op {
        Op::ToDtype(d) => *d,
        Op::Sigmoid if !args[0].meta.dtype.is_float() => DType::F32,
        Op::Div | Op::DivScalar(_) if !args[0].meta.dtype.is_float() => DType::F32,
        Op::Add | Op::Sub | Op::Mul | Op::Div => {
            let (a, b) = (args[0].meta.dtype, args[1].meta.dtype);
            // Type promotion for the pairs the router meets: the wider float wins.
            match (a.is_float(), b.is_float()) {
                (true, false) => a,
                (false, true) => b,
                _ if a.itemsize() >= b.itemsize() => a,
                _ => b,
            }
        }
        _ => args[0].meta.dtype,
    }
}

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let shapes: Vec<&[usize]> = args.iter().map(|a| a.meta.shape.as_slice()).collect();
    let common = match op {
        Op::MaskedFill(_) => {
            if args[1].meta.dtype != DType::Bool {
                return Err(DTensorError::Shape(format!(
                    "masked_fill_ only supports boolean masks, but got mask with dtype {}",
                    args[1].meta.dtype.torch_name().trim_start_matches("torch.")
                )));
            }
            // The meta function broadcasts (mask, value, self) in that order.
            let c = broadcast_refs(&[shapes[1], &[], shapes[0]])?;
            if c != args[0].meta.shape {
                return Err(DTensorError::Shape(format!(
                    "masked_fill_ only supports boolean masks broadcastable to self: mask {} vs self {}",
                    torch_size(&args[1].meta.shape),
                    torch_size(&args[0].meta.shape)
                )));
            }
            c
        }
        _ if args.len() == 2 => broadcast_iter(shapes[0], shapes[1])?,
        _ => args[0].meta.shape.clone(),
    };
    let maps: Vec<Vec<Option<usize>>> = args.iter().map(|a| dims_map(&common, &a.meta.shape)).collect();

    let mut rows: Vec<Row> = (0..common.len())
        .map(|d| {
            // Output dim d: every input shards the dim it reads d from, or is replicated where
            // it broadcasts.
            let ins: Vec<Cell> = maps.iter().map(|m| m[d].map_or(R, Ph)).collect();
            Row::new(&[Ph(d)], &ins)
        })
        .collect();
    rows.extend(partial_rows(op, args, rules));
    let meta = Meta::new(common, out_dtype(op, args));
    Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, args, mesh.ndim()), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::{select, Strategy};
    use placement::{Placement, Placement::*, ReduceOp};

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    fn pick(op: Op, args: &[Arg], mesh: &Mesh) -> Strategy {
        pick_in(op, args, mesh, RuleSet::Torch213)
    }

    fn pick_in(op: Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Strategy {
        select(&op, &crate::rules::propose(&op, args, mesh, rules).unwrap(), args, mesh).unwrap()
    }

    #[test]
    fn bias_add_matches_pytorch() {
        let m = Mesh::tp(2);
        let s = pick(Op::Add, &[arg(&[2, 4, 8], &[Shard(1)]), arg(&[8], &[Replicate])], &m);
        assert_eq!((s.outs[0].clone(), s.ins[1].clone()), (vec![Shard(1)], vec![Replicate]));
        // A sharded bias on replicated scores: scores are chunked for free, output S(2).
        let s = pick(Op::Add, &[arg(&[2, 4, 8], &[Replicate]), arg(&[8], &[Shard(0)])], &m);
        assert_eq!(s.outs[0], vec![Shard(2)]);
        // R + P(sum): the replicated side is partitioned (free), output P(sum).
        let p = Partial(ReduceOp::Sum);
        let s = pick(Op::Add, &[arg(&[2, 4, 8], &[Replicate]), arg(&[8], &[p])], &m);
        assert_eq!(s.outs[0], vec![p]);
        // S(2) + P(sum): the bias is reduce-scattered.
        let s = pick(Op::Add, &[arg(&[2, 4, 8], &[Shard(2)]), arg(&[8], &[p])], &m);
        assert_eq!((s.outs[0].clone(), s.ins[1].clone()), (vec![Shard(2)], vec![Shard(0)]));
    }

    #[test]
    fn partial_handling_matches_pytorch() {
        let m = Mesh::tp(2);
        let (sum, max) = (Partial(ReduceOp::Sum), Partial(ReduceOp::Max));
        assert_eq!(pick(Op::MulScalar(2.5), &[arg(&[4], &[sum])], &m).outs[0], vec![sum]);
        assert_eq!(pick(Op::Sigmoid, &[arg(&[4], &[sum])], &m).outs[0], vec![Replicate]);
        assert_eq!(pick(Op::Sigmoid, &[arg(&[4], &[max])], &m).outs[0], vec![max]);
        assert_eq!(pick(Op::AddScalar(1e-20), &[arg(&[4], &[sum])], &m).outs[0], vec![Replicate]);
        // With a shard elsewhere on the mesh, a partial is reduce-scattered instead.
        let m2 = Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap();
        assert_eq!(pick(Op::Sigmoid, &[arg(&[2, 4, 8], &[sum, Shard(1)])], &m2).outs[0], vec![Shard(0), Shard(1)]);
    }

    #[test]
    fn masked_fill_keeps_a_short_shard_and_moves_the_smaller_operand() {
        let m = Mesh::tp(2);
        let mut mask = arg(&[2, 1, 4, 1], &[Shard(1)]);
        mask.meta.dtype = DType::Bool;
        let s = pick(Op::MaskedFill(f64::NEG_INFINITY), &[arg(&[2, 1, 4, 2], &[Shard(1)]), mask], &m);
        assert_eq!(s.outs[0], vec![Shard(1)]);
        let mut mask = arg(&[2, 4, 4, 1], &[Shard(1)]);
        mask.meta.dtype = DType::Bool;
        let s = pick(Op::MaskedFill(f64::NEG_INFINITY), &[arg(&[2, 4, 4, 2], &[Shard(0)]), mask], &m);
        assert_eq!((s.outs[0].clone(), s.ins[1].clone()), (vec![Shard(0)], vec![Shard(0)]));
    }

    #[test]
    fn refs_broadcast_error_text() {
        let e = broadcast_refs(&[&[2, 6, 4, 1], &[], &[2, 5, 4, 2]]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Attempting to broadcast a dimension of length 5 at -3! Mismatching argument at index 2 had torch.Size([2, 5, 4, 2]); but expected shape should be broadcastable to [2, 6, 4, 2]"
        );
        assert_eq!(broadcast_iter(&[2, 4, 8], &[8]).unwrap(), vec![2, 4, 8]);
        assert!(broadcast_iter(&[2, 4, 8], &[3]).is_err());
    }

    use crate::rules::testing::{arg as targ, moves, pick as tpick};

    const PS: Placement = Partial(ReduceOp::Sum);

    /// backward-rules.md §3.3 (out_ops.*, the same in 2.12.1, 2.13.0 and 2.14.0): the Partial
    /// rows of the arithmetic the router's backward runs, on a 1-D mesh of 2.
    #[test]
    fn backward_arithmetic_partials() {
        let (b, bk, b1) = ([2, 4, 2], [2, 4, 2], [2, 4, 1]);
        for rules in RuleSet::ALL.iter().copied() {
            let run = |op: Op, args: &[Arg]| {
                let s = tpick(&op, args, rules).unwrap();
                (s.outs[0].clone(), moves(&s, args))
            };
            // mul(P, S(0)): the Partial is reduce-scattered onto the shard.
            let (o, mv) = run(Op::Mul, &[targ(&b, &[PS]), targ(&b, &[Shard(0)])]);
            assert_eq!((o, mv), (vec![Shard(0)], vec![(0, vec![PS], vec![Shard(0)])]));
            // mul(P, P): one operand is all-reduced, the product stays P.
            let (o, mv) = run(Op::Mul, &[targ(&b, &[PS]), targ(&b, &[PS])]);
            assert_eq!((o, mv), (vec![PS], vec![(1, vec![PS], vec![Replicate])]));
            // div(P, S(0) denominator): cheaper to gather the small denominator.
            let (o, mv) = run(Op::Div, &[targ(&bk, &[PS]), targ(&b1, &[Shard(0)])]);
            assert_eq!((o, mv), (vec![PS], vec![(1, vec![Shard(0)], vec![Replicate])]));
            // div(R, P): only a numerator may be pending.
            let (o, mv) = run(Op::Div, &[targ(&bk, &[Replicate]), targ(&b1, &[PS])]);
            assert_eq!((o, mv), (vec![Replicate], vec![(1, vec![PS], vec![Replicate])]));
            // add(P, R) and add(R, P): the replicated side is partitioned locally, no comm.
            let (o, mv) = run(Op::Add, &[targ(&b, &[PS]), targ(&b, &[Replicate])]);
            assert_eq!((o, mv), (vec![PS], vec![(1, vec![Replicate], vec![PS])]));
            let (o, _) = run(Op::Add, &[targ(&b, &[Replicate]), targ(&b, &[PS])]);
            assert_eq!(o, vec![PS]);
            // neg keeps sums and swaps max with min.
            assert_eq!(run(Op::Neg, &[targ(&b, &[PS])]).0, vec![PS]);
            assert_eq!(run(Op::Neg, &[targ(&b, &[Partial(ReduceOp::Max)])]).0, vec![Partial(ReduceOp::Min)]);
            // sigmoid_backward has no Partial rows: a P grad is reduced (scattered onto a shard).
            let (o, mv) = run(Op::SigmoidBackward, &[targ(&b, &[PS]), targ(&b, &[Replicate])]);
            assert_eq!((o, mv), (vec![Replicate], vec![(0, vec![PS], vec![Replicate])]));
            let (o, _) = run(Op::SigmoidBackward, &[targ(&b, &[PS]), targ(&b, &[Shard(0)])]);
            assert_eq!(o, vec![Shard(0)]);
            // 2x2: g [S(0), P], out [S(0), R] -> [S(0), S(1)] by one reduce_scatter.
            let (o, _) = run(
                Op::SigmoidBackward,
                &[targ(&[2, 4, 8], &[Shard(0), PS]), targ(&[2, 4, 8], &[Shard(0), Replicate])],
            );
            assert_eq!(o, vec![Shard(0), Shard(1)]);
        }
    }

    /// `_to_copy`'s Partial rows (P213 `_tensor_ops.py` all of `ALL_REDUCE_OPS`, P214 sum/avg/min/
    /// max only); a cast to bool reduces every Partial, a float-to-int cast reduces sums.
    #[test]
    fn to_copy_partials_by_release() {
        let prod = Partial(ReduceOp::Product);
        for rules in RuleSet::ALL.iter().copied() {
            let s = tpick(&Op::ToDtype(DType::BF16), &[targ(&[4, 8], &[prod])], rules).unwrap();
            let want = if rules >= RuleSet::Torch214 { vec![Replicate] } else { vec![prod] };
            assert_eq!(s.outs[0], want, "{rules}");
            let s = tpick(&Op::ToDtype(DType::Bool), &[targ(&[4, 8], &[Partial(ReduceOp::Max)])], rules).unwrap();
            assert_eq!(s.outs[0], vec![Replicate]);
            let s = tpick(&Op::ToDtype(DType::I64), &[targ(&[4, 8], &[Partial(ReduceOp::Max)])], rules).unwrap();
            assert_eq!(s.outs[0], vec![Partial(ReduceOp::Max)]);
            let s = tpick(&Op::ToDtype(DType::I64), &[targ(&[4, 8], &[PS])], rules).unwrap();
            assert_eq!(s.outs[0], vec![Replicate]);
        }
    }
}
