//! gather and scatter (`_tensor_ops.py`), placement rows `[out, self/input, index(, src)]`.
//!
//! gather(input, dim, index):
//! | row | why |
//! |---|---|
//! | all R | replicated compute |
//! | `[S(d), S(d), S(d)]`, d != dim | rows along d are independent (PyTorch checks ranks only, not sizes) |
//! | `[S(dim), R, S(dim)]` | each rank gathers its slice of index from the whole input |
//! (PyTorch also offers `[MaskPartial, S(dim), MaskPartial]` when `index.shape[dim] == 1`; the
//! simulator does not model MaskPartial, so that input is gathered instead: same values.)
//!
//! scatter/scatter_ by rule set ([`ScatterRule`]): all R only (<= 2.12), or also `[S(d)]*n` on a
//! non-scatter dim d where self, index (and a tensor src) have equal global sizes (pytorch#186149,
//! 2.13), with `_StridedShard` placeholders from 2.14. In-place `scatter_` then keeps only
//! strategies that leave self's placements unchanged (`rules::select`).

use super::rulesets::ScatterRule;
use super::{expand, norm_dim, Arg, Proposal, Row, RuleSet};
use crate::dtensor::error::{DTensorError, Result};
use crate::dtensor::meta::Meta;
use crate::dtensor::op::Op;
use crate::placement::{Mesh, Placement};

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
    use Placement::*;
    let n_in = args.len();
    match op {
        Op::Gather { dim } => {
            let (input, index) = (&args[0].meta, &args[1].meta);
            let d = norm_dim(*dim, input.ndim())?;
            check_index("input", input, index, d)?;
            let mut rows = vec![Row::replicate(1, 2)];
            for k in (0..input.ndim()).filter(|&k| k != d) {
                let s = Shard(k as i64);
                rows.push(Row::new(&[s], &[s, s]));
            }
            rows.push(Row::new(&[Shard(d as i64)], &[Replicate, Shard(d as i64)]));
            Ok(Proposal {
                out_metas: vec![Meta::new(index.shape.clone(), input.dtype)],
                strategies: expand(&rows, mesh.ndim()),
                filter: super::Filter::All,
            })
        }
        Op::ScatterAdd { dim } => scatter_add(args, *dim, mesh, rules),
        Op::ScatterValue { dim, .. } | Op::ScatterSrc { dim, .. } => {
            let (this, index) = (&args[0].meta, &args[1].meta);
            let d = norm_dim(*dim, this.ndim())?;
            check_index("self", this, index, d)?;
            if let Some(src) = args.get(2) {
                check_index("src", &src.meta, index, d)?;
            }
            let mut rows = vec![Row::replicate(1, n_in)];
            if let ScatterRule::ShardNonScatterDims { strided } = rules.scatter() {
                for k in (0..this.ndim()).filter(|&k| k != d) {
                    let agree = args.iter().all(|a| {
                        a.meta.ndim() == this.ndim()
                            && (a.meta.shape[k] == index.shape[k]
                                || crate::dtensor::plant::active("scatter-ignores-sizes"))
                    });
                    if !agree {
                        continue;
                    }
                    let mut kinds = vec![Shard(k as i64)];
                    if strided {
                        for a in args {
                            for p in &a.placements {
                                if let StridedShard { dim: pd, sf } = *p {
                                    if pd == k as i64 && !kinds.contains(p) {
                                        kinds.push(StridedShard { dim: pd, sf });
                                    }
                                }
                            }
                        }
                    }
                    for s in kinds {
                        rows.push(Row { outs: vec![s], ins: vec![s; n_in] });
                    }
                }
            }
            Ok(Proposal {
                out_metas: vec![this.clone()],
                strategies: expand(&rows, mesh.ndim()),
                filter: super::Filter::All,
            })
        }
        _ => unreachable!("scatter_gather::propose called for {op:?}"),
    }
}

/// scatter_add(self, dim, index, src), rows `[out, self, index, src]`: all-R, and `[S(d)]*4` for
/// every d != dim where self and index agree in size (a disjoint add on each rank's rows). 2.14
/// registers it as a single-dim strategy whose placeholders fill only with shard kinds present
/// among the inputs, so with no input sharded only all-R is left.
fn scatter_add(args: &[Arg], dim: i64, mesh: &Mesh, rules: RuleSet) -> Result<Proposal> {
    let (this, index) = (&args[0].meta, &args[1].meta);
    let d = norm_dim(dim, this.ndim())?;
    check_index("self", this, index, d)?;
    check_index("src", &args[2].meta, index, d)?;
    let sharded = args.iter().any(|a| a.placements.iter().any(|p| p.is_shard()));
    let mut rows = vec![Row::replicate(1, 3)];
    if rules != RuleSet::Torch214 || sharded {
        for k in (0..this.ndim()).filter(|&k| k != d && this.shape[k] == index.shape[k]) {
            let s = Placement::Shard(k as i64);
            rows.push(Row { outs: vec![s], ins: vec![s; 3] });
        }
    }
    Ok(Proposal { out_metas: vec![this.clone()], strategies: expand(&rows, mesh.ndim()), filter: super::Filter::All })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtensor::meta::DType;
    use crate::dtensor::rules::select;
    use crate::placement::Placement::*;

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
}
