//! gather, scatter and scatter_add (`_ops/_tensor_ops.py`), rows `[out, self/input, index(, src)]`.
//!
//! gather(input, dim, index), in PyTorch's row order:
//! | row | why |
//! |---|---|
//! | all R | replicated compute (2.14: inserted) |
//! | `[MaskP, S(dim), MaskP]`, only if `index.shape[dim] == 1` | each rank gathers from its own slice of the input with the index shifted to it; `_MaskPartial` zeroes what fell outside at reduction |
//! | `[S(dim), R, S(dim)]` | each rank gathers its slice of the index from the whole input |
//! | `[S(d), S(d), S(d)]` (2.14 `[Ph(d)]*3`), d != dim, equal ranks | rows along d are independent |
//!
//! The MaskP row costs nothing (a replicated index is masked locally), so with no candidate that
//! keeps every input it wins as the first free one (torch214-audit.md §2.2).
//!
//! scatter/scatter_ by rule set ([`ScatterRule`]): all R only (2.12), or also one row per
//! non-scatter dim d where self, index (and a tensor src) have equal global sizes
//! (pytorch#186149: explicit `Shard(d)` in 2.13, placeholders in 2.14, which also expand to a
//! `_StridedShard` the inputs hold). scatter_add: all R plus a row per non-scatter d where self
//! and index agree (explicit in 2.12/2.13, placeholders in 2.14, so with no input sharded only
//! all-R is left and a Partial src is all-reduced). None of them allows uneven shards; in-place
//! `scatter_` then keeps only candidates that leave self's placements unchanged (`rules::select`).

use super::rulesets::{Family, ScatterRule};
use super::single_dim::{full_mesh, s, single_dim, Cell, Ph, Row, R};
use super::{norm_dim, Arg, Proposal, RuleSet};
use crate::error::{DTensorError, Result};
use crate::meta::Meta;
use crate::op::Op;
use placement::{Mesh, Placement, FRESH_MASK};

fn shape_list(s: &[usize]) -> String {
    let v: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", v.join(", "))
}

/// The checks `scatter`/`gather` make on shapes before touching values.
fn check_index(what: &str, target: &Meta, index: &Meta, dim: usize) -> Result<()> {
    if index.ndim() != target.ndim() {
        return Err(DTensorError::Shape(format!(
            "Index tensor must have the same number of dimensions as {what} tensor"
        )));
    }
    for d in (0..target.ndim()).filter(|&d| d != dim) {
        if index.shape[d] > target.shape[d] {
            return Err(DTensorError::Shape(format!(
                "Size does not match at dimension {d} expected index {} to be no larger than {what} {} apart from dimension {dim}",
                shape_list(&index.shape),
                shape_list(&target.shape)
            )));
        }
    }
    Ok(())
}

pub fn propose(op: &Op, args: &[Arg], mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    match op {
        Op::Gather { dim } => gather(args, *dim, mesh, rules),
        Op::ScatterAdd { dim } => scatter_add(args, *dim, mesh, rules),
        Op::ScatterValue { dim, .. } | Op::ScatterSrc { dim, .. } => scatter(args, *dim, mesh, rules),
        _ => unreachable!("scatter_gather::propose called for {op:?}"),
    }
}

/// Expands `rows` the way the release registers the op.
fn expand(rows: Vec<Row>, single: bool, args: &[Arg], mesh: &Mesh, meta: Meta) -> Proposal {
    let strategies = if single { single_dim(&rows, 1, args, mesh.ndim()) } else { full_mesh(&rows, mesh.ndim()) };
    Proposal::expanded(vec![meta], strategies, false)
}

/// A row sharding `dim` on every place: a placeholder in 2.14, an explicit `Shard` before.
fn on_dim(d: usize, n: usize, single: bool) -> Row {
    let c = if single { Ph(d) } else { s(d) };
    Row::new(&[c], &vec![c; n])
}

fn gather(args: &[Arg], dim: i64, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let (input, index) = (&args[0].meta, &args[1].meta);
    let d = norm_dim(dim, input.ndim())?;
    check_index("input", input, index, d)?;
    let single = rules.single_dim(Family::GatherScatterAdd);
    let mut rows = if single { vec![] } else { vec![Row::new(&[R], &[R, R])] };
    let nd = input.ndim();
    if nd > 0 && d < index.ndim() && index.shape[d] == 1 {
        // Each rank gathers from its slice of the input; out-of-range hits are masked later.
        let m = Cell::Is(Placement::MaskPartial { id: FRESH_MASK, dim: d as u32, size: input.shape[d] as u64 });
        rows.push(Row::new(&[m], &[s(d), m]));
    }
    if nd > 0 && d < index.ndim() {
        // Each rank gathers its slice of the index from the whole input.
        rows.push(Row::new(&[s(d)], &[R, s(d)]));
    }
    if nd == index.ndim() {
        // Rows along any other dim are independent.
        rows.extend((0..nd).filter(|&k| k != d).map(|k| on_dim(k, 2, single)));
    }
    Ok(expand(rows, single, args, mesh, Meta::new(index.shape.clone(), input.dtype)))
}

fn scatter(args: &[Arg], dim: i64, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let (this, index) = (&args[0].meta, &args[1].meta);
    let d = norm_dim(dim, this.ndim())?;
    check_index("self", this, index, d)?;
    if let Some(src) = args.get(2) {
        check_index("src", &src.meta, index, d)?;
    }
    let single = rules.single_dim(Family::Scatter);
    let n_in = args.len();
    let mut rows = if single { vec![] } else { vec![Row::new(&[R], &vec![R; n_in])] };
    if rules.scatter() == ScatterRule::ShardNonScatterDims && this.ndim() == index.ndim() {
        let ignore = crate::plant::active("scatter-ignores-sizes");
        for k in (0..this.ndim()).filter(|&k| k != d) {
            // Each rank scatters into its own rows along k when every operand has them all.
            let src_ok = args.get(2).is_none_or(|src| {
                (!single || src.meta.ndim() == index.ndim()) && src.meta.shape.get(k) == Some(&index.shape[k])
            });
            if ignore || (this.shape[k] == index.shape[k] && src_ok) {
                rows.push(on_dim(k, n_in, single));
            }
        }
    }
    Ok(expand(rows, single, args, mesh, this.clone()))
}

fn scatter_add(args: &[Arg], dim: i64, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let (this, index) = (&args[0].meta, &args[1].meta);
    let d = norm_dim(dim, this.ndim())?;
    check_index("self", this, index, d)?;
    check_index("src", &args[2].meta, index, d)?;
    let single = rules.single_dim(Family::GatherScatterAdd);
    let mut rows = if single { vec![] } else { vec![Row::new(&[R], &[R, R, R])] };
    if this.ndim() == index.ndim() {
        // A disjoint add on each rank's rows along k.
        rows.extend(
            (0..this.ndim()).filter(|&k| k != d && this.shape[k] == index.shape[k]).map(|k| on_dim(k, 3, single)),
        );
    }
    Ok(expand(rows, single, args, mesh, this.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::DType;
    use crate::rules::select;
    use placement::Placement::*;

    fn arg(shape: &[usize], ps: &[Placement], dt: DType) -> Arg {
        Arg { meta: Meta::new(shape.to_vec(), dt), placements: ps.to_vec() }
    }

    fn scatter_inplace(rules: RuleSet, l: usize, ps: &[Placement], mesh: &Mesh) -> Result<Vec<Placement>> {
        let op = Op::ScatterValue { dim: -1, value: 1.0, inplace: true };
        let args = [arg(&[2, l, 8], ps, DType::Bool), arg(&[2, l, 3], ps, DType::I64)];
        select(&op, &propose(&op, &args, mesh, rules)?, &args, mesh).map(|s| s.outs[0].clone())
    }

    #[test]
    fn inplace_scatter_by_rule_set() {
        let m = Mesh::tp(2);
        let e = scatter_inplace(RuleSet::Torch212, 4, &[Shard(1)], &m).unwrap_err();
        assert_eq!(e.to_string(), "aten.scatter_.value: in-place operations that require placement changes are not supported. The input has placement (Shard(dim=1),), but no valid strategy preserves this placement. Please use the out-of-place version of this operation instead.");
        assert_eq!(scatter_inplace(RuleSet::Torch213, 4, &[Shard(1)], &m).unwrap(), vec![Shard(1)]);
        assert_eq!(scatter_inplace(RuleSet::Torch213, 5, &[Shard(1)], &m).unwrap(), vec![Shard(1)]);
        assert!(scatter_inplace(RuleSet::Torch213, 1, &[Shard(1)], &m).is_err());
        assert_eq!(scatter_inplace(RuleSet::Torch212, 4, &[Replicate], &m).unwrap(), vec![Replicate]);
        let m2 = Mesh::new(vec![1, 2], vec!["dp_shard".into(), "tp".into()]).unwrap();
        assert_eq!(
            scatter_inplace(RuleSet::Torch213, 4, &[Replicate, Shard(1)], &m2).unwrap(),
            vec![Replicate, Shard(1)]
        );
        assert!(scatter_inplace(RuleSet::Torch212, 4, &[Replicate, Shard(1)], &m2).is_err());
    }

    #[test]
    fn out_of_place_scatter_replicates_on_2_12() {
        let m = Mesh::tp(2);
        let op = Op::ScatterValue { dim: -1, value: 1.0, inplace: false };
        let args = [arg(&[2, 4, 8], &[Shard(1)], DType::Bool), arg(&[2, 4, 3], &[Shard(1)], DType::I64)];
        let s = select(&op, &propose(&op, &args, &m, RuleSet::Torch212).unwrap(), &args, &m).unwrap();
        assert_eq!(s.outs[0], vec![Replicate]);
        assert_eq!(s.ins, vec![vec![Replicate], vec![Replicate]]);
    }

    #[test]
    fn gather_keeps_token_shards() {
        let m = Mesh::tp(2);
        let op = Op::Gather { dim: -1 };
        let args = [arg(&[2, 4, 8], &[Shard(1)], DType::F32), arg(&[2, 4, 3], &[Shard(1)], DType::I64)];
        let s = select(&op, &propose(&op, &args, &m, RuleSet::Torch213).unwrap(), &args, &m).unwrap();
        assert_eq!(s.outs[0], vec![Shard(1)]);
    }

    use crate::rules::testing::{argd, moves, pick};
    use placement::ReduceOp;

    const PS: Placement = Partial(ReduceOp::Sum);

    /// backward-rules.md §3.3 `scatter_add` table (out_ops.*): explicit `Shard(d)` rows in
    /// 2.12/2.13 reduce-scatter a Partial src onto S(0) even when nothing is sharded (cheaper
    /// than all-reducing); 2.14's placeholders need a shard among the inputs, else all-reduce.
    #[test]
    fn scatter_add_by_release() {
        let op = Op::ScatterAdd { dim: -1 };
        let call = |ps: [&[Placement]; 3], te: &[usize], tk: &[usize], rules| {
            let args = [argd(te, ps[0], DType::F32), argd(tk, ps[1], DType::I64), argd(tk, ps[2], DType::F32)];
            let s = pick(&op, &args, rules).unwrap();
            (s.outs[0].clone(), moves(&s, &args).len())
        };
        let (r, s0, s1) = (Replicate, Shard(0), Shard(1));
        for rules in RuleSet::ALL.iter().copied() {
            let new = rules >= RuleSet::Torch214;
            let (o, n) = call([&[r], &[r], &[PS]], &[4, 8], &[4, 2], rules);
            assert_eq!((o, n), if new { (vec![r], 1) } else { (vec![s0], 3) }, "{rules} src P");
            assert_eq!(call([&[r], &[s0], &[PS]], &[4, 8], &[4, 2], rules).0, vec![s0]);
            assert_eq!(call([&[r], &[s1], &[s1]], &[2, 4, 8], &[2, 4, 2], rules).0, vec![s1]);
            // T = 1: S(0) is unshardable, so even 2.12/2.13 all-reduce.
            assert_eq!(call([&[r], &[r], &[PS]], &[1, 8], &[1, 2], rules).0, vec![r]);
            let (o, _) = call([&[r, r], &[r, r], &[r, PS]], &[2, 4, 8], &[2, 4, 2], rules);
            assert_eq!(o, if new { vec![r, r] } else { vec![s0, s1] }, "{rules} 2x2");
            // A dp-sharded index keeps the placeholders alive in 2.14 too.
            let (o, _) = call([&[r, r], &[s0, r], &[s0, PS]], &[4, 8], &[4, 2], rules);
            assert_eq!(o, vec![s0, s0], "{rules} 2x2 dp index");
        }
    }

    /// torch214-audit.md §1-2 gather: the free `_MaskPartial` row wins for an index of size 1 on
    /// the gather dim (all releases); a P(sum) input is reduce-scattered in 2.12/2.13 and
    /// all-reduced in 2.14; a view-flattened token shard is gathered in 2.12/2.13, kept in 2.14.
    #[test]
    fn gather_by_release() {
        let op = Op::Gather { dim: -1 };
        let call = |x: &[Placement], i: &[Placement], xs: &[usize], is: &[usize], rules| {
            let args = [argd(xs, x, DType::F32), argd(is, i, DType::I64)];
            let s = pick(&op, &args, rules).unwrap();
            (s.outs[0].clone(), s.ins.clone())
        };
        let sf = StridedShard { dim: 0, sf: 2 };
        for rules in RuleSet::ALL.iter().copied() {
            let new = rules >= RuleSet::Torch214;
            let (o, ins) = call(&[Shard(2)], &[Replicate], &[1, 2, 4], &[1, 2, 1], rules);
            assert!(matches!(o[0], MaskPartial { id: 0, dim: 2, size: 4 }), "{rules} {o:?}");
            assert_eq!((ins[0].clone(), ins[1].clone()), (vec![Shard(2)], o.clone()));
            // Two ids per token: no MaskP row, the input is all-gathered (first of the ties).
            assert_eq!(call(&[Shard(2)], &[Replicate], &[1, 2, 4], &[1, 2, 2], rules).1[0], vec![Replicate]);
            let (o, _) = call(&[PS], &[Replicate], &[2, 4, 8], &[2, 4, 2], rules);
            assert_eq!(o, if new { vec![Replicate] } else { vec![Shard(0)] }, "{rules} P scores");
            let (o, _) = call(&[sf], &[sf], &[8, 8], &[8, 2], rules);
            assert_eq!(o, if new { vec![sf] } else { vec![Replicate] }, "{rules} _S scores");
        }
    }

    /// torch214-audit.md §1 scatter: in-place `scatter_` on a view-flattened token shard raises
    /// the in-place error in 2.12/2.13 (no `_StridedShard` row) and keeps `_S(0,2)` in 2.14.
    #[test]
    fn inplace_scatter_on_a_flattened_token_shard() {
        let op = Op::ScatterValue { dim: -1, value: 1.0, inplace: true };
        let sf = StridedShard { dim: 0, sf: 2 };
        let args = [argd(&[8, 8], &[sf], DType::Bool), argd(&[8, 2], &[sf], DType::I64)];
        for rules in RuleSet::ALL.iter().copied() {
            let r = pick(&op, &args, rules);
            match rules {
                RuleSet::Torch214 | RuleSet::Torch215 => assert_eq!(r.unwrap().outs[0], vec![sf]),
                _ => assert!(matches!(r, Err(DTensorError::InPlacePlacementChange { .. })), "{rules}"),
            }
        }
    }
}
