//! PyTorch's redistribution cost model (`_collective_utils.redistribute_cost`), used to pick
//! among an op's sharding strategies when none of them is free.
//!
//! As in PyTorch 2.12/2.13: the cost is summed over the steps of the actual redistribution plan
//! (size-1 mesh dims included, which still pay the base latency), starting from the bytes of one
//! shard; an all_gather multiplies the bytes that later steps move, a reduce_scatter or a local
//! chunk divides them. S -> S is an all_gather plus a penalty of 1; S -> P and P(a) -> P(b) are
//! banned; a replicated source costs nothing. A step from or to `_StridedShard` costs nothing and
//! leaves the bytes as they are: `Placement.is_shard()` is False for `_StridedShard` in 2.12.1,
//! 2.13.0 and 2.14.0, so `_compute_placement_transition_cost` falls through to its final
//! `return 0.0`. (PyTorch's "shard_order is None" guard, which makes such plans infinite, only
//! applies to `_StridedShard` a user declared; every `_StridedShard` here comes from a view, whose
//! spec has `use_strided_shard_as_shard_order=False` and a default shard order, and case files
//! cannot declare one.) Constants: 6.6 base latency per collective, 87.7 GB/s
//! links. Ranks are simulated with CPU semantics, where PyTorch counts one device per host, so
//! every mesh dim gets the inter-host figures (bandwidth x 0.22, 2.7 per hop).

use super::plan::plan_all;
use super::{Mesh, Placement};

const BASE_LATENCY: f64 = 6.6;
const HOP_LATENCY: f64 = 2.7;
const BANDWIDTH_GBS: f64 = 87.7 * 0.22;

fn collective_cost(bytes_gb: f64, n: usize, hops: usize) -> f64 {
    let latency = BASE_LATENCY + hops as f64 * HOP_LATENCY;
    let bw = (bytes_gb * hops as f64 / n as f64) / BANDWIDTH_GBS;
    latency + bw * 1e6
}

/// Cost of one step on a mesh dim of size `n`, and the bytes later steps move.
fn step_cost(c: Placement, t: Placement, n: usize, bytes_gb: f64) -> (f64, f64) {
    if c == t {
        return (0.0, bytes_gb);
    }
    // PyTorch's `is_shard()`: plain Shard only.
    let strided = |p: Placement| matches!(p, Placement::StridedShard { .. });
    if strided(c) || strided(t) {
        return (0.0, bytes_gb);
    }
    let hops = n.saturating_sub(1);
    if c.is_shard() && t.is_replicate() {
        let b = bytes_gb * n as f64;
        (collective_cost(b, n, hops), b)
    } else if c.is_shard() && t.is_shard() {
        (collective_cost(bytes_gb, n, hops) + 1.0, bytes_gb)
    } else if c.is_partial() && t.is_replicate() {
        (collective_cost(bytes_gb, n, 2 * hops), bytes_gb)
    } else if c.is_partial() && t.is_shard() {
        (collective_cost(bytes_gb, n, hops), bytes_gb / n as f64)
    } else if (c.is_shard() && t.is_partial()) || (c.is_partial() && t.is_partial()) {
        (f64::INFINITY, bytes_gb)
    } else if c.is_replicate() && t.is_shard() {
        (0.0, bytes_gb / n as f64)
    } else {
        (0.0, bytes_gb)
    }
}

/// Cost of moving a tensor of `global` shape and `itemsize` bytes per element from `src` to `dst`.
pub fn redistribute_cost(mesh: &Mesh, src: &[Placement], dst: &[Placement], global: &[usize], itemsize: usize) -> f64 {
    if src.iter().all(|p| p.is_replicate()) || src == dst {
        return 0.0;
    }
    let num_shards: usize =
        src.iter().enumerate().filter(|(_, p)| p.is_shard()).map(|(i, _)| mesh.dim_size(i)).product();
    let numel: usize = global.iter().product();
    let mut bytes_gb = (itemsize * numel) as f64 / num_shards.max(1) as f64 / (1024.0 * 1024.0 * 1024.0);
    let Ok(steps) = plan_all(mesh, src, dst) else { return f64::INFINITY };
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
    use crate::placement::Mesh;
    use crate::placement::{Placement::*, ReduceOp};

    #[test]
    fn replicated_sources_are_free_and_shard_to_partial_is_banned() {
        let m = Mesh::tp(2);
        assert_eq!(redistribute_cost(&m, &[Replicate], &[Shard(0)], &[8, 8], 4), 0.0);
        assert!(redistribute_cost(&m, &[Shard(0)], &[Partial(ReduceOp::Sum)], &[8, 8], 4).is_infinite());
    }

    #[test]
    fn nested_shards_cost_the_whole_plan() {
        // (S(1),S(1)) -> (R,S(1)) gathers twice (inner dim first); -> (S(1),R) once.
        let m = Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap();
        let two = redistribute_cost(&m, &[Shard(1), Shard(1)], &[Replicate, Shard(1)], &[1, 8, 8], 4);
        let one = redistribute_cost(&m, &[Shard(1), Shard(1)], &[Shard(1), Replicate], &[1, 8, 8], 4);
        assert!(two > one && one > 0.0);
        // Steps from a view's _StridedShard are free (is_shard() is False for it); the
        // Shard steps of the same plan are not.
        assert_eq!(
            redistribute_cost(&m, &[StridedShard { dim: 0, sf: 2 }, Replicate], &[Replicate, Replicate], &[8, 8], 4),
            0.0
        );
        let mixed =
            redistribute_cost(&m, &[StridedShard { dim: 0, sf: 2 }, Shard(1)], &[Replicate, Replicate], &[8, 8], 4);
        assert!(mixed > 0.0 && mixed.is_finite());
    }

    #[test]
    fn all_to_all_costs_more_than_all_gather() {
        // Why a short sequence falls back to Replicate rather than re-sharding on another dim.
        let m = Mesh::tp(2);
        let gather = redistribute_cost(&m, &[Shard(1)], &[Replicate], &[2, 1, 8], 4);
        let a2a = redistribute_cost(&m, &[Shard(1)], &[Shard(0)], &[2, 1, 8], 4);
        assert!(gather > 0.0 && a2a > gather);
        let reduce = redistribute_cost(&m, &[Partial(ReduceOp::Sum)], &[Replicate], &[2, 1, 8], 4);
        assert!(reduce > gather);
    }
}
