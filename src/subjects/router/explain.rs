//! One line per bucket saying what it means, for reports: the router's mechanisms by verdict
//! class and key.

use harness::oracle::{Class, Verdict};

/// One line saying what a bucket means.
pub fn explain(v: &Verdict) -> String {
    let key = v.key.as_str();
    let has = |s: &str| key.contains(s);
    match v.class {
        Class::Error if has("inplace_placement_change") => "in-place scatter_ on a sharded self: no strategy keeps self's placement (torch <= 2.12 scatters all-Replicate only; 2.13+ needs a non-scatter dim at least as long as its shard count)".into(),
        Class::Error if has("view_of_sharded_dim") => "the gate's view to (B*L, D) drops a sharded dim shorter than its shard count; torch 2.13 raises where 2.12 all-gathered silently".into(),
        Class::Error if has("cannot_flatten_unevenly") => "an unevenly sharded batch cannot be flattened by the gate's view".into(),
        Class::Error if has("cannot_unflatten_tensor_with") => "two mesh dims shard one token dim: the gate's flatten records a split factor the unflatten cannot match (PyTorch view bug)".into(),
        Class::Error if has("cannot_unflatten_unevenly") => "a sharded dim split into pieces that do not divide by the mesh size (expert groups over sharded experts)".into(),
        Class::Error if has("cannot_shard_unevenly") => "nested uneven token shards cannot be flattened into a _StridedShard".into(),
        Class::Error if has("shape_is_invalid_for_input") => "view propagation accepted a nested flatten whose local view shape does not fit the local shard (PyTorch view bug)".into(),
        Class::Error if has("mixed_tensor") => "force-load-balance builds a plain int64 index that meets DTensor scores (every revision)".into(),
        Class::Error if has("index_is_out_of_bounds") => "a local_map scatter gets global expert ids on a local shard of experts (gate sharded on experts)".into(),
        Class::Error if has("expected_index_to_be_no") || has("size_does_not_match") => "a local_map scatter gets scores and ids with different layouts, so their local shapes disagree".into(),
        Class::Error if has("attempting_to_broadcast") => "a local_map re-wrap gave a rank-dependent global shape; the next op's broadcast check fails on real ranks".into(),
        Class::Error if has("rank_desync") => "ranks that disagree on a global shape chose different sharding strategies (real ranks would hang)".into(),
        Class::Error => format!("only one side raised: {}", v.detail),
        Class::Placement if key.split(',').all(|p| p.ends_with("@1") && p.starts_with("P(")) => "counts come out Replicate on a size-1 mesh axis where the contract keeps Partial (torchtitan#3762 with size1=keep)".into(),
        Class::Placement if has("->R") && has("P(") && !has("R->") => "counts come out Replicate where the contract expects Partial: a scatter (or an earlier op) fell back to Replicate".into(),
        Class::Placement if has("R->P(") => "counts are Partial where the contract says Replicate: an EP-on (token-sharded) layout meets an EP-off contract".into(),
        Class::Placement if has("->S(") => "counts are sharded on experts: the routing map kept an expert-dim shard from the gate or bias".into(),
        Class::Placement => format!("counts placements differ from the contract ({key})"),
        Class::Shape => "a local_map re-wrap without shape= on uneven shards: ranks infer different global shapes (pytorch#172812)".into(),
        Class::Comm => "a collective at a scatter site that the rule set promises to run locally".into(),
        Class::Value => format!("sharded {} differ from the reference beyond the derived error bound", v.output.as_deref().unwrap_or("values")),
        Class::Nondeterminism => "the same case gave different results twice".into(),
        Class::Device => format!("CPU and CUDA disagree on the same case ({key})"),
        Class::Crash => format!("the worker died running this case ({key})"),
        Class::Timeout => "the worker exceeded the per-case time limit".into(),
        Class::Grad if has("reduced_twice") => "a gradient reduced once too often: a Partial label over a gradient already reduced (ratio to the reference = the TP degree)".into(),
        Class::Grad if has("missing_reduction") => "a gradient labelled Replicate over per-rank shares: never reduced, and the ranks' copies drift apart".into(),
        Class::Grad => format!("a gradient differs from the reference ({key})"),
        Class::Replica => "a Replicate-labelled gradient whose per-rank copies differ: an optimizer step would move the ranks apart (torchtitan#2387's signature)".into(),
        Class::GradPlacement => format!("a gradient with a placement its tensor may not have ({key})"),
    }
}
