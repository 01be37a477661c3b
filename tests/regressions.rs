//! Every committed reproducer (`corpus/repro/`, written by `nightly --corpus corpus/repro`, named
//! after its signature) still shows its signature: a fix that changes a verdict shows up here,
//! and the reproducer is then regenerated deliberately.

use dtensor::device::Dev;
use harness::{check_guarded, Options};
use shardfuzz::replay;

#[test]
fn every_committed_reproducer_shows_its_signature() {
    let dir = crate::root().join("corpus/repro");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|p| p.extension().is_some_and(|e| e == "json"));
    files.sort();
    assert!(files.len() >= 20, "only {} reproducers in {}", files.len(), dir.display());
    let mut lost = Vec::new();
    for f in &files {
        let stem = f.file_stem().unwrap().to_string_lossy().to_string();
        let case = replay::load(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let shown: Vec<String> = match check_guarded(&case, Dev::Cpu, Options::default()) {
            Ok(c) => c.signatures().iter().map(|s| s.slug()).collect(),
            Err(crashed) => vec![crashed.signature().slug()],
        };
        if !shown.contains(&stem) {
            lost.push(format!("{stem}: now {shown:?}"));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} reproducers lost their signature:\n{}",
        lost.len(),
        files.len(),
        lost.join("\n")
    );
}
