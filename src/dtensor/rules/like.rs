//! Factories shaped by their input (`_ops/_tensor_ops.py`): `zeros_like`, `ones_like` and
//! `new_zeros`. The input is only read for its metadata.
//!
//! 2.12/2.13:
//! - `create_like_strategy` (zeros_like, ones_like): one candidate, the output keeps the input's
//!   placements with every Partial replaced by Replicate (a constant is the same everywhere), the
//!   input left as it is.
//! - `new_factory_strategy` (new_zeros): a replicated output at cost 0, plus, when the new shape
//!   equals the input's and the input is sharded on some mesh dim, an output that follows the
//!   input at cost -0.1, which always wins (a negative cost comes first).
//!
//! 2.14 re-registered both as single-dim strategies with `allow_uneven_sharding=True`: like ops
//! `[Ph(d), Ph(d)]` per dim plus `[R, P(op)]` for every reduce op; new_zeros `[Ph(d), Ph(d)]`
//! (same shape) or `[R, Ph(d)]` (another shape) plus `[R, P(op)]` for sum/avg/min/max
//! (backward-rules.md §4: same shape `[S(0), P]` on 2x2 gives `[S(0), P]` in 2.12/2.13 and
//! `[S(0), R]` in 2.14).

use super::rulesets::Family;
use super::single_dim::{p, single_dim, Ph, Row, R};
use super::{Arg, Proposal, RuleSet, Strategy};
use crate::error::Result;
use crate::meta::Meta;
use crate::op::Op;
use placement::{Mesh, Placement, ReduceOp};

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let a = &args[0];
    let (meta, new_shape) = match op {
        Op::ZerosLike(d) | Op::OnesLike(d) => (Meta::new(a.meta.shape.clone(), d.unwrap_or(a.meta.dtype)), false),
        Op::NewZeros { shape } => (Meta::new(shape.clone(), a.meta.dtype), true),
        _ => unreachable!("like::propose called for {op:?}"),
    };
    let same = meta.shape == a.meta.shape;
    if rules.single_dim(Family::Factory) {
        let nd = a.meta.ndim();
        // Same shape: the output can follow a shard; another shape: replicated output, any input.
        let mut rows: Vec<Row> =
            (0..nd).map(|d| if same { Row::new(&[Ph(d)], &[Ph(d)]) } else { Row::new(&[R], &[Ph(d)]) }).collect();
        let mut ops = vec![ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Min, ReduceOp::Max];
        if !new_shape {
            ops.push(ReduceOp::Product);
        }
        // A pending reduction of the input does not change a constant output.
        rows.extend(ops.into_iter().map(|op| Row::new(&[R], &[p(op)])));
        return Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, args, mesh.ndim()), true));
    }
    let keep = Strategy { outs: vec![a.placements.clone()], ins: vec![a.placements.clone()] };
    if new_shape {
        let r = Strategy { outs: vec![vec![Placement::Replicate; mesh.ndim()]], ins: vec![a.placements.clone()] };
        if same && a.placements.iter().any(|p| p.is_shard()) {
            return Ok(Proposal::with_costs(vec![meta], vec![r, keep], vec![0.0, -0.1]));
        }
        return Ok(Proposal::single(vec![meta], r));
    }
    let out: Vec<Placement> =
        a.placements.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect();
    Ok(Proposal::single(vec![meta], Strategy { outs: vec![out], ins: keep.ins }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DType;
    use crate::rules::select;
    use placement::Placement::*;

    fn pick(op: Op, ps: &[Placement], shape: &[usize], rules: RuleSet) -> Placement2 {
        let m =
            Mesh::new(vec![2; ps.len()], ["dp", "tp"][2 - ps.len()..].iter().map(|s| s.to_string()).collect()).unwrap();
        let args = [Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }];
        let s = select(&op, &crate::rules::propose(&op, &args, &m, rules).unwrap(), &args, &m).unwrap();
        (s.outs[0].clone(), s.ins[0].clone())
    }

    type Placement2 = (Vec<Placement>, Vec<Placement>);
    const PS: Placement = Partial(ReduceOp::Sum);

    /// backward-rules.md §4, out_ops.*: new_zeros of another shape is R in every release whatever
    /// the input; of the same shape it follows a sharded input; on 2x2 `[S(0), P]` follows in
    /// 2.12/2.13 (the -0.1 candidate) and gives `[S(0), R]` in 2.14. The input never moves.
    #[test]
    fn new_zeros_by_release() {
        for rules in RuleSet::ALL.iter().copied() {
            for ps in [[Replicate], [PS], [Shard(0)], [Shard(1)]] {
                assert_eq!(
                    pick(Op::NewZeros { shape: vec![4, 8] }, &ps, &[4, 2], rules),
                    (vec![Replicate], ps.to_vec())
                );
            }
            let same = Op::NewZeros { shape: vec![4, 2] };
            assert_eq!(pick(same.clone(), &[Shard(1)], &[4, 2], rules).0, vec![Shard(1)]);
            assert_eq!(pick(same.clone(), &[PS], &[4, 2], rules), (vec![Replicate], vec![PS]));
            assert_eq!(pick(same, &[PS, PS], &[4, 2], rules).0, vec![Replicate, Replicate]);
        }
        let same = Op::NewZeros { shape: vec![4, 2] };
        assert_eq!(pick(same.clone(), &[Shard(0), PS], &[4, 2], RuleSet::Torch213).0, vec![Shard(0), PS]);
        assert_eq!(
            pick(same, &[Shard(0), PS], &[4, 2], RuleSet::Torch214),
            (vec![Shard(0), Replicate], vec![Shard(0), PS])
        );
    }

    /// out_ops.*: zeros_like/ones_like turn a Partial into R and keep shards, input untouched.
    #[test]
    fn like_ops_keep_shards_and_drop_partials() {
        for rules in RuleSet::ALL.iter().copied() {
            for op in [Op::ZerosLike(None), Op::OnesLike(Some(DType::Bool))] {
                assert_eq!(pick(op.clone(), &[PS], &[4, 2], rules), (vec![Replicate], vec![PS]));
                assert_eq!(pick(op.clone(), &[Shard(1)], &[4, 2], rules).0, vec![Shard(1)]);
                assert_eq!(pick(op, &[Shard(0), PS], &[4, 2], rules), (vec![Shard(0), Replicate], vec![Shard(0), PS]));
            }
        }
    }
}
