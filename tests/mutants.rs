//! Every planted bug (src/dtensor/plant.rs) is caught: a plain run with the mutant active shows
//! signatures of the promised verdict classes that the same run without it does not, within a
//! bounded number of cases; a rule the router never exercises is caught by the op tests.

use shardfuzz::dtensor::plant::MUTANTS;
use std::collections::BTreeSet;
use std::process::Command;

/// The signatures of `run --seed 1 --cases N`, with `mutant` active when given.
fn signatures(mutant: Option<&str>, cases: &str) -> BTreeSet<String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardfuzz"));
    cmd.args(["run", "--seed", "1", "--cases", cases, "--device", "cpu"]).env_remove("SHARDFUZZ_PLANT");
    if let Some(m) = mutant {
        cmd.env("SHARDFUZZ_PLANT", m);
    }
    let o = cmd.output().unwrap();
    assert!(matches!(o.status.code(), Some(0 | 1)), "{mutant:?}: {}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    if let Some(m) = mutant {
        assert!(err.contains(&format!("planted bug `{m}` is active")), "the run must say a mutant is active");
    }
    // The tally: "<count>  <signature>" lines.
    err.lines()
        .filter_map(|l| l.trim_start().split_once("  "))
        .filter(|(n, _)| n.chars().all(|c| c.is_ascii_digit()))
        .map(|(_, sig)| sig.trim().to_string())
        .collect()
}

#[test]
fn every_mutant_is_caught_by_the_oracles() {
    let cases = "400";
    let base = signatures(None, cases);
    for m in MUTANTS.iter().filter(|m| m.caught_as != ["ops"]) {
        let with = signatures(Some(m.name), cases);
        let new: Vec<&String> = with.difference(&base).collect();
        let caught = new.iter().any(|s| m.caught_as.iter().any(|c| s.starts_with(&format!("{c}:"))));
        assert!(
            caught,
            "{} ({}) not caught as {:?} in {cases} cases; new signatures: {new:?}",
            m.name, m.breaks, m.caught_as
        );
    }
}

#[test]
fn rule_mutants_the_router_cannot_reach_fail_the_op_tests() {
    for m in MUTANTS.iter().filter(|m| m.caught_as == ["ops"]) {
        let o = Command::new(std::env::current_exe().unwrap())
            .args(["ops::", "--test-threads", "2"])
            .env("SHARDFUZZ_PLANT", m.name)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{}: the op tests pass with the mutant active", m.name);
    }
}

#[test]
fn an_unknown_mutant_is_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_shardfuzz"))
        .args(["run", "--cases", "1"])
        .env("SHARDFUZZ_PLANT", "no-such-bug")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("shardfuzz: SHARDFUZZ_PLANT=no-such-bug: no such mutant"));
}
