//! `shardfuzz worker` (hidden): the subprocess a campaign talks to over stdin/stdout. Its
//! settings come as the first line on stdin (`worker::Setup`), not as flags, so the
//! coordinator and its workers cannot disagree on them.

use super::CliResult;
use crate::worker;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_: Args) -> CliResult {
    worker::serve()?;
    Ok(ExitCode::SUCCESS)
}
