//! `shardfuzz worker` (hidden): the subprocess a campaign talks to over stdin/stdout.

use super::common::SizeArg;
use super::CliResult;
use crate::dtensor::RuleSet;
use crate::harness::case::CaseDevice;
use crate::harness::generate::{GenConfig, SizeClass};
use crate::harness::worker::{self, Fault};
use crate::router::RouterRev;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub seed: u64,
    #[arg(long, default_value = "small")]
    pub size: SizeArg,
    #[arg(long, value_delimiter = ',')]
    pub router: Vec<RouterRev>,
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<RuleSet>,
    #[arg(long, value_delimiter = ',', default_value = "cpu")]
    pub devices: Vec<CaseDevice>,
    /// Directory where the case about to run is written first
    #[arg(long)]
    pub inflight: Option<std::path::PathBuf>,
    /// Test hook: abort@N, segv@N or hang@N makes this worker fail on case N
    #[arg(long)]
    pub inject_fault: Option<Fault>,
}

pub fn run(a: Args) -> CliResult {
    let cfg = GenConfig {
        size: match a.size {
            SizeArg::Small => SizeClass::Small,
            SizeArg::Medium => SizeClass::Medium,
            SizeArg::Large => SizeClass::Large,
        },
        routers: a.router,
        rules: a.rules,
        device: a.devices[0],
        max_ranks: 16,
    };
    worker::serve(a.seed, &cfg, &a.devices, a.inject_fault, a.inflight.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
