//! `shardfuzz bench --versus-dtensor X.Y.Z`: shardfuzz against real PyTorch DTensor on the same
//! cases, per case. The real side is what one would otherwise script: in one Python process
//! (torch X.Y.Z from the venv `confirm` manages, one intra-op thread), every rank under a fake
//! process group and LocalTensorMode, the real router revision run sharded on each case and once
//! unsharded (the reference), nothing compared. The shardfuzz side is `shardfuzz replay --once`
//! of the same case files in one process: both programs and every oracle.
//!
//! Start-up (importing torch, loading libtorch) is removed by timing one process that runs the
//! first case only and one that runs all N: per case = (time(N) - time(1)) / (N - 1). The time
//! is the process's CPU time (user + system, from `getrusage` of the waited child), which a
//! shared machine disturbs far less than wall time. Each process runs `repeat` times and the
//! least time counts (other load only adds to it).

use crate::confirm::{case_for, venv, worker, Engine, Release};
use crate::subjects::{AnySpec, GenConfig, Kind};
use dtensor::device::Dev;
use harness::generate::{BackwardMix, SizeClass};
use harness::subject::Subject;
use harness::{check_guarded, Options};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The real side's driver: runs the first `n` requests of a JSON-lines file through the
/// worker package's local engine and reference, and says how long the loop took.
const DRIVER: &str = r#"
import json, os, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch
torch.set_num_threads(1)
from shardfuzz_worker import common, forward, serve
path, n = sys.argv[1], int(sys.argv[2])
reqs = [json.loads(l) for l in open(path) if l.strip()][:n]
t = time.process_time()
unrepresentable = 0
for r in reqs:
    case = common.view(r["case"], r.get("tables"))
    try:
        serve.run(case, "forward", "local", [])
    except common.CaseError:
        unrepresentable += 1
    forward.reference(case)
print(json.dumps({"cases": len(reqs), "loop_s": time.process_time() - t, "unrepresentable": unrepresentable, "torch": torch.__version__}))
"#;

#[derive(Clone, Debug, Serialize)]
pub struct Versus {
    pub release: String,
    pub torch: String,
    pub cases: usize,
    /// Of the cases, how many have a 1-D and a 2-D mesh.
    pub mesh_1d: usize,
    pub mesh_2d: usize,
    /// Cases the real side's LocalTensorMode could not hold (run, raised, counted).
    pub unrepresentable: u64,
    /// Least process CPU time for 1 case and for all, seconds.
    pub real_s: (f64, f64),
    pub ours_s: (f64, f64),
    /// Per case, start-up removed, microseconds.
    pub real_us: f64,
    pub ours_us: f64,
    /// The real side's own loop CPU time per case (inside its process, after imports).
    pub real_loop_us: f64,
    pub ratio: f64,
}

/// What `--versus-dtensor` runs.
pub struct VersusSettings {
    pub release: Release,
    pub cases: usize,
    pub repeat: usize,
    pub seed: u64,
}

/// Router forward cases of the default generator on 1-D and 2-D meshes that shardfuzz runs
/// without a crash, as `confirm` sends them (inputs inline, the release's rule set).
fn cases(s: &VersusSettings) -> Vec<(crate::subjects::AnyCase, serde_json::Value)> {
    let mut cfg = GenConfig::of_subject(Kind::Router);
    (cfg.common.size, cfg.common.device, cfg.common.backward) = (SizeClass::Small, Dev::Cpu, BackwardMix::Off);
    let mut out = Vec::new();
    let mut i = 0u64;
    while out.len() < s.cases && i < 100 * s.cases as u64 {
        let case = case_for(&cfg.nth(s.seed, i), &s.release);
        i += 1;
        if !matches!(case.subject, AnySpec::Router(_)) || !(1..=2).contains(&case.mesh.shape.len()) {
            continue;
        }
        let Ok(checked) = check_guarded(&case, Dev::Cpu, Options::default()) else { continue };
        let sent = serde_json::to_value(checked.outcome().case).expect("a case is JSON");
        let tables = case.subject.worker_tables(&case);
        out.push((case, serde_json::json!({ "case": sent, "engine": Engine::Local, "tables": tables })));
    }
    out
}

fn fastest(repeat: usize, mut f: impl FnMut() -> anyhow::Result<f64>) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeat.max(1) {
        best = best.min(f()?);
    }
    Ok(best)
}

/// CPU seconds (user + system) of the children this process has waited for.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Runs the driver on the first `n` requests: (process CPU seconds, the driver's report).
fn real_run(python: &Path, requests: &Path, n: usize) -> anyhow::Result<(f64, serde_json::Value)> {
    let pkg = worker::package_dir()?;
    let t = children_cpu_s();
    let out = Command::new(python)
        .args(["-c", DRIVER])
        .arg(requests)
        .arg(n.to_string())
        .env("PYTHONPATH", &pkg)
        .env("OMP_NUM_THREADS", "1")
        .stderr(Stdio::null())
        .output()?;
    let secs = children_cpu_s() - t;
    anyhow::ensure!(out.status.success(), "the real-DTensor driver failed ({})", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("{}");
    Ok((secs, serde_json::from_str(last)?))
}

/// `shardfuzz replay --once` of `files` in a fresh process: CPU seconds.
fn our_run(files: &[PathBuf]) -> anyhow::Result<f64> {
    let exe = std::env::current_exe()?;
    let t = children_cpu_s();
    let status = Command::new(exe)
        .args(["replay", "--once", "--device", "cpu"])
        .args(files)
        .stdout(Stdio::null())
        .env("OMP_NUM_THREADS", "1")
        .status()?;
    let secs = children_cpu_s() - t;
    // Exit 1 means divergences (expected on fuzzer cases); anything else is a failure.
    anyhow::ensure!(matches!(status.code(), Some(0 | 1)), "shardfuzz replay failed ({status})");
    Ok(secs)
}

/// Measures both sides on the same cases; progress on stderr.
pub fn versus(s: &VersusSettings, scratch: &Path) -> anyhow::Result<Versus> {
    anyhow::ensure!(s.cases >= 2, "--versus-cases must be at least 2");
    let v = venv::ensure(&s.release)?;
    let cases = cases(s);
    anyhow::ensure!(cases.len() >= 2, "too few router cases generated");
    let dir = scratch.join("versus");
    std::fs::create_dir_all(&dir)?;
    let requests = dir.join("requests.jsonl");
    let mut lines = String::new();
    let mut files = Vec::new();
    for (k, (_, req)) in cases.iter().enumerate() {
        lines.push_str(&(serde_json::to_string(req)? + "\n"));
        let f = dir.join(format!("case-{k:05}.json"));
        std::fs::write(&f, serde_json::to_string(&req["case"])?)?;
        files.push(f);
    }
    std::fs::write(&requests, lines)?;
    let n = cases.len();
    eprintln!("bench: versus real DTensor {}: {n} cases, {} run(s) per side", s.release, s.repeat);
    let mut report = serde_json::Value::Null;
    let real_1 = fastest(s.repeat, || real_run(&v.python, &requests, 1).map(|r| r.0))?;
    let real_n = fastest(s.repeat, || {
        let (secs, r) = real_run(&v.python, &requests, n)?;
        report = r;
        Ok(secs)
    })?;
    eprintln!("bench: real DTensor: 1 case {real_1:.2} s, {n} cases {real_n:.2} s");
    let ours_1 = fastest(s.repeat, || our_run(&files[..1]))?;
    let ours_n = fastest(s.repeat, || our_run(&files))?;
    eprintln!("bench: shardfuzz: 1 case {ours_1:.3} s, {n} cases {ours_n:.3} s");
    std::fs::remove_dir_all(&dir).ok();
    let per = |a: f64, b: f64| (b - a).max(0.0) / (n - 1) as f64 * 1e6;
    let (real_us, ours_us) = (per(real_1, real_n), per(ours_1, ours_n));
    let dims = |d: usize| cases.iter().filter(|(c, _)| c.mesh.shape.len() == d).count();
    Ok(Versus {
        release: s.release.to_string(),
        torch: report["torch"].as_str().unwrap_or("?").to_string(),
        cases: n,
        mesh_1d: dims(1),
        mesh_2d: dims(2),
        unrepresentable: report["unrepresentable"].as_u64().unwrap_or(0),
        real_s: (real_1, real_n),
        ours_s: (ours_1, ours_n),
        real_us,
        ours_us,
        real_loop_us: report["loop_s"].as_f64().unwrap_or(0.0) / n as f64 * 1e6,
        ratio: real_us / ours_us.max(1e-9),
    })
}

impl Versus {
    pub fn markdown(&self) -> String {
        let rows = vec![
            vec![
                format!("real DTensor {} (LocalTensorMode)", self.torch),
                format!("{:.2}", self.real_s.0),
                format!("{:.2}", self.real_s.1),
                format!("{:.0}", self.real_us),
            ],
            vec![
                "shardfuzz (replay --once)".into(),
                format!("{:.3}", self.ours_s.0),
                format!("{:.3}", self.ours_s.1),
                format!("{:.0}", self.ours_us),
            ],
        ];
        let n = self.cases;
        let header = ["side", "1 case, CPU s", &format!("{n} cases, CPU s"), "per case µs (start-up removed)"];
        format!(
            "## Versus real DTensor\n\n{n} router forward cases of the default generator ({} on 1-D meshes, {} on 2-D; \
             {} the real side's LocalTensorMode could not hold), one process per side, CPU time (user + system) of \
             each process, the least of the runs; per case = (time for {n} - time for 1) / {}. The real side runs the sharded router and the reference only, compares nothing \
             (its own loop: {:.0} µs per case); shardfuzz runs both and every oracle.\n\n{}\n\n\
             {}\n",
            self.mesh_1d,
            self.mesh_2d,
            self.unrepresentable,
            n - 1,
            self.real_loop_us,
            crate::report::md_table(&header, &rows),
            if self.ours_us > 0.0 {
                format!("shardfuzz is {:.0}x faster per case.", self.ratio)
            } else {
                "shardfuzz's per-case time was lost in its start-up's noise: run more cases.".into()
            }
        )
    }
}
