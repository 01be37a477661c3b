//! shardfuzz, the application: the command line, campaigns (workers, buckets, shrinking,
//! shards and merges), reports, real-PyTorch confirmation and export, the bench, and the
//! registration of the subjects. The layers below are crates of their own:
//!
//! - `names`: the small closed enums that travel as strings, declared once.
//! - `placement`: placement algebra, meshes, torch.chunk layouts and redistribution plans
//!   (pure Rust, no libtorch).
//! - `dtensor`: the simulated DTensor on libtorch: ranks, logged collectives, per-release
//!   sharding rules, autograd, `local_map`.
//! - `harness`: cases, data, running, the shared oracles, signatures, outcomes, generation
//!   sources and shrinking, generic over the program under test (a subject).
//! - the subjects: `router` (torchtitan's MoE router and its backward boundaries).

pub mod bench;
pub mod bucket;
pub mod campaign;
pub mod cli;
pub mod confirm;
pub mod export;
pub mod heap;
pub mod replay;
pub mod report;
pub mod subjects;
pub mod triage;
pub mod worker;
