//! A campaign killed before it wrote report.json (`kill -9`, a preempted cluster job) still has a
//! report: its last checkpoint (the counts, at most a few seconds old), plus every bucket of
//! `findings.jsonl` found after that checkpoint, each with its first case from `cases/`.

use super::shard::Manifest;
use super::state::{link_rows, Finding};
use crate::bucket::Bucket;
use crate::report::{write_atomic, Coverage, Report, TieStats, Timing, REPORT_FORMAT};
use crate::subjects::read_case;
use harness::oracle::{GradTally, Verdict};
use harness::shrink;
use harness::subject::Subject;
use std::path::Path;

/// The running campaign's counts so far, rewritten every few seconds.
pub const CHECKPOINT_FILE: &str = "checkpoint.json";

pub fn checkpoint(out: &Path, report: &Report) -> anyhow::Result<()> {
    write_atomic(&out.join(CHECKPOINT_FILE), &serde_json::to_string(report)?)?;
    Ok(())
}

/// The report of a campaign directory: its report.json, else one rebuilt from what a killed
/// campaign left (marked interrupted).
pub fn load(dir: &Path) -> anyhow::Result<Report> {
    if dir.join("report.json").exists() {
        return Report::load(dir);
    }
    rebuild(dir)
}

/// Rebuilds a report from `checkpoint.json`, `findings.jsonl` and `cases/`.
pub fn rebuild(dir: &Path) -> anyhow::Result<Report> {
    if !dir.is_dir() {
        anyhow::bail!("{}: no such directory", dir.display());
    }
    let (ckpt, findings) = (dir.join(CHECKPOINT_FILE), dir.join("findings.jsonl"));
    if !ckpt.exists() && !findings.exists() {
        anyhow::bail!(
            "{}: no report.json, {CHECKPOINT_FILE} or findings.jsonl: not a campaign directory",
            dir.display()
        );
    }
    let mut r = if ckpt.exists() {
        let text = std::fs::read_to_string(&ckpt)?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: unreadable checkpoint: {e}", ckpt.display()))?
    } else {
        empty(Manifest::load(dir).ok())
    };
    if findings.exists() {
        for f in read_findings(&findings)? {
            if !r.buckets.iter().any(|b| b.signature == f.signature) {
                r.buckets.push(from_finding(dir, &f));
            }
        }
    }
    r.buckets.sort_by(|a, b| a.signature.cmp(&b.signature));
    link_rows(&mut r.rows, &r.buckets);
    r.interrupted = true;
    Ok(r)
}

/// The lines of findings.jsonl; a line cut short by the kill is skipped.
pub fn read_findings(path: &Path) -> anyhow::Result<Vec<Finding>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<Finding>(line) {
            Ok(f) => out.push(f),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => anyhow::bail!("{}:{}: not a finding: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// A bucket known only from its finding line: one case counted, no reproducer yet.
fn from_finding(dir: &Path, f: &Finding) -> Bucket {
    let case = std::fs::read_to_string(dir.join(&f.case)).ok().and_then(|t| read_case(&t).ok());
    let explanation = match (&case, f.explanation.is_empty()) {
        (Some(c), true) => {
            let sig = &f.signature;
            let v = Verdict {
                class: sig.class,
                output: sig.output.clone(),
                expected: serde_json::Value::Null,
                actual: serde_json::Value::Null,
                detail: f.detail.clone(),
                key: sig.key.clone(),
                backward: false,
            };
            c.subject.explain(&v)
        }
        _ => f.explanation.clone(),
    };
    Bucket {
        signature: f.signature.clone(),
        class: f.signature.class,
        count: 1,
        first_index: f.index,
        smallest_index: f.index,
        smallest_size: case.as_ref().map(|c| shrink::size(c).key()).unwrap_or_default(),
        detail: f.detail.clone(),
        explanation,
        first_case: f.case.clone(),
        repro: None,
        shrink: None,
        known: case.as_ref().map(|c| super::state::known_names(&f.signature, c)).unwrap_or_default(),
        extra: Default::default(),
    }
}

/// A report with no cases counted, for a campaign killed before its first checkpoint.
fn empty(m: Option<Manifest>) -> Report {
    Report {
        format: REPORT_FORMAT.into(),
        seed: m.as_ref().map_or(0, |m| m.seed),
        jobs: 0,
        cases: 0,
        diverging_cases: 0,
        devices: m.as_ref().map_or(vec![], |m| m.devices.iter().map(|d| d.to_string()).collect()),
        libtorch: "unknown".into(),
        size: m.as_ref().map_or("unknown".into(), |m| m.gen.common.size.name().to_string()),
        interrupted: true,
        shards: m.as_ref().filter(|m| !m.complete()).map(|m| Coverage { of: m.shards, covered: m.covered.clone() }),
        rows: vec![],
        buckets: vec![],
        known_bugs: crate::subjects::all_known_bugs(),
        near_ties: TieStats::default(),
        grads: GradTally::default(),
        grid: vec![],
        regression: None,
        findings: Vec::new(),
        fidelity: None,
        timing: Timing::default(),
    }
}
