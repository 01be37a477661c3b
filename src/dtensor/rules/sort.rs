//! The sort family (`topk`, `sort`/`argsort`; `_ops/_math_ops.py`): shard any dim except the one
//! being sorted; both outputs (values, indices) follow the input. Rows `[values, indices, input]`.
//!
//! - 2.12/2.13 `sort_strategy`: full-mesh rows all-R and `[S(d), S(d), S(d)]` for d != dim,
//!   cost-based over the mesh, no uneven exemption: a dim shorter than its shards is gathered,
//!   a Partial input is reduce-scattered onto a Shard row.
//! - 2.14 single-dim `_shard_except_dim_strategy` with `allow_uneven_sharding=True`: placeholders
//!   appear only when an input is sharded, so a Partial input with no shard anywhere is
//!   all-reduced, and a short shard the input already has is kept (torch214-audit.md §1).

use super::rulesets::Family;
use super::single_dim::{full_mesh, s, single_dim, Ph, Row, R};
use super::{norm_dim, Arg, Proposal, RuleSet};
use crate::error::{DTensorError, Result};
use crate::meta::{DType, Meta};
use crate::op::Op;
use placement::Mesh;

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
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
    let metas = vec![Meta::new(out_shape.clone(), a.meta.dtype), Meta::new(out_shape, DType::I64)];
    let others = (0..nd).filter(|&d| d != dim);
    if rules.single_dim(Family::Sort) {
        // Sorting along `dim` is independent across every other dim.
        let rows: Vec<Row> = others.map(|d| Row::new(&[Ph(d), Ph(d)], &[Ph(d)])).collect();
        return Ok(Proposal::expanded(metas, single_dim(&rows, 2, args, mesh.ndim()), true));
    }
    // Replicated sort, or sort each shard of another dim on its own.
    let rows: Vec<Row> =
        std::iter::once(Row::new(&[R, R], &[R])).chain(others.map(|d| Row::new(&[s(d), s(d)], &[s(d)]))).collect();
    Ok(Proposal::expanded(metas, full_mesh(&rows, mesh.ndim()), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::select;
    use placement::Placement::{self, *};
    use placement::ReduceOp;

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    fn pick(args: &[Arg], rules: RuleSet) -> crate::rules::Strategy {
        let m = Mesh::new(
            vec![2; args[0].placements.len()],
            ["dp", "tp"][2 - args[0].placements.len()..].iter().map(|s| s.to_string()).collect(),
        )
        .unwrap();
        let op = Op::Topk { k: 3, dim: -1, largest: true, sorted: false };
        select(&op, &crate::rules::propose(&op, args, &m, rules).unwrap(), args, &m).unwrap()
    }

    #[test]
    fn topk_keeps_a_token_shard_and_gathers_the_topk_dim() {
        for rules in RuleSet::ALL.iter().copied() {
            assert_eq!(pick(&[arg(&[2, 4, 8], &[Shard(1)])], rules).outs, vec![vec![Shard(1)], vec![Shard(1)]]);
            assert_eq!(pick(&[arg(&[2, 4, 8], &[Shard(2)])], rules).ins, vec![vec![Replicate]]);
        }
    }

    /// torch214-audit.md §1 topk: a (1,E) S(0) input is all-gathered in 2.12/2.13 and kept in
    /// 2.14; a P(sum) input is reduce-scattered to S(0) in 2.12/2.13 and all-reduced in 2.14.
    #[test]
    fn topk_short_shards_and_partials_by_release() {
        let short = [arg(&[1, 8], &[Shard(0)])];
        assert_eq!(pick(&short, RuleSet::Torch213).ins, vec![vec![Replicate]]);
        assert_eq!(pick(&short, RuleSet::Torch214).ins, vec![vec![Shard(0)]]);
        let part = [arg(&[4, 8], &[Partial(ReduceOp::Sum)])];
        assert_eq!(pick(&part, RuleSet::Torch213).ins, vec![vec![Shard(0)]]);
        assert_eq!(pick(&part, RuleSet::Torch214).ins, vec![vec![Replicate]]);
        // 2-D [S(2), R] over dim 2: [R, S(0)] in both (already cost-based in 2.13).
        let s2 = [arg(&[2, 2, 4], &[Shard(2), Replicate])];
        for rules in RuleSet::ALL.iter().copied() {
            assert_eq!(pick(&s2, rules).ins, vec![vec![Replicate, Shard(0)]], "{rules}");
        }
    }
}
