//! The command line: one clap enum, one small module per subcommand.
//! Exit codes: 0 clean, 1 divergence found, 2 bad input or error (clap's usage errors are 2 too).

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod common;
mod confirm;
mod doctor;
mod drift;
mod export;
mod gen;
pub mod import;
mod merge;
mod nightly;
mod replay;
mod report;
mod run;
mod shrink;
mod worker;

#[derive(Parser, Debug)]
#[command(
    name = "shardfuzz",
    version,
    about = "Differential testing and fuzzing of sharded (DTensor-style) tensor programs: torchtitan's MoE router on a simulated DTensor vs an unsharded libtorch reference",
    after_help = "Exit status: 0 no divergence, 1 divergence found, 2 bad input or error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Command,
    /// Most elements one tensor of a case may have (default 16777216; the case may hold 16 times
    /// that over its ranks). Larger cases are refused before anything is allocated
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_elements: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Show the libtorch in use, CUDA devices, thread counts and the venv location
    Doctor(doctor::Args),
    /// Replay case files and report divergences (exit 1 when any)
    Replay(replay::Args),
    /// Write generated cases to a directory
    Gen(gen::Args),
    /// Run random cases in this process, one line per new divergence signature
    Run(run::Args),
    /// A campaign: worker subprocesses, buckets, shrinking, reports (report.md/json, junit.xml, html)
    Nightly(nightly::Args),
    /// Join the directories of a campaign's shards into one report, as one run would have written
    Merge(merge::Args),
    /// Minimize a case while it keeps a divergence signature
    Shrink(shrink::Args),
    /// Re-render a campaign report, optionally with a regression section against a baseline
    Report(report::Args),
    /// Turn a libFuzzer input (crash artifact) into a case JSON
    Import(import::Args),
    /// Benchmark: cases/s per device and size, phase breakdown, time to detect, shrink time
    Bench(bench::Args),
    /// Run cases on real PyTorch DTensor and say whether the model agrees (exit 1 when any differs)
    Confirm(confirm::Args),
    /// Write a case as a standalone PyTorch script (torchrun or one process) for an upstream issue
    Export(export::Args),
    /// Ask whether the model holds on another PyTorch release: facts, recorded and fresh cases
    Drift(drift::Args),
    #[command(hide = true)]
    Worker(worker::Args),
}

/// An error worth exit status 2, printed as `shardfuzz: <message>`.
pub type CliResult = anyhow::Result<ExitCode>;

/// Commands that print for a reader and start no subprocess end quietly when their reader goes
/// away (`shardfuzz run | head`): the default SIGPIPE action, the usual exit status 141 of a
/// closed pipe, instead of a panic in `println!`. Commands that talk to workers over pipes keep
/// Rust's default (a write error they handle).
fn quiet_on_closed_pipe(cmd: &Command) {
    let prints = matches!(
        cmd,
        Command::Doctor(_)
            | Command::Replay(_)
            | Command::Gen(_)
            | Command::Run(_)
            | Command::Shrink(_)
            | Command::Report(_)
            | Command::Import(_)
            | Command::Export(_)
    );
    if prints {
        // SAFETY: setting a signal's disposition to its default, before any thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
}

pub fn main() -> ExitCode {
    crate::heap::bound_library_caches();
    let cli = Cli::parse();
    quiet_on_closed_pipe(&cli.cmd);
    if let Some(n) = cli.max_elements {
        harness::limits::set(harness::limits::Limits::per_tensor(n));
    }
    // Cases are small: one intra-op thread is fastest, and parallelism comes from processes.
    tch::set_num_threads(1);
    match dtensor::plant::check_env() {
        Err(msg) => {
            eprintln!("shardfuzz: {msg}");
            return ExitCode::from(2);
        }
        Ok(Some(m)) => {
            eprintln!("shardfuzz: WARNING: planted bug `{}` is active (SHARDFUZZ_PLANT): {}", m.name, m.breaks)
        }
        Ok(None) => {}
    }
    if let Err(msg) = dtensor::device::check_libtorch() {
        eprintln!("shardfuzz: {msg}");
        return ExitCode::from(2);
    }
    let result = match cli.cmd {
        Command::Doctor(a) => doctor::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Gen(a) => gen::run(a),
        Command::Run(a) => run::run(a),
        Command::Nightly(a) => nightly::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Shrink(a) => shrink::run(a),
        Command::Report(a) => report::run(a),
        Command::Import(a) => import::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Confirm(a) => confirm::run(a),
        Command::Export(a) => export::run(a),
        Command::Drift(a) => drift::run(a),
        Command::Worker(a) => worker::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shardfuzz: {e:#}");
            ExitCode::from(2)
        }
    }
}
