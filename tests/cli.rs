//! The command line: help everywhere, exit 2 with one clear line on bad input, never a panic.

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shardfuzz")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_command_has_help() {
    for cmd in [
        vec!["--help"],
        vec!["doctor", "--help"],
        vec!["replay", "--help"],
        vec!["gen", "--help"],
        vec!["run", "--help"],
        vec!["nightly", "--help"],
        vec!["shrink", "--help"],
        vec!["report", "--help"],
        vec!["import", "--help"],
    ] {
        let o = run(&cmd);
        assert_eq!(o.status.code(), Some(0), "{cmd:?}: {}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains("Usage"), "{cmd:?}");
    }
}

#[test]
fn unknown_flags_and_commands_exit_2() {
    for cmd in [
        vec!["--bogus"],
        vec!["replay", "--bogus", "x.json"],
        vec!["frobnicate"],
        vec!["run", "--time", "5x"],
        vec!["run", "--device", "tpu"],
    ] {
        let o = run(&cmd);
        assert_eq!(o.status.code(), Some(2), "{cmd:?}");
        assert!(!stderr(&o).contains("panicked"), "{cmd:?}");
    }
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("shardfuzz-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn bad_case_files_exit_2_with_one_clear_line() {
    let golden =
        std::fs::read_to_string(crate::root().join("tests/golden/02_tp2_s1_inplace_torch213.outcome.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&golden).unwrap();
    let case = v["case"].clone();
    let variants: Vec<(&str, String, &str)> = vec![
        ("malformed", "{ not json".into(), "invalid JSON"),
        (
            "unknown-field",
            {
                let mut c = case.clone();
                c["mesh"]["shapes"] = serde_json::json!([2]);
                c.to_string()
            },
            "unknown field `shapes`",
        ),
        (
            "bad-placement",
            {
                let mut c = case.clone();
                c["layout"]["x"] = serde_json::json!(["Shard(1)"]);
                c.to_string()
            },
            "bad placement",
        ),
        (
            "wrong-count",
            {
                let mut c = case.clone();
                c["layout"]["x"] = serde_json::json!(["S(1)", "R"]);
                c.to_string()
            },
            "layout.x",
        ),
        (
            "bad-topk",
            {
                let mut c = case.clone();
                c["dims"]["top_k"] = serde_json::json!(9);
                c.to_string()
            },
            "dims.top_k",
        ),
        (
            "zero-mesh",
            {
                let mut c = case.clone();
                c["mesh"]["shape"] = serde_json::json!([0]);
                c.to_string()
            },
            "mesh",
        ),
        (
            "bad-tensor",
            {
                let mut c = case.clone();
                c["tensors"]["x"]["shape"] = serde_json::json!([2, 4, 15]);
                c.to_string()
            },
            "tensors.x.shape",
        ),
        (
            "bad-dim",
            {
                let mut c = case.clone();
                c["layout"]["gate"] = serde_json::json!(["S(2)"]);
                c.to_string()
            },
            "layout.gate[0]",
        ),
        (
            "bad-groups",
            {
                let mut c = case.clone();
                c["router"]["groups"] = serde_json::json!({"num_groups": 3, "num_limited": 1});
                c.to_string()
            },
            "router.groups.num_groups",
        ),
    ];
    for (name, text, needle) in variants {
        let p = write(name, &text);
        let o = run(&["replay", p.to_str().unwrap()]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {e}");
        assert!(e.contains(needle), "{name}: {e}");
        assert!(e.starts_with("shardfuzz: "), "{name}: {e}");
        assert!(!e.contains("panicked"), "{name}: {e}");
        std::fs::remove_file(p).ok();
    }
    let o = run(&["replay", "/nonexistent/case.json"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn replay_exit_codes_and_json_round_trip() {
    let dir = crate::root().join("tests/golden/").display().to_string();
    let o = run(&["replay", "--once", &format!("{dir}02_tp2_s1_inplace_torch213.outcome.json")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = run(&["replay", "--once", "--json", &format!("{dir}01_tp2_s1_inplace_torch212.outcome.json")]);
    assert_eq!(o.status.code(), Some(1));
    // The printed outcome's case replays to the same verdicts.
    let p = write("roundtrip.json", &String::from_utf8_lossy(&o.stdout));
    let again = run(&["replay", "--once", "--json", p.to_str().unwrap()]);
    let a: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let b: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(a["verdicts"], b["verdicts"]);
    assert_eq!(a["case"], b["case"]);
    std::fs::remove_file(p).ok();
}
