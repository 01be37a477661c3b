//! The full_dtensor backend of torchtitan 0.3.0's MoE layer: DTensor on every mesh axis (dp
//! and cp too, where partial_dtensor leaves them to FSDP). Its tensor code and collectives are
//! the partial_dtensor backend's (sharded.rs), so the values are the same; what differs is
//! where DTensor dispatch reaches: with dp or cp > 1 the router's tensors are DTensors even at
//! tp = 1, so its topk range error and the force-load-balance override's mixed-tensor gather
//! error are DTensor's there too. The recorded DTensor x-gradient problem
//! (`drops_routed_x_grad` in sharded.rs) shows on this backend as well.
//!
//! Recorded only once each and not modelled: a hang in the backward of the one-row class
//! with dp > 1 and a load-balance coefficient, a view error ("remove or reshape sharded
//! dimension 0") with EP off, dp > 1 and cp > 1, and a hang in place of the router's
//! missing-`num_limited` error. Upstream removed this backend (#4217) after 0.3.0, so the
//! generator does not draw it: it is replayed against its recordings only.

use crate::error::Fail;
use crate::revision::Backend;
use crate::spec::MoeSpec;

/// Whether the router runs on DTensors (their dispatch words the errors): partial_dtensor when
/// tp > 1, full_dtensor on any mesh of more than one rank, spmd_types never, nor 0.2.x's
/// dtensor_hooks (its `NoParallel` gate hands plain tensors to the router's topk and gather).
pub fn router_on_dtensor(backend: Backend, dp: usize, cp: usize, tp: usize) -> bool {
    match backend {
        Backend::SpmdTypes | Backend::DtensorHooks => false,
        Backend::PartialDtensor => tp > 1,
        Backend::FullDtensor => dp * cp * tp > 1,
    }
}

/// The router's missing-`num_limited` error recorded as a hang on full_dtensor (once), checked
/// before the router's own checks.
pub fn hangs_at_router(sp: &MoeSpec) -> Result<(), Fail> {
    if sp.backend == Backend::FullDtensor && sp.router.groups.is_some_and(|g| g.num_limited.is_none()) {
        return Err(Fail::not_modelled("full_dtensor with num_limited unset (a hang recorded once)"));
    }
    Ok(())
}

/// The other full_dtensor outcomes recorded once and not modelled (module docs), checked after
/// the router's errors.
pub fn not_modelled(sp: &MoeSpec, dp: usize, cp: usize, tp: usize) -> Result<(), Fail> {
    if sp.backend != Backend::FullDtensor {
        return Ok(());
    }
    // The class of the DTensor backends' x-gradient drop (sharded.rs), at dp > 1.
    let one_row_class = sp.parallel.ep == 1 && sp.parallel.sp && tp > 1;
    if sp.parallel.ep == 1 && dp > 1 && cp > 1 {
        return Err(Fail::not_modelled("full_dtensor, EP off, dp > 1 and cp > 1 (a view error recorded once)"));
    }
    if sp.backward && sp.load_balance_coeff.is_some() && dp > 1 && one_row_class {
        return Err(Fail::not_modelled(
            "full_dtensor, the one-row class with dp > 1 and a coefficient (a backward hang recorded once)",
        ));
    }
    Ok(())
}
