//! Pointwise ops (`_pointwise_ops.py`): follow the input with the most shards (ties: the one of
//! higher rank), re-index its shard dims to the broadcast output, and move every other input to
//! match, with broadcast dims replicated.
//!
//! A Partial in the followed input survives only when the op is linear in it:
//! - linearity 0 (`_to_copy`, `mul`/`div` by a Python scalar): P(x) -> P(x);
//! - linearity 1 (`add`/`sub` of tensors): P(sum) + P(sum) -> P(sum); a Replicate operand is
//!   partitioned to match (R -> P divides by the group size);
//! - linearity 2 (`mul`/`div` of tensors): the followed operand stays Partial, the other must be R;
//! - adding a Python scalar to a Partial would add it once per rank (pytorch#163193): reduce first;
//! - anything else (sigmoid, masked_fill) turns Partial into Replicate.

use super::{Arg, Proposal, Strategy};
use crate::dtensor::error::{DTensorError, Result};
use crate::dtensor::meta::{torch_size, DType, Meta};
use crate::dtensor::op::Op;
use crate::placement::Placement;

fn linearity(op: &Op) -> i32 {
    match op {
        Op::ToDtype(_) | Op::MulScalar(_) | Op::DivScalar(_) => 0,
        Op::Add | Op::Sub => 1,
        Op::Mul | Op::Div => 2,
        _ => -1,
    }
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

pub fn propose(op: &Op, args: &[Arg]) -> Result<Proposal> {
    let shapes: Vec<&[usize]> = args.iter().map(|a| a.meta.shape.as_slice()).collect();
    let common = match op {
        Op::MaskedFill(_) => {
            let c = broadcast_refs(&shapes)?;
            // masked_fill keeps self's shape: the mask must broadcast to it, not widen it.
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
    if let Op::MaskedFill(_) = op {
        if args[1].meta.dtype != DType::Bool {
            return Err(DTensorError::Shape(format!("masked_fill_ only supports boolean masks, but got mask with dtype {}", args[1].meta.dtype.torch_name().trim_start_matches("torch."))));
        }
    }

    // The followed input: most shards, then higher rank; the first wins ties.
    let shards = |a: &Arg| a.placements.iter().filter(|p| p.is_shard()).count();
    let mut follow = 0;
    for (i, a) in args.iter().enumerate().skip(1) {
        let f = &args[follow];
        if shards(a) > shards(f) || (shards(a) == shards(f) && a.meta.ndim() > f.meta.ndim()) {
            follow = i;
        }
    }
    let lin = linearity(op);
    let scalar_add = matches!(op, Op::AddScalar(_));
    let fa = &args[follow];
    let out: Vec<Placement> = fa
        .placements
        .iter()
        .map(|&p| match p {
            Placement::Shard(d) | Placement::StridedShard { dim: d, .. } => p.with_dim(d + (common.len() - fa.meta.ndim()) as i64),
            Placement::Partial(r) if lin >= 0 && r.is_linear() && !scalar_add => p,
            Placement::Partial(_) => Placement::Replicate,
            Placement::Replicate => p,
        })
        .collect();
    let ins = args
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let map = dims_map(&common, &a.meta.shape);
            out.iter()
                .map(|&p| match p {
                    Placement::Shard(d) | Placement::StridedShard { dim: d, .. } => match map[d as usize] {
                        Some(id) => p.with_dim(id as i64),
                        None => Placement::Replicate,
                    },
                    Placement::Partial(_) if lin == 2 && i != follow => Placement::Replicate,
                    other => other,
                })
                .collect()
        })
        .collect();
    Ok(Proposal::single(vec![Meta::new(common, out_dtype(op, args))], Strategy { outs: vec![out], ins }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{Placement::*, ReduceOp};

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    #[test]
    fn bias_add_follows_the_sharded_scores() {
        let p = propose(&Op::Add, &[arg(&[2, 4, 8], &[Shard(1)]), arg(&[8], &[Replicate])]).unwrap();
        let s = &p.strategies[0];
        assert_eq!(s.outs[0], vec![Shard(1)]);
        assert_eq!(s.ins[1], vec![Replicate]);
        // A sharded bias is followed when the scores are replicated, so the output is sharded on E.
        let p = propose(&Op::Add, &[arg(&[2, 4, 8], &[Replicate]), arg(&[8], &[Shard(0)])]).unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Shard(2)]);
        assert_eq!(p.strategies[0].ins[0], vec![Shard(2)]);
    }

    #[test]
    fn partial_survives_only_linear_ops() {
        let a = arg(&[4], &[Partial(ReduceOp::Sum)]);
        assert_eq!(propose(&Op::MulScalar(2.0), &[a.clone()]).unwrap().strategies[0].outs[0], vec![Partial(ReduceOp::Sum)]);
        assert_eq!(propose(&Op::Sigmoid, &[a.clone()]).unwrap().strategies[0].outs[0], vec![Replicate]);
        assert_eq!(propose(&Op::AddScalar(1.0), &[a.clone()]).unwrap().strategies[0].outs[0], vec![Replicate]);
        let p = propose(&Op::Add, &[a.clone(), arg(&[4], &[Replicate])]).unwrap();
        assert_eq!(p.strategies[0].ins[1], vec![Partial(ReduceOp::Sum)]);
        let p = propose(&Op::Mul, &[a, arg(&[4], &[Replicate])]).unwrap();
        assert_eq!(p.strategies[0].ins[1], vec![Replicate]);
    }

    #[test]
    fn masked_fill_mask_broadcast_dim_is_replicated() {
        let mut mask = arg(&[2, 4, 4, 1], &[Shard(3)]);
        mask.meta.dtype = DType::Bool;
        let p = propose(&Op::MaskedFill(f64::NEG_INFINITY), &[arg(&[2, 4, 4, 2], &[Shard(1)]), mask]).unwrap();
        assert_eq!(p.strategies[0].outs[0], vec![Shard(1)]);
    }

    #[test]
    fn refs_broadcast_error_text() {
        let e = broadcast_refs(&[&[2, 5, 4, 2], &[2, 6, 4, 1]]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Attempting to broadcast a dimension of length 6 at -3! Mismatching argument at index 1 had torch.Size([2, 6, 4, 1]); but expected shape should be broadcastable to [2, 5, 4, 2]"
        );
        assert_eq!(broadcast_iter(&[2, 4, 8], &[8]).unwrap(), vec![2, 4, 8]);
        assert!(broadcast_iter(&[2, 4, 8], &[3]).is_err());
    }
}
