//! Matrix ops (`_matrix_ops.py`). `t` swaps shard dims and keeps Partials. `mm` rows, per mesh
//! dim, written `[out, lhs, rhs]` for `(m,k) x (k,n)`:
//!
//! | row | why |
//! |---|---|
//! | `[R, R, R]` | replicated compute |
//! | `[P(sum), S(1), S(0)]` | sharded contraction: each rank holds a partial sum over its k slice |
//! | `[S(0), S(0), R]` | rows of the result depend only on rows of lhs |
//! | `[S(1), R, S(1)]` | columns of the result depend only on columns of rhs |
//! | `[P(op), P(op), R]`, `[P(op), R, P(op)]`, op in sum/avg | mm is linear in each operand |
//!
//! A `_StridedShard` operand (a flattened sharded inner dim) is accepted in place of `Shard` on
//! the same dim and carried to the output (VERIFIED on 2.12.1 and 2.13.0), which is how a
//! token-sharded (B, L, D) input goes through a linear without communication.

use super::{expand, Arg, Proposal, Row, Strategy};
use crate::dtensor::error::{DTensorError, Result};
use crate::dtensor::meta::Meta;
use crate::dtensor::op::Op;
use crate::placement::{Mesh, Placement, ReduceOp};

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh) -> Result<Proposal> {
    match op {
        Op::T => {
            let a = &args[0];
            if a.meta.ndim() > 2 {
                return Err(DTensorError::Shape(format!(
                    "t() expects a tensor with <= 2 dimensions, but self is {}D",
                    a.meta.ndim()
                )));
            }
            let nd = a.meta.ndim() as i64;
            let out: Vec<Placement> = a
                .placements
                .iter()
                .map(|&p| match p.shard_dim() {
                    Some(d) if nd == 2 => p.with_dim(1 - d),
                    _ => p,
                })
                .collect();
            let shape: Vec<usize> = a.meta.shape.iter().rev().copied().collect();
            Ok(Proposal::single(
                vec![Meta::new(shape, a.meta.dtype)],
                Strategy { outs: vec![out], ins: vec![a.placements.clone()] },
            ))
        }
        Op::Addmm => addmm(args, mesh),
        Op::Mm => {
            let (l, r) = (&args[0].meta, &args[1].meta);
            if l.ndim() != 2 || r.ndim() != 2 {
                return Err(DTensorError::Shape("self must be a matrix".into()));
            }
            if l.shape[1] != r.shape[0] {
                return Err(DTensorError::Shape(format!(
                    "mat1 and mat2 shapes cannot be multiplied ({}x{} and {}x{})",
                    l.shape[0], l.shape[1], r.shape[0], r.shape[1]
                )));
            }
            use Placement::*;
            let mut rows = vec![
                Row::replicate(1, 2),
                Row::new(&[Partial(ReduceOp::Sum)], &[Shard(1), Shard(0)]),
                Row::new(&[Shard(0)], &[Shard(0), Replicate]),
                Row::new(&[Shard(1)], &[Replicate, Shard(1)]),
            ];
            for op in [ReduceOp::Sum, ReduceOp::Avg] {
                rows.push(Row::new(&[Partial(op)], &[Partial(op), Replicate]));
                rows.push(Row::new(&[Partial(op)], &[Replicate, Partial(op)]));
            }
            for p in args[0].placements.iter().chain(&args[1].placements) {
                if let StridedShard { sf, .. } = *p {
                    let s = |d| StridedShard { dim: d, sf };
                    for row in [
                        Row::new(&[Partial(ReduceOp::Sum)], &[s(1), s(0)]),
                        Row::new(&[s(0)], &[s(0), Replicate]),
                        Row::new(&[s(1)], &[Replicate, s(1)]),
                    ] {
                        if !rows.contains(&row) {
                            rows.push(row);
                        }
                    }
                }
            }
            let dtype = l.dtype;
            Ok(Proposal {
                out_metas: vec![Meta::new(vec![l.shape[0], r.shape[1]], dtype)],
                strategies: expand(&rows, mesh.ndim()),
                filter: super::Filter::All,
            })
        }
        _ => unreachable!("matrix::propose called for {op:?}"),
    }
}

/// addmm(bias, mat1, mat2): mm's rows, the bias placement derived from the output's through
/// broadcasting (a (n,) bias: out S(1) -> bias S(0); out S(0) -> R, the bias broadcasts over rows;
/// any other placement is copied, so a Partial output needs a Partial bias).
fn addmm(args: &[Arg], mesh: &Mesh) -> Result<Proposal> {
    let mm = propose(&Op::Mm, &args[1..], mesh)?;
    let bias_nd = args[0].meta.ndim();
    let bias_of = |out: Placement| match out.shard_dim() {
        Some(0) if bias_nd < 2 => Placement::Replicate,
        Some(d) => out.with_dim(d - 2 + bias_nd as i64),
        None => out,
    };
    let strategies = mm
        .strategies
        .into_iter()
        .map(|s| {
            let bias: Vec<Placement> = s.outs[0].iter().map(|&p| bias_of(p)).collect();
            let mut ins = vec![bias];
            ins.extend(s.ins);
            Strategy { outs: s.outs, ins }
        })
        .collect();
    Ok(Proposal { out_metas: mm.out_metas, strategies, filter: super::Filter::All })
}
