//! `shardfuzz run`: a plain random run in this process, one line per divergence.

use super::common::{parse_duration, GenArgs};
use super::CliResult;
use crate::harness::{check, generate, Options, Signature};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the case stream
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of cases to run
    #[arg(long, conflicts_with = "time")]
    pub cases: Option<u64>,
    /// Time budget instead of a case count (e.g. 30s, 5m)
    #[arg(long, value_parser = parse_duration)]
    pub time: Option<Duration>,
    /// Print every divergence, not only the first of each signature
    #[arg(long)]
    pub all: bool,
    /// Write the first case of each new signature to DIR/<signature slug>.json (before the next case runs)
    #[arg(long)]
    pub save: Option<std::path::PathBuf>,
    /// Also run every case on the CPU and compare it with the --device run (`device` verdicts);
    /// needs a CUDA device
    #[arg(long)]
    pub cross_device: bool,
    #[command(flatten)]
    pub gen: GenArgs,
}

pub fn run(a: Args) -> CliResult {
    let dev = a.gen.device()?;
    let cfg = a.gen.config(dev);
    anyhow::ensure!(
        !a.cross_device || dev != crate::device::Dev::Cpu,
        "--cross-device compares CPU with CUDA, and --device resolved to cpu (no CUDA device here)"
    );
    let limit = a.cases.unwrap_or(if a.time.is_some() { u64::MAX } else { 1000 });
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--save {}: {e}", dir.display()))?;
    }
    let opts = Options { cross_device: a.cross_device, ..Options::default() };
    let start = Instant::now();
    let mut seen: BTreeMap<Signature, u64> = BTreeMap::new();
    let mut n = 0u64;
    let mut diverging = 0u64;
    let mut grads = crate::harness::oracle::GradTally::default();
    while n < limit && a.time.is_none_or(|t| start.elapsed() < t) {
        let c = check(&generate::nth(a.seed, n, &cfg), dev, opts)?;
        diverging += u64::from(!c.judgement.verdicts.is_empty());
        grads.add(&c.judgement.grads);
        for (v, sig) in c.judgement.verdicts.iter().zip(c.signatures()) {
            let count = seen.entry(sig.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                if let Some(dir) = &a.save {
                    let path = dir.join(format!("{}.json", sig.slug()));
                    std::fs::write(&path, c.case.to_json()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                }
            }
            if *count == 1 || a.all {
                println!("case {n} seed {}: {sig}: {}", a.seed, v.detail);
            }
        }
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "shardfuzz: {n} cases in {secs:.1}s ({:.0} cases/s), {diverging} diverging, {} signature(s)",
        n as f64 / secs.max(1e-9),
        seen.len()
    );
    if grads.cases > 0 {
        eprintln!(
            "shardfuzz: {} backward case(s): gradients compared in {}; skipped {} near-tie and {} where the program chose other experts (the rest raised)",
            grads.cases, grads.checked, grads.near_tie, grads.forward_differs
        );
    }
    // The tally is what one reads after a long run; most frequent first, ties by signature.
    let mut tally: Vec<(&Signature, &u64)> = seen.iter().collect();
    tally.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (sig, count) in tally {
        eprintln!("{count:>9}  {sig}");
    }
    Ok(if diverging > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
