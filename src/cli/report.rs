//! `shardfuzz report DIR`: re-render a campaign's report, optionally against a baseline.

use super::CliResult;
use crate::harness::report::Report;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A campaign directory (holding report.json)
    pub dir: PathBuf,
    /// An earlier campaign directory: adds new, fixed and still-failing buckets
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

pub fn run(a: Args) -> CliResult {
    let mut r = Report::load(&a.dir)?;
    if let Some(b) = &a.baseline {
        let base = Report::load(b)?;
        r.compare(&base, &b.display().to_string());
    }
    r.write(&a.dir)?;
    print!("{}", r.markdown());
    Ok(if r.buckets.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
