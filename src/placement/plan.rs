//! Redistribution plans as data: which mesh dim moves from which placement to which, in what
//! order, and with which collective. The planner decides; `dtensor::redistribute` executes.
//!
//! Order is PyTorch's greedy planner (`_gen_transform_infos`, default shard order): on a 1-D mesh
//! one step; otherwise, when the source is sharded, walk mesh dims right to left, turning a
//! target `Shard(d)` into `Replicate` for now when the mesh dims before it shard `d` differently
//! in source and target (nested shards must be undone from the inside out); then walk left to
//! right and apply what is left. Example: `(S(0),S(0)) -> (R,S(0))` is all_gather on mesh dim 1,
//! all_gather on mesh dim 0, then a local chunk on mesh dim 1.

use super::{Mesh, Placement, PlacementError, ReduceOp};
use std::fmt;

/// What one step does on its mesh dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Collective {
    /// S(d) -> R (and _S(d,sf) -> R, which then undoes the stride permutation)
    AllGather,
    /// P(op) -> R
    AllReduce(ReduceOp),
    /// P(op) -> S(d)
    ReduceScatter(ReduceOp),
    /// S(i) -> S(j)
    AllToAll,
    /// R -> S(d) or R -> _S(d,sf): keep this rank's chunk, no communication
    LocalChunk,
    /// R -> P(op): sum divides by the group size, avg/max/min keep the value; no communication
    Partition(ReduceOp),
}

impl Collective {
    /// The name used in communication logs (CommDebugMode's functional collective names).
    pub fn name(self) -> &'static str {
        match self {
            Collective::AllGather => "all_gather",
            Collective::AllReduce(_) => "all_reduce",
            Collective::ReduceScatter(_) => "reduce_scatter",
            Collective::AllToAll => "all_to_all",
            Collective::LocalChunk => "local_chunk",
            Collective::Partition(_) => "partition",
        }
    }
    /// Whether ranks exchange data (local chunking and partitioning do not).
    pub fn communicates(self) -> bool {
        !matches!(self, Collective::LocalChunk | Collective::Partition(_))
    }
}

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transform {
    pub mesh_dim: usize,
    pub from: Placement,
    pub to: Placement,
    pub collective: Collective,
}

impl fmt::Display for Transform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}[{}]", self.from, self.to, self.mesh_dim)
    }
}

/// Classifies a single-mesh-dim move, or returns the error PyTorch raises for it.
pub fn classify(from: Placement, to: Placement) -> Result<Option<Collective>, PlacementError> {
    use Placement::*;
    Ok(Some(match (from, to) {
        _ if from == to => return Ok(None),
        (Shard(_), Replicate) | (StridedShard { .. }, Replicate) => Collective::AllGather,
        (Partial(op), Replicate) => Collective::AllReduce(op),
        (Partial(op), Shard(_)) => Collective::ReduceScatter(op),
        (Replicate, Shard(_)) | (Replicate, StridedShard { .. }) => Collective::LocalChunk,
        (Shard(_), Shard(_)) => Collective::AllToAll,
        (Replicate, Partial(op)) => match op {
            ReduceOp::Sum | ReduceOp::Avg | ReduceOp::Max | ReduceOp::Min => Collective::Partition(op),
            ReduceOp::Product => return Err(PlacementError::ReplicateToPartial(op.name())),
        },
        (Shard(_), Partial(_)) | (StridedShard { .. }, Partial(_)) => {
            return Err(PlacementError::ShardToPartial { from, to })
        }
        (Partial(_), Partial(_)) => return Err(PlacementError::PartialToPartial { from, to }),
        (StridedShard { .. }, Shard(_)) => return Err(PlacementError::StridedToShard),
        (Partial(_), StridedShard { .. }) => return Err(PlacementError::PartialToStrided),
        (Shard(_), StridedShard { .. }) => return Err(PlacementError::ShardToStrided),
        // _S -> _S goes through Replicate.
        (StridedShard { .. }, StridedShard { .. }) => Collective::AllGather,
        (Replicate, Replicate) => unreachable!("equal placements handled above"),
    }))
}

/// Plans `src -> dst` (both normalised, one placement per mesh dim). Moves on size-1 mesh dims
/// are dropped: they change nothing, and PyTorch skips them when executing.
pub fn plan(mesh: &Mesh, src: &[Placement], dst: &[Placement]) -> Result<Vec<Transform>, PlacementError> {
    let mut steps = plan_all(mesh, src, dst)?;
    steps.retain(|t| mesh.dim_size(t.mesh_dim) > 1);
    Ok(steps)
}

/// The full plan, size-1 mesh dims included: what PyTorch's cost model charges for.
pub fn plan_all(mesh: &Mesh, src: &[Placement], dst: &[Placement]) -> Result<Vec<Transform>, PlacementError> {
    let n = mesh.ndim();
    if src.len() != n || dst.len() != n {
        return Err(PlacementError::WrongLength { found: src.len().min(dst.len()), mesh_ndim: n });
    }
    let mut steps: Vec<(usize, Placement, Placement)> = Vec::new();
    let mut cur = src.to_vec();
    let num_shards: usize =
        src.iter().enumerate().filter(|(_, p)| p.is_shard()).map(|(i, _)| mesh.dim_size(i)).product();
    if n > 1 && num_shards > 1 {
        for md in (0..n).rev() {
            let mut target = dst[md];
            if let Some(d) = target.shard_dim() {
                let before = |ps: &[Placement]| -> Vec<usize> { (0..md).filter(|&i| ps[i].shards(d)).collect() };
                if before(&cur) != before(dst) {
                    target = Placement::Replicate;
                }
            }
            if cur[md] != target {
                steps.push((md, cur[md], target));
                cur[md] = target;
            }
        }
    }
    for md in 0..n {
        if cur[md] != dst[md] {
            steps.push((md, cur[md], dst[md]));
            cur[md] = dst[md];
        }
    }
    let mut out = Vec::with_capacity(steps.len());
    for (md, from, to) in steps {
        // _S -> _S has no direct collective: gather, then chunk again. So has _S(d) -> S(e), on
        // another tensor dim or the same one: PyTorch's graph-based planner (used whenever a
        // _StridedShard is involved) goes through Replicate, e.g. `_S(0, 2)->R->S(1)` for an mm
        // whose lhs comes from a flattening view (docs/pytorch-facts.md §1, crosscheck
        // case-1-000165) and `_S(0, 2)->R->S(0)` when a SequenceParallel gate takes flattened
        // sequence-sharded tokens (recorded on 2.12.1, 2.13.0 and 2.14.0, tests/backward.rs).
        // The backward of that redistribution, `S(0)->R->_S(0, 2)`, goes the same way.
        let via_r = matches!(
            (from, to),
            (Placement::StridedShard { .. }, Placement::StridedShard { .. } | Placement::Shard(_))
                | (Placement::Shard(_), Placement::StridedShard { .. })
        );
        if via_r {
            out.push(Transform { mesh_dim: md, from, to: Placement::Replicate, collective: Collective::AllGather });
            out.push(Transform { mesh_dim: md, from: Placement::Replicate, to, collective: Collective::LocalChunk });
            continue;
        }
        if let Some(c) = classify(from, to)? {
            out.push(Transform { mesh_dim: md, from, to, collective: c });
        }
    }
    Ok(out)
}

/// `a->b[0] -> c->d[1]` form of a plan, as PyTorch's `stringify_transform_infos` prints it.
pub fn describe(steps: &[Transform]) -> String {
    steps.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" -> ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Placement::*;

    fn m22() -> Mesh {
        Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap()
    }

    #[test]
    fn one_dim_mesh_is_one_step() {
        let p = plan(&Mesh::tp(2), &[Shard(1)], &[Replicate]).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].collective, Collective::AllGather);
        assert!(plan(&Mesh::tp(2), &[Shard(0)], &[Shard(0)]).unwrap().is_empty());
    }

    #[test]
    fn nested_shards_unwind_inside_out() {
        let p = plan(&m22(), &[Shard(0), Shard(0)], &[Replicate, Shard(0)]).unwrap();
        assert_eq!(describe(&p), "S(0)->R[1] -> S(0)->R[0] -> R->S(0)[1]");
        let colls: Vec<_> = p.iter().map(|t| t.collective).collect();
        assert_eq!(colls, vec![Collective::AllGather, Collective::AllGather, Collective::LocalChunk]);
    }

    #[test]
    fn independent_dims_move_right_to_left_then_left_to_right() {
        let p = plan(&m22(), &[Shard(0), Shard(1)], &[Replicate, Replicate]).unwrap();
        assert_eq!(describe(&p), "S(1)->R[1] -> S(0)->R[0]");
        let p = plan(&m22(), &[Replicate, Replicate], &[Shard(0), Shard(1)]).unwrap();
        assert_eq!(describe(&p), "R->S(0)[0] -> R->S(1)[1]");
        let p = plan(&m22(), &[Partial(ReduceOp::Sum), Shard(1)], &[Replicate, Shard(1)]).unwrap();
        assert_eq!(describe(&p), "P(sum)->R[0]");
    }

    #[test]
    fn size_one_mesh_dims_are_skipped() {
        let m = Mesh::new(vec![1, 2], vec!["dp_shard".into(), "tp".into()]).unwrap();
        let p = plan(&m, &[Shard(0), Shard(1)], &[Replicate, Replicate]).unwrap();
        assert_eq!(describe(&p), "S(1)->R[1]");
    }

    #[test]
    fn illegal_moves_raise_pytorch_texts() {
        let e = plan(&Mesh::tp(2), &[Shard(0)], &[Partial(ReduceOp::Sum)]).unwrap_err();
        assert_eq!(e.to_string(), "redistribute from S(0) to P(sum) not supported yet");
        assert_eq!(e.kind(), "RuntimeError");
        let e = plan(&Mesh::tp(2), &[Partial(ReduceOp::Sum)], &[Partial(ReduceOp::Max)]).unwrap_err();
        assert_eq!(e.to_string(), "Redistribution from one partial type (P(sum)) to another (P(max)) is unsupported.");
        let p = plan(&Mesh::tp(2), &[StridedShard { dim: 0, sf: 2 }], &[Shard(0)]).unwrap();
        assert_eq!(describe(&p), "_S(0,2)->R[0] -> R->S(0)[0]");
    }

    #[test]
    fn every_legal_pair_classifies() {
        let all = [Replicate, Shard(0), Shard(1), Partial(ReduceOp::Sum), Partial(ReduceOp::Max)];
        for a in all {
            for b in all {
                let r = classify(a, b);
                let illegal = (a.is_shard() && b.is_partial()) || (a.is_partial() && b.is_partial() && a != b);
                let legal = !illegal;
                assert_eq!(r.is_ok(), legal, "{a} -> {b}");
            }
        }
    }
}
