//! Replaying case files: read a case (or the `case` of an outcome file), run it, judge it.

use super::case::{Case, CaseError};
use super::data;
use super::oracle::{self, nondeterminism, Judgement};
use super::outcome::Outcome;
use super::runner::{self, Run};
use std::path::Path;
use tch::Device;

/// Reads a case from a case file or from an outcome file's `case`.
pub fn load(path: &Path) -> Result<Case, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|e| CaseError(format!("{}: {e}", path.display())))?;
    parse(&text).map_err(|e| CaseError(format!("{}: {}", path.display(), e.0)))
}

pub fn parse(text: &str) -> Result<Case, CaseError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| CaseError(format!("invalid JSON: {e}")))?;
    let case_text = match v.get("format").and_then(|f| f.as_str()) {
        Some(super::outcome::OUTCOME_FORMAT) => {
            let c = v.get("case").ok_or_else(|| CaseError("outcome file without a `case`".into()))?;
            c.to_string()
        }
        _ => text.to_string(),
    };
    Case::from_json(&case_text)
}

/// A replayed case: the run, its judgement (including the nondeterminism probe when asked).
pub struct Replayed {
    pub case: Case,
    pub run: Run,
    pub judgement: Judgement,
}

/// Runs a case on `device`; with `twice`, runs it again and compares.
pub fn replay(case: &Case, device: Device, twice: bool) -> Result<Replayed, CaseError> {
    let mut case = case.clone();
    if case.tensors.is_none() {
        case.tensors = Some(data::inline(&case));
    }
    let run = runner::run(&case, device)?;
    let mut judgement = oracle::judge(&case, &run);
    if twice {
        let again = runner::run(&case, device)?;
        nondeterminism::check(&run, &again, &mut judgement);
    }
    Ok(Replayed { case, run, judgement })
}

impl Replayed {
    pub fn outcome(&self) -> Outcome {
        Outcome::build(&self.case, &self.run, &self.judgement)
    }
}
