//! The sort family (`topk`, `sort`/`argsort`): shard any dim except the one being sorted; outputs
//! (values, indices) follow the input. Offered as single-mesh-dim rows `[values, indices, input]`
//! plus all-Replicate, so an input too short to shard falls back to Replicate (docs/design.md).

use super::{expand, norm_dim, Arg, Proposal, Row};
use crate::dtensor::error::{DTensorError, Result};
use crate::dtensor::meta::{DType, Meta};
use crate::dtensor::op::Op;
use crate::placement::{Mesh, Placement};

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh) -> Result<Proposal> {
    let a = &args[0];
    let nd = a.meta.ndim();
    let (dim, out_shape) = match op {
        Op::Topk { k, dim, .. } => {
            let d = norm_dim(*dim, nd)?;
            let size = if nd == 0 { 1 } else { a.meta.shape[d] };
            if *k > size {
                return Err(DTensorError::Local {
                    kind: "RuntimeError",
                    message: "selected index k out of range".into(),
                });
            }
            let mut s = a.meta.shape.clone();
            if nd > 0 {
                s[d] = *k;
            }
            (d, s)
        }
        Op::Sort { dim, .. } => (norm_dim(*dim, nd)?, a.meta.shape.clone()),
        _ => unreachable!("sort::propose called for {op:?}"),
    };
    let mut rows = vec![Row::replicate(2, 1)];
    for d in (0..nd).filter(|&d| d != dim) {
        let s = Placement::Shard(d as i64);
        rows.push(Row::new(&[s, s], &[s]));
    }
    let metas = vec![Meta::new(out_shape.clone(), a.meta.dtype), Meta::new(out_shape, DType::I64)];
    Ok(Proposal { out_metas: metas, strategies: expand(&rows, mesh.ndim()), filter: super::Filter::All })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtensor::rules::select;
    use crate::placement::Placement::*;

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    #[test]
    fn topk_keeps_a_token_shard_and_replicates_a_short_one() {
        let m = Mesh::tp(2);
        let op = Op::Topk { k: 3, dim: -1, largest: true, sorted: false };
        let args = [arg(&[2, 4, 8], &[Shard(1)])];
        let s = select(&op, &propose(&op, &args, &m).unwrap(), &args, &m).unwrap();
        assert_eq!(s.outs, vec![vec![Shard(1)], vec![Shard(1)]]);
        let args = [arg(&[2, 1, 8], &[Shard(1)])];
        let s = select(&op, &propose(&op, &args, &m).unwrap(), &args, &m).unwrap();
        assert_eq!(s.outs, vec![vec![Replicate], vec![Replicate]]);
        // Sharded on the topk dim: gathered.
        let args = [arg(&[2, 4, 8], &[Shard(2)])];
        let s = select(&op, &propose(&op, &args, &m).unwrap(), &args, &m).unwrap();
        assert_eq!(s.ins, vec![vec![Replicate]]);
    }
}
