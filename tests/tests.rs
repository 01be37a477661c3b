//! One test binary (libtorch links once). Each module is a topic:

/// Autograd on the simulated DTensor: boundary labels, backward collectives, op gradients.
mod autograd;
/// Backward cases recorded on real PyTorch replay the same gradients, placements and comms.
mod backward;
/// Campaigns through the binary: crash and hang isolation, determinism, reports.
mod campaign;
/// The command line: help, exit codes, clear errors for bad input.
mod cli;
/// Router cases, traced op calls and the op-level fact checks' cases recorded on real PyTorch
/// replay the same.
mod crosscheck;
/// CUDA (ignored without a GPU): golden cases and generated ones agree with the CPU.
mod cuda;
/// Every golden outcome recorded on real PyTorch replays identically.
mod golden;
/// Planted bugs: each is caught by the oracles (or the op tests) within a bounded run.
mod mutants;
/// The simulated DTensor op by op against full tensors, and redistribution round trips.
mod ops;
/// Real PyTorch 2.11 (the project's venv): confirm with both engines, exported scripts, nightly --confirm.
mod realtorch;
/// Every committed reproducer still shows its signature.
mod regressions;
/// The router: the verified scatter-op and whole-router facts, presets, features, hand-built reference examples.
mod router;
/// Scale-out (shards, merge), a killed campaign's report, and report.html's well-formedness.
mod scaleout;
/// Promises about the source: no function over 100 lines.
mod style;

/// The repository root: `SHARDFUZZ_ROOT` when set (a test binary carried to another machine),
/// else where this crate was built.
pub fn root() -> std::path::PathBuf {
    std::env::var_os("SHARDFUZZ_ROOT").map(Into::into).unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
}

/// A router case, typed.
pub type RouterCase = harness::Case<::router::RouterSpec>;

/// The router spec of a case read from a file (every committed case file is a router case).
pub fn spec(c: &shardfuzz::subjects::AnyCase) -> &::router::RouterSpec {
    c.subject.as_router().expect("a router case")
}

/// A router case from a case or outcome file's text.
pub fn router_case(text: &str) -> RouterCase {
    let c = shardfuzz::replay::parse(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    c.map_subject(|s| s.as_router().cloned().expect("a router case"))
}
