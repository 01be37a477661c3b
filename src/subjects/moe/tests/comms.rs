//! The comm oracle's derivation ([`moe::comms::derive`]) against every comm log the real
//! torchtitan 0.3.0 layer recorded on the spmd_types backend (tests/pytorch/moe/*.jsonl, the
//! `c10d` calls of every rank): from the case and the recorded routing counts alone (each rank's
//! `tokens_per_expert`), the derivation must give each rank's calls in order, phase, op, a group
//! the recorder names with the derivation's axis, and the bytes the rank hands in.

use moe::comms::{derive, Want};
use moe::crosscheck;
use serde_json::Value;
use std::path::PathBuf;

fn folder() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/pytorch/moe")
}

/// The recorded counts of each rank.
fn counts(outcome: &Value) -> Option<Vec<Vec<i64>>> {
    let locals = outcome["outputs"]["tokens_per_expert"]["locals"].as_array()?;
    locals
        .iter()
        .map(|l| l["values"].as_array().map(|v| v.iter().map(|x| x.as_f64().unwrap_or(-1.0).round() as i64).collect()))
        .collect()
}

/// Rank `r`'s recorded calls against the derived ones; a description of the first difference.
fn differs(want: &[Want], real: &Value, r: usize) -> Option<String> {
    let real = real.as_array().cloned().unwrap_or_default();
    let ours: Vec<&Want> = want.iter().collect();
    if ours.len() != real.len() {
        return Some(format!("rank {r}: {} calls derived, {} recorded", ours.len(), real.len()));
    }
    for (i, (w, e)) in ours.iter().zip(&real).enumerate() {
        let axes: Vec<&str> =
            e["axes"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
        let same = e["phase"] == w.phase
            && e["op"] == w.op
            && axes.contains(&w.axis)
            && e["bytes"].as_u64() == Some(w.sent[r] as u64);
        if !same {
            return Some(format!(
                "rank {r} call {i}: derived {} {} {} {} B, recorded {} {} {:?} {}",
                w.phase, w.op, w.axis, w.sent[r], e["phase"], e["op"], axes, e["bytes"]
            ));
        }
    }
    None
}

#[test]
fn the_derived_comm_log_is_every_recorded_ranks() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder())
        .expect("the recordings")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    let (mut agree, mut logs_with_calls, mut bad) = (0, 0, Vec::new());
    for f in &files {
        for line in std::fs::read_to_string(f).expect("readable").lines().filter(|l| !l.trim().is_empty()) {
            let o: Value = serde_json::from_str(line).expect("an outcome line");
            if o["case"]["subject"]["backend"] != "spmd_types" {
                continue;
            }
            let out = crosscheck::outcome_of(&o);
            if out["ok"] != true {
                continue;
            }
            let case = crosscheck::case_of(&o).expect("a case");
            let c = counts(out).expect("recorded counts");
            let want = derive(&case.subject, &case.common, &c);
            let logs = out["comms"].as_array().cloned().unwrap_or_default();
            assert_eq!(logs.len(), case.common.ranks(), "{}: one log per rank", o["id"]);
            logs_with_calls += usize::from(!want.is_empty());
            match (0..logs.len()).find_map(|r| differs(&want, &logs[r], r)) {
                Some(d) => bad.push(format!("{}: {d}", o["id"])),
                None => agree += 1,
            }
        }
    }
    eprintln!("derived comm logs: {agree} recorded runs agree on every rank ({logs_with_calls} with collectives)");
    assert!(bad.is_empty(), "{} recorded comm logs differ from the derivation:\n{}", bad.len(), bad.join("\n"));
    assert!(agree >= 80 && logs_with_calls >= 60, "{agree} runs, {logs_with_calls} with collectives");
}
