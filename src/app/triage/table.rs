//! The triage table: mechanisms whose status is already settled, either a known upstream bug
//! (with its issue) or an expected limitation (by design, with the reason). A bucket that no
//! entry matches is new (or open, when the baseline had it too).
//!
//! The table is data, keyed by what every subject gives a bucket: the names of the known
//! upstream bugs its subject matched (`Subject::known`, the shared mechanism matcher) and the
//! signature's fields. A subject's entries are added here as rows; nothing else changes.

use crate::bucket::Bucket;
use harness::oracle::Class;

/// How a table entry recognises a bucket.
#[derive(Clone, Copy, Debug)]
pub enum Match {
    /// The subject's mechanism matcher named this known bug for the bucket's first case.
    Known(&'static str),
    /// Signature fields: the class (any when `None`), a program-name prefix ("" for any) and
    /// key fragments, of which one must occur in the key.
    Sig { class: Option<Class>, program: &'static str, key: &'static [&'static str] },
}

/// What the table says of a mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// A known upstream bug: the issue (or pull request) that tracks it.
    Upstream(&'static str),
    /// An expected limitation, by design: why it is not a bug.
    Expected(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// The finding's one line.
    pub mechanism: &'static str,
    pub matches: Match,
    pub standing: Standing,
}

impl Entry {
    pub fn matches(&self, b: &Bucket) -> bool {
        match self.matches {
            Match::Known(name) => b.known.iter().any(|k| k == name),
            Match::Sig { class, program, key } => {
                let s = &b.signature;
                class.is_none_or(|c| c == s.class)
                    && s.program.starts_with(program)
                    && key.iter().any(|k| s.key.contains(k))
            }
        }
    }

    /// Whether a signature alone (a fixed bucket, whose case is gone) is an instance.
    pub fn matches_signature(&self, s: &harness::Signature) -> bool {
        match self.matches {
            Match::Known(_) => false,
            Match::Sig { class, program, key } => {
                class.is_none_or(|c| c == s.class)
                    && s.program.starts_with(program)
                    && key.iter().any(|k| s.key.contains(k))
            }
        }
    }
}

/// A torchtitan issue's address.
macro_rules! tt {
    ($n:literal) => {
        concat!("https://github.com/pytorch/torchtitan/issues/", $n)
    };
}

/// A PyTorch issue's address.
macro_rules! pt {
    ($n:literal) => {
        concat!("https://github.com/pytorch/pytorch/issues/", $n)
    };
}

/// The router subject's settled mechanisms (docs/findings.md has the evidence for each). The
/// first entry that matches a bucket decides it; entries on known-bug names come first.
pub const ENTRIES: &[Entry] = &[
    Entry {
        mechanism: "in-place scatter_ on token-sharded scores needs a placement change (torch 2.12)",
        matches: Match::Known("inplace-scatter-error (torch-2.12)"),
        standing: Standing::Upstream(tt!("3515")),
    },
    Entry {
        mechanism: "out-of-place scatter falls back to Replicate: counts lose their Partial contract (torch 2.12)",
        matches: Match::Known("out-of-place Replicate counts (torch-2.12)"),
        standing: Standing::Upstream(tt!("3753")),
    },
    Entry {
        mechanism: "size1=keep: Partial on a size-1 mesh axis is not normalised to Replicate",
        matches: Match::Known("size1=keep contract mismatch (#3762)"),
        standing: Standing::Upstream(tt!("3762")),
    },
    Entry {
        mechanism: "local_map re-wraps uneven shards with rank-dependent global shapes",
        matches: Match::Known("local_map rank-dependent shapes"),
        standing: Standing::Upstream(pt!("172812")),
    },
    Entry {
        mechanism: "router gradient labelled Replicate, never reduced: the ranks' copies drift apart",
        matches: Match::Known("router gradient never reduced, ranks diverge (#2387, tt-pre2416)"),
        standing: Standing::Upstream(tt!("2387")),
    },
    Entry {
        mechanism: "without EP the experts' local_map drops in_grad_placements: partial gradients labelled Replicate",
        matches: Match::Known("experts' in_grad_placements dropped without EP (#4054, tt-3654)"),
        standing: Standing::Upstream(tt!("4054")),
    },
    Entry {
        mechanism: "ReordererSequenceParallel refuses a token count the TP degree does not divide",
        matches: Match::Known("token split refuses T not divisible by TP (torchtitan ValueError)"),
        standing: Standing::Expected("torchtitan raises a ValueError on purpose: a refusal, not a wrong result"),
    },
    Entry {
        mechanism: "the gate's view cannot flatten a sharded token dim shorter than its shards, or of length 1 (torch 2.13+)",
        matches: Match::Known("token dim shorter than its shards, or 1, at the gate's view (torch-2.13+)"),
        standing: Standing::Expected(
            "DTensor 2.13+ refuses the view with a clear error where 2.12 all-gathered silently; real PyTorch raises the same",
        ),
    },
    Entry {
        mechanism: "a local_map re-wrap gives a rank-dependent global shape and the next broadcast fails",
        matches: Match::Sig { class: Some(Class::Error), program: "", key: &["attempting_to_broadcast_a_dimension"] },
        standing: Standing::Upstream(pt!("172812")),
    },
    Entry {
        mechanism: "in-place scatter_ on a sharded self has no strategy that keeps its placement",
        matches: Match::Sig { class: Some(Class::Error), program: "", key: &["inplace_placement_change@aten.scatter_"] },
        standing: Standing::Upstream(tt!("3515")),
    },
    Entry {
        mechanism: "force_load_balance builds a plain int64 index that meets DTensor scores",
        matches: Match::Sig { class: Some(Class::Error), program: "", key: &["mixed_tensor@aten.gather"] },
        standing: Standing::Expected("a debug override that every revision rejects the same way; never on in training"),
    },
    Entry {
        mechanism: "DTensor's view rules refuse to flatten or unflatten unevenly sharded token dims",
        matches: Match::Sig {
            class: Some(Class::Error),
            program: "",
            key: &[
                "cannot_flatten_unevenly_sharded_tensor",
                "cannot_unflatten_unevenly_sharded_tensor",
                "cannot_shard_unevenly_distributed_tensor",
            ],
        },
        standing: Standing::Expected("an explicit refusal of uneven shards in DTensor's view rules, the same on real PyTorch"),
    },
    Entry {
        mechanism: "a what-if counts contract (derived from the token layout) differs from what the router produces",
        matches: Match::Sig { class: Some(Class::Placement), program: "", key: &["R->P(sum)", "->S(0)", "R->S(1)"] },
        standing: Standing::Expected(
            "the generator's what-if contracts flag layouts torchtitan does not use, not DTensor (docs/findings.md)",
        ),
    },
    Entry {
        mechanism: "local_map with experts sharded (gate or bias Shard(0)): global expert ids meet a local shard",
        matches: Match::Sig {
            class: Some(Class::Error),
            program: "local_map",
            key: &["index_is_out_of_bounds", "expected_index_to_be_no"],
        },
        standing: Standing::Expected(
            "a what-if layout torchtitan does not use: the router's local_map code assumes experts replicated",
        ),
    },
    Entry {
        mechanism: "local_map with an expert-sharded bias: the group and expert choice see global ids on local shards",
        matches: Match::Sig { class: Some(Class::Value), program: "local_map", key: &[""] },
        standing: Standing::Expected(
            "a what-if layout torchtitan does not use; real PyTorch computes the same values (docs/findings.md)",
        ),
    },
    Entry {
        mechanism: "a what-if layout makes top-k pick expert-sharded ids, so the promised local scatter all-gathers",
        matches: Match::Sig { class: Some(Class::Comm), program: "inplace_scatter", key: &["all_gather"] },
        standing: Standing::Expected("only on what-if layouts (bias sharded on experts) torchtitan does not use"),
    },
    // The MoE layer (subject `moe`, programs `moe/<revision>/<backend>`).
    Entry {
        mechanism: "the EP combine offsets a rank's rows ignoring the batch: routed rows land at other tokens",
        matches: Match::Known("EP combine offset ignores the batch (#3604, tt-pre3604)"),
        standing: Standing::Upstream("https://github.com/pytorch/torchtitan/pull/3604"),
    },
    Entry {
        mechanism: "spmd_types' load-balance hook leaves out the TP all-reduce: expert_bias differs across TP ranks (tt-pre4154)",
        matches: Match::Known("expert_bias differs across TP ranks under spmd_types with EP (#4154, tt-pre4154)"),
        standing: Standing::Upstream("https://github.com/pytorch/torchtitan/pull/4154"),
    },
    Entry {
        mechanism: "without EP the experts' input gradients are not reduced (tt-3654)",
        matches: Match::Known("experts' input gradients unreduced without EP (#4054, tt-3654)"),
        standing: Standing::Upstream("https://github.com/pytorch/torchtitan/pull/4054"),
    },
    Entry {
        mechanism: "a configuration torchtitan refuses: the trainer's sequence checks, a mesh ep does not divide, \
                    the old parallelize assertion, spmd_types' torch.chunk shard of a short dim, HEAD's checks \
                    (ep divides dp_shard*cp*tp, tokens per microbatch, experts divisible by ep)",
        matches: Match::Sig {
            class: Some(Class::Error),
            program: "moe/",
            key: &[
                "training_sequence_length_must_be",
                "the_product_of_mesh_sizes_is",
                "sequence_length_must_be_divisible",
                "tuple_index_out_of_range",
                "expert_parallel_degree_must_divide",
                "the_number_of_tokens_per",
                "moe_num_experts_must_be_divisible",
            ],
        },
        standing: Standing::Expected(
            "torchtitan raises on purpose (a refusal, not a wrong result); recorded on the real package",
        ),
    },
    Entry {
        mechanism: "the force-load-balance debug override under TP: a plain index tensor meets DTensor scores",
        matches: Match::Known("force-load-balance override under TP: mixed Tensor and DTensor (torchtitan)"),
        standing: Standing::Expected("a debug override, never on in training (report: docs/upstream/tt_force_load_balance_dtensor.md)"),
    },
    Entry {
        mechanism: "DTensor backends, EP off, SP on, one batch row per rank: local_map waits an async all-gather \
                    without autograd, so x's gradient lacks the routed experts' part",
        matches: Match::Known("moe-dtensor-x-grad-one-row"),
        standing: Standing::Upstream(
            "no upstream issue (nearest: pytorch#151240); report: docs/upstream/pt_local_map_async_input_grad.md",
        ),
    },
    Entry {
        mechanism: "num_experts not divisible by ep: the dispatcher's (ep, -1) view of the counts fails",
        matches: Match::Known("experts not divisible by ep: the dispatcher's count view fails (unchecked before #4258)"),
        standing: Standing::Upstream("https://github.com/pytorch/torchtitan/pull/4258"),
    },
    Entry {
        mechanism: "spmd_types, EP on, SP off, L not a multiple of tp, shared experts: the routed output's \
                    zero-fill is tp*ceil(L/tp) long and the add with the shared output fails",
        matches: Match::Known(
            "spmd_types, EP on, SP off, L not a multiple of tp: routed and shared outputs differ in length (no upstream report)",
        ),
        standing: Standing::Upstream("no upstream issue (related: torchtitan#3622, the L < tp decode case); docs/findings.md"),
    },
    Entry {
        mechanism: "tt-3604's batch-aware combine at uneven L: rows past the token buffer or at other tokens",
        matches: Match::Known("batch-aware combine out of range or misplaced at uneven L (tt-3604; no upstream report)"),
        standing: Standing::Upstream("no upstream issue; replaced by #3662's per-row padding (docs/moe-revisions.md 3.3)"),
    },
    Entry {
        mechanism: "tt-3662's per-row padding at uneven L: some tokens get no routed output",
        matches: Match::Known("tokens without routed output at uneven L (tt-3662; no upstream report)"),
        standing: Standing::Upstream("no upstream issue; gone with #3996's local-shard combine (docs/moe-revisions.md 3.3)"),
    },
    Entry {
        mechanism: "tt-3386's flat combine buffer: at T not divisible by tp every rank's buffer has the wrong size",
        matches: Match::Known("flat EP combine buffer of the wrong size at uneven T (tt-3386; no upstream report)"),
        standing: Standing::Upstream("no upstream issue; the later revisions' combine buffers replace it (docs/moe-revisions.md 3.1)"),
    },
];

/// The first entry that settles a bucket.
pub fn lookup(b: &Bucket) -> Option<&'static Entry> {
    ENTRIES.iter().find(|e| e.matches(b))
}
