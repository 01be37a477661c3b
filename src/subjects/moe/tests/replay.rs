//! Replays the outcomes the real torchtitan 0.3.0 MoE layer recorded (python/moe_recorder on
//! gloo ranks, `shardfuzz.outcome/2` lines in tests/pytorch/moe/*.jsonl) against the model's
//! run, for the partial_dtensor backend the model covers, with [`moe::crosscheck`] (the
//! comparison `shardfuzz confirm` makes too): a recorded error must be the model's error, a
//! recorded success the model's success with every assembled output within its bound, and the
//! recorder's one-rank plain-torch run must agree with the model's reference.
//!
//! Lines of other backends, and cases the model answers "not modelled yet", are counted and
//! skipped. The recorded case files are read as they are. `MOE_RECORDINGS=DIR` replays another
//! folder.

use harness::subject::Subject;
use moe::crosscheck::{self, Verdict};
use serde_json::Value;
use std::path::PathBuf;

fn folder() -> PathBuf {
    match std::env::var_os("MOE_RECORDINGS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/pytorch/moe"),
    }
}

#[derive(Default, Debug)]
struct Tally {
    /// The recorder's own one-rank run against the model's reference: agreeing, differing.
    reference_agree: usize,
    reference_disagree: Vec<String>,
    lines: usize,
    other_backend: usize,
    not_modelled: usize,
    invalid: usize,
    agree_ok: usize,
    agree_err: usize,
    disagree: Vec<String>,
}

fn list(v: &[crosscheck::Mismatch]) -> String {
    v.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; ")
}

fn check_line(line: &str, t: &mut Tally, id: &str) {
    let o: Value = serde_json::from_str(line).expect("an outcome line");
    t.lines += 1;
    if o["case"]["subject"]["backend"] != "partial_dtensor" {
        t.other_backend += 1;
        return;
    }
    let (case, c) = match crosscheck::check_line(&o) {
        Ok(x) => x,
        Err(e) => {
            t.invalid += 1;
            eprintln!("{id}: invalid case: {e}");
            return;
        }
    };
    match &c.reference {
        Some(Verdict::Differ(v)) => t.reference_disagree.push(format!("{id}: {}", list(v))),
        Some(v) if v.agrees() => t.reference_agree += 1,
        _ => {}
    }
    match &c.sharded {
        Verdict::NotModelled(_) | Verdict::NotCompared(_) => t.not_modelled += 1,
        Verdict::AgreeRan(_) => t.agree_ok += 1,
        Verdict::AgreeRaised => t.agree_err += 1,
        Verdict::Differ(v) => {
            let s = &case.subject;
            let what = format!(
                "{} ep={} sp={}; mesh {:?} {}",
                s.dims(),
                s.parallel.ep,
                s.parallel.sp,
                case.mesh.shape,
                case.dtype
            );
            t.disagree.push(format!("{id} ({what}): {}", list(v)));
        }
    }
}

#[test]
fn recorded_partial_dtensor_outcomes_replay() {
    let dir = folder();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(d) => {
            d.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "jsonl")).collect()
        }
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut t = Tally::default();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("readable");
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let id = format!("{}:{}", f.file_name().unwrap().to_string_lossy(), i + 1);
            check_line(line, &mut t, &id);
        }
    }
    eprintln!(
        "replay: {} lines; {} other backends; {} not modelled; {} invalid; agree: {} ran, {} raised; disagree: {}",
        t.lines,
        t.other_backend,
        t.not_modelled,
        t.invalid,
        t.agree_ok,
        t.agree_err,
        t.disagree.len()
    );
    for d in &t.disagree {
        eprintln!("  {d}");
    }
    eprintln!(
        "reference: {} agree with the recorded one-rank run, {} differ",
        t.reference_agree,
        t.reference_disagree.len()
    );
    for d in &t.reference_disagree {
        eprintln!("  {d}");
    }
    assert_eq!(t.invalid, 0, "every recorded case reads");
    assert!(t.disagree.is_empty(), "{} recorded outcomes disagree with the model", t.disagree.len());
}

/// Every recorded case file reads as it is (the recorder's data fields: `near_tie_tokens`,
/// `intent`, a null `seed`, the style `skewed`), whatever its backend, and writes back what it
/// read.
#[test]
fn recorded_cases_read_as_they_are() {
    let mut n = 0;
    for f in std::fs::read_dir(folder()).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(f.path()).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()).step_by(7) {
            let o: Value = serde_json::from_str(line).expect("an outcome line");
            let case = crosscheck::case_of(&o).unwrap_or_else(|e| panic!("{}: {e}", f.path().display()));
            let back = case.to_value();
            assert_eq!(back["data"]["seed"], o["case"]["data"]["seed"]);
            assert_eq!(back["data"]["style"], o["case"]["data"]["style"]);
            assert_eq!(back["data"].get("intent"), o["case"]["data"].get("intent"));
            n += 1;
        }
    }
    assert!(n > 0 || std::env::var_os("MOE_RECORDINGS").is_some(), "no recordings found");
}
