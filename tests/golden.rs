//! Replays `tests/golden/*.outcome.json` (a copy of the spec's golden outcomes, recorded on real
//! PyTorch DTensor)
//! and compares everything they record: ok/error and its text, every sharded output's
//! placements, global, per-rank and local shapes, values, communication, and verdicts.

use dtensor::device::Dev;
use harness::outcome::{Outcome, ShardedOutput};
use harness::tensor_data::Values;
use harness::{check, Options};
use shardfuzz::replay;
use std::path::PathBuf;

fn golden_dir() -> PathBuf {
    crate::root().join("tests/golden")
}

fn golden_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(golden_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".outcome.json"))
        .collect();
    v.sort();
    assert!(v.len() >= 13, "expected the 13 golden outcomes, found {}", v.len());
    v
}

fn assert_values_close(what: &str, a: &Values, b: &Values) {
    match (a, b) {
        (Values::Float(x), Values::Float(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: value count");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                let tol = 1e-6 + 1e-5 * p.abs().max(q.abs());
                assert!((p - q).abs() <= tol || (p.is_nan() && q.is_nan()), "{what}[{i}]: {q} vs golden {p}");
            }
        }
        (x, y) => assert_eq!(x, y, "{what}: values"),
    }
}

fn assert_output(name: &str, golden: &ShardedOutput, ours: &ShardedOutput) {
    assert_eq!(golden.placements, ours.placements, "{name}: placements");
    assert_eq!(golden.global_shape, ours.global_shape, "{name}: global_shape");
    assert_eq!(golden.rank_global_shapes, ours.rank_global_shapes, "{name}: rank_global_shapes");
    assert_eq!(golden.local_shapes, ours.local_shapes, "{name}: local_shapes");
    assert_eq!(golden.dtype, ours.dtype, "{name}: dtype");
    assert_values_close(name, &golden.values, &ours.values);
}

#[test]
fn every_golden_outcome_replays_identically() {
    for path in golden_files() {
        let text = std::fs::read_to_string(&path).unwrap();
        let golden: Outcome = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let case = replay::parse(&text).unwrap();
        let ours = check(&case, Dev::Cpu, Options { twice: true, ..Options::default() }).unwrap().outcome();
        let f = path.file_name().unwrap().to_string_lossy().to_string();

        assert_eq!(golden.sharded.ok, ours.sharded.ok, "{f}: sharded.ok");
        assert_eq!(golden.sharded.error, ours.sharded.error, "{f}: error kind and text");
        assert_eq!(golden.reference.ok, ours.reference.ok, "{f}: reference.ok");
        for (name, g) in &golden.reference.outputs.0 {
            let o = ours.reference.outputs.get(name).unwrap_or_else(|| panic!("{f}: reference output {name} missing"));
            assert_eq!(g.shape, o.shape, "{f}: reference {name} shape");
            assert_values_close(&format!("{f}: reference {name}"), &g.values, &o.values);
        }
        let gnames: Vec<&String> = golden.sharded.outputs.0.iter().map(|(n, _)| n).collect();
        let onames: Vec<&String> = ours.sharded.outputs.0.iter().map(|(n, _)| n).collect();
        assert_eq!(gnames, onames, "{f}: sharded outputs");
        for (name, g) in &golden.sharded.outputs.0 {
            assert_output(&format!("{f}: {name}"), g, ours.sharded.outputs.get(name).unwrap());
        }
        let comms = |o: &Outcome| {
            o.sharded.comms.iter().map(|c| (c.op.clone(), c.mesh_dim, c.tensor.clone())).collect::<Vec<_>>()
        };
        assert_eq!(comms(&golden), comms(&ours), "{f}: communication");
        let verdicts = |o: &Outcome| {
            o.verdicts
                .iter()
                .map(|v| (v.class, v.output.clone(), v.expected.clone(), v.actual.clone(), v.detail.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(verdicts(&golden), verdicts(&ours), "{f}: verdicts");
    }
}
