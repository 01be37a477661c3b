//! What the oracles say: verdict classes, verdicts, and the tallies a judgement carries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

names::named_enum! {
    /// What kind of divergence a verdict is.
    pub enum Class("verdict class") {
        /// Exactly one side raised.
        Error = "error",
        /// Values differ beyond the derived tolerance, or decided choices differ.
        Value = "value",
        /// An output's placements differ from its declared contract.
        Placement = "placement",
        /// A rank infers a global shape other than the true one.
        Shape = "shape",
        /// A collective where the revision and rule set promise none.
        Comm = "comm",
        /// The same case run twice gave different results.
        Nondeterminism = "nondeterminism",
        /// The same case on CPU and on CUDA disagrees (`--cross-device`).
        Device = "device",
        /// The worker running the case died (abort, segfault, CUDA error).
        Crash = "crash",
        /// The worker running the case exceeded the per-case time limit.
        Timeout = "timeout",
        /// A gradient, reduced by its placements, differs from the reference gradient.
        Grad = "grad",
        /// A Replicate-labelled gradient whose locals differ across the ranks of that mesh axis.
        Replica = "replica",
        /// A gradient placement that is not allowed for that tensor.
        GradPlacement = "grad_placement",
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
    /// About the backward program (its signature names the boundary revision).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub backward: bool,
}

/// What the gradient oracles did with one case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradTally {
    /// The case has a backward pass.
    pub cases: u64,
    /// Its gradients were compared.
    pub checked: u64,
    /// Skipped: the reference's top-k (or kept groups) is a near-tie, so a different choice
    /// would change the gradient's support.
    pub near_tie: u64,
    /// Skipped: the program chose other experts than the reference (a forward matter).
    pub forward_differs: u64,
}

impl GradTally {
    pub fn add(&mut self, o: &GradTally) {
        self.cases += o.cases;
        self.checked += o.checked;
        self.near_tie += o.near_tie;
        self.forward_differs += o.forward_differs;
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
    /// Undecided tokens whose choice could not even be checked for validity (NaN scores, the
    /// force-balance override): the oracle's blind spot.
    #[serde(default)]
    pub unchecked_rows: usize,
}

/// Everything the oracles say about one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Judgement {
    pub verdicts: Vec<Verdict>,
    pub near_ties: NearTies,
    pub grads: GradTally,
    /// Outputs one oracle already gathered to a full tensor, for the next (not a result).
    pub gathered: Gathered,
}

/// Full tensors by output name (`full_tensor()`'s value), computed once per case and shared
/// between oracles. Not part of what the oracles say: every `Gathered` compares equal.
#[derive(Default)]
pub struct Gathered(Vec<(String, tch::Tensor)>);

impl Gathered {
    pub fn put(&mut self, name: &str, t: tch::Tensor) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.into(), t));
    }

    /// The full tensor of `name`, when an oracle gathered it.
    pub fn get(&self, name: &str) -> Option<tch::Tensor> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone())
    }
}

impl Clone for Gathered {
    fn clone(&self) -> Self {
        Gathered(self.0.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect())
    }
}

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Gathered({names:?})")
    }
}

impl PartialEq for Gathered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Judgement {
    /// Verdict classes, as `class` or `class:output`, sorted: what an exported script and
    /// `confirm` compare with real PyTorch's.
    pub fn classes(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .verdicts
            .iter()
            .map(|v| match &v.output {
                Some(o) => format!("{}:{o}", v.class),
                None => v.class.to_string(),
            })
            .collect();
        v.sort();
        v.dedup();
        v
    }
}
