//! `nightly --confirm`: each bucket's minimized reproducer runs on real PyTorch, and the bucket
//! keeps what became of it ([`RealStatus`]) for the report's "real PyTorch" column and fidelity
//! line. A bucket real PyTorch does not confirm is a model bug.

use super::{ConfirmResult, Confirmer, Engine, Release, Status};
use crate::bucket::{Bucket, Confirmation, RealStatus};
use crate::replay;
use crate::report::Report;
use std::collections::BTreeMap;
use std::path::Path;

/// Longest `how` kept per bucket (the full differences are one `shardfuzz confirm` away).
const HOW_CHARS: usize = 400;

/// Confirms every bucket of `report` (its reproducers relative to `dir`) on `releases`, or on
/// the release its rule set models when `releases` is empty. `progress` hears each bucket.
pub fn confirm_report(
    report: &mut Report,
    dir: &Path,
    releases: &[Release],
    confirmer: &mut Confirmer,
    engine: Engine,
    mut progress: impl FnMut(usize, usize),
) {
    // A release whose venv cannot be made fails once here, not once per bucket.
    let mut broken: BTreeMap<Release, String> = BTreeMap::new();
    let total = report.buckets.len();
    for (i, b) in report.buckets.iter_mut().enumerate() {
        progress(i, total);
        let status = confirm_bucket(b, dir, releases, confirmer, engine, &mut broken);
        b.set_real(&status);
    }
}

fn confirm_bucket(
    b: &Bucket,
    dir: &Path,
    releases: &[Release],
    confirmer: &mut Confirmer,
    engine: Engine,
    broken: &mut BTreeMap<Release, String>,
) -> RealStatus {
    let not_run = |how: String| RealStatus { status: Confirmation::NotRun, torch: vec![], how };
    let Some(rel) = &b.repro else { return not_run("no minimized reproducer".into()) };
    let case = match replay::load(&dir.join(rel)) {
        Ok(c) => c,
        Err(e) => return not_run(format!("{e:#}")),
    };
    let releases = if releases.is_empty() { vec![Release::of(case.rules)] } else { releases.to_vec() };
    let mut results = Vec::new();
    for r in &releases {
        if !broken.contains_key(r) {
            if let Err(e) = confirmer.prepare(r) {
                broken.insert(r.clone(), format!("torch {r}: {e:#}"));
            }
        }
        match broken.get(r) {
            Some(why) => return not_run(why.clone()),
            None => results.push(confirmer.confirm(&case, r, engine)),
        }
    }
    status_of(&results)
}

/// One status from a reproducer's runs: differs when any run differs, confirmed when all agree.
pub fn status_of(results: &[ConfirmResult]) -> RealStatus {
    let torch: Vec<String> = results.iter().map(|r| r.release.clone()).collect();
    let differ: Vec<String> = results
        .iter()
        .filter(|r| r.status == Status::Differs)
        .map(|r| {
            let diffs: Vec<String> = r.diffs.iter().map(|d| d.to_string()).collect();
            format!("torch {}: {}", r.release, diffs.join("; "))
        })
        .collect();
    let (status, how) = if results.is_empty() {
        (Confirmation::NotRun, "no torch release".to_string())
    } else if !differ.is_empty() {
        (Confirmation::Differs, differ.join(" | "))
    } else if let Some(r) = results.iter().find(|r| r.status == Status::NotRun) {
        (Confirmation::NotRun, format!("torch {}: {}", r.release, r.reason.as_deref().unwrap_or("?")))
    } else {
        (Confirmation::Confirmed, String::new())
    };
    RealStatus { status, torch, how: cut(&how) }
}

fn cut(s: &str) -> String {
    if s.chars().count() <= HOW_CHARS {
        return s.to_string();
    }
    let head: String = s.chars().take(HOW_CHARS).collect();
    format!("{head}...")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confirm::compare::Diff;

    fn result(release: &str, status: Status) -> ConfirmResult {
        ConfirmResult {
            format: super::super::CONFIRM_FORMAT,
            file: None,
            release: release.into(),
            rules: "torch-2.13".into(),
            engine: None,
            status,
            diffs: match status {
                Status::Differs => {
                    vec![Diff { what: "counts.placements".into(), ours: "[R]".into(), real: "[P(sum)]".into() }]
                }
                _ => vec![],
            },
            ours: vec![],
            real: None,
            reason: (status == Status::NotRun).then(|| "timed out".to_string()),
            notes: vec![],
            outcome: None,
        }
    }

    #[test]
    fn a_difference_outweighs_a_run_that_did_not_happen() {
        let s = status_of(&[result("2.12.1", Status::NotRun), result("2.13.0", Status::Differs)]);
        assert_eq!(s.status, Confirmation::Differs);
        assert_eq!(s.cell(), "differs: torch 2.13.0: counts.placements: real [P(sum)], ours [R]");
        let s = status_of(&[result("2.13.0", Status::Agrees), result("2.14.0", Status::NotRun)]);
        assert_eq!((s.status, s.how.as_str()), (Confirmation::NotRun, "torch 2.14.0: timed out"));
        let s = status_of(&[result("2.13.0", Status::Agrees), result("2.14.0", Status::Agrees)]);
        assert_eq!((s.status, s.torch.len(), s.cell()), (Confirmation::Confirmed, 2, "confirmed".to_string()));
        assert_eq!(status_of(&[]).status, Confirmation::NotRun);
    }
}
