//! `shardfuzz run`: a plain random run in this process, one line per divergence.

use super::common::{parse_duration, GenArgs};
use super::CliResult;
use crate::report::TieStats;
use crate::subjects::{AnyCase, AnyCrashed, GenConfig};
use crate::worker::Fault;
use dtensor::device::Dev;
use harness::oracle::{GradTally, Verdict};
use harness::{check, guard, Options, Signature};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the case stream
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Number of cases to run (default 1000 when --time is not given either)
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
    /// Test hook: panic inside case N's check (panic@N), to see the run go on
    #[arg(long, hide = true)]
    pub inject_fault: Option<Fault>,
    #[command(flatten)]
    pub gen: GenArgs,
}

/// Cases `run` runs without --cases or --time.
const DEFAULT_CASES: u64 = 1000;

/// Case `n`, checked; a panic or an error inside the tool is a `crash` verdict, and the case is
/// written to disk.
fn one_case(
    a: &Args,
    cfg: &GenConfig,
    dev: Dev,
    opts: Options,
    n: u64,
    stats: &mut (GradTally, TieStats),
) -> anyhow::Result<(AnyCase, Vec<Verdict>)> {
    let case = cfg.nth(a.seed, n);
    let panic_here = a.inject_fault == Some(Fault::Panic(n));
    match guard(&case, dev, || {
        assert!(!panic_here, "injected panic at case {n}");
        check(&case, dev, opts)
    }) {
        Ok(c) => {
            stats.0.add(&c.judgement.grads);
            stats.1.add_case(&c.judgement.near_ties);
            Ok((c.case, c.judgement.verdicts))
        }
        Err(crashed) => {
            let path = save_crash(a.save.as_deref(), &crashed)?;
            eprintln!("shardfuzz: case {n} crashed; kept at {}", path.display());
            Ok((crashed.case, vec![crashed.verdict]))
        }
    }
}

pub fn run(a: Args) -> CliResult {
    let dev = a.gen.device()?;
    let cfg = a.gen.config(dev);
    anyhow::ensure!(
        !a.cross_device || dev != dtensor::device::Dev::Cpu,
        "--cross-device compares CPU with CUDA, and --device resolved to cpu (no CUDA device here)"
    );
    let limit = a.cases.unwrap_or(if a.time.is_some() { u64::MAX } else { DEFAULT_CASES });
    if a.cases.is_none() && a.time.is_none() {
        eprintln!("shardfuzz: running {DEFAULT_CASES} cases (the default budget; --cases N or --time T sets it)");
    }
    if let Some(dir) = &a.save {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--save {}: {e}", dir.display()))?;
    }
    let opts = Options { cross_device: a.cross_device, ..Options::default() };
    let start = Instant::now();
    let mut seen: BTreeMap<Signature, u64> = BTreeMap::new();
    let mut n = 0u64;
    let mut diverging = 0u64;
    let mut stats = (GradTally::default(), TieStats::default());
    while n < limit && a.time.is_none_or(|t| start.elapsed() < t) {
        let (case, verdicts) = one_case(&a, &cfg, dev, opts, n, &mut stats)?;
        diverging += u64::from(!verdicts.is_empty());
        for v in &verdicts {
            let sig = v.signature(&case);
            let count = seen.entry(sig.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                if let Some(dir) = &a.save {
                    let path = dir.join(format!("{}.json", sig.slug()));
                    std::fs::write(&path, case.to_json()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
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
    let (grads, ties) = stats;
    eprintln!(
        "shardfuzz: {} token(s) compared, {} undecided (near-ties), {} of them unchecked ({})",
        ties.tokens,
        ties.topk_near_ties + ties.group_near_ties,
        ties.unchecked,
        ties.unchecked_share()
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

/// Writes a crashed case (inputs inline) to `--save DIR`, or else to the temp dir: a crash is
/// never lost, even when nothing asked for cases to be kept.
fn save_crash(save: Option<&std::path::Path>, crashed: &AnyCrashed) -> anyhow::Result<std::path::PathBuf> {
    let dir = save.map(|d| d.to_path_buf()).unwrap_or_else(|| std::env::temp_dir().join("shardfuzz-crashes"));
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let case = harness::data::with_inline(&crashed.case);
    let path = dir.join(format!("crash-{:016x}.json", harness::hash64(case.to_json().as_bytes())));
    std::fs::write(&path, case.to_json()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(path)
}
