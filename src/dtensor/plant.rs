//! Planted bugs (mutants) for checking that the oracles and fuzzers notice a broken sharding
//! rule. Compiled only with the `plant` feature and chosen at run time with
//! `SHARDFUZZ_PLANT=<name>`; release builds without the feature carry none of this.

/// The mutants: (name, what it breaks).
pub const MUTANTS: &[(&str, &str)] = &[
    (
        "softmax-keeps-shard",
        "softmax keeps a shard on the softmax dim instead of replicating it: each rank normalizes over its own experts",
    ),
    (
        "sum-shard-stays-shard",
        "sum over a sharded dim keeps the shard instead of making it Partial(sum): counts lose other ranks' tokens",
    ),
    (
        "scatter-ignores-sizes",
        "torch-2.13 scatter offers Shard on non-scatter dims even when self and index sizes differ",
    ),
];

/// True when mutant `name` is active.
#[cfg(feature = "plant")]
pub fn active(name: &str) -> bool {
    use std::sync::OnceLock;
    static ACTIVE: OnceLock<Option<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| std::env::var("SHARDFUZZ_PLANT").ok()).as_deref() == Some(name)
}

#[cfg(not(feature = "plant"))]
#[inline(always)]
pub fn active(_name: &str) -> bool {
    false
}
