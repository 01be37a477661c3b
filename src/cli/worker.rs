//! `shardfuzz worker` (hidden): the subprocess a campaign talks to over stdin/stdout.

use super::common::{gen_config, Focus, SizeArg};
use super::CliResult;
use crate::dtensor::RuleSet;
use crate::harness::case::CaseDevice;
use crate::harness::worker::{self, Fault};
use crate::router::RouterRev;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub seed: u64,
    #[arg(long, default_value = "small")]
    pub size: SizeArg,
    #[command(flatten)]
    pub focus: Focus,
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
    let cfg = gen_config(a.size, &a.router, &a.rules, a.devices[0], &a.focus);
    worker::serve(a.seed, &cfg, &a.devices, a.inject_fault, a.inflight.as_deref())?;
    Ok(ExitCode::SUCCESS)
}
