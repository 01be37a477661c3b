//! Backward cases recorded on real PyTorch 2.12.1, 2.13.0, 2.14.0 and 2.15.0 (one gloo process per rank,
//! `docs/pytorch-checks/backward_oracle.py`; every boundary revision, EP on and off) replay the
//! same on the simulated DTensor: the same ok or error (kind and text), and per gradient the
//! same placements, every rank's local tensor, the reduced value, and the backward's collectives.
//! And generated backward cases: no gradient verdict on the correct revisions, each buggy one's
//! bug at its site, the generator's mix, and a finding shrunk to two ranks.

use dtensor::device::Dev;
use harness::generate::{BackwardMix, GenCommon};
use harness::shrink::{self, Budget};
use harness::stream::nth;
use harness::verdict::Class;
use harness::{check, Options, Signature};
use router::backward::Boundary;
use router::generate::RouterGen;
use router::known::Known;
use serde_json::Value;
use shardfuzz::confirm::{self, real::RealOutcome};
use shardfuzz::replay;

/// The differences between a recorded outcome and our replay of its case (the library's
/// comparison, the one `shardfuzz confirm` uses).
fn compare(value: &Value) -> Vec<String> {
    let case = replay::parse(&value["case"].to_string()).unwrap();
    assert!(crate::spec(&case).backward.is_some(), "a backward case");
    let c = check(&case, Dev::Cpu, Options::default()).unwrap();
    let real = RealOutcome::parse(value).unwrap();
    confirm::compare::backward(&c, &real).iter().map(|d| d.to_string()).collect()
}

fn check_file(name: &str, at_least: usize) {
    let path = crate::root().join("tests/pytorch").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut checked, mut failures) = (0, Vec::new());
    for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let real: Value = serde_json::from_str(line).unwrap();
        let diffs = compare(&real);
        if !diffs.is_empty() {
            let b = &real["case"]["backward"];
            failures.push(format!(
                "line {}: {} ep={} sp={}:\n  {}",
                i + 1,
                b["boundary"],
                b["ep"],
                b["sp"],
                diffs.join("\n  ")
            ));
        }
        checked += 1;
    }
    assert!(checked >= at_least, "only {checked} cases in {name}");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from real PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn backward_cases_agree_with_real_pytorch_2_12() {
    check_file("backward-t2121.jsonl", 90);
}

#[test]
fn backward_cases_agree_with_real_pytorch_2_13() {
    check_file("backward-t2130.jsonl", 90);
}

#[test]
fn backward_cases_agree_with_real_pytorch_2_14() {
    check_file("backward-t2140.jsonl", 90);
}

/// 2.15.0, replayed with `torch-2.15`: `gen --seed 2415 --rules torch-2.15 --backward only`,
/// cases 0-59 (every boundary revision, EP on and off, 1-4 ranks; docs/crosscheck.md). Five of
/// them have reference gradients that cancel to about zero in PyTorch's float32 autograd; they
/// agree through the comparison's absolute floor for the reference (`confirm::compare`).
#[test]
fn backward_cases_agree_with_real_pytorch_2_15() {
    check_file("backward-t2150.jsonl", 55);
}

/// The minimized reproducer of every backward signature of a 320,000-case campaign, run on real
/// PyTorch of its rule set's release (docs/findings.md, "The backward pass").
#[test]
fn backward_findings_reproduce_on_real_pytorch() {
    check_file("backward-findings-t2121.jsonl", 20);
    check_file("backward-findings-t2130.jsonl", 20);
    check_file("backward-findings-t2140.jsonl", 20);
}

/// Generated backward cases of one boundary revision, all rule sets.
fn cases(boundary: Boundary, n: u64) -> impl Iterator<Item = crate::RouterCase> {
    let common = GenCommon { backward: BackwardMix::Only, ..GenCommon::default() };
    let gen = RouterGen { boundaries: vec![boundary], ..RouterGen::default() };
    (0..n).map(move |i| nth(21, i, &common, &gen))
}

/// How many of `n` generated cases of `boundary` show a gradient verdict, and of those how
/// many are instances of `bug`.
fn found(boundary: Boundary, n: u64, bug: Option<Known>) -> (usize, usize) {
    let (mut any, mut of_bug) = (0, 0);
    for case in cases(boundary, n) {
        let c = check(&case, Dev::Cpu, Options::default()).unwrap();
        let grads: Vec<Signature> =
            c.signatures().into_iter().filter(|s| matches!(s.class, Class::Grad | Class::Replica)).collect();
        any += usize::from(!grads.is_empty());
        of_bug += usize::from(bug.is_some_and(|k| grads.iter().any(|s| k.matches(s, &c.case, &c.case.subject))));
    }
    (any, of_bug)
}

#[test]
fn correct_boundaries_show_no_gradient_verdict() {
    for b in [Boundary::Clean, Boundary::T3192] {
        assert_eq!(found(b, 400, None).0, 0, "{b}: a gradient verdict on a correct revision");
    }
}

#[test]
fn each_buggy_boundary_shows_its_bug_at_its_site() {
    for (b, bug) in [
        (Boundary::Pre2416, Known::RouterDiverges2387),
        (Boundary::T3654, Known::NoInGrad4054),
        (Boundary::T2416, Known::GateInputTwice2416),
        (Boundary::Pr2388, Known::Pr2388Sbe),
    ] {
        let (any, of_bug) = found(b, 300, Some(bug));
        assert!(of_bug >= 20, "{b}: only {of_bug} of 300 cases show {}", bug.name());
        assert!(any >= of_bug);
    }
}

#[test]
fn the_generator_draws_backward_cases_as_asked() {
    let mix = |m: BackwardMix| {
        let common = GenCommon { backward: m, ..GenCommon::default() };
        (0..400).map(|i| nth::<router::RouterSpec>(4, i, &common, &RouterGen::default())).collect::<Vec<_>>()
    };
    assert!(mix(BackwardMix::Off).iter().all(|c| c.subject.backward.is_none()));
    let on = mix(BackwardMix::On).iter().filter(|c| c.subject.backward.is_some()).count();
    assert!((120..280).contains(&on), "--backward on drew {on} of 400");
    let only = mix(BackwardMix::Only);
    for c in &only {
        c.validate().unwrap();
        let b = c.subject.backward.as_ref().expect("--backward only");
        assert!(!(b.ep && c.ranks() == 1), "EP on one rank: {}", c.to_json());
    }
    for b in Boundary::ALL {
        assert!(
            only.iter().filter(|c| c.subject.backward.as_ref().unwrap().boundary == *b).count() > 20,
            "{b} is rare"
        );
    }
    assert!(cases(Boundary::T3654, 100).all(|c| c.subject.backward.unwrap().boundary == Boundary::T3654));
}

#[test]
fn a_gradient_finding_shrinks_to_two_ranks_and_keeps_its_signature() {
    let case = cases(Boundary::Pre2416, 200)
        .find(|c| {
            c.ranks() >= 3
                && check(c, Dev::Cpu, Options::default())
                    .unwrap()
                    .signatures()
                    .iter()
                    .any(|s| s.class == Class::Replica)
        })
        .expect("a tt-pre2416 replica finding on 3+ ranks");
    let sig = check(&case, Dev::Cpu, Options::default())
        .unwrap()
        .signatures()
        .into_iter()
        .find(|s| s.class == Class::Replica)
        .unwrap();
    let s = shrink::shrink(&case, Budget::default(), |c| {
        check(c, Dev::Cpu, Options::default()).is_ok_and(|r| r.shows(&sig))
    });
    assert_eq!(s.case.ranks(), 2, "{}", s.case.to_json());
    assert!(
        s.case.subject.dims.batch * s.case.subject.dims.seq <= 2,
        "{} tokens",
        s.case.subject.dims.batch * s.case.subject.dims.seq
    );
    assert!(check(&s.case, Dev::Cpu, Options::default()).unwrap().shows(&sig));
}

/// Kind -> count, an all_to_all counted as an all_gather (gloo runs one as the other).
fn kinds(ops: impl Iterator<Item = String>) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for op in ops {
        let op = confirm::real::comm_name(&op);
        *m.entry(if op == "all_to_all" { "all_gather".to_string() } else { op }).or_insert(0) += 1;
    }
    m
}

/// The differences between the backward derived on placements (`dtensor::autograd::expect`,
/// apart from the engine) and one recorded real run: every gradient's placements, and the
/// backward's collectives per kind (the recordings count them per op on the 1-D TP mesh).
fn derivation_vs_real(real: &Value) -> Vec<String> {
    let case = replay::parse(&real["case"].to_string()).unwrap();
    let c = check(&case, Dev::Cpu, Options::default()).unwrap();
    let Some(Ok(p)) = c.run.backward.as_ref().map(|b| &b.program) else { return vec![] };
    let Some(e) = &p.expected else { return vec!["nothing derived".into()] };
    let mut diffs = Vec::new();
    for (name, g) in real["backward"]["grads"].as_object().unwrap() {
        let Some(want) = g["placements"].as_array() else { continue };
        let want: Vec<String> = want.iter().map(|p| p.as_str().unwrap().to_string()).collect();
        let ours: Option<Vec<String>> = e.placements_of(name).map(|ps| ps.iter().map(|p| p.to_string()).collect());
        if ours.as_ref() != Some(&want) {
            diffs.push(format!("{name}.grad: derived {ours:?}, real {want:?}"));
        }
    }
    let counts = real["backward"]["comm_counts"].as_object().cloned().unwrap_or_default();
    let theirs = kinds(counts.iter().flat_map(|(op, n)| std::iter::repeat_n(op.clone(), n.as_u64().unwrap() as usize)));
    let ours = kinds(e.comms.iter().map(|c| c.op.clone()));
    if ours != theirs {
        diffs.push(format!("backward collectives: derived {ours:?}, real {theirs:?}"));
    }
    assert!(e.comms.iter().all(|c| c.mesh_dim == 0 && c.bytes > 0), "1-D meshes, bytes known: {:?}", e.comms);
    if let Some(listed) = real["backward"]["comms"].as_array() {
        // Recorded one by one: kind, mesh axis and bytes, in issue order (a derived all_to_all is
        // an all_gather of unknown size on gloo).
        let key = |op: &str, dim: u64, bytes: u64| match op {
            "all_to_all" => format!("all_gather@{dim}"),
            _ => format!("{op}@{dim}:{bytes}B"),
        };
        let mut theirs: Vec<String> = listed
            .iter()
            .map(|c| {
                let (op, dim, bytes) =
                    (c["op"].as_str().unwrap(), c["mesh_dim"].as_u64().unwrap(), c["bytes"].as_u64().unwrap());
                if e.comms.iter().any(|d| d.op == "all_to_all") && op == "all_gather" {
                    format!("all_gather@{dim}")
                } else {
                    key(op, dim, bytes)
                }
            })
            .collect();
        let mut ours: Vec<String> = e.comms.iter().map(|c| key(&c.op, c.mesh_dim as u64, c.bytes as u64)).collect();
        theirs.sort();
        ours.sort();
        if ours != theirs {
            diffs.push(format!("backward collectives one by one: derived {ours:?}, real {theirs:?}"));
        }
    }
    diffs
}

/// The derivation the gradient and comm oracles hold the program to agrees with real PyTorch on
/// every recorded backward case of `files` that ran: each gradient's placements and the
/// backward's collectives. Returns (cases that ran, cases with backward collectives).
fn derivation_agrees(files: &[&str]) -> (usize, usize) {
    let (mut ran, mut with_comms, mut failures) = (0, 0, Vec::new());
    for name in files {
        let text = std::fs::read_to_string(crate::root().join("tests/pytorch").join(name)).unwrap();
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let real: Value = serde_json::from_str(line).unwrap();
            if real["backward"]["ok"] != true {
                continue;
            }
            ran += 1;
            with_comms += usize::from(real["backward"]["comm_counts"].as_object().is_some_and(|m| !m.is_empty()));
            let d = derivation_vs_real(&real);
            if !d.is_empty() {
                failures.push(format!("{name} line {}: {}", i + 1, d.join("; ")));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {ran} differ:\n{}", failures.len(), failures.join("\n"));
    (ran, with_comms)
}

#[test]
fn derived_gradient_placements_and_collectives_agree_with_real_pytorch_2_12() {
    let (ran, comms) = derivation_agrees(&["backward-t2121.jsonl", "backward-findings-t2121.jsonl"]);
    assert!(ran >= 95 && comms >= 50, "{ran} ran, {comms} with collectives");
}

#[test]
fn derived_gradient_placements_and_collectives_agree_with_real_pytorch_2_13() {
    let (ran, comms) = derivation_agrees(&["backward-t2130.jsonl", "backward-findings-t2130.jsonl"]);
    assert!(ran >= 95 && comms >= 50, "{ran} ran, {comms} with collectives");
}

#[test]
fn derived_gradient_placements_and_collectives_agree_with_real_pytorch_2_14() {
    let (ran, comms) = derivation_agrees(&["backward-t2140.jsonl", "backward-findings-t2140.jsonl"]);
    assert!(ran >= 95 && comms >= 50, "{ran} ran, {comms} with collectives");
}

#[test]
fn derived_gradient_placements_and_collectives_agree_with_real_pytorch_2_15() {
    let (ran, comms) = derivation_agrees(&["backward-t2150.jsonl"]);
    assert!(ran >= 50 && comms >= 35, "{ran} ran, {comms} with collectives");
}

/// Backward cases recorded with every collective's kind, mesh axis and bytes (tt-2416, tt-3192 and
/// tt-clean, whose backwards communicate most; `backward_oracle.py` since the comm oracle): the
/// simulated run replays them as the other recordings do, and the derivation gives the same
/// collectives, bytes included. Nine lines have reference gradients that cancel to about zero in
/// PyTorch's float32 autograd (real 1e-16 against our float64 -6e-8); they agree through the
/// comparison's absolute floor for the reference.
fn check_comms_file(name: &str) {
    check_file(name, 30);
    let (ran, comms) = derivation_agrees(&[name]);
    assert!(ran >= 25 && comms >= 20, "{name}: {ran} ran, {comms} with collectives");
}

#[test]
fn backward_collectives_with_bytes_agree_with_real_pytorch_2_12() {
    check_comms_file("backward-comms-t2121.jsonl");
}

#[test]
fn backward_collectives_with_bytes_agree_with_real_pytorch_2_13() {
    check_comms_file("backward-comms-t2130.jsonl");
}

#[test]
fn backward_collectives_with_bytes_agree_with_real_pytorch_2_14() {
    check_comms_file("backward-comms-t2140.jsonl");
}
