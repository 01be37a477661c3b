//! `shardfuzz shrink FILE`: minimize a case while it keeps one divergence signature.

use super::common::parse_duration;
use super::CliResult;
use crate::{replay, worker};
use dtensor::device::{self, DeviceArg};
use harness::shrink::{self, Budget};
use harness::subject::Subject;
use harness::{check_guarded, Options, Signature};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A case file (or an outcome file; its case is used)
    pub file: PathBuf,
    /// The signature to keep (default: the case's first divergence)
    #[arg(long)]
    pub signature: Option<Signature>,
    /// Where to write the minimized case (default: standard output)
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Most candidates to try (as `nightly --shrink-tries`)
    #[arg(long = "shrink-tries", alias = "max-tries", default_value_t = 5000)]
    pub max_tries: usize,
    /// Longest time to spend (as `nightly --shrink-time`)
    #[arg(long = "shrink-time", alias = "max-time", value_parser = parse_duration, default_value = "60s")]
    pub max_time: Duration,
    /// Device to run on (default: the case's)
    #[arg(long)]
    pub device: Option<DeviceArg>,
}

pub fn run(a: Args) -> CliResult {
    let case = replay::load(&a.file)?;
    let dev = device::resolve(a.device.unwrap_or(case.device.arg())).map_err(anyhow::Error::msg)?;
    // The first check goes through the panic guard too: a case whose signature is a crash
    // (a panic or an error inside the model) shrinks like any other.
    let (case, sigs) = match check_guarded(&case, dev, Options::default()) {
        Ok(checked) => {
            let sigs = checked.signatures();
            (checked.case, sigs)
        }
        Err(crashed) => {
            let sig = crashed.signature();
            (crashed.case, vec![sig])
        }
    };
    let sig = match a.signature {
        Some(s) if sigs.contains(&s) => s,
        Some(s) => {
            let shows: Vec<String> = sigs.iter().map(|s| s.to_string()).collect();
            let shows = if shows.is_empty() { "no divergence".into() } else { shows.join(", ") };
            anyhow::bail!("{} does not show {s}; it shows: {shows}", a.file.display())
        }
        None => sigs
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("{} shows no divergence: nothing to shrink", a.file.display()))?,
    };
    let budget = Budget { max_tries: a.max_tries, max_time: a.max_time };
    let mut keeps = worker::keeps(&case, dev, &sig);
    let (mut tried, mut kept, start) = (0usize, 0usize, std::time::Instant::now());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    // Progress on a terminal: candidates tried of the budget, and the time left of it.
    let s = shrink::shrink(&case, budget, |c| {
        let keep = keeps(c);
        (tried, kept) = (tried + 1, kept + usize::from(keep));
        if tty {
            let left = a.max_time.saturating_sub(start.elapsed()).as_secs();
            eprint!(
                "\r\x1b[Kshrinking: {tried} of at most {} candidates tried, {kept} kept, {left}s left",
                a.max_tries
            );
        }
        keep
    });
    if tty {
        eprint!("\r\x1b[K");
    }
    let text = s.case.to_json() + "\n";
    match &a.out {
        Some(out) => {
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(out, &text).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        }
        None => print!("{text}"),
    }
    eprintln!("{sig}");
    eprintln!(
        "shrunk in {:.1}s: {} candidates tried, {} kept{}; now {} rank(s) {:?}, {}",
        s.elapsed.as_secs_f64(),
        s.tried,
        s.kept,
        if s.truncated { " (budget reached before a fixpoint)" } else { "" },
        s.case.ranks(),
        s.case.mesh.shape,
        s.case.subject.dims()
    );
    if let Some(out) = &a.out {
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
