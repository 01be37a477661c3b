//! Which torchtitan MoE code a case runs (`subject.revision`) and through which SPMD backend
//! (`subject.backend`). Revision names follow docs/moe-revisions.md; only `tt-0.3.0` is modelled
//! so far, the others are reserved names a case may carry (they run as "not modelled yet").

names::named_enum! {
    /// A torchtitan revision of the MoE layer.
    pub enum MoeRev("MoE revision") {
        /// PyPI `torchtitan==0.3.0`: (B, L, D) activations, local combine, routing-map counts,
        /// the load-balance hook reduces tp (EP on, tp > 1) then the loss mesh.
        Tt030 = "tt-0.3.0",
        /// torchtitan main of 2026-08-21: (T, D) activations.
        TtHead = "tt-head",
        /// Flattened (T, D) MoE input, flat rank offsets in the EP combine.
        Tt3386 = "tt-3386",
        /// The combine offset that ignores the batch (#3604 not yet fixed).
        TtPre3604 = "tt-pre3604",
        /// The batch-aware combine offset.
        Tt3604 = "tt-3604",
        /// Per-row padding of the EP combine.
        Tt3662 = "tt-3662",
        /// EP off on the DTensor backends: the experts' input gradients not reduced (#4054 open).
        Tt3654 = "tt-3654",
        /// The fix of #4054.
        Tt4054 = "tt-4054",
        /// The local combine.
        Tt3996 = "tt-3996",
        /// No padding in the model.
        Tt4100 = "tt-4100",
        /// spmd_types without the TP reduction of the load-balance counts (#4154 open).
        TtPre4154 = "tt-pre4154",
        /// The fix of #4154.
        Tt4154 = "tt-4154",
    }
}

names::named_enum! {
    /// How torchtitan runs the layer's SPMD program.
    pub enum Backend("MoE backend") {
        /// spmd_types' typed local tensors (0.3.0's default).
        SpmdTypes = "spmd_types",
        /// DTensor on the tp and ep axes only; dp and cp are FSDP's business.
        PartialDtensor = "partial_dtensor",
        /// DTensor on every mesh axis.
        FullDtensor = "full_dtensor",
    }
}

impl MoeRev {
    /// Whether the sharded side models this revision (the reference is the same for all).
    pub fn modelled(self) -> bool {
        self == MoeRev::Tt030
    }
}

impl Backend {
    /// Whether the sharded side models this backend.
    pub fn modelled(self) -> bool {
        matches!(self, Backend::PartialDtensor | Backend::SpmdTypes | Backend::FullDtensor)
    }
}
