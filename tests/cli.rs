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
        vec!["merge", "--help"],
        vec!["import", "--help"],
        vec!["confirm", "--help"],
        vec!["export", "--help"],
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
    // Sizes that once wrapped, aborted or ran for minutes: refused before anything is allocated.
    let sized = |name: &'static str, f: &dyn Fn(&mut serde_json::Value), needle: &'static str| {
        let mut c = case.clone();
        c.as_object_mut().unwrap().remove("tensors");
        f(&mut c);
        (name, c.to_string(), needle)
    };
    let two = |a: u64, b: u64| {
        move |c: &mut serde_json::Value| {
            c["mesh"] = serde_json::json!({"shape": [a, b], "names": ["dp", "tp"]});
            c["layout"]["x"] = serde_json::json!(["R", "S(1)"]);
            c["layout"]["gate"] = serde_json::json!(["R", "R"]);
            c["layout"]["counts_contract"] = serde_json::json!(["R", "P(sum)"]);
        }
    };
    let variants = variants.into_iter().chain([
        sized("ranks-wrap", &two(1 << 32, 1 << 32), "mesh.shape"),
        sized("ranks-hang", &two(65536, 65536), "mesh.shape"),
        sized("ranks-alloc", &|c| c["mesh"]["shape"] = serde_json::json!([8589934592u64]), "mesh.shape"),
        sized("seq-1e12", &|c| c["dims"]["seq"] = serde_json::json!(1_000_000_000_000u64), "dims: x has"),
        sized(
            "tokens-2^80",
            &|c| {
                c["dims"]["batch"] = serde_json::json!(1u64 << 40);
                c["dims"]["seq"] = serde_json::json!(1u64 << 40);
            },
            "overflows",
        ),
        sized("model-1e9", &|c| c["dims"]["model"] = serde_json::json!(1_000_000_000u64), "--max-elements"),
        // distribute_tensor partitions P(sum|avg|max|min) inputs but has no inverse for product,
        // and takes one reduce op per placement list (sum with avg excepted).
        sized("partial-product", &|c| c["layout"]["x"] = serde_json::json!(["P(product)"]), "layout.x[0]: P(product)"),
        sized(
            "mixed-partials",
            &|c| {
                two(2, 2)(c);
                c["layout"]["gate"] = serde_json::json!(["P(max)", "P(min)"]);
            },
            "layout.gate: [P(max), P(min)] mixes Partial reduce ops",
        ),
    ]);
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
    // The limit is a flag.
    let g = crate::root().join("tests/golden/02_tp2_s1_inplace_torch213.outcome.json");
    let o = run(&["replay", "--max-elements", "4", g.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("more than the limit of 4 per tensor"), "{}", stderr(&o));
    assert_eq!(run(&["replay", "--once", "--max-elements", "100000", g.to_str().unwrap()]).status.code(), Some(0));
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

/// Every number path of a case (tensor values: only the first of each tensor).
fn number_paths(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        serde_json::Value::Number(_) => out.push(path.clone()),
        serde_json::Value::Array(a) => {
            let n = if path.last().is_some_and(|k| k == "values") { a.len().min(1) } else { a.len() };
            for (i, x) in a.iter().take(n).enumerate() {
                path.push(i.to_string());
                number_paths(x, path, out);
                path.pop();
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                number_paths(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut serde_json::Value, path: &[String]) -> &'a mut serde_json::Value {
    path.iter().fold(v, |v, k| match v {
        serde_json::Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        v => &mut v[k.as_str()],
    })
}

/// A valid backward case with every optional part: groups, both biases, tensors inline.
fn rich_case() -> serde_json::Value {
    use harness::generate::{BackwardMix, GenCommon};
    use harness::stream::nth;
    let common = GenCommon { backward: BackwardMix::Only, ..GenCommon::default() };
    let c: crate::RouterCase = (0..5000)
        .map(|i| nth::<::router::RouterSpec>(2, i, &common, &router::generate::RouterGen::default()))
        .find(|c| {
            let r = &c.subject.router;
            r.groups.is_some() && r.expert_bias && r.gate_bias && c.ranks() > 1
        })
        .expect("a case with groups and both biases");
    serde_json::from_str(&harness::data::with_inline(&c).to_json()).unwrap()
}

#[test]
fn any_number_of_a_case_set_to_an_extreme_is_handled_cleanly() {
    let case = rich_case();
    let mut paths = Vec::new();
    number_paths(&case, &mut Vec::new(), &mut paths);
    assert!(paths.len() > 20, "{} numbers", paths.len());
    let extremes = ["0", "-1", "2147483648", "4294967296", "9223372036854775808", "1000000000000"];
    let mut jobs = Vec::new();
    for p in &paths {
        for x in extremes {
            let mut c = case.clone();
            *at(&mut c, p) = serde_json::from_str(x).unwrap();
            jobs.push((format!("{}={x}", p.join(".")), c.to_string()));
        }
    }
    let check = |(name, text): &(String, String)| -> Option<String> {
        let f = write(&format!("extreme-{}", name.replace(['.', '='], "_")), text);
        let start = std::time::Instant::now();
        let o = run(&["replay", "--once", f.to_str().unwrap()]);
        std::fs::remove_file(&f).ok();
        let (took, e) = (start.elapsed(), stderr(&o));
        let clear = o.status.code() != Some(2) || (e.starts_with("shardfuzz: ") && e.trim_end().lines().count() == 1);
        let fine = matches!(o.status.code(), Some(0..=2)) && clear && !e.contains("panicked");
        // 120 s is a hang guard (a huge allocation or loop), not a speed check.
        (!fine || took.as_secs() >= 120).then(|| format!("{name}: exit {:?} in {took:?}: {e}", o.status.code()))
    };
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = jobs.chunks(jobs.len().div_ceil(4)).collect();
        let handles: Vec<_> =
            chunks.into_iter().map(|c| s.spawn(move || c.iter().filter_map(check).collect::<Vec<_>>())).collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert!(failures.is_empty(), "{} of {} mutations:\n{}", failures.len(), jobs.len(), failures.join("\n"));
}

#[test]
fn a_panic_inside_a_case_is_a_crash_verdict_and_the_run_goes_on() {
    let dir = std::env::temp_dir().join(format!("shardfuzz-cli-{}-panic", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let save = dir.to_str().unwrap();
    let args = ["run", "--seed", "1", "--cases", "30", "--device", "cpu", "--inject-fault", "panic@7", "--save", save];
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.lines().any(|l| l.starts_with("case 7 seed 1: crash:") && l.contains(":panic: ")), "{out}");
    assert!(stderr(&o).contains("shardfuzz: 30 cases in"), "the run went on: {}", stderr(&o));
    // The crashed case is on disk, inputs inline, and replays (without the injected panic).
    let kept: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("crash-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let text = std::fs::read_to_string(&kept[0]).unwrap();
    assert!(text.contains("\"tensors\""));
    assert!(matches!(run(&["replay", "--once", kept[0].to_str().unwrap()]).status.code(), Some(0 | 1)));
    std::fs::remove_dir_all(&dir).ok();
}

/// A closed pipe ends `run` quietly: no panic, the usual SIGPIPE status (or 0).
#[test]
fn run_into_a_closed_pipe_ends_without_a_panic() {
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; '{}' run --cases 5000 --device cpu | head -3 >/dev/null; echo \"status ${{PIPESTATUS[0]}}\"",
            env!("CARGO_BIN_EXE_shardfuzz")
        ))
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
    assert!(matches!(out.trim(), "status 141" | "status 0"), "{out} {err}");
}

/// `nightly` twice into one --out: the second run is refused with one line and exit 2; with
/// --force the directory holds only the second run. `replay` takes the campaign directory and
/// says a report is not a case.
#[test]
fn nightly_refuses_a_used_out_unless_forced_and_replay_takes_directories() {
    let out = std::env::temp_dir().join(format!("shardfuzz-cli-out-{}", std::process::id()));
    std::fs::remove_dir_all(&out).ok();
    let o = out.to_str().unwrap();
    let night = |seed: &str, force: bool| {
        let mut args = vec!["nightly", "--cases", "12", "--seed", seed, "--jobs", "1", "--device", "cpu"];
        args.extend(["--no-shrink", "--out", o]);
        if force {
            args.push("--force");
        }
        run(&args)
    };
    assert!(matches!(night("1", false).status.code(), Some(0 | 1)));
    let again = night("1", false);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(stderr(&again).lines().count(), 1, "one line: {}", stderr(&again));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
    std::fs::write(out.join("cases/stale.json"), "{}").unwrap();
    assert!(matches!(night("2", true).status.code(), Some(0 | 1)));
    assert!(!out.join("cases/stale.json").exists(), "--force clears the earlier run");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(r["seed"], 2);
    let rep = run(&["replay", out.join("report.json").to_str().unwrap()]);
    assert_eq!(rep.status.code(), Some(2));
    assert!(stderr(&rep).contains("is a campaign report, not a case"), "{}", stderr(&rep));
    let dir = run(&["replay", "--once", o]);
    assert!(matches!(dir.status.code(), Some(0 | 1)), "{}", stderr(&dir));
    std::fs::remove_dir_all(&out).ok();
}

/// The same flag names across subcommands; the old names still work (hidden).
#[test]
fn old_flag_names_stay_as_hidden_aliases() {
    let dir = std::env::temp_dir().join(format!("shardfuzz-cli-gen-{}", std::process::id()));
    for flag in ["--cases", "--count"] {
        let o = run(&["gen", "--seed", "1", flag, "2", "--device", "cpu", "--out", dir.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{flag}: {}", stderr(&o));
    }
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
    std::fs::remove_dir_all(&dir).ok();
    let help = String::from_utf8_lossy(&run(&["shrink", "--help"]).stdout).into_owned();
    assert!(help.contains("--shrink-tries") && !help.contains("--max-tries"), "{help}");
    let help = String::from_utf8_lossy(&run(&["bench", "--help"]).stdout).into_owned();
    assert!(help.contains("--size ") && !help.contains("--sizes"), "{help}");
}

/// `bench --soak` runs a short campaign and prints one row per interval and the memory verdicts.
#[test]
fn a_short_soak_prints_its_table() {
    let out = std::env::temp_dir().join(format!("shardfuzz-cli-soak-{}", std::process::id()));
    let o = run(&[
        "bench",
        "--soak",
        "3s",
        "--soak-every",
        "1s",
        "--subject",
        "router",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let header = "| minute | cases | cases/s | RSS MiB | anonymous MiB | heap used MiB | heap free MiB | open files |";
    assert!(text.contains(header), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| minute")).collect();
    assert!((2..=4).contains(&rows.len()), "{text}");
    for r in &rows {
        let cells: Vec<&str> = r.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 8, "{r}");
        assert!(cells.iter().all(|c| c.parse::<f64>().is_ok()), "{r}");
    }
    assert!(text.contains("memory: RSS ") && text.contains("memory: anonymous "), "{text}");
    assert!(out.join("soak.md").exists() && !out.join("soak-scratch").exists());
    std::fs::remove_dir_all(&out).ok();
}
