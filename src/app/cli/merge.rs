//! `shardfuzz merge DIR... --out DIR`: joins shard directories (`nightly --shard I/N`, or earlier
//! merges) into one campaign directory with the report a single run would have written.

use super::CliResult;
use crate::campaign::merge::{self, Options};
use crate::campaign::recover;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Shard directories of one campaign (`nightly --shard I/N --out DIR`), or earlier merges
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged campaign directory: report.md, report.json, junit.xml, report.html, cases/,
    /// repro/, findings.jsonl, campaign.json
    #[arg(long)]
    pub out: PathBuf,
    /// Write the reproducers to DIR (e.g. corpus/repro) instead of OUT/repro/
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// Merge the shards there are when some are missing (the report names the shards it covers)
    #[arg(long)]
    pub allow_missing: bool,
    /// An earlier campaign directory (single or merged): adds new, fixed and still-failing buckets
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

pub fn run(a: Args) -> CliResult {
    let baseline = match &a.baseline {
        Some(dir) => Some(recover::load(dir)?),
        None => None,
    };
    let opts = Options { out: a.out.clone(), corpus: a.corpus.clone(), allow_missing: a.allow_missing };
    let mut report = merge::merge(&a.dirs, &opts)?;
    if let (Some(b), Some(dir)) = (&baseline, &a.baseline) {
        report.compare(b, &dir.display().to_string());
        report.write(&a.out)?;
    }
    let cover = match &report.shards {
        Some(c) => format!(" (shards {:?} of {})", c.covered, c.of),
        None => String::new(),
    };
    eprintln!(
        "shardfuzz: merged {} director{}: {} cases{cover}, {} diverging, {} bucket(s){}; report in {}",
        a.dirs.len(),
        if a.dirs.len() == 1 { "y" } else { "ies" },
        report.cases,
        report.diverging_cases,
        report.buckets.len(),
        if report.interrupted { " (some parts were interrupted)" } else { "" },
        a.out.join("report.md").display()
    );
    Ok(if report.buckets.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
