//! Confirming the model on real PyTorch: a case runs on real DTensor (in the Python worker of
//! `python/shardfuzz_worker`, in the managed venv of a torch release) and its real outcome is
//! compared with the model's replay ([`compare`]): status and error text, placements, shapes,
//! values, collectives, gradients, and the verdict classes our oracles give each side.
//!
//! [`Confirmer`] keeps one worker per release across cases; [`confirm_case`] is the one-shot form.

pub mod buckets;
pub mod compare;
pub mod moe;
pub mod moe_venv;
pub mod real;
pub mod realrun;
pub mod render;
pub mod venv;
pub mod worker;

use crate::subjects::{AnyCase, AnySpec};
use compare::Diff;
use dtensor::device::Dev;
use dtensor::RuleSet;
use harness::check::{check_guarded, Options};
use harness::subject::Subject;
use real::RealOutcome;
use serde::Serialize;
use std::collections::HashMap;
use std::time::Duration;

pub const CONFIRM_FORMAT: &str = "shardfuzz.confirm/1";

/// The torch release of the libtorch this build links (tch 0.24): the test venv's.
pub const LIBTORCH_RELEASE: &str = "2.11.0";

names::named_enum! {
    /// How real PyTorch runs a case's ranks.
    pub enum Engine("engine") {
        /// `local`, and `gloo` where LocalTensorMode cannot represent the case.
        Auto = "auto",
        /// One process: a fake process group and LocalTensorMode.
        Local = "local",
        /// One gloo process per rank (CPU).
        Gloo = "gloo",
    }
}

/// A torch release, `X.Y.Z`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Release(String);

impl std::str::FromStr for Release {
    type Err = String;
    fn from_str(s: &str) -> Result<Release, String> {
        let parts: Vec<&str> = s.split('.').collect();
        let ok = parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        if ok {
            Ok(Release(s.to_string()))
        } else {
            Err(format!("bad torch release '{s}' (expected X.Y.Z, e.g. 2.13.0)"))
        }
    }
}

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Release {
    /// The libtorch release of this build (the test venv), then the releases the rule sets model.
    pub fn known() -> Vec<Release> {
        let mut v = vec![Release(LIBTORCH_RELEASE.into())];
        v.extend(RuleSet::ALL.iter().map(|r| Release::of(*r)));
        v
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The release a rule set models (the default for a case).
    pub fn of(rules: RuleSet) -> Release {
        Release(rules.release().into())
    }

    /// The rule set that models this release (the one of its minor release), if one does.
    pub fn rules(&self) -> Option<RuleSet> {
        RuleSet::of_version(&self.0)
    }
}

/// What became of one case on one release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Real PyTorch and the model agree on everything compared.
    Agrees,
    /// They differ (`diffs` says how).
    Differs,
    /// No real outcome: the worker crashed or timed out on the case, or could not start.
    NotRun,
}

/// One case on one release (`shardfuzz.confirm/1`, one line per case and release with `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct ConfirmResult {
    pub format: &'static str,
    /// The case file, when the caller names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    pub release: String,
    /// The rule set the model ran the case with (the release's, or the case's own).
    pub rules: String,
    /// The engine that ran it (`local` or `gloo`), when it ran.
    pub engine: Option<String>,
    pub status: Status,
    pub diffs: Vec<Diff>,
    /// Verdict classes (`class` or `class:output`): ours, and our oracles' on the real outputs.
    pub ours: Vec<String>,
    pub real: Option<Vec<String>>,
    /// Why it did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub notes: Vec<String>,
    /// The real outcome (`shardfuzz.outcome/1` with every rank's locals), when it ran.
    pub outcome: Option<serde_json::Value>,
}

impl ConfirmResult {
    fn not_run(case: &AnyCase, release: &Release, reason: String) -> ConfirmResult {
        ConfirmResult {
            format: CONFIRM_FORMAT,
            file: None,
            release: release.to_string(),
            rules: case.rules.to_string(),
            engine: None,
            status: Status::NotRun,
            diffs: vec![],
            ours: vec![],
            real: None,
            reason: Some(reason),
            notes: vec![],
            outcome: None,
        }
    }

    pub fn agrees(&self) -> bool {
        self.status == Status::Agrees
    }
}

/// The case as it runs on `release`: with that release's rule set when one models it.
pub fn case_for(case: &AnyCase, release: &Release) -> AnyCase {
    let mut c = case.clone();
    if let Some(r) = release.rules() {
        c.rules = r;
    }
    c.device = Dev::Cpu;
    c
}

/// Runs cases on real PyTorch, one worker per release, kept across cases.
pub struct Confirmer {
    workers: HashMap<Release, worker::Worker>,
    /// The limit for one case (a worker past it is killed and replaced).
    pub timeout: Duration,
    /// Test hook: the worker loses the next case (`hang` or `crash`); cleared once sent.
    pub fault: Option<String>,
    /// MoE cases' outcomes, recorded on the real torchtitan layer in batches.
    pub moe: moe::Recorded,
}

impl Default for Confirmer {
    fn default() -> Self {
        Confirmer::new(Duration::from_secs(300))
    }
}

impl Confirmer {
    pub fn new(timeout: Duration) -> Confirmer {
        Confirmer { workers: HashMap::new(), timeout, fault: None, moe: moe::Recorded::default() }
    }

    /// The release's interpreter, creating its venv on first use (see [`venv`]).
    pub fn prepare(&mut self, release: &Release) -> anyhow::Result<venv::Venv> {
        venv::ensure(release)
    }

    /// Makes ready what `cases` need on `release`: the torch venv for router cases; for MoE cases
    /// the torchtitan venv, and their real outcomes, recorded in one batch.
    pub fn prepare_cases(&mut self, cases: &[AnyCase], release: &Release, engine: Engine) -> anyhow::Result<()> {
        let (moe, other): (Vec<&AnyCase>, Vec<&AnyCase>) =
            cases.iter().partition(|c| matches!(c.subject, AnySpec::Moe(_)));
        if !other.is_empty() {
            self.prepare(release)?;
        }
        let run: Vec<AnyCase> = moe
            .into_iter()
            .filter(|c| moe::moe_case(c).is_some_and(|m| moe::skip_reason(&m, engine).is_none()))
            .cloned()
            .collect();
        if !run.is_empty() {
            let mut titans = Vec::new();
            for t in run.iter().filter_map(|c| moe::moe_case(c).and_then(|m| moe_venv::Titan::of(m.subject.revision))) {
                if !titans.contains(&t) {
                    titans.push(t);
                }
            }
            for titan in titans {
                moe_venv::ensure(titan, release)?;
            }
            self.moe.record(&run, release, engine, self.timeout);
        }
        Ok(())
    }

    fn request(&mut self, release: &Release, req: &serde_json::Value) -> Result<serde_json::Value, String> {
        if !self.workers.get_mut(release).is_some_and(|w| w.alive()) {
            let v = venv::ensure(release).map_err(|e| format!("{e:#}"))?;
            let w = worker::Worker::start(&v.python).map_err(|e| e.to_string())?;
            self.workers.insert(release.clone(), w);
        }
        let w = self.workers.get_mut(release).expect("just started");
        let reply = w.request(req, self.timeout);
        if reply.is_err() {
            self.workers.remove(release); // dead or killed: the next case starts a new one
        }
        reply.map_err(|e| e.to_string())
    }

    /// Runs `case` on real PyTorch `release` with `engine` and compares.
    pub fn confirm(&mut self, case: &AnyCase, release: &Release, engine: Engine) -> ConfirmResult {
        if matches!(case.subject, AnySpec::Moe(_)) {
            return moe::confirm(&mut self.moe, case, release, engine, self.timeout);
        }
        let case = case_for(case, release);
        let checked = match check_guarded(&case, Dev::Cpu, Options::default()) {
            Ok(c) => c,
            Err(crashed) => return ConfirmResult::not_run(&case, release, crashed.verdict.detail),
        };
        let sent = checked.outcome().case;
        let tables = case.subject.worker_tables(&case);
        let mut req = serde_json::json!({ "case": sent, "engine": engine, "tables": tables });
        if let Some(f) = self.fault.take() {
            req["fault"] = f.into();
        }
        let reply = match self.request(release, &req) {
            Ok(r) => r,
            Err(e) => return ConfirmResult::not_run(&case, release, e),
        };
        if let Some(e) = reply.get("worker_error") {
            let why = format!("the PyTorch worker failed: {} {}", e["kind"], e["message"]);
            return ConfirmResult::not_run(&case, release, why);
        }
        let real = match RealOutcome::parse(&reply) {
            Ok(r) => r,
            Err(e) => return ConfirmResult::not_run(&case, release, e),
        };
        let diffs = compare::all(&checked, &real);
        let (ours, theirs) = compare::verdict_classes(&checked, &real);
        ConfirmResult {
            format: CONFIRM_FORMAT,
            file: None,
            release: release.to_string(),
            rules: case.rules.to_string(),
            engine: Some(real.engine()),
            status: if diffs.is_empty() { Status::Agrees } else { Status::Differs },
            diffs,
            ours,
            real: theirs,
            reason: None,
            notes: real.notes(),
            outcome: Some(reply),
        }
    }
}

/// Runs one case on real PyTorch `release` and compares (a worker started for it alone: use a
/// [`Confirmer`] for many cases).
pub fn confirm_case(case: &AnyCase, release: &Release, engine: Engine) -> ConfirmResult {
    Confirmer::default().confirm(case, release, engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_and_map_to_rule_sets() {
        let r: Release = "2.13.0".parse().unwrap();
        assert_eq!(r.rules(), Some(RuleSet::Torch213));
        assert_eq!("2.14.1".parse::<Release>().unwrap().rules(), Some(RuleSet::Torch214));
        assert_eq!("2.15.0".parse::<Release>().unwrap().rules(), Some(RuleSet::Torch215));
        assert_eq!(Release::of(RuleSet::Torch215).as_str(), "2.15.0");
        assert_eq!("2.11.0".parse::<Release>().unwrap().rules(), None);
        assert_eq!(Release::of(RuleSet::Torch212).as_str(), "2.12.1");
        for bad in ["2.13", "latest", "2.13.x", ""] {
            assert!(bad.parse::<Release>().is_err(), "{bad}");
        }
    }
}
