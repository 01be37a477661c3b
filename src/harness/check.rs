//! The one way to check a case: run both sides, then judge. Every caller (replay, `run`,
//! campaign workers, the shrinker, the bench, the fuzz target) goes through [`check`], so a new
//! side of the comparison (a second run, another device) plugs in here once.

use super::case::Case;
use super::error::Result;
use super::oracle::{self, device, nondeterminism, Judgement};
use super::outcome::Outcome;
use super::runner::{self, Run};
use super::signature::Signature;
use super::timing::{timed, Phases};
use crate::device::Dev;

/// What to do besides one run and the oracles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Run the case a second time and compare (`nondeterminism` verdicts).
    pub twice: bool,
    /// Also run the case on the CPU and compare (`device` verdicts); for a CUDA `dev`.
    pub cross_device: bool,
}

/// A checked case: the case as it ran (on `dev`), its run, and what the oracles said.
pub struct Checked {
    pub case: Case,
    pub run: Run,
    pub judgement: Judgement,
    /// Inputs, reference, sharded, shadow and oracle time (the oracles include extra runs).
    pub phases: Phases,
}

/// Runs `case` on `dev` and judges it.
pub fn check(case: &Case, dev: Dev, opts: Options) -> Result<Checked> {
    let mut case = case.clone();
    case.device = dev;
    let run = runner::run(&case, dev.tch())?;
    let mut phases = run.phases.clone();
    let judgement = timed(&mut phases.oracles_us, || judge(&case, &run, dev, opts))?;
    Ok(Checked { case, run, judgement, phases })
}

fn judge(case: &Case, run: &Run, dev: Dev, opts: Options) -> Result<Judgement> {
    let mut j = oracle::judge(case, run);
    if opts.twice {
        let again = runner::run(case, dev.tch())?;
        nondeterminism::check(run, &again, &mut j);
    }
    if opts.cross_device && dev != Dev::Cpu {
        let cpu = runner::run(case, tch::Device::Cpu)?;
        device::check(case, &cpu, run, &mut j);
    }
    Ok(j)
}

impl Checked {
    /// One signature per verdict, in verdict order.
    pub fn signatures(&self) -> Vec<Signature> {
        self.judgement.verdicts.iter().map(|v| v.signature(&self.case)).collect()
    }

    pub fn shows(&self, sig: &Signature) -> bool {
        self.judgement.verdicts.iter().any(|v| v.signature(&self.case) == *sig)
    }

    /// The `shardfuzz.outcome/1` of this check, with the inputs inline so it replays anywhere.
    pub fn outcome(&self) -> Outcome {
        let mut case = self.case.clone();
        if case.tensors.is_none() {
            case.tensors = Some(super::data::inline(&case));
        }
        Outcome::build(&case, &self.run, &self.judgement)
    }
}
