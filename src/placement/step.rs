//! The cost of one redistribution step on one mesh dim (PyTorch's
//! `_compute_placement_transition_cost`), shared by the cost model ([`crate::cost`], which sums
//! it over a plan) and the graph planner ([`crate::plan`], which searches by it).
//!
//! Constants: 6.6 base latency per collective, 87.7 GB/s links. Ranks are simulated with CPU
//! semantics, where PyTorch counts one device per host (`MeshTopoInfo.build_from_mesh`), so
//! every mesh dim gets the inter-host figures (bandwidth x 0.22, 2.7 per hop); the figures of a
//! size-1 mesh dim do not matter, its steps cost the base latency whatever they are.

use crate::Placement;

const BASE_LATENCY: f64 = 6.6;
const HOP_LATENCY: f64 = 2.7;
const BANDWIDTH_GBS: f64 = 87.7 * 0.22;

fn collective_cost(bytes_gb: f64, n: usize, hops: usize) -> f64 {
    let latency = BASE_LATENCY + hops as f64 * HOP_LATENCY;
    let bw = (bytes_gb * hops as f64 / n as f64) / BANDWIDTH_GBS;
    latency + bw * 1e6
}

/// `_compute_placement_transition_cost`: one step on a mesh dim of size `n`, and the bytes later
/// steps move. PyTorch tests `is_shard()`, which is False for `_StridedShard`, so every step from
/// or to one falls through to the final "free, bytes unchanged" case.
pub(crate) fn step_cost(c: Placement, t: Placement, n: usize, bytes_gb: f64) -> (f64, f64) {
    if c == t {
        return (0.0, bytes_gb);
    }
    let hops = n.saturating_sub(1);
    let (cs, ts) = (c.is_plain_shard(), t.is_plain_shard());
    if cs && t.is_replicate() {
        let b = bytes_gb * n as f64;
        (collective_cost(b, n, hops), b)
    } else if cs && ts {
        (collective_cost(bytes_gb, n, hops) + 1.0, bytes_gb)
    } else if c.is_partial() && t.is_replicate() {
        (collective_cost(bytes_gb, n, 2 * hops), bytes_gb)
    } else if c.is_partial() && ts {
        (collective_cost(bytes_gb, n, hops), bytes_gb / n as f64)
    } else if (cs && t.is_partial()) || (c.is_partial() && t.is_partial()) {
        (f64::INFINITY, bytes_gb)
    } else if c.is_replicate() && ts {
        (0.0, bytes_gb / n as f64)
    } else {
        (0.0, bytes_gb)
    }
}
