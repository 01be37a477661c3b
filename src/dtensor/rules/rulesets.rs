//! The rule sets a run can select, one per PyTorch release, as data: each difference names the
//! upstream change it follows. Everything not listed here is shared by all sets (docs/rules.md).

use placement::plan::PlanRules;

names::named_enum! {
    pub enum RuleSet("rule set") {
        /// PyTorch 2.12.x (pytorch@7269437d): scatter is all-Replicate only; a strict view that
        /// cannot keep a shard replicates it silently; an uneven all_gather returns a padded,
        /// narrowed (non-contiguous) tensor.
        Torch212 = "torch-2.12",
        /// PyTorch 2.13.0 (pytorch@cf30153c): scatter keeps `Shard(d)` on non-scatter dims of equal
        /// global size (pytorch#186149); a strict view that cannot keep a shard raises.
        Torch213 = "torch-2.13",
        /// PyTorch 2.14 (pytorch@08187d9e): t, sum, softmax and its backward, cumsum, topk/sort,
        /// gather, scatter, scatter_add and the factories re-registered as single-dim strategies.
        Torch214 = "torch-2.14",
        /// PyTorch 2.15 (pytorch@d0f2af8b): the 2.14 rules unchanged for every op modelled (the
        /// only sharding-strategy change, `unbind` re-registered single-dim, is not one of them;
        /// docs/rules.md, "2.15").
        Torch215 = "torch-2.15",
    }
}

/// Op families whose registration changed between releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Family {
    /// `t` (2.12/2.13 `transpose_strategy` follows the input, no shardability check).
    Transpose,
    /// `sum.dim_IntList` (2.12/2.13 `linear_reduction_strategy` follows the input).
    Sum,
    /// `_softmax`, `_softmax_backward_data` (2.12/2.13: one candidate).
    Softmax,
    /// `cumsum` (2.12/2.13 `scan_strategy`).
    Cumsum,
    /// `topk`, `sort` (2.12/2.13 `sort_strategy`: explicit `Shard(d)` rows).
    Sort,
    /// `gather`, `scatter_add` (2.12/2.13: explicit `Shard(d)` rows).
    GatherScatterAdd,
    /// `scatter`/`scatter_` (2.12 all-R, 2.13 explicit `Shard(d)` rows).
    Scatter,
    /// `new_zeros`, `zeros_like`, `ones_like` (2.12/2.13 `new_factory_strategy`,
    /// `create_like_strategy`).
    Factory,
}

/// How scatter/scatter_ may be sharded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScatterRule {
    /// `[R]*n` only (PyTorch <= 2.12, "TODO: see if we can support input sharding pattern").
    ReplicateOnly,
    /// all-R plus `[S(d)]*n` for every non-scatter d where self, index (and a tensor src) agree
    /// in global size (pytorch#186149, full-mesh in 2.13, single-dim placeholders in 2.14).
    ShardNonScatterDims,
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
    /// The PyTorch release this rule set was read from and is confirmed against (patch
    /// releases of the same minor share it: 2.14.1 runs `torch-2.14`). The one table of
    /// releases: `confirm`, `export`, the Python worker and the scripts take it from here.
    pub fn release(self) -> &'static str {
        match self {
            RuleSet::Torch212 => "2.12.1",
            RuleSet::Torch213 => "2.13.0",
            RuleSet::Torch214 => "2.14.0",
            RuleSet::Torch215 => "2.15.0",
        }
    }

    /// The rule set of a torch version ("2.14.1", "2.13.0+cu130"): the one of its minor release.
    pub fn of_version(version: &str) -> Option<RuleSet> {
        let mut parts = version.split(['.', '+']);
        let minor = format!("{}.{}", parts.next()?, parts.next()?);
        RuleSet::ALL.iter().copied().find(|r| r.release().starts_with(&format!("{minor}.")))
    }

    /// Whether scatter on token-sharded operands stays local, so a program promises no
    /// collective there (pytorch#186149, whose tests assert zero communication; the reason
    /// torchtitan#3515 dropped local_map). 2.12 replicates by design.
    pub fn scatter_is_local(self) -> bool {
        self.scatter() == ScatterRule::ShardNonScatterDims
    }

    /// Whether the family is a single-dim strategy (placeholders, cost-based over every mesh
    /// dim combination). 2.14 re-registered all of them (`register_single_dim_strategy` in
    /// P214 `_ops/_matrix_ops.py`, `_math_ops.py`, `_tensor_ops.py`); in 2.12/2.13 they are
    /// full-mesh strategies, and a single-dim registration, where both exist (mm, addmm),
    /// already wins (`_sharding_prop.py` looks single-dim strategies up first).
    pub(crate) fn single_dim(self, _f: Family) -> bool {
        self >= RuleSet::Torch214
    }

    /// pytorch#186149 (first released in 2.13.0); single-dim re-registration in 2.14.
    pub fn scatter(self) -> ScatterRule {
        match self {
            RuleSet::Torch212 => ScatterRule::ReplicateOnly,
            RuleSet::Torch213 | RuleSet::Torch214 | RuleSet::Torch215 => ScatterRule::ShardNonScatterDims,
        }
    }

    /// `_view_ops.py` of 2.13.0 raises where 2.12.1 replicated (docs/design.md, VERIFIED with
    /// gloo ranks, docs/pytorch-facts.md).
    pub fn view(self) -> ViewRule {
        match self {
            RuleSet::Torch212 => ViewRule::Replicate,
            RuleSet::Torch213 | RuleSet::Torch214 | RuleSet::Torch215 => ViewRule::Raise,
        }
    }

    /// `_to_copy`'s Partial rows: 2.12/2.13 pass every reduce op of `Partial.ALL_REDUCE_OPS`
    /// (product included), 2.14 only `_PARTIAL_PASS_THROUGH_REDUCE_OPS` (P214
    /// `_tensor_ops.py:47`).
    pub(crate) fn to_copy_passes_product(self) -> bool {
        self < RuleSet::Torch214
    }

    /// 2.14's `expand_to_full_mesh_op_strategy` raises "{op}: no valid sharding strategy for the
    /// input placements." when every candidate was filtered out (P214 `_ops/utils.py:689`);
    /// 2.12/2.13 return no candidate and `min()` of nothing raises.
    pub(crate) fn empty_expansion_raises(self) -> bool {
        self >= RuleSet::Torch214
    }

    /// 2.12.1 all-gathers an uneven `Shard(d)` by padding every piece, gathering and narrowing
    /// (`Shard._to_replicate_tensor` with `all_gather_tensor`), which leaves a non-contiguous
    /// local tensor when d != 0; 2.13.0 and 2.14.0 return it contiguous.
    pub(crate) fn uneven_gather_is_strided(self) -> bool {
        self == RuleSet::Torch212
    }

    /// The redistribution planner's rules (2.14 adds `S -> P(sum)` graph edges).
    pub fn plan(self) -> PlanRules {
        PlanRules { shard_to_partial: self >= RuleSet::Torch214 }
    }

    /// Whether local_map computes an output's global shape from every rank's local size
    /// (pytorch#172927). Not in 2.12.1 or 2.13.0 (VERIFIED); the first release with it is not
    /// known, so 2.14 keeps the even-shard assumption too, and 2.15 as well
    /// (`experimental/_func_map.py` is byte-identical in 2.14.0 and 2.15.0).
    pub(crate) fn local_map_exact_shapes(self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_rule_sets_by_minor() {
        for r in RuleSet::ALL {
            assert_eq!(RuleSet::of_version(r.release()), Some(*r));
        }
        assert_eq!(RuleSet::of_version("2.14.1"), Some(RuleSet::Torch214));
        assert_eq!(RuleSet::of_version("2.13.0+cu130"), Some(RuleSet::Torch213));
        assert_eq!(RuleSet::of_version("2.9.0"), None);
        assert_eq!(RuleSet::of_version("2"), None);
        assert!(!RuleSet::Torch212.scatter_is_local() && RuleSet::Torch213.scatter_is_local());
    }
}
