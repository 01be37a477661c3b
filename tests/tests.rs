//! One test binary (libtorch links once). Each module is a topic:

/// Every golden outcome recorded on real PyTorch replays identically.
mod golden;
/// Campaigns through the binary: crash and hang isolation, determinism, reports.
mod campaign;
/// The command line: help, exit codes, clear errors for bad input.
mod cli;
