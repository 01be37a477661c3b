//! The spmd_types backend of torchtitan 0.3.0's MoE layer (the default backend upstream): the
//! errors met around its typed code, and the hook's reduction of the counts.
//!
//! The layer itself runs on the simulated local-SPMD runtime ([`crate::spmd_layer`]): typed
//! per-rank values, every conversion and collective through the runtime (its comm log), the
//! checker's errors under `typecheck`. What stays here is what the real run meets outside the
//! typed values, or in the tensor code itself:
//!
//! - plain tensors (no DTensor dispatch), so `topk`'s range error and the force-load-balance
//!   override are the plain-torch ones (in `sharded::checks`);
//! - the library's `torch.chunk` based `shard` (`_replicate_to_varying`) raises `IndexError:
//!   tuple index out of range` when a dim has fewer chunks than the axis has ranks (the expert
//!   weights' S(0) over ep at parallelize, x's I -> S(1) over tp at the router's entry under
//!   EP); an uneven tp chunk of the sequence under EP (SP off) makes the routed output's
//!   S(1) -> P zero-fill longer than the block, which the shared experts' add rejects;
//! - none of the DTensor backends' recorded problems (the routed x-gradient drop).
//!
//! The load-balance hook's reduction of the counts ([`hook_reduces_counts_over_tp`]) is where
//! torchtitan's #4154 lives (the spmd_types backend once left the TP reduction out).

use crate::error::{Fail, Stage};
use crate::revision::{Backend, MoeRev};
use crate::spec::MoeSpec;
use tch::Tensor;

/// How many pieces `torch.chunk(n rows, k)` returns: ceil(n / ceil(n / k)) (0 for n = 0).
pub fn torch_chunks(n: usize, k: usize) -> usize {
    if n == 0 {
        return 0;
    }
    n.div_ceil(n.div_ceil(k.max(1)))
}

/// Whether the library's shard (R/I -> S(d) by `torch.chunk`) of `n` rows over an axis of `k`
/// ranks raises: some rank's chunk index is past the last chunk.
pub fn shard_raises(n: usize, k: usize) -> bool {
    k > 1 && torch_chunks(n, k) < k
}

fn index_error(stage: Stage) -> Fail {
    Fail::new(stage, "IndexError", "tuple index out of range")
}

/// The spmd_types errors met before the router runs, after the mesh is built: the expert
/// weights' S(0) over ep at parallelize (fewer experts than chunks), then, under EP with SP
/// off, x's I -> S(1) over tp at the router's entry (a block shorter than tp chunks).
/// Configurations past these that the model does not cover are left to the caller.
pub fn before_forward(sp: &MoeSpec, tp: usize, lens: &[usize]) -> Result<(), Fail> {
    let p = sp.parallel;
    if p.ep > 1 && shard_raises(sp.dims.experts, p.ep) {
        // Recorded: the ranks past the last chunk raise at parallelize, the others go on and
        // fail in the forward; the recorder reports the parallelize stage.
        return Err(index_error(Stage::Parallelize));
    }
    if p.ep > 1 && !p.sp && lens.iter().any(|&l| shard_raises(l, tp)) {
        return Err(index_error(Stage::Forward));
    }
    if p.ep > 1 && !p.sp && lens.iter().any(|&l| !l.is_multiple_of(tp)) && sp.dims.shared_hidden.is_none() {
        // Without shared experts the zero-filled routed output reaches the exit all-reduce with
        // a different length per rank: gloo's collective fingerprint check (its text names
        // sequence numbers the model does not track).
        return Err(Fail::not_modelled(
            "EP on, SP off, an uneven tp chunk and no shared experts (collective mismatch)",
        ));
    }
    Ok(())
}

/// The spmd_types error at the layer's exit (after the router, dispatch and experts ran): under
/// EP with SP off and an uneven tp chunk of the sequence, the routed output's S(1) -> P
/// zero-fill is tp · ceil(L_block / tp) long and the shared experts' output L_block: rank 0's
/// add raises torch's broadcast error (on the token dim 0 of (T, D) at `tt-head` **[inferred]**).
pub fn at_exit(sp: &MoeSpec, tp: usize, lens: &[usize]) -> Result<(), Fail> {
    let p = sp.parallel;
    let Some(&l0) = lens.first() else { return Ok(()) };
    if p.ep > 1 && !p.sp && lens.iter().any(|&l| !l.is_multiple_of(tp)) && sp.dims.shared_hidden.is_some() {
        if !l0.is_multiple_of(tp) {
            let a = tp * l0.div_ceil(tp);
            let dim = if sp.revision.folds_batch() { 0 } else { 1 };
            return Err(Fail::new(
                Stage::Forward,
                "RuntimeError",
                format!(
                    "The size of tensor a ({a}) must match the size of tensor b ({l0}) at non-singleton dimension {dim}"
                ),
            ));
        }
        return Err(Fail::not_modelled("EP on, SP off, an uneven tp chunk past rank 0's block"));
    }
    Ok(())
}

/// The load-balance hook's reduction of the counts over the dense TP group (torchtitan #4154,
/// "fix MoE routing bias TP reduce"): under EP each tp rank routes its own chunk of the sequence,
/// so its counts are partial over tp and the hook must all-reduce them over tp before the loss
/// mesh. At 0.3.0 every backend does so when EP is on and tp > 1. Before #4154 (`tt-pre4154`)
/// the spmd_types counts are a plain tensor and only the loss mesh is reduced; the DTensor
/// backends reduce tp through `full_tensor()` / `redistribute` in every revision.
pub fn hook_reduces_counts_over_tp(rev: MoeRev, backend: Backend, ep: usize, tp: usize) -> bool {
    let pre4154_spmd = rev == MoeRev::TtPre4154 && backend == Backend::SpmdTypes;
    ep > 1 && tp > 1 && !pre4154_spmd
}

/// The counts each rank's hook step sees: its counts summed over the loss mesh (the ranks with
/// its tp coordinate), then over tp when [`hook_reduces_counts_over_tp`] says so. One tensor
/// per rank of the dense mesh (rank = block · tp + tp coordinate).
pub fn hook_counts(sp: &MoeSpec, tp: usize, tokens: &[Tensor]) -> Vec<Tensor> {
    let over_tp = hook_reduces_counts_over_tp(sp.revision, sp.backend, sp.parallel.ep, tp);
    let sum = |v: Vec<&Tensor>| v.into_iter().fold(None::<Tensor>, |a, t| Some(a.map_or(t.shallow_clone(), |a| a + t)));
    let per_t: Vec<Tensor> =
        (0..tp).map(|t| sum(tokens.iter().skip(t).step_by(tp).collect()).expect("at least one block")).collect();
    let all = sum(per_t.iter().collect()).expect("at least one tp rank");
    (0..tokens.len()).map(|r| if over_tp { all.shallow_clone() } else { per_t[r % tp].shallow_clone() }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_chunk_counts() {
        // torch.chunk(3 rows, 4) gives 3 pieces, (2, 4) 2, (5, 2) 2, (0, 2) none.
        assert_eq!([torch_chunks(3, 4), torch_chunks(2, 4), torch_chunks(5, 2), torch_chunks(0, 2)], [3, 2, 2, 0]);
        assert!(shard_raises(3, 4) && shard_raises(1, 2) && shard_raises(2, 4));
        assert!(!shard_raises(3, 2) && !shard_raises(4, 4) && !shard_raises(0, 1));
    }

    #[test]
    fn hook_counts_reduce_over_tp_only_under_ep() {
        let case = |ep: usize| {
            let text = format!(
                r#"{{"revision": "tt-0.3.0", "backend": "spmd_types",
                "parallel": {{"dp_replicate": 1, "ep": {ep}, "sp": true}},
                "dims": {{"batch": 2, "seq": 4, "model": 8, "hidden": 8, "experts": 2, "top_k": 1, "shared_hidden": null}},
                "router": {{"score_func": "softmax", "route_norm": false, "route_scale": 1.0, "groups": null,
                "force_load_balance": false}}, "load_balance_coeff": 0.001, "backward": false}}"#
            );
            serde_json::from_str::<MoeSpec>(&text).expect("a spec")
        };
        // Two blocks (dp) x two tp ranks; rank r's counts are [r, 1].
        let tokens: Vec<Tensor> = (0..4).map(|r| Tensor::from_slice(&[r as f32, 1.0])).collect();
        let v = |t: &Tensor| Vec::<f32>::try_from(t).expect("floats");
        let on = hook_counts(&case(2), 2, &tokens);
        assert!(on.iter().all(|t| v(t) == [6.0, 4.0]), "EP on: summed over dp and tp");
        let off = hook_counts(&case(1), 2, &tokens);
        assert_eq!(v(&off[0]), [2.0, 2.0]);
        assert_eq!(v(&off[1]), [4.0, 2.0]);
        assert!(hook_reduces_counts_over_tp(MoeRev::Tt030, Backend::SpmdTypes, 2, 2));
        assert!(!hook_reduces_counts_over_tp(MoeRev::Tt030, Backend::SpmdTypes, 2, 1));
    }
}
