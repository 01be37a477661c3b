//! The spmd_types backend of torchtitan 0.3.0's MoE layer (the default backend upstream): the
//! configurations its model leaves out, and the hook's reduction of the counts.
//!
//! The layer runs on the simulated local-SPMD runtime ([`crate::spmd_layer`]): typed per-rank
//! values, every conversion and collective through the runtime (its comm log), the checker's
//! errors under `typecheck`, and the errors the real run meets in the library's and torch's
//! ops raised by the runtime's op that raises them upstream: the `IndexError` of the
//! library's `torch.chunk` based `shard` / `convert` (the expert weights' S(0) over ep at
//! parallelize, x's I -> S(1) over tp at the router's entry under EP with SP off), `topk`'s
//! range error (plain tensors: torch's text), the dispatcher's `view` of the counts, and the
//! size error of the exit's add (the routed output's S(1) -> P zero-fill longer than the
//! block). What stays here is what the model does not follow:
//!
//! - under EP with SP off, an uneven tp chunk of the sequence and no shared experts, the
//!   zero-filled routed output reaches the exit's all-reduce with a different length per rank:
//!   gloo's collective fingerprint check, whose text names sequence numbers the runtime does
//!   not track ([`not_modelled`], met right after the router's entry, as before);
//! - none of the DTensor backends' recorded problems (the routed x-gradient drop).
//!
//! The load-balance hook's reduction of the counts ([`hook_reduces_counts_over_tp`]) is where
//! torchtitan's #4154 lives (the spmd_types backend once left the TP reduction out).

use crate::error::Fail;
use crate::revision::{Backend, MoeRev};
use crate::spec::MoeSpec;
use tch::Tensor;

/// The configurations of the spmd_types layer the model leaves out, checked right after the
/// router's entry: under EP with SP off, an uneven tp chunk of some block's sequence and no
/// shared experts (the exit all-reduce's collective mismatch, a gloo error).
pub fn not_modelled(sp: &MoeSpec, tp: usize, lens: &[usize]) -> Result<(), Fail> {
    let p = sp.parallel;
    if p.ep > 1 && !p.sp && lens.iter().any(|&l| !l.is_multiple_of(tp)) && sp.dims.shared_hidden.is_none() {
        return Err(Fail::not_modelled(
            "EP on, SP off, an uneven tp chunk and no shared experts (collective mismatch)",
        ));
    }
    Ok(())
}

/// The load-balance hook's reduction of the counts over the dense TP group (torchtitan #4154,
/// "fix MoE routing bias TP reduce"): under EP each tp rank routes its own chunk of the sequence,
/// so its counts are partial over tp and the hook must all-reduce them over tp before the loss
/// mesh. At 0.3.0 every backend does so when EP is on and tp > 1. Before #4154 (`tt-pre4154`)
/// the spmd_types counts are a plain tensor and only the loss mesh is reduced; the DTensor
/// backends reduce tp through `full_tensor()` / `redistribute` in every revision.
/// At `tt-0.2.2` the router runs replicated on tp even under EP, so its counts are the same on
/// every tp rank already and the hook reduces the loss mesh only (correctly).
pub fn hook_reduces_counts_over_tp(rev: MoeRev, backend: Backend, ep: usize, tp: usize) -> bool {
    let pre4154_spmd = rev == MoeRev::TtPre4154 && backend == Backend::SpmdTypes;
    ep > 1 && tp > 1 && !pre4154_spmd && !rev.routes_whole_block()
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
