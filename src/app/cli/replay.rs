//! `shardfuzz replay FILE...`: run case files (or the case inside outcome files) and report.

use super::CliResult;
use crate::replay;
use dtensor::device::{self, DeviceArg};
use harness::subject::Subject;
use harness::{check_guarded, Options};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Case files (shardfuzz.case/1) or outcome files (shardfuzz.outcome/1, their `case` is
    /// used), or directories of them (a campaign directory: its minimized reproducers)
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print one outcome (shardfuzz.outcome/1) per file as JSON lines instead of a summary
    #[arg(long)]
    pub json: bool,
    /// Run each case on this device instead of the one the file names (auto, cpu, cuda, cuda:N)
    #[arg(long)]
    pub device: Option<DeviceArg>,
    /// Skip the second run that checks for nondeterminism
    #[arg(long)]
    pub once: bool,
}

pub fn run(a: Args) -> CliResult {
    // Every file is read and every device resolved before anything runs: bad input fails fast.
    let mut loaded = Vec::new();
    let files = super::common::case_files(&a.files)?;
    for f in &files {
        let case = replay::load(f)?;
        let dev = device::resolve(a.device.unwrap_or(case.device.arg()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        loaded.push((f, case, dev));
    }
    let mut diverged = false;
    for (f, case, dev) in loaded {
        match check_guarded(&case, dev, Options { twice: !a.once, ..Options::default() }) {
            Ok(c) => {
                diverged |= !c.judgement.verdicts.is_empty();
                if a.json {
                    println!("{}", serde_json::to_string(&c.outcome())?);
                } else {
                    print_summary(f, &c);
                }
            }
            // The tool failed on this case: a finding; the other files still run.
            Err(crashed) => {
                diverged = true;
                let sig = crashed.signature();
                if a.json {
                    let o = serde_json::json!({
                        "format": "shardfuzz.outcome/1",
                        "case": crashed.case,
                        "verdicts": [crashed.verdict],
                        "signatures": [sig],
                    });
                    println!("{o}");
                } else {
                    println!("{}: 1 divergence(s) ({})", f.display(), crashed.case.subject.describe(&crashed.case));
                    println!("  {:<14} {sig}", "crash");
                    println!("  {:<14} {}", "", crashed.verdict.detail);
                }
            }
        }
    }
    Ok(if diverged { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn print_summary(f: &std::path::Path, c: &crate::subjects::AnyChecked) {
    let v = &c.judgement.verdicts;
    let what = c.case.subject.describe(&c.case);
    if v.is_empty() {
        println!("{}: no divergence ({what})", f.display());
    } else {
        println!("{}: {} divergence(s) ({what})", f.display(), v.len());
        for (x, sig) in v.iter().zip(c.signatures()) {
            println!("  {:<14} {sig}", x.class.name());
            println!("  {:<14} {}", "", x.detail);
        }
    }
    let g = c.judgement.grads;
    if g.near_tie + g.forward_differs > 0 {
        let why =
            if g.near_tie > 0 { "the reference's choice is a near-tie" } else { "the program chose other experts" };
        println!("  gradients not compared: {why}");
    }
    let nt = c.judgement.near_ties;
    if nt.topk_rows + nt.group_rows > 0 {
        println!(
            "  near-ties: {} of {} tokens too close to call ({} flipped; not divergences)",
            nt.topk_rows.max(nt.group_rows),
            nt.rows,
            nt.flipped_rows
        );
    }
}
