//! `shardfuzz shrink FILE`: minimize a case while it keeps one divergence signature.

use super::common::parse_duration;
use super::CliResult;
use crate::device::{self, DeviceArg};
use crate::harness::shrink::{self, Budget};
use crate::harness::{bucket, oracle, replay, runner, worker};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A case file (or an outcome file; its case is used)
    pub file: PathBuf,
    /// The signature to keep (default: the case's first divergence)
    #[arg(long)]
    pub signature: Option<String>,
    /// Where to write the minimized case (default: corpus/repro/<signature>.json)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most candidates to try
    #[arg(long, default_value_t = 5000)]
    pub max_tries: usize,
    /// Longest time to spend
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub max_time: Duration,
    /// Device to run on (default: the case's)
    #[arg(long)]
    pub device: Option<DeviceArg>,
}

pub fn run(a: Args) -> CliResult {
    let mut case = replay::load(&a.file).map_err(anyhow::Error::msg)?;
    let dev = match a.device {
        Some(d) => device::resolve(d).map_err(anyhow::Error::msg)?,
        None => device::resolve(match case.device {
            crate::harness::case::CaseDevice::Cpu => DeviceArg::Cpu,
            crate::harness::case::CaseDevice::Cuda(n) => DeviceArg::Cuda(Some(n)),
        })
        .map_err(anyhow::Error::msg)?,
    };
    case.device = dev.into();
    let run = runner::run(&case, dev.tch()).map_err(anyhow::Error::msg)?;
    let sigs: Vec<String> = oracle::judge(&case, &run).verdicts.iter().map(|v| v.signature(&case)).collect();
    let sig = match a.signature {
        Some(s) if sigs.contains(&s) => s,
        Some(s) => anyhow::bail!(
            "{} does not show {s}; it shows: {}",
            a.file.display(),
            if sigs.is_empty() { "no divergence".into() } else { sigs.join(", ") }
        ),
        None => sigs
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{} shows no divergence: nothing to shrink", a.file.display()))?,
    };
    let s =
        shrink::shrink(&case, Budget { max_tries: a.max_tries, max_time: a.max_time }, worker::keeps(&case, dev, &sig));
    let out = a.out.unwrap_or_else(|| PathBuf::from("corpus/repro").join(format!("{}.json", bucket::slug(&sig))));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, s.case.to_json() + "\n").map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let d = s.case.dims;
    println!("{sig}");
    println!(
        "shrunk in {:.1}s: {} candidates tried, {} kept{}; now {} rank(s) {:?}, B={} L={} D={} E={} K={}",
        s.elapsed.as_secs_f64(),
        s.tried,
        s.kept,
        if s.truncated { " (budget reached before a fixpoint)" } else { "" },
        s.case.ranks(),
        s.case.mesh.shape,
        d.batch,
        d.seq,
        d.model,
        d.experts,
        d.top_k
    );
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}
