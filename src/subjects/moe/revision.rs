//! Which torchtitan MoE code a case runs (`subject.revision`) and through which SPMD backend
//! (`subject.backend`). Revision names follow docs/moe-revisions.md. A revision is a handful of
//! facts the sharded run reads ([`MoeRev::combine`], [`MoeRev::reduces_expert_input_grads`],
//! [`MoeRev::seq_check`], [`MoeRev::folds_batch`], [`MoeRev::reduces_router_grads`],
//! [`MoeRev::routes_whole_block`]); revisions not modelled yet run as "not modelled yet".

names::named_enum! {
    /// A torchtitan revision of the MoE layer.
    pub enum MoeRev("MoE revision") {
        /// PyPI `torchtitan==0.3.0`: (B, L, D) activations, local combine, routing-map counts,
        /// the load-balance hook reduces tp (EP on, tp > 1) then the loss mesh.
        Tt030 = "tt-0.3.0",
        /// torchtitan main of 2026-08-21 (b5bcd76): (T, D) activations (#4121), no full_dtensor
        /// (#4217), the EP divisibility checks of #4258.
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
        /// PyPI `torchtitan==0.2.2` (73a0e6979, 2026-02-20): DTensor module hooks only; the
        /// `tt-3386` forward (flat token split over tp under EP, a global combine buffer) and
        /// the backward of #2387 (the router's score gradient never reduced over tp).
        Tt022 = "tt-0.2.2",
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
        /// torchtitan 0.2.x's only backend: `parallelize_module` plans of DTensor module hooks
        /// on tp (the MoE input all-gathered, the output reduce-scattered, the gate a
        /// replicated `NoParallel` module, the experts' TensorParallel / ExpertParallel input
        /// and output hooks); dp and cp are FSDP's business. Its own value, not
        /// `partial_dtensor` under an older name: partial_dtensor is the local_map code of
        /// 2026 with other gradient labels (the 0.2.x hooks label the gate's output and the
        /// MoE input Replicate, which is #2387), so the program names stay apart
        /// (`moe/tt-0.2.2/dtensor_hooks`). Valid only at `tt-0.2.2` (`MoeSpec::validate`).
        DtensorHooks = "dtensor_hooks",
    }
}

/// How the all-to-all dispatcher's combine places a rank's routed rows (EP on, tp > 1), as a
/// revision's code does it (docs/moe-revisions.md §2). Rank r of n holds c_r sequence positions of
/// each of its B batch rows, numbered locally i = b·c_r + l.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Combine {
    /// `tt-3386`: x is flattened to (B·L, D) at the MoE entry and EP splits the flat tokens over
    /// tp (rank r holds T_r = chunk(T, n, r) rows); a buffer of T_r·n rows, row i at i + T_r·r,
    /// Partial over tp. Only n | T reaches it (every rank's T_r·n = T); otherwise the
    /// rank-dependent buffer fails at the MoE exit ([`crate::combine::flat_exit`]).
    Flat,
    /// `tt-pre3604`: m = ceil(B·L/n) rows per rank, a buffer of m·n rows, row i at i + m·r; the
    /// buffer is Partial over tp and its first B·L rows are the (B, L) tokens.
    RankOffset,
    /// `tt-3604`: as `RankOffset` with s = m div B and row i at (i div s)·s·n + r·s + (i mod s).
    BatchAware,
    /// `tt-3662` to `tt-4054`: Lp = n·ceil(L/n), s = Lp/n, a buffer of B·Lp rows, row i at
    /// (i div s)·Lp + r·s + (i mod s), viewed (B, Lp) and cut to (B, L).
    RowPadded,
    /// `tt-3996` on: each rank scatters into its own tokens; the routed output is sequence-sharded.
    Local,
}

/// The sequence-length checks before the layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqCheck {
    /// torchtitan 0.2.x: no trainer check; the model's parallelize asserts L divisible by
    /// tp·2·cp (the `Old` assertion alone).
    Assert,
    /// Until 565cb810c: the trainer refuses L not divisible by tp (SP on, tp > 1), then the
    /// model's parallelize asserts L divisible by tp·2·cp, always.
    Old,
    /// From 565cb810c on: L divisible by (tp if SP)·(2·cp if cp > 1).
    Current,
    /// From 73aed7f6c (#4121) on: the same divisor, on the tokens per microbatch per dp rank
    /// (`crate::head::checks`).
    Tokens,
}

impl MoeRev {
    /// Whether the sharded side models this revision on the DTensor backend (the reference is the
    /// same for all).
    pub fn modelled(self) -> bool {
        true
    }

    /// Whether the model runs this revision on `backend`: the DTensor backend (partial_dtensor,
    /// "default" before 5ab3a0fd1) at every modelled revision; spmd_types and full_dtensor only
    /// where their code was recorded or is the same (0.3.0, and tt-4154, whose MoE files 0.3.0
    /// ships unchanged; tt-pre4154, whose MoE code is tt-4154's and whose hook leaves out the
    /// TP reduction under spmd_types only); `tt-head` on its two backends (full_dtensor was
    /// removed by #4217: such a case is invalid, `MoeSpec::validate`).
    pub fn models_backend(self, backend: Backend) -> bool {
        match self {
            MoeRev::TtHead => backend != Backend::FullDtensor,
            MoeRev::Tt022 => backend == Backend::DtensorHooks,
            MoeRev::Tt030 | MoeRev::Tt4154 | MoeRev::TtPre4154 => true,
            _ => backend == Backend::PartialDtensor,
        }
    }

    /// Whether the router's score gradient is reduced over tp. False at `tt-0.2.2` (#2387,
    /// fixed by #2416): the gate is a replicated `NoParallel` module whose output `to_local()`
    /// labels the gradient Replicate, and the MoE input's `to_local()` does the same, so each
    /// tp rank keeps the part of the gradients of x and the gate that its own work produced
    /// (its slice of the flat tokens under EP; its hidden-dim share of the experts' output
    /// without EP, where the experts' input gradient itself is all-reduced) and nothing sums
    /// them.
    pub fn reduces_router_grads(self) -> bool {
        self != MoeRev::Tt022
    }

    /// Whether the router sees every token of the block on each tp rank even with EP on (0.2.x:
    /// the MoE input is all-gathered, the gate a replicated `NoParallel` module, and the
    /// reorderer splits the flat tokens only after routing): the counts are the block's on
    /// every tp rank (not partial over tp), the gate's gradient is labelled Replicate on tp, and
    /// the force-load-balance round robin counts from the block's first token.
    pub fn routes_whole_block(self) -> bool {
        self == MoeRev::Tt022
    }

    /// Whether x is (T, D) with the batch folded into the tokens (#4121; `crate::head`).
    pub fn folds_batch(self) -> bool {
        self == MoeRev::TtHead
    }

    /// The program name of this revision on `backend` (unique across subjects: `moe/` first;
    /// no `:`, which separates a signature's fields).
    pub fn program(self, backend: Backend) -> String {
        format!("moe/{self}/{backend}")
    }

    /// The EP combine of this revision.
    pub fn combine(self) -> Combine {
        match self {
            MoeRev::Tt3386 | MoeRev::Tt022 => Combine::Flat,
            MoeRev::TtPre3604 => Combine::RankOffset,
            MoeRev::Tt3604 => Combine::BatchAware,
            MoeRev::Tt3662 | MoeRev::Tt3654 | MoeRev::Tt4054 => Combine::RowPadded,
            _ => Combine::Local,
        }
    }

    /// Whether the routed experts' local_map labels the input gradients of x and the scores as
    /// partial over tp when EP is off (false: labelled Replicate, never summed; #4054).
    pub fn reduces_expert_input_grads(self) -> bool {
        self != MoeRev::Tt3654
    }

    /// The sequence checks of this revision's trainer and parallelize.
    pub fn seq_check(self) -> SeqCheck {
        match self {
            MoeRev::Tt3386 | MoeRev::TtPre3604 | MoeRev::Tt3604 | MoeRev::Tt3662 => SeqCheck::Old,
            MoeRev::TtHead => SeqCheck::Tokens,
            MoeRev::Tt022 => SeqCheck::Assert,
            _ => SeqCheck::Current,
        }
    }
}

impl Backend {
    /// Whether the sharded side models this backend.
    pub fn modelled(self) -> bool {
        matches!(self, Backend::PartialDtensor | Backend::SpmdTypes | Backend::FullDtensor | Backend::DtensorHooks)
    }
}
