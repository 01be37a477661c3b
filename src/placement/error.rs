//! Errors of the placement algebra, worded as PyTorch words them where PyTorch has a text.

use super::Placement;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlacementError {
    // === invalid input (the user's or the generator's) ===
    #[error("placement {placement} is out of range for a tensor of rank {ndim}")]
    ShardDimOutOfRange { placement: Placement, ndim: usize },
    #[error("`placements` must have the same length as `device_mesh.ndim`! Found placements length: {found}, and device_mesh.ndim: {mesh_ndim}.")]
    WrongLength { found: usize, mesh_ndim: usize },
    #[error("{0}")]
    BadMesh(String),

    // === redistribution PyTorch refuses ===
    #[error("redistribute from {from} to {to} not supported yet")]
    ShardToPartial { from: Placement, to: Placement },
    #[error("Redistribution from one partial type ({from}) to another ({to}) is unsupported.")]
    PartialToPartial { from: Placement, to: Placement },
    #[error("Replicate to Partial({0}) conversion is not supported.")]
    ReplicateToPartial(&'static str),
    #[error("Redistribute from _StridedShard to Shard is not implemented yet")]
    StridedToShard,
    #[error("Redistribute from Partial to _StridedShard is not implemented yet")]
    PartialToStrided,
    #[error("Redistribute from Shard to _StridedShard is not implemented yet")]
    ShardToStrided,
    /// The graph planner found no path (e.g. to a `_MaskPartial`, which it never generates).
    #[error("No path found from src_state {} to dst_state {}", super::short_list(.from), super::short_list(.to))]
    NoPath { from: Vec<Placement>, to: Vec<Placement> },
}

impl PlacementError {
    /// The Python exception class PyTorch raises for this error.
    pub fn kind(&self) -> &'static str {
        match self {
            PlacementError::ShardDimOutOfRange { .. } => "IndexError",
            PlacementError::WrongLength { .. } | PlacementError::BadMesh(_) => "ValueError",
            PlacementError::ShardToPartial { .. } => "RuntimeError",
            PlacementError::PartialToPartial { .. } => "AssertionError",
            PlacementError::ReplicateToPartial(_) => "ValueError",
            PlacementError::StridedToShard | PlacementError::PartialToStrided | PlacementError::ShardToStrided => {
                "NotImplementedError"
            }
            PlacementError::NoPath { .. } => "AssertionError",
        }
    }
}
