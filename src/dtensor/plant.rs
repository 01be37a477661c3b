//! Planted bugs (mutants): deliberate faults in the simulated side, for showing that the oracles
//! and fuzzers notice a broken rule, value or gradient label. Chosen at run time with
//! `SHARDFUZZ_PLANT=<name>`; inert otherwise (one cached environment lookup per check). The
//! command line refuses an unknown name and warns loudly when one is active, so a report made
//! with a mutant cannot pass for a real one.

/// A mutant: its name, what it breaks, and what must catch it: verdict classes of a plain run,
/// or `ops` (the op-level property tests, which see rules the router never exercises).
pub struct Mutant {
    pub name: &'static str,
    pub breaks: &'static str,
    pub caught_as: &'static [&'static str],
}

pub const MUTANTS: &[Mutant] = &[
    Mutant {
        name: "softmax-keeps-shard",
        breaks: "softmax keeps a shard on the softmax dim instead of replicating it: each rank normalizes over its own experts",
        caught_as: &["value", "error", "comm"],
    },
    Mutant {
        name: "sum-shard-stays-shard",
        breaks: "sum over a sharded dim keeps the shard instead of making it Partial(sum): counts lose other ranks' tokens",
        caught_as: &["placement", "value"],
    },
    Mutant {
        name: "scatter-ignores-sizes",
        breaks: "torch-2.13 scatter offers Shard on non-scatter dims even when self and index sizes differ",
        caught_as: &["ops"],
    },
    Mutant {
        name: "gate-values-drift",
        breaks: "the sharded gate values are scaled by route_scale·(1 + 2^-8): a small, systematic value error",
        caught_as: &["value", "grad"],
    },
    Mutant {
        name: "topk-runner-up",
        breaks: "the sharded top-k takes the (K+1)-th expert in place of the K-th",
        caught_as: &["value"],
    },
    Mutant {
        name: "to-local-default-label",
        breaks: "to_local ignores grad_placements: every boundary gets the default (forward) label",
        caught_as: &["grad", "replica"],
    },
    Mutant {
        name: "partial-grad-all-reduced",
        breaks: "redistribute's backward all-reduces a Partial gradient to Replicate where the forward source is a Shard \
                 (DTensor reduce-scatters it to that Shard): the values still reduce right",
        caught_as: &["grad_placement", "comm"],
    },
    Mutant {
        name: "grad-wrong-shard-dim",
        breaks: "redistribute's backward sends a gradient whose forward source is S(d) to S(d+1): the values still reduce right",
        caught_as: &["grad_placement"],
    },
    Mutant {
        name: "bwd-comm-wrong-axis",
        breaks: "the collectives of a boundary's backward (redistribute, from_local) are logged against the mesh axis after \
                 the one they ran on, as a model that mixes up the TP axis and its neighbour would",
        caught_as: &["comm"],
    },
    Mutant {
        name: "addmm-panics",
        breaks: "the simulated addmm (the gate with a bias) panics: a crash inside the model",
        caught_as: &["crash"],
    },
    Mutant {
        name: "chunk-array-split",
        breaks: "every shard layout spreads the remainder like np.array_split (7 over 3: 3, 2, 2) instead of torch.chunk \
                 (3, 3, 1); used everywhere at once, so values still gather back (placement::layout::chunk reads it)",
        caught_as: &["shape"],
    },
];

fn chosen() -> Option<&'static str> {
    use std::sync::OnceLock;
    static ACTIVE: OnceLock<Option<String>> = OnceLock::new();
    ACTIVE.get_or_init(|| std::env::var("SHARDFUZZ_PLANT").ok().filter(|s| !s.is_empty())).as_deref()
}

/// True when mutant `name` is active.
#[inline]
pub fn active(name: &str) -> bool {
    chosen() == Some(name)
}

/// The active mutant, after checking its name: Err for a name no mutant has.
pub fn check_env() -> Result<Option<&'static Mutant>, String> {
    match chosen() {
        None => Ok(None),
        Some(n) => MUTANTS.iter().find(|m| m.name == n).map(Some).ok_or_else(|| {
            let names: Vec<&str> = MUTANTS.iter().map(|m| m.name).collect();
            format!("SHARDFUZZ_PLANT={n}: no such mutant (known: {})", names.join(", "))
        }),
    }
}
