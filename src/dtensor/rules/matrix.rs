//! Matrix ops (`_ops/_matrix_ops.py`).
//!
//! `mm` and `addmm` are single-dim strategies in every release (`gen_single_dim_einsum_strategies`
//! "mk,kn->mn"; the full-mesh `mm_strategy`/`addmm_strategy` of 2.12/2.13 is registered too but
//! never runs, because a single-dim registration is looked up first). `allow_uneven_sharding` is
//! False. Rows `[out, lhs, rhs]` for one mesh dim, in PyTorch's order after the inserted all-R:
//!
//! | row | why |
//! |---|---|
//! | `[P(sum), Ph(1), Ph(0)]` | contracting dim k sharded on both: each rank sums its k slice |
//! | `[Ph(0), Ph(0), R]` | rows of the result depend only on rows of lhs |
//! | `[Ph(1), R, Ph(1)]` | columns of the result depend only on columns of rhs |
//! | `[P(op), P(op), R]`, `[P(op), R, P(op)]`, op sum then avg | mm is linear in each operand |
//!
//! `addmm(bias, mat1, mat2)` adds a bias column derived from the output cell
//! (`_derive_bias_placement`): a placeholder on an output dim the bias broadcasts over becomes
//! R, on another dim the placeholder of the matching bias dim; any concrete placement is copied,
//! so a Partial output asks for a Partial bias (an R bias gets there by a free local division).
//!
//! `t`: 2.12/2.13 `transpose_strategy` follows the input (S(d) -> S(1-d), `_S` likewise, Partial
//! passes, no shardability check); 2.14 is single-dim `[Ph(1), Ph(0)]`, `[Ph(0), Ph(1)]`,
//! `[P(op), P(op)]` for sum/avg/max/min with `allow_uneven_sharding=False`, so a dim shorter
//! than its shards is all-gathered first (torch214-audit.md §1, `(1,E)` S(0)).

use super::rulesets::Family;
use super::single_dim::{p, single_dim, Cell, Ph, Row, R};
use super::{Arg, Proposal, RuleSet, Strategy};
use crate::error::{DTensorError, Result};
use crate::meta::Meta;
use crate::op::Op;
use placement::{Mesh, Placement, ReduceOp};

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    match op {
        Op::T => transpose(&args[0], mesh, rules),
        Op::Mm => {
            let meta = mm_meta(&args[0].meta, &args[1].meta)?;
            Ok(Proposal::expanded(vec![meta], single_dim(&mm_rows(), 1, args, mesh.ndim()), false))
        }
        Op::Addmm => addmm(args, mesh),
        _ => unreachable!("matrix::propose called for {op:?}"),
    }
}

/// The einsum rows of "mk,kn->mn" (no batch dims, one contracting dim, one free dim each side).
fn mm_rows() -> Vec<Row> {
    let mut rows = vec![
        // Contracting k sharded on both operands: partial sums.
        Row::new(&[p(ReduceOp::Sum)], &[Ph(1), Ph(0)]),
        // lhs-only dim m: rows of the result follow rows of lhs.
        Row::new(&[Ph(0)], &[Ph(0), R]),
        // rhs-only dim n: columns of the result follow columns of rhs.
        Row::new(&[Ph(1)], &[R, Ph(1)]),
    ];
    for op in [ReduceOp::Sum, ReduceOp::Avg] {
        // Linear in each operand: one side pending a linear reduction, the other replicated.
        rows.push(Row::new(&[p(op)], &[p(op), R]));
        rows.push(Row::new(&[p(op)], &[R, p(op)]));
    }
    rows
}

fn mm_meta(l: &Meta, r: &Meta) -> Result<Meta> {
    if l.ndim() != 2 || r.ndim() != 2 {
        return Err(DTensorError::Shape("self must be a matrix".into()));
    }
    if l.shape[1] != r.shape[0] {
        return Err(DTensorError::Shape(format!(
            "mat1 and mat2 shapes cannot be multiplied ({}x{} and {}x{})",
            l.shape[0], l.shape[1], r.shape[0], r.shape[1]
        )));
    }
    Ok(Meta::new(vec![l.shape[0], r.shape[1]], l.dtype))
}

/// addmm(bias, mat1, mat2): mm's rows with the bias cell derived from the output cell.
fn addmm(args: &[Arg], mesh: &Mesh) -> Result<Proposal> {
    let meta = mm_meta(&args[1].meta, &args[2].meta)?;
    let bias = &args[0].meta.shape;
    if bias.len() > 2 || bias.iter().rev().zip(meta.shape.iter().rev()).any(|(&b, &o)| b != 1 && b != o) {
        return Err(DTensorError::Shape(format!(
            "The expanded size of the tensor ({}) must match the existing size ({}) at non-singleton dimension {}.  Target sizes: [{}, {}].  Tensor sizes: {:?}",
            meta.shape[1],
            bias.last().copied().unwrap_or(1),
            bias.len().saturating_sub(1),
            meta.shape[0],
            meta.shape[1],
            bias
        )));
    }
    // Output dim -> bias dim, None where the bias broadcasts (missing or of size 1).
    let pad = 2 - bias.len();
    let map = |od: usize| (od >= pad && bias[od - pad] != 1).then(|| od - pad);
    let rows: Vec<Row> = mm_rows()
        .into_iter()
        .map(|r| {
            let b = match r.outs[0] {
                Ph(od) => map(od).map_or(R, Ph),
                c => c,
            };
            Row::new(&r.outs, &[&[b], r.ins.as_slice()].concat())
        })
        .collect();
    Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, args, mesh.ndim()), false))
}

fn transpose(a: &Arg, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let nd = a.meta.ndim();
    if nd > 2 {
        return Err(DTensorError::Shape(format!("t() expects a tensor with <= 2 dimensions, but self is {nd}D")));
    }
    let shape: Vec<usize> = a.meta.shape.iter().rev().copied().collect();
    let meta = Meta::new(shape, a.meta.dtype);
    if !rules.single_dim(Family::Transpose) {
        // Follows the input: a shard swaps its dim, anything else passes.
        let out: Vec<Placement> = a
            .placements
            .iter()
            .map(|&pl| match pl.shard_dim() {
                Some(d) if nd == 2 => pl.with_dim(1 - d),
                _ => pl,
            })
            .collect();
        return Ok(Proposal::single(vec![meta], Strategy { outs: vec![out], ins: vec![a.placements.clone()] }));
    }
    let mut rows: Vec<Row> = if nd <= 1 {
        // A 0-D or 1-D t is the identity.
        (0..nd).map(|d| Row::new(&[Ph(d)], &[Ph(d)])).collect()
    } else {
        // A shard of dim 0 is a shard of the result's dim 1, and the other way round.
        vec![Row::new(&[Ph(1)], &[Ph(0)]), Row::new(&[Ph(0)], &[Ph(1)])]
    };
    for op in [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min] {
        // Moving elements commutes with every elementwise reduction.
        rows.push(Row::new(&[p(op)], &[Cell::Is(Placement::Partial(op))]));
    }
    Ok(Proposal::expanded(vec![meta], single_dim(&rows, 1, std::slice::from_ref(a), mesh.ndim()), false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DType;
    use crate::rules::select;
    use placement::Placement::*;

    fn arg(shape: &[usize], ps: &[Placement]) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), DType::F32), placements: ps.to_vec() }
    }

    fn pick(op: Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Strategy {
        select(&op, &crate::rules::propose(&op, args, mesh, rules).unwrap(), args, mesh).unwrap()
    }

    const PS: Placement = Partial(ReduceOp::Sum);

    /// backward-rules.md §2.1 (t_fwd_audit.py, all three releases): addmm(bias R, mat1 S(1),
    /// mat2 R) picks the contracting row at cost 0, the bias R -> P(sum) by local division and
    /// mat2 R -> S(0); a Partial mat1 gives P(sum) with the bias partitioned; S(0) bias with
    /// S(1) mat2 keeps both.
    #[test]
    fn addmm_partial_output_needs_a_partial_bias() {
        let m = Mesh::tp(2);
        for rules in RuleSet::ALL.iter().copied() {
            let s = pick(
                Op::Addmm,
                &[arg(&[8], &[Replicate]), arg(&[4, 6], &[Shard(1)]), arg(&[6, 8], &[Replicate])],
                &m,
                rules,
            );
            assert_eq!((s.outs[0].clone(), s.ins.clone()), (vec![PS], vec![vec![PS], vec![Shard(1)], vec![Shard(0)]]));
            let s =
                pick(Op::Addmm, &[arg(&[8], &[Replicate]), arg(&[4, 6], &[PS]), arg(&[6, 8], &[Replicate])], &m, rules);
            assert_eq!(s.ins[0], vec![PS]);
            let s =
                pick(Op::Addmm, &[arg(&[8], &[PS]), arg(&[4, 6], &[Replicate]), arg(&[6, 8], &[Replicate])], &m, rules);
            assert_eq!((s.outs[0].clone(), s.ins[1].clone()), (vec![PS], vec![PS]));
            let s = pick(
                Op::Addmm,
                &[arg(&[8], &[Shard(0)]), arg(&[4, 6], &[Replicate]), arg(&[6, 8], &[Shard(1)])],
                &m,
                rules,
            );
            assert_eq!(s.outs[0], vec![Shard(1)]);
            let s = pick(
                Op::Addmm,
                &[arg(&[8], &[Replicate]), arg(&[4, 6], &[Shard(0)]), arg(&[6, 8], &[Replicate])],
                &m,
                rules,
            );
            assert_eq!((s.outs[0].clone(), s.ins[0].clone()), (vec![Shard(0)], vec![Replicate]));
        }
    }

    /// torch214-audit.md §1: `t` of a (1,E) tensor S(0) over 2 ranks keeps the shard (S(1)) in
    /// 2.12/2.13 and is all-gathered in 2.14 (no uneven exemption).
    #[test]
    fn t_of_a_short_shard_by_release() {
        let m = Mesh::tp(2);
        let a = [arg(&[1, 8], &[Shard(0)])];
        assert_eq!(pick(Op::T, &a, &m, RuleSet::Torch213).outs[0], vec![Shard(1)]);
        let s = pick(Op::T, &a, &m, RuleSet::Torch214);
        assert_eq!((s.outs[0].clone(), s.ins[0].clone()), (vec![Replicate], vec![Replicate]));
        let sf = StridedShard { dim: 0, sf: 2 };
        for rules in RuleSet::ALL.iter().copied() {
            assert_eq!(pick(Op::T, &[arg(&[8, 4], &[sf])], &m, rules).outs[0], vec![StridedShard { dim: 1, sf: 2 }]);
            assert_eq!(pick(Op::T, &[arg(&[8, 4], &[PS])], &m, rules).outs[0], vec![PS]);
        }
    }

    /// backward-rules.md §3.3 (t_dw_mm.py, all releases): dW = mm(gᵀ [S(1), _S(1,1)],
    /// x [S(0), R]) on 2x2 is [P, R]: every candidate touching gᵀ's `_S` is free, none keeps
    /// both inputs, and the first free one (#11) all-gathers gᵀ on mesh dim 1.
    #[test]
    fn mm_first_free_candidate_with_a_strided_lhs() {
        let m = Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap();
        let g = arg(&[6, 8], &[Shard(1), StridedShard { dim: 1, sf: 1 }]);
        let x = arg(&[8, 4], &[Shard(0), Replicate]);
        for rules in RuleSet::ALL.iter().copied() {
            let s = pick(Op::Mm, &[g.clone(), x.clone()], &m, rules);
            assert_eq!(s.outs[0], vec![PS, Replicate], "{rules}");
            assert_eq!(s.ins[0], vec![Shard(1), Replicate], "{rules}");
        }
    }
}
