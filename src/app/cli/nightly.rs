//! `shardfuzz nightly`: a campaign across router revisions x rule sets x devices, with worker
//! subprocesses, bucketing, shrinking and reports.

use super::common::{parse_duration, Draw};
use super::CliResult;
use crate::campaign::shard::Shard;
use crate::campaign::{self, Config};
use crate::confirm::{buckets, Confirmer, Engine, Release};
use crate::report::Report;
use crate::worker::Fault;
use dtensor::device::{self, DeviceArg};
use harness::shrink::Budget;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Time budget (e.g. 30m, 2h); shrinking gets the last quarter of it
    #[arg(long, value_parser = parse_duration, required_unless_present = "cases")]
    pub time: Option<Duration>,
    /// Number of cases instead of a time budget (deterministic: same seed and count, same report)
    #[arg(long)]
    pub cases: Option<u64>,
    /// Seed of the case stream
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker processes (default: one per CPU core)
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Directory for report.md, report.json, junit.xml, report.html, cases/ and repro/; must be
    /// new or empty (see --force)
    #[arg(long)]
    pub out: PathBuf,
    /// Clear --out first when it holds an earlier campaign (refused otherwise)
    #[arg(long)]
    pub force: bool,
    /// Findings of which statuses fail: junit.xml's failures and the exit status 1 (comma list of
    /// new, regressed, open, known, expected; any; none)
    #[arg(long, value_name = "STATUSES", default_value = "new,regressed")]
    pub fail_on: crate::triage::FailOn,
    /// Devices, comma-separated (auto, cpu, cuda, cuda:N); cases alternate between them
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub device: Vec<DeviceArg>,
    #[command(flatten)]
    pub draw: Draw,
    /// A case running longer than this is killed and kept as a `timeout` reproducer
    #[arg(long, value_parser = parse_duration, default_value = "20s", alias = "case-timeout")]
    pub per_case_timeout: Duration,
    /// Longest shrink of one bucket
    #[arg(long, value_parser = parse_duration, default_value = "20s")]
    pub shrink_time: Duration,
    /// Most candidates tried while shrinking one bucket
    #[arg(long, default_value_t = 2000)]
    pub shrink_tries: usize,
    /// Do not shrink
    #[arg(long)]
    pub no_shrink: bool,
    /// Write minimized reproducers to DIR (e.g. corpus/repro) instead of OUT/repro/; the report
    /// links to them there
    #[arg(long, value_name = "DIR")]
    pub corpus: Option<PathBuf>,
    /// An earlier campaign directory: adds a regression section (new, fixed, still failing)
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Run only shard I of N of the case stream (the cases whose index is I mod N); `--cases`
    /// still counts the whole stream. `shardfuzz merge` joins the shards' directories
    #[arg(long, value_name = "I/N")]
    pub shard: Option<Shard>,
    /// After shrinking, run each bucket's reproducer on real PyTorch (`shardfuzz confirm`) and
    /// report it: `--confirm` alone uses the release each bucket's rule set models, or list
    /// releases (e.g. --confirm 2.13.0,2.14.0). Venvs as for `confirm`
    #[arg(long, value_name = "VERSIONS", num_args = 0..=1, value_delimiter = ',')]
    pub confirm: Option<Vec<Release>>,
    /// How long one reproducer may take on real PyTorch (`--confirm`) before it is `not run`
    /// (e.g. 300s, 5m; plain seconds too)
    #[arg(long, value_parser = parse_duration, default_value = "300s")]
    pub confirm_timeout: Duration,
    /// Test hook: make a worker abort, segfault or hang on case N (abort@N, segv@N, hang@N)
    #[arg(long, hide = true)]
    pub inject_fault: Option<Fault>,
}

pub fn run(a: Args) -> CliResult {
    let started = std::time::Instant::now();
    let mut devices = Vec::new();
    for d in &a.device {
        let dev = device::resolve(*d).map_err(anyhow::Error::msg)?;
        if !devices.contains(&dev) {
            devices.push(dev);
        }
    }
    anyhow::ensure!(!a.confirm_timeout.is_zero(), "--confirm-timeout must be at least 1 second");
    super::common::prepare_out(&a.out, a.seed, a.force)?;
    let shard = a.shard.unwrap_or(Shard::WHOLE);
    if shard.count > 1 && a.corpus.is_some() {
        anyhow::bail!("--corpus with --shard: shards would overwrite each other's reproducers; pass --corpus to `shardfuzz merge`");
    }
    let baseline = match &a.baseline {
        Some(dir) => Some(campaign::recover::load(dir)?),
        None => None,
    };
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let cfg = Config {
        seed: a.seed,
        cases: a.cases,
        time: a.time,
        jobs,
        out: a.out.clone(),
        corpus: a.corpus.clone(),
        gen: a.draw.config(devices[0], crate::subjects::Kind::ALL),
        devices,
        per_case_timeout: a.per_case_timeout,
        shrink: Budget { max_tries: a.shrink_tries, max_time: a.shrink_time },
        no_shrink: a.no_shrink,
        fault: a.inject_fault,
        exe: std::env::current_exe()?,
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        shard,
    };
    campaign::catch_sigint();
    let mut report = campaign::run(&cfg)?;
    // An interrupted campaign reports at once; its buckets stay unconfirmed.
    if let (Some(releases), false) = (&a.confirm, report.interrupted) {
        confirm(&mut report, &a.out, releases, a.confirm_timeout.as_secs().max(1), cfg.progress)?;
    }
    if let (Some(b), Some(dir)) = (&baseline, &a.baseline) {
        report.compare(b, &dir.display().to_string());
    }
    if a.confirm.is_some() || baseline.is_some() || a.fail_on != crate::triage::FailOn::default() {
        report.write_with(&a.out, &a.fail_on)?;
    }
    let part = if shard.count > 1 { format!(" (shard {shard})") } else { String::new() };
    let total = started.elapsed().as_secs_f64();
    let confirm_s = total - report.timing.wall_s;
    let confirming = if a.confirm.is_some() { format!(", {confirm_s:.0}s confirming") } else { String::new() };
    eprintln!(
        "shardfuzz: {} cases{part} in {total:.0}s (campaign {:.0}s at {:.0} cases/s{confirming}), {} diverging, {} bucket(s){}; report in {}",
        report.cases,
        report.timing.wall_s,
        report.timing.cases_per_s,
        report.diverging_cases,
        report.buckets.len(),
        if report.interrupted { " (interrupted)" } else { "" },
        a.out.join("report.md").display()
    );
    if let Some(f) = report.measure_fidelity() {
        eprintln!("shardfuzz: {}", f.line());
    }
    eprintln!("shardfuzz: {}", Report::triage_line(&report.triage()));
    // Exit 1 only for findings that need a person (--fail-on), as junit.xml fails them.
    Ok(if report.fails(&a.fail_on) { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// Confirms every bucket's reproducer on real PyTorch (the report is written by the caller).
fn confirm(
    report: &mut Report,
    out: &std::path::Path,
    releases: &[Release],
    timeout: u64,
    progress: bool,
) -> anyhow::Result<()> {
    let mut confirmer = Confirmer::new(Duration::from_secs(timeout));
    let start = std::time::Instant::now();
    buckets::confirm_report(report, out, releases, &mut confirmer, Engine::Auto, |i, n| {
        if progress {
            // An estimate from the buckets done so far.
            let eta = match i {
                0 => String::new(),
                _ => format!(", ETA {:.0}s", start.elapsed().as_secs_f64() / i as f64 * (n - i) as f64),
            };
            eprint!("\r\x1b[Kconfirming on real PyTorch: bucket {} of {n}{eta}", i + 1);
        }
    });
    if progress {
        eprint!("\r\x1b[K");
    }
    Ok(())
}
