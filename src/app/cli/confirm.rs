//! `shardfuzz confirm FILE|DIR...`: run cases on real PyTorch DTensor and say, per case, what
//! real PyTorch did and whether the model agrees.

use super::CliResult;
use crate::confirm::{render, Confirmer, Engine, Release};
use crate::replay;
use crate::subjects::AnyCase;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Case files or outcome files (their `case` is used), or directories of them (*.json)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Torch releases to run on, comma-separated (e.g. 2.12.1,2.13.0,2.14.0). Default: the
    /// release each case's rule set models. On a release with a rule set of its own, the model
    /// runs the case with that rule set
    #[arg(long, value_delimiter = ',')]
    pub torch: Vec<Release>,
    /// How real PyTorch runs the ranks: local (one process, LocalTensorMode), gloo (one process
    /// per rank) or auto (local, gloo where LocalTensorMode cannot represent the case)
    #[arg(long, default_value = "auto")]
    pub engine: Engine,
    /// Print one result (shardfuzz.confirm/1, with the real outcome) per case and release as
    /// JSON lines
    #[arg(long)]
    pub json: bool,
    /// How long one case may take on real PyTorch before its worker is killed (the case is then
    /// `not run`; e.g. 300s, 5m, plain seconds too)
    #[arg(long = "confirm-timeout", alias = "timeout", value_parser = super::common::parse_duration, default_value = "300s")]
    pub timeout: Duration,
    /// Test hook: the worker hangs or crashes on the N-th run (hang@N, crash@N; from 0)
    #[arg(long, hide = true, value_parser = parse_fault)]
    pub inject_fault: Option<(String, usize)>,
}

fn parse_fault(s: &str) -> Result<(String, usize), String> {
    let bad = || format!("bad fault '{s}' (hang@N or crash@N)");
    let (kind, n) = s.split_once('@').ok_or_else(bad)?;
    match kind {
        "hang" | "crash" => Ok((kind.to_string(), n.parse().map_err(|_| bad())?)),
        _ => Err(bad()),
    }
}

/// The case files named: files as given, directories' *.json files in name order.
fn name(p: &Path) -> String {
    p.display().to_string()
}

pub fn run(a: Args) -> CliResult {
    anyhow::ensure!(!a.timeout.is_zero(), "--confirm-timeout must be at least 1 second");
    // Every file is read before anything runs: bad input fails fast, with one line.
    let mut cases: Vec<(PathBuf, AnyCase)> = Vec::new();
    for f in super::common::case_files(&a.files)? {
        let case = replay::load(&f)?;
        cases.push((f, case));
    }
    let jobs: Vec<(usize, Release)> = cases
        .iter()
        .enumerate()
        .flat_map(|(i, (_, c))| {
            let rels = if a.torch.is_empty() { vec![Release::of(c.rules)] } else { a.torch.clone() };
            rels.into_iter().map(move |r| (i, r))
        })
        .collect();
    let mut confirmer = Confirmer::new(a.timeout);
    let mut releases: Vec<&Release> = jobs.iter().map(|(_, r)| r).collect();
    releases.sort();
    releases.dedup();
    for r in releases {
        let of: Vec<AnyCase> = jobs.iter().filter(|(_, rel)| rel == r).map(|(i, _)| cases[*i].1.clone()).collect();
        confirmer.prepare_cases(&of, r, a.engine).map_err(|e| anyhow::anyhow!("torch {r}: {e:#}"))?;
    }
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut results = Vec::new();
    for (n, (i, release)) in jobs.iter().enumerate() {
        let (file, case) = &cases[*i];
        if progress {
            eprint!("\r\x1b[K[{}/{}] {} on torch {release}", n + 1, jobs.len(), name(file));
        }
        if a.inject_fault.as_ref().is_some_and(|f| f.1 == n) {
            confirmer.fault = a.inject_fault.as_ref().map(|f| f.0.clone());
        }
        let mut r = confirmer.confirm(case, release, a.engine);
        r.file = Some(name(file));
        if progress {
            eprint!("\r\x1b[K");
        }
        let mut out = std::io::stdout().lock();
        if a.json {
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            write!(out, "{}", render::text(&r))?;
        }
        out.flush()?;
        results.push(r);
    }
    if !a.json {
        print!("{}", render::summary(&results));
    }
    Ok(if results.iter().all(|r| r.agrees()) { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
