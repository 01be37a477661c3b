//! Oracles: each verdict class in its own file. An oracle reads a finished run and says what
//! diverged; near-ties are counted as information, never reported as divergences.

pub mod comm;
pub mod device;
pub mod error;
pub mod nondeterminism;
pub mod placement;
pub mod shape;
pub mod tolerance;
pub mod value;

use super::case::Case;
use super::runner::Run;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Exactly one side raised.
    Error,
    /// Values differ beyond the derived tolerance, or decided choices differ.
    Value,
    /// An output's placements differ from its declared contract.
    Placement,
    /// A rank infers a global shape other than the true one.
    Shape,
    /// A collective where the revision and rule set promise none.
    Comm,
    /// The same case run twice gave different results.
    Nondeterminism,
    /// The same case on CPU and on CUDA disagrees (`--cross-device`).
    Device,
    /// The worker running the case died (abort, segfault, CUDA error).
    Crash,
    /// The worker running the case exceeded the per-case time limit.
    Timeout,
}

impl Class {
    pub const ALL: [Class; 9] = [
        Class::Error,
        Class::Value,
        Class::Placement,
        Class::Shape,
        Class::Comm,
        Class::Nondeterminism,
        Class::Device,
        Class::Crash,
        Class::Timeout,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Class::Error => "error",
            Class::Value => "value",
            Class::Placement => "placement",
            Class::Shape => "shape",
            Class::Comm => "comm",
            Class::Nondeterminism => "nondeterminism",
            Class::Device => "device",
            Class::Crash => "crash",
            Class::Timeout => "timeout",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One divergence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    pub class: Class,
    pub output: Option<String>,
    pub expected: Value,
    pub actual: Value,
    pub detail: String,
    /// Grouping key within the class (error kind and check, placement pattern, ...).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

impl Verdict {
    /// The bucket this divergence belongs to: class, output, router revision, rule set, key.
    pub fn signature(&self, case: &Case) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.class,
            self.output.as_deref().unwrap_or("-"),
            case.revision.router.name(),
            case.revision.rules.name(),
            if self.key.is_empty() { "-" } else { &self.key }
        )
    }
}

/// Near-tie statistics of one run: tokens whose choice was too close to call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NearTies {
    /// Tokens whose K-th expert choice was within the error bound of the next one.
    pub topk_rows: usize,
    /// Tokens whose Gk-th group choice was within the error bound.
    pub group_rows: usize,
    /// Of those, tokens where the two sides actually chose differently (benign).
    pub flipped_rows: usize,
    /// Tokens compared.
    pub rows: usize,
}

/// Everything the oracles say about one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    pub verdicts: Vec<Verdict>,
    pub near_ties: NearTies,
}

/// Runs every oracle but nondeterminism (which needs a second run; see [`nondeterminism`]).
pub fn judge(case: &Case, run: &Run) -> Judgement {
    let mut j = Judgement::default();
    error::check(run, &mut j);
    if let (Ok(r), Ok(s)) = (&run.reference, &run.sharded) {
        value::check(case, run, r, s, &mut j);
        placement::check(case, run, s, &mut j);
        shape::check(r, s, &mut j);
    }
    comm::check(case, run, &mut j);
    j
}
