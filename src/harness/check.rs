//! The one way to check a case: run both sides, then judge. Every caller (replay, `run`,
//! campaign workers, the shrinker, the bench, the fuzz target) goes through [`check`], so a new
//! side of the comparison (a second run, another device) plugs in here once, for every subject.

use super::case::Case;
use super::error::Result;
use super::oracle::{self, device, nondeterminism, Judgement, Verdict};
use super::outcome::Outcome;
use super::run::Run;
use super::runner;
use super::signature::Signature;
use super::subject::Subject;
use super::timing::{timed, Phases};
use dtensor::device::Dev;

/// What to do besides one run and the oracles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Run the case a second time and compare (`nondeterminism` verdicts).
    pub twice: bool,
    /// Also run the case on the CPU and compare (`device` verdicts); for a CUDA `dev`.
    pub cross_device: bool,
}

/// A checked case: the case as it ran (on `dev`), its run, and what the oracles said.
pub struct Checked<S: Subject> {
    pub case: Case<S>,
    pub run: Run,
    /// What the subject kept beside the run for its own oracles.
    pub extra: S::Extra,
    pub judgement: Judgement,
    /// Inputs, reference, sharded, shadow and oracle time (the oracles include extra runs).
    pub phases: Phases,
}

/// A case the tool itself failed on: it panicked, or returned an error on a valid case. A
/// finding (class `crash`), so the run goes on and the case is kept.
#[derive(Clone, Debug)]
pub struct Crashed<S> {
    pub case: Case<S>,
    pub verdict: Verdict,
}

impl<S: Subject> Crashed<S> {
    pub fn signature(&self) -> Signature {
        self.verdict.signature(&self.case)
    }
}

/// [`check`], with a panic or an error caught and turned into a `crash` verdict on the case.
pub fn check_guarded<S: Subject>(
    case: &Case<S>,
    dev: Dev,
    opts: Options,
) -> std::result::Result<Checked<S>, Box<Crashed<S>>> {
    guard(case, dev, || check(case, dev, opts))
}

/// Runs `f` (a check of `case` on `dev`), catching a panic or an error as a `crash` verdict.
pub fn guard<S: Subject, T>(
    case: &Case<S>,
    dev: Dev,
    f: impl FnOnce() -> Result<T>,
) -> std::result::Result<T, Box<Crashed<S>>> {
    let (key, detail) = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(c)) => return Ok(c),
        Ok(Err(e)) => ("error", format!("shardfuzz failed on a valid case: {e}")),
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            ("panic", format!("shardfuzz panicked on this case: {msg}"))
        }
    };
    let verdict = Verdict {
        class: oracle::Class::Crash,
        output: None,
        expected: serde_json::json!("a result"),
        actual: serde_json::json!(key),
        detail,
        key: key.into(),
        backward: false,
    };
    let mut case = case.clone();
    case.device = dev;
    Err(Box::new(Crashed { case, verdict }))
}

/// Runs `case` on `dev` and judges it.
pub fn check<S: Subject>(case: &Case<S>, dev: Dev, opts: Options) -> Result<Checked<S>> {
    let mut case = case.clone();
    case.device = dev;
    let (run, extra) = runner::run(&case, dev.tch())?;
    let mut phases = run.phases.clone();
    let judgement = timed(&mut phases.oracles_us, || judge(&case, (&run, &extra), dev, opts))?;
    Ok(Checked { case, run, extra, judgement, phases })
}

fn judge<S: Subject>(case: &Case<S>, (run, extra): (&Run, &S::Extra), dev: Dev, opts: Options) -> Result<Judgement> {
    let mut j = oracle::judge(case, run, extra);
    if opts.twice {
        let (again, _) = runner::run(case, dev.tch())?;
        nondeterminism::check(run, &again, &mut j);
    }
    if opts.cross_device && dev != Dev::Cpu {
        let (cpu, cpu_extra) = runner::run(case, tch::Device::Cpu)?;
        device::check(case, (&cpu, &cpu_extra), run, &mut j);
    }
    Ok(j)
}

impl<S: Subject> Checked<S> {
    /// One signature per verdict, in verdict order.
    pub fn signatures(&self) -> Vec<Signature> {
        self.judgement.verdicts.iter().map(|v| v.signature(&self.case)).collect()
    }

    pub fn shows(&self, sig: &Signature) -> bool {
        self.judgement.verdicts.iter().any(|v| v.signature(&self.case) == *sig)
    }

    /// The `shardfuzz.outcome/1` of this check, with the inputs inline so it replays anywhere.
    pub fn outcome(&self) -> Outcome {
        let case = super::data::with_inline(&self.case);
        Outcome::build(&case, &self.run, &self.judgement)
    }
}

impl Verdict {
    /// The bucket this divergence belongs to: class, output, program (which the subject names),
    /// rule set, key.
    pub fn signature<S: Subject>(&self, case: &Case<S>) -> Signature {
        Signature {
            class: self.class,
            output: self.output.clone(),
            program: case.subject.program(self),
            rules: case.rules,
            key: self.key.clone(),
        }
    }
}
