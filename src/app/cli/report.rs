//! `shardfuzz report DIR`: re-render a campaign's report, optionally against a baseline. A
//! campaign killed before it wrote report.json is rendered from what it left on disk.

use super::CliResult;
use crate::campaign::recover;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A campaign directory: its report.json, or, for a killed campaign, its checkpoint.json,
    /// findings.jsonl and cases/ (the report is then marked interrupted)
    pub dir: PathBuf,
    /// An earlier campaign directory: adds new, fixed and still-failing buckets
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Findings of which statuses fail: junit.xml's failures and the exit status 1 (as nightly's)
    #[arg(long, value_name = "STATUSES", default_value = "new,regressed")]
    pub fail_on: crate::triage::FailOn,
}

pub fn run(a: Args) -> CliResult {
    let recovered = !a.dir.join("report.json").exists();
    let mut r = recover::load(&a.dir)?;
    if let Some(b) = &a.baseline {
        let base = recover::load(b)?;
        r.compare(&base, &b.display().to_string());
    }
    r.write_with(&a.dir, &a.fail_on)?;
    print!("{}", r.markdown());
    if recovered {
        eprintln!(
            "shardfuzz: {} had no report.json (a killed campaign): rendered from its checkpoint and findings, marked interrupted",
            a.dir.display()
        );
    }
    Ok(if r.fails(&a.fail_on) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
