//! The MoE-layer subject: torchtitan's whole MoE layer (router, routing-map counts, dispatch,
//! grouped experts, combine, shared experts, load-balance hook), twice: an unsharded libtorch
//! reference and a sharded run rank by rank on the dense mesh (dp, cp, tp), in the revision and
//! backend a case names (docs/moe-layer.md). Its case spec follows the contract with the
//! real-torchtitan recorder, so recorded outcomes replay against the model.

pub mod combine;
pub mod comms;
pub mod crosscheck;
pub mod error;
pub mod export;
pub mod full_dtensor;
pub mod generate;
pub mod head;
pub mod inputs;
pub mod kernels;
pub mod known;
pub mod reference;
pub mod revision;
pub mod run;
pub mod sharded;
pub mod shrink;
pub mod spec;
pub mod spmd_backend;
pub mod spmd_layer;
pub mod subject;

pub use revision::{Backend, MoeRev};
pub use spec::MoeSpec;

#[cfg(test)]
mod revision_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tt022_tests;
