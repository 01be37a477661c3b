//! Every planted bug (src/dtensor/plant.rs) is caught: a plain run with the mutant active shows
//! signatures of the promised verdict classes that the same run without it does not, within a
//! bounded number of cases; a rule the router never exercises is caught by the op tests.

use dtensor::plant::MUTANTS;
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

/// The layout oracle sees a layout mistake made everywhere at once (`chunk-array-split`): 7
/// tokens over 3 ranks become pieces of 3, 2, 2 instead of torch.chunk's 3, 3, 1. They gather
/// back to the right values, so only `local_layout` says so; without the mutant the same case
/// has no verdict.
#[test]
fn a_layout_mistake_everywhere_is_a_local_layout_verdict() {
    use harness::case::MeshSpec;
    use router::spec::{Dims, Layout};
    let mut c: crate::RouterCase =
        harness::stream::nth(1, 0, &Default::default(), &router::generate::RouterGen::default());
    c.common.mesh = MeshSpec { shape: vec![3], names: vec!["tp".into()] };
    c.common.data.tensors = None;
    let s = &mut c.subject;
    s.backward = None;
    s.dims = Dims { batch: 2, seq: 7, model: 8, experts: 8, top_k: 2 };
    s.router.groups = None;
    s.router.expert_bias = false;
    s.router.gate_bias = false;
    s.revision.router = router::RouterRev::LocalMapBoth;
    let p = |s: &str| vec![s.parse().unwrap()];
    s.layout = Layout { x: p("S(1)"), gate: p("R"), expert_bias: None, counts_contract: p("P(sum)"), gate_bias: None };
    c.validate().unwrap();
    let case = std::env::temp_dir().join(format!("shardfuzz-mutant-{}-layout.json", std::process::id()));
    std::fs::write(&case, c.to_json()).unwrap();
    let run = |plant: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shardfuzz"));
        cmd.args(["replay", "--once", case.to_str().unwrap()]).env_remove("SHARDFUZZ_PLANT");
        if let Some(p) = plant {
            cmd.env("SHARDFUZZ_PLANT", p);
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).to_string()
    };
    let planted = run(Some("chunk-array-split"));
    assert!(planted.contains(":local_layout"), "{planted}");
    // Rank 1's sequence piece: 2 tokens where torch.chunk gives 3.
    assert!(planted.contains("rank 1 holds a [2, 2, 8] local where torch.chunk gives [2, 3, 8]"), "{planted}");
    assert!(!planted.contains("value:"), "the values gather back: {planted}");
    let clean = run(None);
    assert!(!clean.contains("local_layout"), "{clean}");
    std::fs::remove_file(&case).ok();
}

/// `shrink` runs every check through the panic guard: a case whose signature is a crash (a
/// panic inside the model, planted with `addmm-panics` on a gate with a bias) shrinks like any
/// other, to a smaller case that still crashes, and exits 0 with it.
#[test]
fn shrink_of_a_crash_case_exits_with_a_shrunk_case() {
    let gen = router::generate::RouterGen::default();
    let c: crate::RouterCase = (0..200)
        .map(|i| harness::stream::nth(5, i, &Default::default(), &gen))
        .find(|c: &crate::RouterCase| c.subject.router.gate_bias && c.ranks() >= 2)
        .expect("a case with a gate bias");
    let case = std::env::temp_dir().join(format!("shardfuzz-mutant-{}-crash.json", std::process::id()));
    std::fs::write(&case, c.to_json()).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_shardfuzz"))
        .args(["shrink", "--max-time", "20s", case.to_str().unwrap()])
        .env("SHARDFUZZ_PLANT", "addmm-panics")
        .output()
        .unwrap();
    std::fs::remove_file(&case).ok();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(matches!(o.status.code(), Some(0 | 1)), "exit {:?}: {err}", o.status.code());
    assert!(err.lines().any(|l| l.starts_with("crash:-:") && l.ends_with(":panic")), "{err}");
    let shrunk: crate::RouterCase = harness::Case::from_json(&String::from_utf8_lossy(&o.stdout)).unwrap();
    assert!(shrunk.subject.router.gate_bias, "the crash needs the bias");
    assert!(shrink_size(&shrunk) < shrink_size(&c), "{}", shrunk.to_json());
}

fn shrink_size(c: &crate::RouterCase) -> (usize, usize) {
    (c.ranks(), c.subject.dims.batch * c.subject.dims.seq * c.subject.dims.model)
}
