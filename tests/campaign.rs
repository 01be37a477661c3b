//! Campaigns end to end through the binary: crash isolation, determinism, reports.

use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn shardfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardfuzz"))
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("shardfuzz-test-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn a_worker_crash_loses_only_its_case_and_is_reported() {
    let out = tmp("crash");
    let st = shardfuzz()
        .args([
            "nightly",
            "--cases",
            "40",
            "--seed",
            "3",
            "--jobs",
            "2",
            "--no-shrink",
            "--device",
            "cpu",
            "--inject-fault",
            "abort@7",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "a crash is a divergence");
    let r = report(&out);
    assert_eq!(r["cases"], 40, "every case ran, the crashed one included");
    let crash = r["buckets"].as_array().unwrap().iter().find(|b| b["class"] == "crash").expect("a crash bucket");
    assert_eq!(crash["first_index"], 7);
    assert_eq!(crash["count"], 1);
    // The crashing case is kept as a replayable file.
    let file = out.join(crash["first_case"].as_str().unwrap());
    let st = shardfuzz().args(["replay", "--once"]).arg(&file).output().unwrap();
    assert!(st.status.code() == Some(0) || st.status.code() == Some(1), "the reproducer replays: {st:?}");
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("crash"));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_hanging_case_times_out_and_the_campaign_goes_on() {
    let out = tmp("hang");
    let st = shardfuzz()
        .args([
            "nightly",
            "--cases",
            "12",
            "--seed",
            "3",
            "--jobs",
            "1",
            "--no-shrink",
            "--device",
            "cpu",
            "--per-case-timeout",
            "6s",
            "--inject-fault",
            "hang@4",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["cases"], 12);
    assert!(r["buckets"].as_array().unwrap().iter().any(|b| b["class"] == "timeout" && b["first_index"] == 4));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn same_seed_and_count_give_the_same_report_whatever_the_worker_count() {
    let (a, b) = (tmp("det-a"), tmp("det-b"));
    for (dir, jobs) in [(&a, "1"), (&b, "2")] {
        let st = shardfuzz()
            .args([
                "nightly",
                "--cases",
                "150",
                "--seed",
                "11",
                "--jobs",
                jobs,
                "--shrink-tries",
                "40",
                "--device",
                "cpu",
                "--out",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.code() == Some(0) || st.code() == Some(1));
    }
    let strip = |mut v: Value| {
        v.as_object_mut().unwrap().remove("timing");
        v.as_object_mut().unwrap().remove("jobs");
        for b in v["buckets"].as_array_mut().unwrap() {
            if let Some(s) = b.get_mut("shrink").and_then(|s| s.as_object_mut()) {
                s.remove("ms");
            }
        }
        v
    };
    let (ra, rb) = (strip(report(&a)), strip(report(&b)));
    assert!(ra["buckets"].as_array().unwrap().len() > 3, "the run should find several buckets");
    assert_eq!(ra, rb);
    // Reproducers are byte-identical too.
    for bucket in ra["buckets"].as_array().unwrap() {
        if let Some(r) = bucket["repro"].as_str() {
            assert_eq!(std::fs::read(a.join(r)).unwrap(), std::fs::read(b.join(r)).unwrap(), "{r}");
        }
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn a_backward_campaign_finds_2387_and_4054_and_shrinks_them_to_two_ranks() {
    let out = tmp("backward");
    let st = shardfuzz()
        .args(["nightly", "--cases", "120", "--seed", "4", "--jobs", "2", "--shrink-tries", "300", "--device", "cpu"])
        .args(["--backward", "only", "--boundary", "tt-pre2416,tt-3654", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1), "the buggy revisions diverge");
    let r = report(&out);
    for bug in ["#2387", "#4054"] {
        let buckets: Vec<&Value> = r["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["known"].as_array().is_some_and(|k| k.iter().any(|n| n.as_str().unwrap().contains(bug))))
            .collect();
        assert!(!buckets.is_empty(), "no bucket of {bug}");
        for b in buckets {
            let ranks = b["shrink"]["ranks"].as_u64().expect("shrunk");
            assert!(ranks <= 2, "{bug}: {} shrank to {ranks} ranks", b["signature"]);
            let file = out.join(b["repro"].as_str().unwrap());
            let replay = shardfuzz().args(["replay", "--once"]).arg(&file).output().unwrap();
            let text = String::from_utf8_lossy(&replay.stdout);
            assert!(text.contains(b["signature"].as_str().unwrap()), "the reproducer replays its signature: {text}");
        }
    }
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_panic_in_a_worker_is_a_crash_bucket_and_the_worker_lives_on() {
    let out = tmp("panic");
    let st = shardfuzz()
        .args(["nightly", "--cases", "30", "--seed", "3", "--jobs", "1", "--no-shrink", "--device", "cpu"])
        .args(["--inject-fault", "panic@5", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(1));
    let r = report(&out);
    assert_eq!(r["cases"], 30);
    let crash = r["buckets"].as_array().unwrap().iter().find(|b| b["class"] == "crash").expect("a crash bucket");
    assert!(crash["signature"].as_str().unwrap().ends_with(":panic"), "{}", crash["signature"]);
    assert_eq!(crash["first_index"], 5);
    assert!(out.join(crash["first_case"].as_str().unwrap()).exists());
    std::fs::remove_dir_all(&out).ok();
}
