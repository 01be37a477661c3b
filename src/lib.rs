//! shardfuzz: a differential-testing and fuzzing harness for sharded (DTensor-style) tensor
//! programs, starting with torchtitan's Mixture-of-Experts router.
//!
//! - [`placement`]: placement algebra, meshes, torch.chunk layouts and redistribution plans
//!   (pure Rust, never touches libtorch).
//! - [`dtensor`]: a simulated DTensor on libtorch: one local tensor per simulated rank,
//!   logged collectives, per-op sharding rules for several PyTorch versions, `local_map`.
//! - [`router`]: the MoE router, as an unsharded reference and as sharded revisions.
//! - [`harness`]: cases, generators, oracles, shrinking, campaigns and reports.
//! - [`cli`]: the command line.
//! - [`names`]: the small closed enums that travel as strings, declared once.

pub mod cli;
pub mod device;
pub mod dtensor;
pub mod harness;
pub mod names;
pub mod placement;
pub mod router;
