//! PyTorch's redistribution cost model (`_collective_utils.redistribute_cost`, the same in 2.12.1,
//! 2.13.0 and 2.14.0), used to pick among an op's sharding strategies when none of them is free.
//!
//! The cost is summed over the steps of the plan the release's planner makes (`plan::plan_all`:
//! the greedy planner, or the graph planner once a `_StridedShard` is involved), size-1 mesh
//! dims included (they still pay the base latency), starting from the bytes of one shard: an
//! all_gather multiplies the bytes later steps move, a reduce_scatter or a chunk from Replicate
//! divides them, so a plan that shards first and gathers later is cheaper (golden 12's softmax
//! and golden 13's mm are decided by that). S -> S is an all_gather plus a penalty of 1; S -> P
//! and P(a) -> P(b) are banned (a `_MaskPartial` is a Partial of its own); a replicated source
//! costs nothing. A step from or to `_StridedShard` costs nothing and leaves the bytes as they
//! are: `Placement.is_shard()` is False for `_StridedShard`, so
//! `_compute_placement_transition_cost` falls through to its final `return 0.0`, although the
//! step is a real all_gather. (PyTorch's "shard_order is None" guard, which makes such plans
//! infinite, only applies to a `_StridedShard` a user declared; every `_StridedShard` here comes
//! from a view, whose spec has a default shard order, and case files cannot declare one.)
//!
//! The cost of one step is [`crate::step`]'s.

use super::plan::{plan_all, Footprint, PlanRules};
use super::step::step_cost;
use super::{Mesh, Placement};

/// Cost of moving a tensor of `global` shape and `itemsize` bytes per element from `src` to
/// `dst`, walking the plan the release's planner makes.
pub fn redistribute_cost(
    mesh: &Mesh,
    src: &[Placement],
    dst: &[Placement],
    global: &[usize],
    itemsize: usize,
    rules: PlanRules,
) -> f64 {
    if src.iter().all(|p| p.is_replicate()) || src == dst {
        return 0.0;
    }
    let num_shards: usize =
        src.iter().enumerate().filter(|(_, p)| p.is_shard()).map(|(i, _)| mesh.dim_size(i)).product();
    let numel: usize = global.iter().product();
    let mut bytes_gb = (itemsize * numel) as f64 / num_shards as f64 / (1024.0 * 1024.0 * 1024.0);
    let t = Footprint { shape: global, itemsize };
    let Ok(steps) = plan_all(mesh, src, dst, t, rules) else { return f64::INFINITY };
    let mut cost = 0.0;
    for s in steps {
        let (c, b) = step_cost(s.from, s.to, mesh.dim_size(s.mesh_dim), bytes_gb);
        if c.is_infinite() {
            return f64::INFINITY;
        }
        cost += c;
        bytes_gb = b;
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Mesh;
    use crate::{Placement::*, ReduceOp};
    const R: PlanRules = PlanRules { shard_to_partial: false };

    #[test]
    fn replicated_sources_are_free_and_shard_to_partial_is_banned() {
        let m = Mesh::tp(2);
        assert_eq!(redistribute_cost(&m, &[Replicate], &[Shard(0)], &[8, 8], 4, R), 0.0);
        assert!(redistribute_cost(&m, &[Shard(0)], &[Partial(ReduceOp::Sum)], &[8, 8], 4, R).is_infinite());
    }

    #[test]
    fn nested_shards_cost_the_whole_plan() {
        // (S(1),S(1)) -> (R,S(1)) gathers twice (inner dim first); -> (S(1),R) once.
        let m = Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap();
        let two = redistribute_cost(&m, &[Shard(1), Shard(1)], &[Replicate, Shard(1)], &[1, 8, 8], 4, R);
        let one = redistribute_cost(&m, &[Shard(1), Shard(1)], &[Shard(1), Replicate], &[1, 8, 8], 4, R);
        assert!(two > one && one > 0.0);
        // Steps from a view's _StridedShard are free (is_shard() is False for it); the
        // Shard steps of the same plan are not.
        assert_eq!(
            redistribute_cost(&m, &[StridedShard { dim: 0, sf: 2 }, Replicate], &[Replicate, Replicate], &[8, 8], 4, R),
            0.0
        );
        let mixed =
            redistribute_cost(&m, &[StridedShard { dim: 0, sf: 2 }, Shard(1)], &[Replicate, Replicate], &[8, 8], 4, R);
        assert!(mixed > 0.0 && mixed.is_finite());
    }

    #[test]
    fn all_to_all_costs_more_than_all_gather() {
        // Why a short sequence falls back to Replicate rather than re-sharding on another dim.
        let m = Mesh::tp(2);
        let gather = redistribute_cost(&m, &[Shard(1)], &[Replicate], &[2, 1, 8], 4, R);
        let a2a = redistribute_cost(&m, &[Shard(1)], &[Shard(0)], &[2, 1, 8], 4, R);
        assert!(gather > 0.0 && a2a > gather);
        let reduce = redistribute_cost(&m, &[Partial(ReduceOp::Sum)], &[Replicate], &[2, 1, 8], 4, R);
        assert!(reduce > gather);
    }

    /// t_cost.py and torch214-audit.md §2.1, §2.3 (the same in 2.12.1, 2.13.0, 2.14.0): golden
    /// 12's softmax input (2,2,4) f32 and golden 13's mm lhs (8,4) f32 on a 2x2 mesh.
    #[test]
    fn golden_12_and_13_costs() {
        let m = Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap();
        let near = |got: f64, want: f64| assert!((got - want).abs() < 6e-5, "{got} vs {want}");
        let c = |src: &[Placement], dst: &[Placement], shape: &[usize]| redistribute_cost(&m, src, dst, shape, 4, R);
        let s2 = [Shard(2), Replicate];
        near(c(&s2, &[Replicate, Replicate], &[2, 2, 4]), 9.30154);
        near(c(&s2, &[Replicate, Shard(0)], &[2, 2, 4]), 9.30077);
        near(c(&s2, &[Shard(0), Replicate], &[2, 2, 4]), 10.30077);
        near(c(&s2, &[Shard(0), Shard(1)], &[2, 2, 4]), 10.30039);
        // The cheaper [R, S(0)] must beat [R, R] strictly, and tie [R, S(1)] exactly.
        assert_eq!(c(&s2, &[Replicate, Shard(0)], &[2, 2, 4]), c(&s2, &[Replicate, Shard(1)], &[2, 2, 4]));
        let x = [StridedShard { dim: 0, sf: 2 }, Shard(1)];
        near(c(&x, &[Shard(0), Replicate], &[8, 4]), 9.3008);
        near(c(&x, &[StridedShard { dim: 0, sf: 2 }, Replicate], &[8, 4]), 9.3015);
        assert_eq!(c(&x, &[Replicate, Shard(1)], &[8, 4]), 0.0);
        assert_eq!(c(&x, &[Shard(0), Shard(1)], &[8, 4]), 0.0);
        assert!(c(&x, &[Shard(0), Replicate], &[8, 4]) < c(&x, &[StridedShard { dim: 0, sf: 2 }, Replicate], &[8, 4]));
    }
}
