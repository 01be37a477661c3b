//! PyTorch's redistribution cost model (`_collective_utils.redistribute_cost`), used to pick
//! among an op's sharding strategies when none of them is free.
//!
//! Only the order of costs matters. Constants follow PyTorch: 6.6 base latency per collective,
//! 87.7 GB/s links. Ranks are simulated on one process with CPU semantics, where PyTorch counts one
//! device per host, so every mesh dim larger than 1 gets the inter-host figures (bandwidth x 0.22,
//! 2.7 per hop); with one set of figures for all dims, the choice among strategies does not
//! depend on that assumption.

use super::{Mesh, Placement};

const BASE_LATENCY: f64 = 6.6;
const HOP_LATENCY: f64 = 2.7;
const BANDWIDTH_GBS: f64 = 87.7 * 0.22;

fn collective_cost(bytes_gb: f64, n: usize, hops: usize) -> f64 {
    let latency = BASE_LATENCY + hops as f64 * HOP_LATENCY;
    let bw = (bytes_gb * hops as f64 / n as f64) / BANDWIDTH_GBS;
    latency + bw * 1e6
}

/// Cost of moving a tensor of `global` shape and `itemsize` bytes per element from `src` to
/// `dst`. Free when the source is fully replicated (a local chunk); infinite for Shard -> Partial.
pub fn redistribute_cost(mesh: &Mesh, src: &[Placement], dst: &[Placement], global: &[usize], itemsize: usize) -> f64 {
    if src.iter().all(|p| p.is_replicate()) {
        return 0.0;
    }
    let num_shards: usize = src.iter().enumerate().filter(|(_, p)| p.is_shard()).map(|(i, _)| mesh.dim_size(i)).product();
    let numel: usize = global.iter().product();
    let mut bytes_gb = (itemsize * numel) as f64 / num_shards.max(1) as f64 / (1024.0 * 1024.0 * 1024.0);
    let mut cost = 0.0;
    for (i, (&c, &t)) in src.iter().zip(dst).enumerate() {
        if c == t {
            continue;
        }
        let n = mesh.dim_size(i);
        if c.is_shard() && t.is_replicate() {
            bytes_gb *= n as f64;
            cost += collective_cost(bytes_gb, n, n - 1);
        } else if c.is_shard() && t.is_shard() {
            cost += collective_cost(bytes_gb, n, n - 1) + 1.0;
        } else if c.is_partial() && t.is_replicate() {
            cost += collective_cost(bytes_gb, n, 2 * (n - 1));
        } else if c.is_partial() && t.is_shard() {
            cost += collective_cost(bytes_gb, n, n - 1);
            bytes_gb /= n as f64;
        } else if (c.is_shard() && t.is_partial()) || (c.is_partial() && t.is_partial()) {
            // Neither S -> P nor P(a) -> P(b) can be redistributed.
            return f64::INFINITY;
        }
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::{Placement::*, ReduceOp};

    #[test]
    fn replicated_sources_are_free_and_shard_to_partial_is_banned() {
        let m = Mesh::tp(2);
        assert_eq!(redistribute_cost(&m, &[Replicate], &[Shard(0)], &[8, 8], 4), 0.0);
        assert!(redistribute_cost(&m, &[Shard(0)], &[Partial(ReduceOp::Sum)], &[8, 8], 4).is_infinite());
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
