//! `shardfuzz replay FILE...`: run case files (or the case inside outcome files) and report.

use super::CliResult;
use crate::device::{self, DeviceArg};
use crate::harness::replay;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Case files (shardfuzz.case/1) or outcome files (shardfuzz.outcome/1, their `case` is used)
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
    let mut diverged = false;
    let mut loaded = Vec::new();
    for f in &a.files {
        let mut case = replay::load(f).map_err(anyhow::Error::msg)?;
        let dev = match a.device {
            Some(d) => device::resolve(d).map_err(anyhow::Error::msg)?,
            None => device::resolve(match case.device {
                crate::harness::case::CaseDevice::Cpu => DeviceArg::Cpu,
                crate::harness::case::CaseDevice::Cuda(n) => DeviceArg::Cuda(Some(n)),
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
        };
        case.device = match dev {
            device::Dev::Cpu => crate::harness::case::CaseDevice::Cpu,
            device::Dev::Cuda(n) => crate::harness::case::CaseDevice::Cuda(n),
        };
        loaded.push((f, case, dev));
    }
    for (f, case, dev) in loaded {
        let r = replay::replay(&case, dev.tch(), !a.once).map_err(anyhow::Error::msg)?;
        diverged |= !r.judgement.verdicts.is_empty();
        if a.json {
            println!("{}", serde_json::to_string(&r.outcome())?);
            continue;
        }
        let v = &r.judgement.verdicts;
        if v.is_empty() {
            println!("{}: no divergence ({})", f.display(), case.revision());
        } else {
            println!("{}: {} divergence(s) ({})", f.display(), v.len(), case.revision());
            for x in v {
                println!("  {:<14} {}", x.class.name(), x.signature(&r.case));
                println!("  {:<14} {}", "", x.detail);
            }
        }
        let nt = r.judgement.near_ties;
        if nt.topk_rows + nt.group_rows > 0 {
            println!(
                "  near-ties: {} of {} tokens too close to call ({} flipped; not divergences)",
                nt.topk_rows.max(nt.group_rows),
                nt.rows,
                nt.flipped_rows
            );
        }
    }
    Ok(if diverged { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
