//! Confirming MoE-layer cases (`subject.kind` "moe") on the real torchtitan MoE layer of the
//! case's revision, where that revision is a package ([`Titan`]): `tt-0.3.0` with the recorder
//! of `python/moe_recorder`, `tt-0.2.2` with the one of `python/moe_recorder_022` (both built
//! into the binary and unpacked into the cache directory, as the router's worker is). The
//! recorder runs each case on gloo ranks with torchtitan's own sharding code in the torchtitan
//! venv of the case's torch release ([`super::moe_venv`]), and its outcome line is compared with
//! the model's run by [`moe::crosscheck`], the comparison the replay tests of the recordings make.
//!
//! The recorders start one process per rank and keep them across the cases of one world size,
//! so cases are best recorded together: [`Recorded::record`] runs a batch per release and
//! torchtitan release, and [`confirm`] records a case alone only when no batch holds it.
//!
//! Not run, with the reason: revisions that are torchtitan git commits, not packages in the
//! registry; `--engine local` (the recorders run gloo ranks only); `tt-0.2.2` cases outside what
//! its recorder runs ([`skip_022`]); cases the model does not model yet; and cases whose ranks
//! did not start or finish.

use super::compare::Diff;
use super::moe_venv::{self, Titan};
use super::{ConfirmResult, Engine, Release, Status, CONFIRM_FORMAT};
use crate::subjects::{AnyCase, AnySpec};
use dtensor::device::Dev;
use harness::case::Case;
use harness::check::{check_guarded, Options};
use moe::crosscheck::{self, Verdict};
use moe::MoeSpec;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The recorder package's files, as built into this binary.
pub const RECORDER: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/moe_recorder/__init__.py")),
    ("__main__.py", include_str!("../../../python/moe_recorder/__main__.py")),
    ("assemble.py", include_str!("../../../python/moe_recorder/assemble.py")),
    ("commlog.py", include_str!("../../../python/moe_recorder/commlog.py")),
    ("driver.py", include_str!("../../../python/moe_recorder/driver.py")),
    ("generate.py", include_str!("../../../python/moe_recorder/generate.py")),
    ("rank.py", include_str!("../../../python/moe_recorder/rank.py")),
    ("reference.py", include_str!("../../../python/moe_recorder/reference.py")),
];

/// The torchtitan 0.2.2 recorder's package files (`record.py`, which re-records the stored
/// outcomes, and `compare.py` stay in the source tree).
pub const RECORDER_022: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/moe_recorder_022/__init__.py")),
    ("__main__.py", include_str!("../../../python/moe_recorder_022/__main__.py")),
    ("confirm.py", include_str!("../../../python/moe_recorder_022/confirm.py")),
    ("core.py", include_str!("../../../python/moe_recorder_022/core.py")),
];

/// The package and its files of a torchtitan release's recorder.
fn recorder_of(titan: Titan) -> (&'static str, &'static [(&'static str, &'static str)]) {
    match titan {
        Titan::V030 => ("moe_recorder", RECORDER),
        Titan::V022 => ("moe_recorder_022", RECORDER_022),
    }
}

/// The directory holding the unpacked `moe_recorder` package (written once per content).
pub fn recorder_dir() -> std::io::Result<PathBuf> {
    recorder_dir_of(Titan::V030)
}

/// The directory holding a torchtitan release's unpacked recorder package (once per content).
pub fn recorder_dir_of(titan: Titan) -> std::io::Result<PathBuf> {
    let (pkg, files) = recorder_of(titan);
    let mut all = Vec::new();
    for (name, text) in files {
        all.extend_from_slice(name.as_bytes());
        all.extend_from_slice(text.as_bytes());
    }
    let dir = super::venv::cache_dir().join(format!("{}-{:016x}", pkg.replace('_', "-"), harness::hash64(&all)));
    if !dir.join(pkg).join("__main__.py").exists() {
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        std::fs::create_dir_all(tmp.join(pkg))?;
        for (name, text) in files {
            std::fs::write(tmp.join(pkg).join(name), text)?;
        }
        if std::fs::rename(&tmp, &dir).is_err() {
            std::fs::remove_dir_all(&tmp).ok();
        }
    }
    Ok(dir)
}

/// The MoE spec of a case, with the envelope (None for another subject).
pub fn moe_case(case: &AnyCase) -> Option<Case<MoeSpec>> {
    match &case.subject {
        AnySpec::Moe(s) => Some(Case { common: case.common.clone(), subject: s.clone() }),
        _ => None,
    }
}

/// Why a `tt-0.2.2` case is not sent to its recorder, if it is not: the recorder shards the
/// layer with the package's `apply_moe_ep_tp` on a tp-only mesh (ep 1 or ep = tp, borrowing the
/// tp ranks) in float32 with the for-loop experts, and feeds each rank an even sequence block.
pub fn skip_022(case: &Case<MoeSpec>) -> Option<String> {
    let (dp, cp, tp) = MoeSpec::axes(&case.common);
    let s = &case.subject;
    let (ep, seq) = (s.parallel.ep, s.dims.seq);
    let why = if dp != 1 || cp != 1 {
        format!("the 0.2.2 recorder runs a tp-only mesh (dp = cp = 1), found dp = {dp}, cp = {cp}")
    } else if ep != 1 && ep != tp {
        format!("the 0.2.2 recorder runs ep = 1 or ep = tp (ep borrows the tp ranks), found ep = {ep}, tp = {tp}")
    } else if case.common.dtype != dtensor::DType::F32 {
        format!("the 0.2.2 recorder runs float32 only (its for-loop experts), found {}", case.common.dtype)
    } else if !seq.is_multiple_of(tp) {
        format!(
            "an uneven sequence (seq {seq} not divisible by tp {tp}) aborts the gloo ranks of the 0.2.2 layer, so \
             its recorder does not run it"
        )
    } else if s.trainer_checks && !seq.is_multiple_of(2 * tp * cp) {
        format!(
            "the trainer's sequence assertion (seq {seq} divisible by tp·2·cp = {}) is parallelize_llama's, which the \
             0.2.2 recorder does not run (it shards with apply_moe_ep_tp directly)",
            2 * tp * cp
        )
    } else {
        return None;
    };
    Some(why)
}

/// Why a case is not sent to the recorder, if it is not.
pub fn skip_reason(case: &Case<MoeSpec>, engine: Engine) -> Option<String> {
    let Some(titan) = Titan::of(case.subject.revision) else {
        return Some(format!(
            "revision {} is a torchtitan git commit, not a release in the package registry: confirm runs \
             torchtitan {} (tt-0.3.0) and {} (tt-0.2.2) only",
            case.subject.revision,
            moe_venv::TORCHTITAN,
            moe_venv::TORCHTITAN_022
        ));
    };
    if engine == Engine::Local {
        return Some("the MoE recorder runs gloo ranks only (--engine gloo or auto)".into());
    }
    if titan == Titan::V022 {
        if let Some(why) = skip_022(case) {
            return Some(why);
        }
    }
    match harness::runner::run(case, tch::Device::Cpu) {
        Ok((run, _)) => match &run.sharded {
            Err(e) if moe::run::not_modelled(e) => Some(format!("the model does not model this case yet: {e}")),
            _ => None,
        },
        Err(e) => Some(format!("the model could not run the case: {e}")),
    }
}

fn key(case: &AnyCase, release: &Release) -> String {
    format!("{release}:{:016x}", harness::hash64(case.to_json().as_bytes()))
}

/// Recorded outcome lines, per case and release.
#[derive(Default)]
pub struct Recorded {
    lines: HashMap<String, Result<Value, String>>,
}

impl Recorded {
    /// Records every case (run as on `release`) that the recorder should run, in one batch.
    pub fn record(&mut self, cases: &[AnyCase], release: &Release, engine: Engine, timeout: Duration) {
        let todo: Vec<AnyCase> = cases
            .iter()
            .map(|c| super::case_for(c, release))
            .filter(|c| !self.lines.contains_key(&key(c, release)))
            .filter(|c| moe_case(c).is_some_and(|m| skip_reason(&m, engine).is_none()))
            .collect();
        for titan in [Titan::V030, Titan::V022] {
            let batch: Vec<AnyCase> = todo
                .iter()
                .filter(|c| moe_case(c).and_then(|m| Titan::of(m.subject.revision)) == Some(titan))
                .cloned()
                .collect();
            if batch.is_empty() {
                continue;
            }
            let got = run_recorder(titan, &batch, release, timeout);
            for (i, c) in batch.iter().enumerate() {
                let line = match &got {
                    Ok(lines) => {
                        lines.get(&i).cloned().ok_or_else(|| "the recorder wrote no outcome for it".to_string())
                    }
                    Err(e) => Err(e.clone()),
                };
                self.lines.insert(key(c, release), line);
            }
        }
    }

    fn take(&mut self, case: &AnyCase, release: &Release, timeout: Duration) -> Result<Value, String> {
        if !self.lines.contains_key(&key(case, release)) {
            self.record(std::slice::from_ref(case), release, Engine::Gloo, timeout);
        }
        self.lines.remove(&key(case, release)).unwrap_or_else(|| Err("not recorded".into()))
    }
}

/// Runs torchtitan `titan`'s recorder on `cases` in the release's venv of it: outcome lines by
/// case index.
fn run_recorder(
    titan: Titan,
    cases: &[AnyCase],
    release: &Release,
    timeout: Duration,
) -> Result<HashMap<usize, Value>, String> {
    let venv = moe_venv::ensure(titan, release).map_err(|e| format!("{e:#}"))?;
    let pkg = recorder_dir_of(titan).map_err(|e| format!("cannot unpack the MoE recorder: {e}"))?;
    let work = tempdir().map_err(|e| format!("cannot make a work folder: {e}"))?;
    let mut text = String::new();
    for (i, c) in cases.iter().enumerate() {
        let inline = harness::data::with_inline(c);
        text.push_str(&serde_json::json!({"id": format!("c{i}"), "case": inline.to_value()}).to_string());
        text.push('\n');
    }
    let (input, output) = (work.join("cases.jsonl"), work.join("outcomes.jsonl"));
    std::fs::write(&input, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(&venv.python);
    match titan {
        Titan::V030 => cmd
            .args(["-m", "moe_recorder", "record", "--python"])
            .arg(&venv.python)
            .arg("--logdir")
            .arg(work.join("logs")),
        Titan::V022 => cmd.args(["-m", "moe_recorder_022"]),
    };
    let mut child = cmd
        .arg("--cases")
        .arg(&input)
        .arg("--out")
        .arg(&output)
        .args(["--timeout", &timeout.as_secs().to_string()])
        .env("PYTHONPATH", &pkg)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", venv.python.display()))?;
    // The recorder times each case out itself; this guards against the driver stalling.
    let limit = Instant::now() + (timeout + Duration::from_secs(60)) * cases.len() as u32 + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            break s;
        }
        if Instant::now() > limit {
            child.kill().ok();
            child.wait().ok();
            return Err("the MoE recorder ran past its time limit and was killed".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let mut out = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).map_err(|e| format!("unreadable outcome line: {e}"))?;
        if let Some(i) = v["id"].as_str().and_then(|s| s.strip_prefix('c')).and_then(|n| n.parse().ok()) {
            out.insert(i, v);
        }
    }
    if out.is_empty() && !status.success() {
        let logs = match titan {
            Titan::V030 => format!("rank logs in {}", work.join("logs").display()),
            Titan::V022 => "its ranks wrote to stderr".into(),
        };
        return Err(format!("the MoE recorder failed ({status}); {logs}"));
    }
    std::fs::remove_dir_all(&work).ok();
    Ok(out)
}

fn tempdir() -> std::io::Result<PathBuf> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("shardfuzz-moe-confirm-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn diffs(c: &crosscheck::Crosscheck) -> Vec<Diff> {
    let reference = c.reference.iter().flat_map(|r| r.mismatches());
    c.sharded
        .mismatches()
        .iter()
        .chain(reference)
        .map(|m| Diff { what: m.what.clone(), ours: m.ours.clone(), real: m.real.clone() })
        .collect()
}

/// What the real layer did, in one line.
fn real_line(line: &Value) -> String {
    let o = crosscheck::outcome_of(line);
    let p = &line["pytorch"];
    let versions = format!(
        "torch {}, torchtitan {}, {} gloo ranks",
        p["torch"].as_str().unwrap_or("?"),
        p["torchtitan"].as_str().unwrap_or("?"),
        p["world"]
    );
    if o["ok"].as_bool() == Some(true) {
        format!("real: ran ({versions})")
    } else {
        let e = &o["error"];
        format!(
            "real: raised {}:{} {} ({versions})",
            o["stage"].as_str().unwrap_or("?"),
            e["kind"].as_str().unwrap_or("?"),
            e["message"].as_str().unwrap_or("")
        )
    }
}

/// Confirms one MoE case on the real torchtitan layer (recorded in a batch before, or now).
pub fn confirm(
    recorded: &mut Recorded,
    case: &AnyCase,
    release: &Release,
    engine: Engine,
    timeout: Duration,
) -> ConfirmResult {
    let case = super::case_for(case, release);
    let m = moe_case(&case).expect("an MoE case");
    if let Some(why) = skip_reason(&m, engine) {
        return ConfirmResult::not_run(&case, release, why);
    }
    let checked = match check_guarded(&case, Dev::Cpu, Options::default()) {
        Ok(c) => c,
        Err(crashed) => return ConfirmResult::not_run(&case, release, crashed.verdict.detail),
    };
    let line = match recorded.take(&case, release, timeout) {
        Ok(l) => l,
        Err(e) => return ConfirmResult::not_run(&case, release, e),
    };
    if let Some(why) = line["not_run"].as_str() {
        return ConfirmResult::not_run(&case, release, format!("the 0.2.2 recorder did not finish the case: {why}"));
    }
    let o = crosscheck::outcome_of(&line);
    if o["stage"] == "startup" {
        let why = format!("the rank processes did not start: {}", o["error"]["message"].as_str().unwrap_or("?"));
        return ConfirmResult::not_run(&case, release, why);
    }
    let c = crosscheck::check(&m, &checked.run, &line);
    let diffs = diffs(&c);
    let mut notes = vec![real_line(&line)];
    notes.push(match &c.reference {
        Some(Verdict::AgreeRan(_) | Verdict::AgreeRaised) => {
            "the recorder's plain-torch reference agrees with the model's".into()
        }
        Some(Verdict::Differ(_)) => "the recorder's plain-torch reference differs from the model's".into(),
        Some(Verdict::NotCompared(why) | Verdict::NotModelled(why)) => {
            format!("the recorder's plain-torch reference was not compared: {why}")
        }
        None => "no plain-torch reference recorded".into(),
    });
    let status = if diffs.is_empty() { Status::Agrees } else { Status::Differs };
    ConfirmResult {
        format: CONFIRM_FORMAT,
        file: None,
        release: release.to_string(),
        rules: case.rules.to_string(),
        engine: Some("gloo".into()),
        status,
        diffs,
        ours: checked.judgement.classes(),
        real: None,
        reason: None,
        notes,
        outcome: Some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CASE: &str = r#"{"format": "shardfuzz.case/2",
      "mesh": {"shape": [1, 1, 2], "names": ["dp", "cp", "tp"]},
      "rules": "torch-2.14", "dtype": "f32", "device": "cpu", "data": {"seed": 7, "style": "normal"},
      "subject": {"kind": "moe", "revision": "tt-0.3.0", "backend": "partial_dtensor",
        "parallel": {"dp_replicate": 1, "ep": 2, "sp": true},
        "dims": {"batch": 1, "seq": 4, "model": 8, "hidden": 8, "experts": 4, "top_k": 2, "shared_hidden": 8},
        "router": {"score_func": "softmax", "route_norm": false, "route_scale": 1.0, "groups": null,
                   "force_load_balance": false},
        "load_balance_coeff": 0.001, "backward": true}}"#;

    fn case(edit: &str, to: &str) -> AnyCase {
        crate::subjects::read_case(&CASE.replace(edit, to)).unwrap()
    }

    #[test]
    fn what_does_not_run_says_why() {
        let m = |c: &AnyCase| moe_case(c).unwrap();
        let c = case("", "");
        assert_eq!(skip_reason(&m(&c), Engine::Auto), None);
        let local = skip_reason(&m(&c), Engine::Local).unwrap();
        assert!(local.contains("gloo ranks only"), "{local}");
        let head = skip_reason(&m(&case("tt-0.3.0", "tt-head")), Engine::Auto).unwrap();
        assert!(head.contains("revision tt-head is a torchtitan git commit"), "{head}");
        assert!(head.contains("torchtitan 0.3.0 (tt-0.3.0) and 0.2.2 (tt-0.2.2) only"), "{head}");
        let spmd = skip_reason(&m(&case("partial_dtensor", "spmd_types")), Engine::Auto);
        // Until the spmd_types backend is modelled, the model says so; then it runs.
        assert!(spmd.as_deref().is_none_or(|s| s.contains("does not model")), "{spmd:?}");
        let result = confirm(
            &mut Recorded::default(),
            &case("tt-0.3.0", "tt-head"),
            &"2.14.0".parse().unwrap(),
            Engine::Auto,
            Duration::from_secs(1),
        );
        assert_eq!(result.status, Status::NotRun);
    }

    #[test]
    fn the_recorder_unpacks_once() {
        let a = recorder_dir().unwrap();
        assert!(a.join("moe_recorder/driver.py").exists() && a.join("moe_recorder/rank.py").exists());
        assert_eq!(recorder_dir().unwrap(), a);
        let b = recorder_dir_of(Titan::V022).unwrap();
        assert!(b.join("moe_recorder_022/confirm.py").exists() && b.join("moe_recorder_022/core.py").exists());
        assert_eq!(recorder_dir_of(Titan::V022).unwrap(), b);
        assert_ne!(a, b);
    }

    /// A tt-0.2.2 case on 2 tp ranks, EP on, scores before the experts (`trainer_checks` false:
    /// the layer sharded directly); the export tests' case.
    const CASE_022: &str = include_str!("../../subjects/moe/tests/case_022.json");

    fn case_022(edits: &[(&str, &str)]) -> AnyCase {
        let text = edits.iter().fold(CASE_022.to_string(), |t, (a, b)| t.replace(a, b));
        crate::subjects::read_case(&text).unwrap()
    }

    #[test]
    fn what_the_022_recorder_does_not_run_says_why() {
        let why = |edits: &[(&str, &str)]| skip_reason(&moe_case(&case_022(edits)).unwrap(), Engine::Auto);
        assert_eq!(why(&[]), None);
        assert_eq!(why(&[(r#""ep": 2"#, r#""ep": 1"#)]), None);
        let uneven = why(&[(r#""seq": 4"#, r#""seq": 3"#)]).unwrap();
        assert!(uneven.contains("uneven sequence (seq 3 not divisible by tp 2) aborts the gloo ranks"), "{uneven}");
        let bf16 = why(&[(r#""dtype": "f32""#, r#""dtype": "bf16""#)]).unwrap();
        assert!(bf16.contains("float32 only"), "{bf16}");
        let dp = why(&[("[1, 1, 2]", "[2, 1, 2]")]).unwrap();
        assert!(dp.contains("tp-only mesh (dp = cp = 1), found dp = 2"), "{dp}");
        let trainer =
            why(&[(r#""seq": 4"#, r#""seq": 2"#), (r#""trainer_checks": false"#, r#""trainer_checks": true"#)])
                .unwrap();
        assert!(trainer.contains("parallelize_llama"), "{trainer}");
        let local = skip_reason(&moe_case(&case_022(&[])).unwrap(), Engine::Local).unwrap();
        assert!(local.contains("gloo ranks only"), "{local}");
        // Not run without starting anything.
        let r = confirm(
            &mut Recorded::default(),
            &case_022(&[(r#""seq": 4"#, r#""seq": 3"#)]),
            &"2.14.0".parse().unwrap(),
            Engine::Auto,
            Duration::from_secs(1),
        );
        assert_eq!(r.status, Status::NotRun);
        assert!(r.reason.as_deref().is_some_and(|w| w.contains("uneven sequence")), "{:?}", r.reason);
    }

    /// The real torchtitan 0.2.2 layer on 2 gloo ranks (about 40 s on 2 shared cores, hence
    /// ignored; `cargo test --release -p shardfuzz -- --ignored confirm_022`): one case with
    /// `score_before_experts`, one with EP and shared experts agree with the model, and E not
    /// divisible by ep raises the model's error. Skipped, saying so, without the managed venv
    /// `venv-torchtitan-0.2.2-torch-2.14.0`.
    #[test]
    #[ignore]
    fn confirm_022_runs_the_real_layer() {
        let release: Release = "2.14.0".parse().unwrap();
        let v = moe_venv::locate(Titan::V022, &release);
        if !super::super::venv::Managed::ready(&v) {
            eprintln!("skipped: no torchtitan 0.2.2 venv for torch 2.14.0 ({})", v.python.display());
            return;
        }
        let cases = [
            case_022(&[(r#""ep": 2"#, r#""ep": 1"#)]),
            case_022(&[(r#""shared_hidden": null"#, r#""shared_hidden": 16"#)]),
            case_022(&[(r#""experts": 4"#, r#""experts": 3"#)]),
        ];
        let mut rec = Recorded::default();
        rec.record(&cases, &release, Engine::Auto, Duration::from_secs(120));
        for c in &cases {
            let r = confirm(&mut rec, c, &release, Engine::Auto, Duration::from_secs(120));
            eprintln!("{:?} {:?} {:?} {:?}", r.status, r.notes, r.diffs, r.reason);
            assert_eq!(r.status, Status::Agrees, "{:?} {:?} {:?}", r.notes, r.diffs, r.reason);
        }
    }
}
