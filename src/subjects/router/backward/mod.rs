//! The router's backward pass at torchtitan's MoE boundaries: which boundary code runs
//! ([`Boundary`], the case's `backward` object), the loss that stands in for the experts
//! ([`loss`]), the programs on the simulated DTensor's autograd ([`program`]), and the
//! unsharded reference gradients ([`reference`]). docs/backward.md describes all of it.

pub mod loss;
pub mod program;
pub mod reference;

use placement::Placement;
use serde::{Deserialize, Serialize};

names::named_enum! {
    /// The torchtitan revision whose local/DTensor boundary code runs.
    pub enum Boundary("boundary revision") {
        /// Before #2416: the gate's output `to_local()` (label R), #1878's label P on the
        /// experts' input; the router on local tensors. Upstream: #2387.
        Pre2416 = "tt-pre2416",
        /// PR #2388 (closed): as before #2416, with the gate's output labelled P.
        Pr2388 = "tt-pr2388",
        /// #2416 to #3386: the MoE input `to_local(grad P)`, the gate `from_local(R)` without a
        /// label, its output labelled P.
        T2416 = "tt-2416",
        /// PRs #3192/#3380 (closed): x stays a DTensor; EP off labels the gate output P, EP on
        /// runs the router on token-sharded DTensors.
        T3192 = "tt-3192",
        /// #3386 and later (HEAD's partial_dtensor): the router on DTensors, the experts'
        /// local_map labels P (EP off) or S(1) (EP on).
        Clean = "tt-clean",
        /// #3654 to #4054: as tt-clean, but EP off passes no in_grad_placements (label R).
        /// Upstream: #4054.
        T3654 = "tt-3654",
    }
}

impl Boundary {
    /// The revisions whose router runs on local tensors (the gate output crosses `to_local`).
    pub(crate) fn local_router(self, ep: bool) -> bool {
        matches!(self, Boundary::Pre2416 | Boundary::Pr2388 | Boundary::T2416) || (self == Boundary::T3192 && !ep)
    }

    /// Whether the revision predates #2416's revert of #1878 (experts' input labelled P, so
    /// TP-sharded experts hand every rank the complete score gradient with `score_before_experts`).
    pub(crate) fn has_1878(self) -> bool {
        matches!(self, Boundary::Pre2416 | Boundary::Pr2388)
    }

    /// Whether expert tensor parallelism (`etp = tp`) exists in the revision.
    pub(crate) fn has_etp(self) -> bool {
        matches!(self, Boundary::Pre2416 | Boundary::Pr2388 | Boundary::T2416)
    }
}

/// The case's `backward` object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackwardSpec {
    pub boundary: Boundary,
    /// Expert parallelism on, borrowing the TP axis.
    pub ep: bool,
    /// Expert tensor-parallel degree: 1, or the TP degree (experts sharded over TP).
    pub etp: usize,
    pub score_before_experts: bool,
    /// Sequence parallelism: the MoE input is `S(1)` on the TP axis, else `R`.
    pub sp: bool,
    /// Seed of the loss weights V and of the partial shares.
    pub loss_seed: u64,
}

impl std::fmt::Display for BackwardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ep={} etp={} score_before_experts={} sp={}",
            self.boundary, self.ep, self.etp, self.score_before_experts, self.sp
        )
    }
}

impl BackwardSpec {
    /// The MoE input's placement on the TP axis.
    pub(crate) fn moe_input(&self) -> Placement {
        if self.sp {
            Placement::Shard(1)
        } else {
            Placement::Replicate
        }
    }

    /// Whether the router runs on token-sharded DTensors.
    pub(crate) fn token_sharded_router(&self) -> bool {
        self.ep && !self.boundary.local_router(self.ep)
    }

    /// The placement the boundary gives the router's input (`layout.x` of the case): tt-3192
    /// with EP keeps the MoE input's; the other token-sharded routers get `S(1)`.
    pub(crate) fn router_input(&self) -> Placement {
        match (self.token_sharded_router(), self.boundary) {
            (true, Boundary::T3192) => self.moe_input(),
            (true, _) => Placement::Shard(1),
            (false, _) => Placement::Replicate,
        }
    }

    /// The counts contract torchtitan declares: Partial on TP with EP on, else Replicate.
    pub fn counts_contract(&self) -> Placement {
        if self.ep {
            Placement::Partial(placement::ReduceOp::Sum)
        } else {
            Placement::Replicate
        }
    }

    /// Checks the spec against a mesh of `tp` ranks.
    pub fn validate(&self, tp: usize) -> Result<(), String> {
        if self.etp != 1 && self.etp != tp {
            return Err(format!("backward.etp: must be 1 or the TP degree ({tp}), found {}", self.etp));
        }
        if self.etp != 1 && !self.ep {
            return Err("backward.etp: expert tensor parallelism needs ep".into());
        }
        if self.etp != 1 && !self.boundary.has_etp() {
            return Err(format!("backward.etp: {} has no expert tensor parallelism", self.boundary));
        }
        Ok(())
    }
}
