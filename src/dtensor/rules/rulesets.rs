//! The rule sets a run can select, one per PyTorch release, as data: each difference names the
//! upstream change it follows. Everything not listed here is shared by all sets.

crate::named_enum! {
    pub enum RuleSet("rule set") {
        /// PyTorch 2.12.x (pytorch@7269437d): scatter is all-Replicate only; a strict view that
        /// cannot keep a shard replicates it silently.
        Torch212 = "torch-2.12",
        /// PyTorch 2.13.0 (pytorch@cf30153c): scatter keeps `Shard(d)` on non-scatter dims of equal
        /// global size (pytorch#186149); a strict view that cannot keep a shard raises.
        Torch213 = "torch-2.13",
        /// PyTorch 2.14 (pytorch@08187d9e): scatter re-registered as a single-dim strategy whose
        /// placeholders also expand to `_StridedShard` matching the inputs; src must share the rank.
        Torch214 = "torch-2.14",
    }
}

/// How scatter/scatter_ may be sharded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterRule {
    /// `[R]*n` only (PyTorch <= 2.12, "TODO: see if we can support input sharding pattern").
    ReplicateOnly,
    /// all-R plus `[S(d)]*n` for every non-scatter d where self, index (and a tensor src) agree in
    /// global size; `strided` also offers `_StridedShard(d, sf)` when an input has it.
    ShardNonScatterDims { strided: bool },
}

/// What a strict view (`view`, `_unsafe_view`) does with a shard it cannot keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewRule {
    /// Replicate it first: a silent all_gather (PyTorch 2.12).
    Replicate,
    /// Raise "This operation would remove or reshape sharded dimension ..." (PyTorch 2.13).
    Raise,
}

impl RuleSet {
    /// pytorch#186149 (first released in 2.13.0); single-dim re-registration in 2.14.
    pub fn scatter(self) -> ScatterRule {
        match self {
            RuleSet::Torch212 => ScatterRule::ReplicateOnly,
            RuleSet::Torch213 => ScatterRule::ShardNonScatterDims { strided: false },
            RuleSet::Torch214 => ScatterRule::ShardNonScatterDims { strided: true },
        }
    }

    /// `_view_ops.py` of 2.13.0 raises where 2.12.1 replicated (docs/design.md, VERIFIED with
    /// gloo ranks, docs/pytorch-facts.md).
    pub fn view(self) -> ViewRule {
        match self {
            RuleSet::Torch212 => ViewRule::Replicate,
            RuleSet::Torch213 | RuleSet::Torch214 => ViewRule::Raise,
        }
    }

    /// Whether local_map computes an output's global shape from every rank's local size
    /// (pytorch#172927). Not in 2.12.1 or 2.13.0 (VERIFIED); the first release with it is not
    /// known, so 2.14 keeps the even-shard assumption too.
    pub fn local_map_exact_shapes(self) -> bool {
        false
    }
}
