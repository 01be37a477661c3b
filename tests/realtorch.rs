//! Real PyTorch through the project's own torch 2.11 venv (`$SHARDFUZZ_VENV`, made by
//! scripts/env.sh): `confirm` with both engines, a worker that crashes or hangs, `export`'s
//! script run in one process and under torchrun, and `nightly --confirm`. The cases are ones
//! whose real outcome is the same on every release (a size-1 mesh axis keeping `Partial` in the
//! contract, local_map's rank-dependent shapes, torchtitan#2416's doubled gradient), so 2.11
//! stands in for the releases the rule sets model; scripts/check-releases runs those.

use dtensor::RuleSet;
use harness::generate::{BackwardMix, GenCommon};
use harness::Subject;
use router::backward::Boundary;
use router::body::Site;
use router::generate::RouterGen;
use router::sharded::sites;
use router::RouterRev;
use serde_json::Value;
use shardfuzz::subjects::{AnyCase, AnyGen, GenConfig, Kind};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A forward reproducer: counts `R` against a `P(sum)` contract kept on a size-1 mesh axis.
const CONTRACT: &str = "corpus/repro/placement_counts_inplace_scatter_torch-2.13_Psum-toRat1.json";
/// Ranks infer different global shapes after local_map's re-wrap: LocalTensorMode cannot hold it.
const RANK_DEPENDENT: &str = "corpus/repro/shape_routing_map_local_map_counts_torch-2.13_rank_dependent.json";

fn shardfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardfuzz"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shardfuzz-realtorch-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo(rel: &str) -> PathBuf {
    crate::root().join(rel)
}

/// The torch 2.11 venv's bin directory (what `confirm --torch 2.11.0` uses too).
fn venv_bin() -> PathBuf {
    let venv = std::env::var_os("SHARDFUZZ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/shardfuzz/venv-torch-2.11.0"));
    venv.join("bin")
}

/// A backward case recorded on real PyTorch: tt-2416's router dx summed twice (TP 2, no EP).
fn backward_case(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("tests/pytorch/backward-findings-t2130.jsonl")).unwrap();
    let line: Value = serde_json::from_str(text.lines().nth(18).unwrap()).unwrap();
    assert_eq!(line["case"]["backward"]["boundary"], "tt-2416");
    assert_eq!(line["backward"]["ok"], true);
    let p = dir.join("backward.json");
    std::fs::write(&p, line["case"].to_string()).unwrap();
    p
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `confirm --torch 2.11.0 --json ARGS FILES`: its exit code and one result per file.
fn confirm(args: &[&str], files: &[&Path]) -> (Option<i32>, Vec<Value>) {
    let o = shardfuzz().args(["confirm", "--torch", "2.11.0", "--json"]).args(args).args(files).output().unwrap();
    let results: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(results.len(), files.len(), "{}", text(&o));
    (o.status.code(), results)
}

/// Our verdict classes for a case (`replay --json`), as `class` or `class:output`.
fn model_classes(file: &Path) -> Vec<String> {
    let o = shardfuzz().args(["replay", "--json", "--once"]).arg(file).output().unwrap();
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).unwrap();
    let mut c: Vec<String> = v["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| match v["output"].as_str() {
            Some(o) => format!("{}:{o}", v["class"].as_str().unwrap()),
            None => v["class"].as_str().unwrap().to_string(),
        })
        .collect();
    c.sort();
    c.dedup();
    c
}

#[test]
fn confirm_runs_forward_and_backward_cases_in_one_process() {
    let dir = tmp("local");
    let bw = backward_case(&dir);
    let (code, r) = confirm(&["--engine", "local"], &[&repo(CONTRACT), &bw, &repo(RANK_DEPENDENT)]);
    for x in &r[..2] {
        assert_eq!(x["status"], "agrees", "{x}");
        assert_eq!(x["engine"], "local");
        assert_eq!(x["outcome"]["pytorch"]["version"].as_str().unwrap().split('+').next(), Some("2.11.0"));
    }
    assert_eq!(r[0]["real"], serde_json::json!(["placement:counts"]), "our oracle on the real outputs");
    assert!(r[1]["outcome"]["backward"]["ok"].as_bool().unwrap(), "{}", r[1]);
    assert!(r[1]["ours"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("grad")));
    // LocalTensorMode cannot hold rank-dependent shapes: forced to it, the case is not run.
    assert_eq!(r[2]["status"], "not_run", "{}", r[2]);
    assert!(r[2]["reason"].as_str().unwrap().contains("LocalTensorMode cannot represent"), "{}", r[2]);
    assert_eq!(code, Some(1));
}

#[test]
fn confirm_runs_one_gloo_process_per_rank() {
    let dir = tmp("gloo");
    let bw = backward_case(&dir);
    let (code, r) = confirm(&["--engine", "gloo"], &[&bw]);
    assert_eq!((r[0]["status"].as_str(), r[0]["engine"].as_str()), (Some("agrees"), Some("gloo")), "{}", r[0]);
    assert_eq!(r[0]["outcome"]["pytorch"]["world"], 2);
    assert!(r[0]["ours"].as_array().unwrap().iter().any(|c| c.as_str().unwrap().starts_with("grad")), "{}", r[0]);
    assert_eq!(code, Some(0));
    // auto: LocalTensorMode first, gloo where it cannot represent the case, and a note says so.
    let (code, r) = confirm(&[], &[&repo(RANK_DEPENDENT)]);
    assert_eq!((r[0]["status"].as_str(), r[0]["engine"].as_str()), (Some("agrees"), Some("gloo")), "{}", r[0]);
    assert!(r[0]["notes"][0].as_str().unwrap().contains("ran on one gloo process per rank"));
    assert_eq!(r[0]["real"], serde_json::json!(["shape:routing_map"]));
    assert_eq!(code, Some(0));
}

#[test]
fn a_worker_that_crashes_or_hangs_loses_only_its_case() {
    let files = [repo(CONTRACT), repo(CONTRACT)];
    let files: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    for (fault, why) in [("crash@0", "died"), ("hang@0", "")] {
        // The timeout must cover a fresh worker's start and one case on a loaded machine.
        let (code, r) = confirm(&["--engine", "local", "--timeout", "30", "--inject-fault", fault], &files);
        assert_eq!(r[0]["status"], "not_run", "{fault}: {}", r[0]);
        assert!(r[0]["reason"].as_str().unwrap().contains(why), "{fault}: {}", r[0]);
        assert_eq!(r[1]["status"], "agrees", "{fault}: the next case runs on a new worker: {}", r[1]);
        assert_eq!(code, Some(1));
    }
}

/// Runs an exported script; returns (its verdict classes line, the model's line it embeds).
fn run_script(cmd: &mut Command) -> (String, String) {
    let o = cmd.output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let line =
        |head: &str| out.lines().find_map(|l| l.strip_prefix(head)).unwrap_or_else(|| panic!("{out}")).to_string();
    (line("verdict classes: "), line("shardfuzz's model: "))
}

/// The number of ranks of a case file's mesh.
fn world(case: &Path) -> usize {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(case).unwrap()).unwrap();
    v["mesh"]["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).product()
}

#[test]
fn exported_scripts_run_in_one_process_and_under_torchrun() {
    let dir = tmp("export");
    let bw = backward_case(&dir);
    // In one process: a forward and a backward case; under torchrun: ranks that disagree on a
    // global shape (what LocalTensorMode cannot hold).
    for (case, torchrun) in [(repo(CONTRACT), false), (bw, false), (repo(RANK_DEPENDENT), true)] {
        let py = dir.join("case.py");
        let o = shardfuzz().arg("export").arg(&case).arg("--pytorch").arg(&py).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let script = std::fs::read_to_string(&py).unwrap();
        assert!(!script.contains("shardfuzz_worker") && script.contains("import torch"));
        let want = model_classes(&case).join(", ");
        assert!(!want.is_empty(), "a case with a divergence");
        let mut cmd = Command::new(venv_bin().join(if torchrun { "torchrun" } else { "python" }));
        if torchrun {
            cmd.args(["--standalone", "--nproc-per-node", &world(&case).to_string()]);
        }
        cmd.arg(&py).current_dir(&dir);
        assert_eq!(run_script(&mut cmd), (want.clone(), want), "{cmd:?} on {}", case.display());
    }
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn nightly_confirm_reports_each_bucket_on_real_pytorch() {
    let out = tmp("nightly");
    let o = shardfuzz()
        .args(["nightly", "--cases", "40", "--seed", "1", "--jobs", "2", "--device", "cpu", "--confirm", "2.11.0"])
        .args(["--subject", "router"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report = json(&out.join("report.json"));
    let buckets = report["buckets"].as_array().unwrap();
    let count = |s: &str| buckets.iter().filter(|b| b["confirm"]["status"] == s).count();
    let f = &report["fidelity"];
    assert_eq!(f["buckets"].as_u64().unwrap() as usize, buckets.len());
    assert_eq!(f["confirmed"].as_u64().unwrap() as usize, count("confirmed"));
    assert_eq!(f["model_bugs"].as_u64().unwrap() as usize, count("differs"));
    assert!(count("confirmed") > 0 && count("confirmed") + count("differs") == buckets.len(), "{f}");
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let line = format!("{} of {} bucket(s) confirmed on real PyTorch", count("confirmed"), buckets.len());
    let header = md.lines().find(|l| l.starts_with("| signature")).unwrap();
    assert!(md.contains(&line) && header.contains("| real PyTorch "), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains(&line) && html.contains(">real PyTorch</th>"));
    // Each bucket's status is what `confirm` says of its reproducer, and its script is beside it.
    for status in ["confirmed", "differs"] {
        let Some(b) = buckets.iter().find(|b| b["confirm"]["status"] == status) else { continue };
        let (_, r) = confirm(&[], &[&out.join(b["repro"].as_str().unwrap())]);
        assert_eq!(r[0]["status"], if status == "confirmed" { "agrees" } else { "differs" }, "{b}");
        if status == "differs" {
            assert!(md.contains(&format!("model bug: `{}`", b["signature"].as_str().unwrap())));
        }
    }
    for b in buckets {
        let py = out.join(b["pytorch"].as_str().unwrap());
        assert_eq!(py.with_extension("json"), out.join(b["repro"].as_str().unwrap()));
        assert!(std::fs::read_to_string(py).unwrap().contains("def main()"));
    }
}

#[test]
fn without_confirm_the_report_has_no_real_pytorch_column() {
    let out = tmp("plain");
    let o = shardfuzz()
        .args(["nightly", "--cases", "12", "--seed", "1", "--jobs", "1", "--device", "cpu", "--subject", "router"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(!md.contains("real PyTorch") && md.contains(".py]("), "{md}");
    assert!(json(&out.join("report.json")).get("fidelity").is_none());
}

#[test]
fn bad_confirm_and_export_input_exits_2_with_one_line() {
    let dir = tmp("bad");
    let missing = dir.join("missing.json");
    let m = missing.to_str().unwrap();
    let unwritable = dir.join("no/such/dir/x.py");
    for args in [
        vec!["confirm", m],
        vec!["confirm", "--torch", "2.13", CONTRACT],
        vec!["confirm", "--engine", "tpu", CONTRACT],
        vec!["confirm", "--timeout", "0", CONTRACT],
        vec!["nightly", "--cases", "1", "--out", m, "--confirm", "latest"],
        vec!["export", m, "--pytorch", "-"],
        vec!["export", CONTRACT, "--pytorch", unwritable.to_str().unwrap()],
    ] {
        let o = shardfuzz().args(&args).current_dir(crate::root()).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(err.lines().any(|l| l.starts_with("shardfuzz:") || l.starts_with("error:")), "{args:?}: {err}");
    }
}

/// The worker distributes inputs as real `distribute_tensor` does, Partial placements included
/// (every rank's piece compared on a 2 x 3 mesh).
#[test]
fn the_worker_lays_out_partial_inputs_as_distribute_tensor_does() {
    let o = Command::new(venv_bin().join("python"))
        .arg(repo("tests/pytorch/worker_partition.py"))
        .env("PYTHONPATH", repo("python"))
        .output()
        .unwrap();
    assert!(o.status.success() && text(&o).contains("local_piece matches distribute_tensor"), "{}", text(&o));
}

/// The case of `rev` x `rules` x `boundary` (none: forward only) with expert groups on, so both
/// scatter sites are written.
fn combination(rev: RouterRev, rules: RuleSet, boundary: Option<Boundary>) -> AnyCase {
    let backward = if boundary.is_some() { BackwardMix::Only } else { BackwardMix::Off };
    let common = GenCommon { rules: vec![rules], backward, ..GenCommon::default() };
    let boundaries = boundary.map(|b| vec![b]).unwrap_or_default();
    let router = RouterGen { routers: vec![rev], boundaries, ..RouterGen::default() };
    let cfg = GenConfig { common, subjects: AnyGen { subjects: vec![Kind::Router], router, ..AnyGen::default() } };
    (0..2000).map(|i| cfg.nth(3, i)).find(|c| crate::spec(c).router.groups.is_some()).expect("a case with groups")
}

/// The statement the exported script writes for a scatter site.
fn site_statement(site: Site, var: &str) -> String {
    match site {
        Site::InPlace => format!("{var}.scatter_("),
        Site::OutOfPlace => format!("{var} = {var}.scatter("),
        Site::LocalMap => format!("{var} = scatter_in_local_map("),
    }
}

/// Every (router revision x rule set x boundary) reaches the exporter and the Python worker from
/// the router's one table of sites and the rule sets' one table of releases: the script writes
/// each site as the revision does (no fallback arm), and the worker reads the request's sites,
/// quiet sites and release as sent.
#[test]
fn every_revision_rule_set_and_boundary_reaches_export_and_the_worker_from_one_table() {
    let mut sent = Vec::new();
    for &rev in RouterRev::ALL {
        for &rules in RuleSet::ALL {
            for boundary in std::iter::once(None).chain(Boundary::ALL.iter().copied().map(Some)) {
                let case = combination(rev, rules, boundary);
                let s = crate::spec(&case);
                assert_eq!((s.revision.router, case.rules), (rev, rules));
                assert_eq!(s.backward.as_ref().map(|b| b.boundary), boundary);
                let script = shardfuzz::export::script(&case);
                let (group_mask, routing_map) = sites(rev);
                for (site, var) in [(group_mask, "group_mask"), (routing_map, "routing_map")] {
                    let want = site_statement(site, var);
                    assert!(script.contains(&want), "{rev} {rules} {boundary:?}: no `{want}` in the script");
                }
                let tables = case.subject.worker_tables(&case);
                assert_eq!(tables["release"], rules.release(), "{rules}");
                sent.push(serde_json::json!({ "case": case.to_value(), "tables": tables }));
            }
        }
    }
    let dir = tmp("tables");
    std::fs::write(dir.join("requests.json"), serde_json::to_string(&sent).unwrap()).unwrap();
    let read = "import json, sys\nfrom shardfuzz_worker import common\n\
                for r in json.load(open(sys.argv[1])):\n    v = common.view(r['case'], r['tables'])['revision']\n\
                \x20   print(json.dumps([list(v['sites']), v['quiet_sites'], v['release']]))\n";
    let o = Command::new(venv_bin().join("python"))
        .args(["-c", read, dir.join("requests.json").to_str().unwrap()])
        .env("PYTHONPATH", repo("python"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let seen: Vec<Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(seen.len(), sent.len());
    for (req, v) in sent.iter().zip(&seen) {
        let t = &req["tables"];
        let want =
            serde_json::json!([[t["sites"]["group_mask"], t["sites"]["routing_map"]], t["quiet_sites"], t["release"]]);
        assert_eq!(v, &want, "{}", req["case"]["subject"]["revision"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Every upstream reproducer (docs/upstream/*.py) behaves on the project's torch as the status
/// table of docs/upstream/README.md says (reproduces or not; the torchtitan one is skipped
/// without torchtitan). scripts/upstream-check does the comparison; other releases: run it with
/// their venv's python.
#[test]
fn upstream_reproducers_behave_as_their_reports_say() {
    let out = Command::new(repo("scripts/upstream-check")).arg(venv_bin().join("python")).output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "upstream-check failed:\n{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.contains(" 0 failed") && !last.contains(": 0 passed"), "{last}");
}
