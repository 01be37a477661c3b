//! Buckets: divergences grouped by signature, each keeping its count, its first case and its
//! smallest case; and the one-line explanations reports print next to them.

use harness::oracle::Class;
use harness::signature::Signature;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShrinkInfo {
    pub tried: usize,
    pub kept: usize,
    pub ms: u64,
    pub truncated: bool,
    /// Ranks, tokens (B*L), experts, model dim of the minimized case.
    pub ranks: usize,
    pub tokens: usize,
    pub experts: usize,
    pub model: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub signature: Signature,
    pub class: Class,
    pub count: u64,
    pub first_index: u64,
    pub smallest_index: u64,
    /// (ranks, tokens, experts x model, mesh dims) of the smallest case seen.
    pub smallest_size: (usize, usize, usize, usize),
    /// The verdict of the smallest case.
    pub detail: String,
    pub explanation: String,
    /// Paths, relative to the campaign directory.
    pub first_case: String,
    pub repro: Option<String>,
    pub shrink: Option<ShrinkInfo>,
    /// Names of the known upstream bugs (`known::Known`) the first case is an instance of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known: Vec<String>,
    /// Fields this version does not know (added by later tools, e.g. a real-PyTorch `confirm`),
    /// kept so that re-rendering or merging a report does not drop them.
    #[serde(flatten, default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The bucket field holding its exported PyTorch script (`repro/<slug>.py`, relative to the
/// campaign directory), written next to its minimized reproducer.
pub const SCRIPT_FIELD: &str = "pytorch";
/// The bucket field holding its status on real PyTorch (`nightly --confirm`, a [`RealStatus`]).
pub const CONFIRM_FIELD: &str = "confirm";

/// What real PyTorch made of a bucket's reproducer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Confirmation {
    /// Real PyTorch agrees with the model on the reproducer: the finding is real.
    #[serde(rename = "confirmed")]
    Confirmed,
    /// Real PyTorch does not: the model is wrong on this case (a model bug).
    #[serde(rename = "differs")]
    Differs,
    /// No real outcome (no reproducer, the worker crashed or timed out, no venv).
    #[serde(rename = "not run")]
    NotRun,
}

/// A bucket's real-PyTorch status, as report.json keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RealStatus {
    pub status: Confirmation,
    /// The torch releases the reproducer ran on.
    pub torch: Vec<String>,
    /// How real PyTorch differs, or why it did not run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub how: String,
}

impl RealStatus {
    /// The report's cell: `confirmed`, `differs: how` or `not run: why`.
    pub fn cell(&self) -> String {
        let word = match self.status {
            Confirmation::Confirmed => "confirmed",
            Confirmation::Differs => "differs",
            Confirmation::NotRun => "not run",
        };
        if self.how.is_empty() {
            word.to_string()
        } else {
            format!("{word}: {}", self.how)
        }
    }
}

impl Bucket {
    /// Its real-PyTorch status, when the campaign confirmed it.
    pub fn real(&self) -> Option<RealStatus> {
        serde_json::from_value(self.extra.get(CONFIRM_FIELD)?.clone()).ok()
    }

    pub fn set_real(&mut self, s: &RealStatus) {
        self.extra.insert(CONFIRM_FIELD.into(), serde_json::to_value(s).expect("a status serializes"));
    }

    /// Its exported PyTorch script, relative to the campaign directory.
    pub fn script(&self) -> Option<&str> {
        self.extra.get(SCRIPT_FIELD)?.as_str()
    }

    /// (ranks, tokens, experts x model) of its minimized reproducer, else of its smallest case.
    pub fn minimized_size(&self) -> (usize, usize, usize) {
        match &self.shrink {
            Some(s) => (s.ranks, s.tokens, s.experts * s.model),
            None => (self.smallest_size.0, self.smallest_size.1, self.smallest_size.2),
        }
    }
}
