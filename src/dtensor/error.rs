//! Errors of the simulated DTensor. Each variant's Display is the text PyTorch prints (checked
//! on real PyTorch, see docs/pytorch-facts.md), and `kind()` is the Python exception class, so an
//! outcome's `error` can be compared with a real run verbatim.

use placement::{repr_tuple, Placement, PlacementError};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum DTensorError {
    // === sharding propagation ===
    #[error("{op}: in-place operations that require placement changes are not supported. The input has placement {}, but no valid strategy preserves this placement. Please use the out-of-place version of this operation instead.", repr_tuple(.placements))]
    InPlacePlacementChange { op: String, placements: Vec<Placement> },
    #[error("{op} got mixed torch.Tensor and DTensor, need to convert all torch.Tensor to DTensor before calling distributed operators!")]
    MixedTensor { op: String },
    #[error("Operator {op} does not have a sharding strategy registered.")]
    NoStrategy { op: String },
    /// 2.14: every expanded candidate was filtered out (`_ops/utils.py`).
    #[error("{op}: no valid sharding strategy for the input placements.")]
    NoValidStrategy { op: String },
    /// 2.12/2.13: every expanded candidate was filtered out, and `min()` of no costs raises.
    #[error("min() arg is an empty sequence")]
    EmptyStrategies,
    #[error("This operation would remove or reshape sharded dimension {dim}, which requires redistribution. Please redistribute the input first.")]
    ViewOfShardedDim { dim: usize },
    #[error("{0}")]
    ViewUneven(String),
    /// A strategy function's `KeyError` (wrapped by the dispatcher as a RuntimeError whose first
    /// line is the key).
    #[error("{0}")]
    PropagationKeyError(String),
    #[error("Attempted to split the sharded dimension {dim} into multiple subdimensions. It cannot be performed without redistribution, which is disallowed by the current operator.")]
    SplitShardedDim { dim: usize },

    // === shape checks that run on global metadata before any rank computes ===
    #[error("{0}")]
    Shape(String),

    // === redistribution ===
    #[error(transparent)]
    Placement(#[from] PlacementError),

    // === _MaskPartial's mask buffer (`placement_types.py`, `_ops/_mask_buffer.py`) ===
    /// A second reduction of a `_MaskPartial` whose mask was released: a bare `AssertionError`.
    #[error("")]
    MaskReleased,
    #[error("MaskBuffer has been materialized with conflicting data")]
    MaskConflict,

    // === local_map ===
    #[error("arg {arg} in local_map has a mismatched placements: arg placements is {actual} but the input placements is {expected}! If redistribute_inputs is wanted, set redistribute_inputs=True to local_map.")]
    LocalMapMismatch { arg: String, actual: String, expected: String },

    // === a local op failed on a rank (libtorch's own message) ===
    #[error("{message}")]
    Local { kind: &'static str, message: String },

    // === the simulation itself ===
    /// Ranks reached different sharding decisions for one op (they disagree on a global shape).
    /// Real ranks would then issue mismatched collectives and hang or corrupt data.
    #[error("ranks disagree on the sharding of {op}: {detail}")]
    RankDesync { op: String, detail: String },
    /// Input the simulated DTensor does not model; never raised for valid router cases.
    #[error("unsupported by the simulated DTensor: {0}")]
    Unsupported(String),
}

impl DTensorError {
    /// The Python exception class PyTorch raises.
    pub fn kind(&self) -> &'static str {
        match self {
            DTensorError::InPlacePlacementChange { .. }
            | DTensorError::MixedTensor { .. }
            | DTensorError::ViewOfShardedDim { .. }
            | DTensorError::ViewUneven(_)
            | DTensorError::SplitShardedDim { .. }
            | DTensorError::PropagationKeyError(_)
            | DTensorError::Shape(_) => "RuntimeError",
            DTensorError::NoStrategy { .. } => "NotImplementedError",
            DTensorError::NoValidStrategy { .. } | DTensorError::EmptyStrategies | DTensorError::MaskConflict => {
                "RuntimeError"
            }
            DTensorError::MaskReleased => "AssertionError",
            DTensorError::Placement(e) => e.kind(),
            DTensorError::LocalMapMismatch { .. } => "ValueError",
            DTensorError::Local { kind, .. } => kind,
            DTensorError::RankDesync { .. } => "RankDesync",
            DTensorError::Unsupported(_) => "Unsupported",
        }
    }
}

impl DTensorError {
    /// A stable short key for grouping: the exception class and which check fired, without the
    /// sizes and placements that change from case to case.
    pub fn key(&self) -> String {
        let what = match self {
            DTensorError::InPlacePlacementChange { op, .. } => format!("inplace_placement_change@{op}"),
            DTensorError::MixedTensor { op } => format!("mixed_tensor@{op}"),
            DTensorError::NoStrategy { op } => format!("no_strategy@{op}"),
            DTensorError::NoValidStrategy { op } => format!("no_valid_strategy@{op}"),
            DTensorError::EmptyStrategies => "empty_strategies".into(),
            DTensorError::MaskReleased => "mask_released".into(),
            DTensorError::MaskConflict => "mask_conflict".into(),
            DTensorError::ViewOfShardedDim { .. } => "view_of_sharded_dim".into(),
            DTensorError::ViewUneven(m) => slug(m),
            DTensorError::SplitShardedDim { .. } => "split_sharded_dim".into(),
            DTensorError::PropagationKeyError(_) => "propagation_key_error".into(),
            DTensorError::Shape(m) => slug(m),
            DTensorError::Placement(e) => slug(&e.to_string()),
            DTensorError::LocalMapMismatch { .. } => "local_map_mismatch".into(),
            DTensorError::Local { message, .. } => slug(message),
            DTensorError::RankDesync { op, .. } => format!("rank_desync@{op}"),
            DTensorError::Unsupported(m) => slug(m),
        };
        format!("{}:{what}", self.kind())
    }
}

/// The first words of a message with every number removed: "index 9 is out of bounds for
/// dimension 2 with size 4" -> "index_is_out_of_bounds".
fn slug(m: &str) -> String {
    let words: Vec<String> = m
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .take(5)
        .map(str::to_ascii_lowercase)
        .collect();
    words.join("_")
}

pub type Result<T> = std::result::Result<T, DTensorError>;
