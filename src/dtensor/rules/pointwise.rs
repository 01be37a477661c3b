//! Pointwise ops (`_pointwise_ops.py`): single-mesh-dim rules, expanded over the mesh and
//! chosen by cost like any other rule (VERIFIED on 2.12.1 and 2.13.0, docs/pytorch-facts.md §3-4).
//!
//! Rows `[out, in...]` for one mesh dim:
//! - all Replicate;
//! - `Shard(d)` on every output dim d, each input sharded on the dim it broadcasts to d from
//!   (Replicate where it broadcasts): offered only for the shard kinds present among the inputs
//!   (`Shard`, or `_StridedShard(sf)` for each split factor present), so with no shard anywhere a
//!   Partial input can only be reduced to Replicate;
//! - Partial rows, by what the op is linear or monotone in ([`partial_rows`]).

use super::{expand, Arg, Proposal, Row};
use crate::dtensor::error::{DTensorError, Result};
use crate::dtensor::meta::{torch_size, DType, Meta};
use crate::dtensor::op::Op;
use crate::placement::{Mesh, Placement, ReduceOp};

/// Partial rows of an op, `[out, in...]`, each with why it holds.
fn partial_rows(op: &Op) -> Vec<Row> {
    use Placement::Partial as P;
    use Placement::Replicate as R;
    use ReduceOp::*;
    let mut rows = Vec::new();
    let mut push = |o: Placement, ins: &[Placement]| rows.push(Row::new(&[o], ins));
    match op {
        // A dtype cast commutes with every reduction (up to rounding).
        Op::ToDtype(_) => {
            for r in [Sum, Avg, Max, Min] {
                push(P(r), &[P(r)]);
            }
        }
        // Scaling by a constant commutes with sum and avg (not with max: the scale may be negative).
        Op::MulScalar(_) | Op::DivScalar(_) => {
            for r in [Sum, Avg] {
                push(P(r), &[P(r)]);
            }
        }
        // Linear and decreasing: -sum = sum of -, -max = min of -.
        Op::Neg => {
            for r in [Sum, Avg] {
                push(P(r), &[P(r)]);
            }
            push(P(Min), &[P(Max)]);
            push(P(Max), &[P(Min)]);
        }
        // Non-decreasing: f(max_i x_i) = max_i f(x_i), likewise min.
        Op::Sigmoid => {
            for r in [Max, Min] {
                push(P(r), &[P(r)]);
            }
        }
        // sum_i a_i + sum_i b_i = sum_i (a_i + b_i), avg likewise; avg_i a_i + c = avg_i (a_i + c);
        // max_i a_i + c = max_i (a_i + c).
        Op::Add | Op::Sub => {
            for r in [Sum, Avg] {
                push(P(r), &[P(r), P(r)]);
            }
            push(P(Avg), &[P(Avg), R]);
            push(P(Avg), &[R, P(Avg)]);
            for r in [Max, Min] {
                push(P(r), &[P(r), R]);
                if matches!(op, Op::Add) {
                    push(P(r), &[R, P(r)]);
                }
            }
        }
        // (sum_i a_i) * c = sum_i (a_i * c): one side partial, the other replicated.
        Op::Mul => {
            for r in [Sum, Avg] {
                push(P(r), &[P(r), R]);
                push(P(r), &[R, P(r)]);
            }
        }
        // Only the numerator may be partial.
        Op::Div => {
            for r in [Sum, Avg] {
                push(P(r), &[P(r), R]);
            }
        }
        // Adding a Python scalar to a partial would add it once per rank (pytorch#163193);
        // masked_fill is not linear.
        _ => {}
    }
    rows
}

/// Broadcast shape as TensorIterator computes it (add, mul, ...), with its error text.
pub fn broadcast_iter(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
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
pub fn broadcast_refs(shapes: &[&[usize]]) -> Result<Vec<usize>> {
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

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh) -> Result<Proposal> {
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

    // Shard kinds present among the inputs.
    let mut kinds: Vec<Placement> = Vec::new();
    for p in args.iter().flat_map(|a| &a.placements) {
        let k = match *p {
            Placement::Shard(_) => Placement::Shard(0),
            Placement::StridedShard { sf, .. } => Placement::StridedShard { dim: 0, sf },
            _ => continue,
        };
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let mut rows = vec![Row::replicate(1, args.len())];
    for k in &kinds {
        for d in 0..common.len() {
            let ins: Vec<Placement> =
                maps.iter().map(|m| m[d].map_or(Placement::Replicate, |i| k.with_dim(i as i64))).collect();
            rows.push(Row::new(&[k.with_dim(d as i64)], &ins));
        }
    }
    rows.extend(partial_rows(op));
    Ok(Proposal {
        out_metas: vec![Meta::new(common, out_dtype(op, args))],
        strategies: expand(&rows, mesh.ndim()),
        filter: super::Filter::Redistributed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtensor::rules::{select, Strategy};
    use crate::placement::{Placement::*, ReduceOp};

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    fn pick(op: Op, args: &[Arg], mesh: &Mesh) -> Strategy {
        select(&op, &propose(&op, args, mesh).unwrap(), args, mesh).unwrap()
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
}
