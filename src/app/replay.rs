//! Reading case files: a case file, or the `case` of an outcome file (so an outcome replays).

use crate::subjects::{read_case, AnyCase};
use harness::case::CaseError;
use std::path::Path;

/// The format of the outcome lines the real-torchtitan MoE recorder writes.
pub const MOE_OUTCOME_FORMAT: &str = "shardfuzz.outcome/2";

/// Reads a case from a case file or from an outcome file's `case`.
pub fn load(path: &Path) -> Result<AnyCase, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|e| CaseError(format!("{}: {e}", path.display())))?;
    parse(&text).map_err(|e| CaseError(format!("{}: {}", path.display(), e.0)))
}

pub fn parse(text: &str) -> Result<AnyCase, CaseError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| CaseError(format!("invalid JSON: {e}")))?;
    let case_text = match v.get("format").and_then(|f| f.as_str()) {
        // The MoE recorder's lines (`shardfuzz.outcome/2`) hold their case the same way.
        Some(harness::outcome::OUTCOME_FORMAT | MOE_OUTCOME_FORMAT) => {
            let c = v.get("case").ok_or_else(|| CaseError("outcome file without a `case`".into()))?;
            c.to_string()
        }
        Some(f) if f.starts_with("shardfuzz.report") => {
            return Err(CaseError(
                "this is a campaign report, not a case: replay its directory (its repro/ reproducers) or a file in repro/ or cases/".into(),
            ))
        }
        Some(f) if f.starts_with("shardfuzz.") && !f.starts_with("shardfuzz.case") => {
            return Err(CaseError(format!("this is a {f} file, not a case (shardfuzz.case/1)")))
        }
        _ => text.to_string(),
    };
    read_case(&case_text)
}
