//! Scale-out and the HTML report through the binary: N shards merged give one run's report,
//! merging is order-independent and idempotent, a killed campaign still reports, and
//! report.html is well-formed with every link resolving.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn shardfuzz() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shardfuzz"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("shardfuzz-test-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&d).ok();
    d
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

fn read(p: impl AsRef<Path>) -> String {
    std::fs::read_to_string(p.as_ref()).unwrap_or_else(|e| panic!("{}: {e}", p.as_ref().display()))
}

/// The first line where two texts differ, for a readable failure.
fn first_difference(a: &str, b: &str) -> Option<(usize, String, String)> {
    let (mut la, mut lb) = (a.lines(), b.lines());
    for i in 1.. {
        match (la.next(), lb.next()) {
            (None, None) => return None,
            (x, y) if x != y => return Some((i, x.unwrap_or("").to_string(), y.unwrap_or("").to_string())),
            _ => {}
        }
    }
    None
}

/// report.json without what depends on the machine: timing, the worker count, shrink times.
fn strip(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("timing");
    v.as_object_mut().unwrap().remove("jobs");
    for b in v["buckets"].as_array_mut().unwrap() {
        if let Some(s) = b.get_mut("shrink").and_then(|s| s.as_object_mut()) {
            s.remove("ms");
        }
    }
    v
}

fn ok_or_found(o: &Output) {
    let code = o.status.code();
    assert!(code == Some(0) || code == Some(1), "{:?}: {}", code, String::from_utf8_lossy(&o.stderr));
}

fn merge(dirs: &[&Path], out: &Path, extra: &[&str]) -> Output {
    shardfuzz().arg("merge").args(dirs).arg("--out").arg(out).args(extra).output().unwrap()
}

const CAMPAIGN: [&str; 8] = ["--cases", "160", "--seed", "11", "--shrink-tries", "40", "--device", "cpu"];

#[test]
fn four_shards_merged_give_the_single_runs_report_and_merging_is_order_free_and_idempotent() {
    let (single, sharded) = (tmp("single"), tmp("sharded"));
    let o = shardfuzz().arg("nightly").args(CAMPAIGN).args(["--jobs", "2", "--out"]).arg(&single).output().unwrap();
    ok_or_found(&o);
    // The local stand-in for a cluster array job: four shard processes, then a merge.
    let o = Command::new(crate::root().join("scripts/nightly-sharded"))
        .arg("4")
        .args(CAMPAIGN)
        .arg("--out")
        .arg(&sharded)
        .env("SHARDFUZZ_BIN", env!("CARGO_BIN_EXE_shardfuzz"))
        .output()
        .unwrap();
    ok_or_found(&o);
    let (a, m) = (report(&single), report(&sharded));
    assert!(a["buckets"].as_array().unwrap().len() > 3, "the run should find several buckets");
    assert_eq!(m["timing"]["parts"].as_array().unwrap().len(), 4);
    assert_eq!(strip(a.clone()), strip(m.clone()));
    // Reproducers and first cases are byte-identical, and they are the ones a single run keeps
    // even where a shard other than the first held the smallest case.
    for b in a["buckets"].as_array().unwrap() {
        for f in [b["repro"].as_str(), b["first_case"].as_str()].into_iter().flatten() {
            assert!(read(single.join(f)) == read(sharded.join(f)), "{f} differs");
        }
    }
    let shard = |i: usize| sharded.join(format!("shards/{i}"));
    let (s0, s1, s2, s3) = (shard(0), shard(1), shard(2), shard(3));
    let from_other_shards =
        a["buckets"].as_array().unwrap().iter().filter(|b| b["smallest_index"].as_u64().unwrap() % 4 != 0);
    assert!(from_other_shards.count() > 0, "some smallest case lies outside shard 0");
    // Any order, repeated inputs, merges of merges: the same bytes.
    let files = ["report.json", "report.md", "junit.xml", "report.html", "findings.jsonl"];
    let same = |dir: &Path| {
        for f in files {
            let diff = first_difference(&read(dir.join(f)), &read(sharded.join(f)));
            assert!(diff.is_none(), "{} differs from the first merge: {diff:?}", dir.join(f).display());
        }
    };
    let m2 = tmp("merge-order");
    ok_or_found(&merge(&[&s3, &s1, &s0, &s2, &s1], &m2, &[]));
    same(&m2);
    let m3 = tmp("merge-again");
    ok_or_found(&merge(&[&sharded], &m3, &[]));
    same(&m3);
    let (p01, p23, m4) = (tmp("part01"), tmp("part23"), tmp("merge-parts"));
    let o = merge(&[&s0, &s1], &p01, &[]);
    assert_eq!(o.status.code(), Some(2), "missing shards are an error by default");
    assert!(String::from_utf8_lossy(&o.stderr).contains("shard(s) 2, 3 of 4 missing"));
    ok_or_found(&merge(&[&s0, &s1], &p01, &["--allow-missing"]));
    assert_eq!(report(&p01)["shards"]["covered"], serde_json::json!([0, 1]));
    ok_or_found(&merge(&[&s3, &s2], &p23, &["--allow-missing"]));
    ok_or_found(&merge(&[&p23, &p01], &m4, &[]));
    same(&m4);
    check_html(&sharded.join("report.html"));
    // --baseline on a merged report: nothing new, nothing fixed against the single run.
    let o = merge(&[&s0, &s1, &s2, &s3], &m4, &["--baseline", single.to_str().unwrap()]);
    ok_or_found(&o);
    let r = report(&m4)["regression"].clone();
    assert_eq!((r["new"].as_array().unwrap().len(), r["fixed"].as_array().unwrap().len()), (0, 0));
    assert_eq!(r["still_failing"].as_array().unwrap().len(), a["buckets"].as_array().unwrap().len());
    check_html(&m4.join("report.html"));
    bad_merges(&s0, &s1, &m2);
    for d in [&single, &sharded, &m2, &m3, &p01, &p23, &m4] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// Inputs that are not parts of one campaign: one clear line, exit 2.
fn bad_merges(s0: &Path, s1: &Path, out: &Path) {
    let other = tmp("other-seed");
    let o = shardfuzz()
        .args(["nightly", "--cases", "4", "--seed", "12", "--no-shrink", "--device", "cpu", "--jobs", "1"])
        .args(["--shard", "1/4", "--out"])
        .arg(&other)
        .output()
        .unwrap();
    ok_or_found(&o);
    let nowhere = out.join("no-such-dir");
    let cases: Vec<(Vec<&Path>, &str)> = vec![
        (vec![s0, &other], "not parts of one campaign: seed (11 vs 12)"),
        (vec![s0, &nowhere], "no such directory"),
        (vec![s0, out], "--out must not be one of the inputs"),
    ];
    for (dirs, want) in cases {
        let o = merge(&dirs, out, &["--allow-missing"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{dirs:?}: {err}");
        assert!(err.contains(want) && err.lines().count() == 1 && !err.contains("panicked"), "{dirs:?}: {err}");
    }
    let copy = tmp("shard-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["campaign.json", "report.json"] {
        std::fs::copy(s1.join(f), copy.join(f)).unwrap();
    }
    let o = merge(&[s1, &copy], out, &["--allow-missing"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("shard 1/4 is in both"), "{o:?}");
    for bad in [vec!["--shard", "4/4"], vec!["--shard", "x"], vec!["--shard", "0/2", "--corpus", "/tmp/c"]] {
        let o = shardfuzz().args(["nightly", "--cases", "1", "--out", "/tmp/never"]).args(&bad).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    std::fs::remove_dir_all(&other).ok();
    std::fs::remove_dir_all(&copy).ok();
}

fn lines(p: &Path) -> usize {
    std::fs::read_to_string(p).map_or(0, |t| t.lines().count())
}

#[test]
fn a_campaign_killed_with_sigkill_still_reports() {
    let out = tmp("killed");
    let mut child = shardfuzz()
        .args(["nightly", "--cases", "10000000", "--seed", "5", "--jobs", "1", "--no-shrink", "--device", "cpu"])
        .arg("--out")
        .arg(&out)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let counted = |p: &Path| {
        let v: Option<Value> = std::fs::read_to_string(p).ok().and_then(|t| serde_json::from_str(&t).ok());
        v.is_some_and(|v| v["cases"].as_u64() > Some(0))
    };
    while !(counted(&out.join("checkpoint.json")) && lines(&out.join("findings.jsonl")) >= 3) {
        assert!(t.elapsed() < Duration::from_secs(120), "no checkpoint and findings after two minutes");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let it find a bucket or two after its checkpoint, then kill -9.
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("report.json").exists());
    let findings: Vec<Value> = std::fs::read_to_string(out.join("findings.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let o = shardfuzz().arg("report").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let r = report(&out);
    assert_eq!(r["interrupted"], true);
    assert!(r["cases"].as_u64().unwrap() > 0, "the checkpoint's counts");
    let sigs: Vec<&str> = r["buckets"].as_array().unwrap().iter().map(|b| b["signature"].as_str().unwrap()).collect();
    for f in &findings {
        assert!(sigs.contains(&f["signature"].as_str().unwrap()), "{} is missing", f["signature"]);
    }
    assert!(std::fs::read_to_string(out.join("report.md")).unwrap().contains("**Interrupted**"));
    check_html(&out.join("report.html"));
    // Killed before its first checkpoint: the buckets still come from findings.jsonl.
    for f in ["report.json", "checkpoint.json"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let o = shardfuzz().arg("report").arg(&out).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let r = report(&out);
    assert_eq!((r["interrupted"].clone(), r["buckets"].as_array().unwrap().len()), (Value::Bool(true), findings.len()));
    let empty = tmp("not-a-campaign");
    std::fs::create_dir_all(&empty).unwrap();
    let o = shardfuzz().arg("report").arg(&empty).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a campaign directory"));
    std::fs::remove_dir_all(&out).ok();
    std::fs::remove_dir_all(&empty).ok();
}

/// The example's junit.xml: one test case per finding, and failures only for the new ones (no
/// baseline, so nothing regressed); the known and expected ones pass and say so.
#[test]
fn the_example_junit_fails_only_new_findings() {
    let junit = read(crate::root().join("reports/example/junit.xml"));
    let r: Value = serde_json::from_str(&read(crate::root().join("reports/example/report.json"))).unwrap();
    let findings = r["findings"].as_array().expect("report.json has its findings");
    let new = findings.iter().filter(|f| f["status"] == "new").count();
    assert!(new > 0 && new < findings.len());
    assert_eq!(junit.matches("<testcase ").count(), findings.len());
    assert_eq!(junit.matches("<failure ").count(), new);
    for case in junit.split("<testcase ").skip(1) {
        let failed = case.split("</testcase>").next().unwrap().contains("<failure ");
        assert_eq!(failed, case.starts_with("classname=\"shardfuzz.new\""), "{}", &case[..case.len().min(200)]);
    }
    assert!(junit.contains("known upstream (https://github.com/") && junit.contains("expected limitation: "));
}

#[test]
fn the_example_report_page_is_well_formed_and_its_links_resolve() {
    check_html(&crate::root().join("reports/example/report.html"));
}

/// The deploy examples write N once (the Kubernetes manifests are rendered from it, the CI
/// matrix is made from it), their scripts parse, and the SLURM job scripts run as written (the
/// night's settings file from `submit.sh --dry-run`, the array's environment set by hand) and
/// merge into one report. scripts/slurm-test runs them on a real SLURM, scripts/k8s-validate
/// checks the manifests against the Kubernetes schemas.
#[test]
fn the_deploy_examples_are_consistent_and_the_slurm_scripts_run() {
    let root = crate::root();
    for n in ["1", "8"] {
        let o = Command::new(root.join("deploy/k8s/render"))
            .args(["--image", "registry.example/shardfuzz:1", "--shards", n, "night", "night-2"])
            .output()
            .unwrap();
        assert!(o.status.success(), "render: {}", String::from_utf8_lossy(&o.stderr));
        let y = String::from_utf8_lossy(&o.stdout);
        assert!(y.contains(&format!("completions: {n}\n")), "completions is N");
        assert!(y.contains(&format!("{{name: SHARDS, value: \"{n}\"}}")) && y.contains("--shard \"$i/$SHARDS\""));
    }
    let ci = read(root.join("deploy/ci/github-actions-nightly.yml"));
    assert_eq!(ci.matches("SHARDS: ").count(), 1, "N is written once");
    assert!(ci.contains("shard: ${{ fromJSON(needs.plan.outputs.shards) }}"), "the matrix is made from SHARDS");
    let scripts = [
        "deploy/k8s/run.sh",
        "deploy/k8s/fetch-report.sh",
        "deploy/k8s/render",
        "deploy/slurm/submit.sh",
        "deploy/slurm/nightly.sbatch",
        "deploy/slurm/merge.sbatch",
        "scripts/nightly-sharded",
        "scripts/screenshot-report",
        "scripts/bundle",
        "scripts/bundle-test",
        "scripts/slurm-test",
        "scripts/k8s-validate",
    ];
    for s in scripts {
        let o = Command::new("bash").arg("-n").arg(root.join(s)).output().unwrap();
        assert!(o.status.success(), "{s}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let results = tmp("slurm");
    let o = Command::new("bash")
        .arg(root.join("deploy/slurm/submit.sh"))
        .args(["--dry-run", "--shards", "2", "--cases", "12", "--seed", "3", "--flags", "--no-shrink --device cpu"])
        .args(["--bin", env!("CARGO_BIN_EXE_shardfuzz"), "--results"])
        .arg(&results)
        .arg("night-2")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "submit.sh --dry-run: {}", String::from_utf8_lossy(&o.stderr));
    let settings = results.join("night-2/night.env");
    let slurm = |script: &str, task: Option<u32>| {
        let mut c = Command::new("bash");
        c.arg(root.join("deploy/slurm").join(script)).arg(&settings);
        if let Some(i) = task {
            c.env("SLURM_ARRAY_TASK_ID", i.to_string()).env("SLURM_CPUS_PER_TASK", "1");
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{script}: {}", String::from_utf8_lossy(&o.stderr));
    };
    slurm("nightly.sbatch", Some(0));
    slurm("nightly.sbatch", Some(1));
    slurm("merge.sbatch", None);
    let r = report(&results.join("night-2"));
    assert_eq!((r["cases"].as_u64(), r.get("shards")), (Some(12), None), "both shards merged");
    let status = read(results.join("night-2/status/merge"));
    assert!(matches!(status.split_whitespace().nth(1), Some("0" | "1")), "the merge's status: {status}");
    std::fs::remove_dir_all(&results).ok();
}

/// The page's script in a real browser (skipped where no Chromium is installed): sorting, the
/// filter, paging and the detail panel work on the example report.
#[test]
fn the_report_pages_script_sorts_filters_and_opens_a_bucket_in_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium");
        return;
    };
    let page = read(crate::root().join("reports/example/report.html"));
    let probe = r#"<script>window.addEventListener('load',function(){setTimeout(function(){
      var t=document.getElementById('bucket-table'),out=[];
      function rows(){return Array.prototype.filter.call(t.tBodies[0].rows,function(r){return !r.hidden;});}
      out.push(rows().length);
      t.tHead.rows[0].cells[5].click();t.tHead.rows[0].cells[5].click();
      var c=rows().map(function(r){return +r.cells[5].getAttribute('data-v');});
      out.push(c.every(function(x,i){return i===0||c[i-1]>=x;}));
      var f=document.getElementById('bucket-filter');f.value='view_of_sharded_dim';f.dispatchEvent(new Event('input'));
      out.push(rows().every(function(r){return r.textContent.indexOf('view_of_sharded_dim')>=0;})&&rows().length>0);
      f.value='';f.dispatchEvent(new Event('input'));
      var sf=document.getElementById('status-filter');sf.value='known';sf.dispatchEvent(new Event('change'));
      out.push(rows().length>0&&rows().every(function(r){return r.getAttribute('data-status')==='known';}));
      sf.value='';sf.dispatchEvent(new Event('change'));
      rows()[3].click();
      out.push(!document.getElementById('panel').hidden&&document.querySelector('#panel pre:last-of-type').textContent.indexOf('shardfuzz.case/1')>=0);
      document.title='PROBE '+out.join(',');
    },0);});</script></body></html>"#;
    let dir = tmp("probe");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("probe.html");
    std::fs::write(&file, page.replace("</body></html>", probe)).unwrap();
    let o = Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&o.stdout);
    let title = dom.split("<title>").nth(1).and_then(|t| t.split("</title>").next()).unwrap_or("");
    let rows = read(crate::root().join("reports/example/report.json")).matches("\"first_case\"").count().min(300);
    assert_eq!(title, format!("PROBE {rows},true,true,true,true"), "sorted, filtered (text, status), detail shown");
    std::fs::remove_dir_all(&dir).ok();
}

/// The first chromium on the PATH, if any.
fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()))
}

/// The page's layout in a real browser at 1280 px on the full page height (every `<details>`
/// opened, every bucket row shown), for each column set: with real-PyTorch results (the
/// example), without them, and a merged report: no table column is narrower than the longest
/// word of its header, and the first thing on the page is the triage. Skipped without Chromium.
#[test]
fn no_table_column_is_narrower_than_its_header_word_in_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: no chromium");
        return;
    };
    let example: Value = serde_json::from_str(&read(crate::root().join("reports/example/report.json"))).unwrap();
    let mut plain = example.clone();
    for b in plain["buckets"].as_array_mut().unwrap() {
        b.as_object_mut().unwrap().remove("confirm");
    }
    plain.as_object_mut().unwrap().remove("fidelity");
    let mut merged = example.clone();
    merged["timing"]["parts"] = serde_json::json!([
        {"shards": "0/2", "cases": 84917, "wall_s": 47.0, "cases_per_s": 1806.7},
        {"shards": "1/2", "cases": 84916, "wall_s": 47.1, "cases_per_s": 1802.9}
    ]);
    let probe = r#"<script>window.addEventListener('load',function(){setTimeout(function(){
      Array.prototype.forEach.call(document.querySelectorAll('details'),function(d){d.open=true;});
      Array.prototype.forEach.call(document.querySelectorAll('tr[hidden]'),function(r){r.hidden=false;});
      var ctx=document.createElement('canvas').getContext('2d'),bad=[],n=0;
      Array.prototype.forEach.call(document.querySelectorAll('th'),function(th){
        var cs=getComputedStyle(th);ctx.font=cs.fontWeight+' '+cs.fontSize+' '+cs.fontFamily;
        var room=th.clientWidth-parseFloat(cs.paddingLeft)-parseFloat(cs.paddingRight);
        th.textContent.split(/\s+/).forEach(function(w){
          if(!w)return;n++;
          var need=ctx.measureText(w).width;
          if(need>room+1)bad.push(th.closest('table').id+':'+w+':'+Math.round(room)+'<'+Math.round(need));
        });
      });
      var first=document.querySelector('section');
      document.title='LAYOUT '+document.documentElement.scrollWidth+' '+(first?first.id:'-')+' '+n+' '+(bad.join('|')||'ok');
    },0);});</script></body></html>"#;
    let dir = tmp("layout");
    for (name, report) in [("confirmed", example), ("plain", plain), ("merged", merged)] {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("report.json"), serde_json::to_string(&report).unwrap()).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_shardfuzz")).arg("report").arg(&d).output().unwrap();
        assert!(matches!(o.status.code(), Some(0 | 1)), "report: {}", String::from_utf8_lossy(&o.stderr));
        let page = read(d.join("report.html"));
        std::fs::write(d.join("probe.html"), page.replace("</body></html>", probe)).unwrap();
        let o = Command::new(browser)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,20000"])
            .args(["--virtual-time-budget=20000", "--dump-dom"])
            .arg(format!("--user-data-dir={}", d.join("profile").display()))
            .arg(format!("file://{}", d.join("probe.html").display()))
            .output()
            .unwrap();
        let dom = String::from_utf8_lossy(&o.stdout);
        let title = dom.split("<title>").nth(1).and_then(|t| t.split("</title>").next()).unwrap_or("").to_string();
        let f: Vec<&str> = title.split(' ').collect();
        assert!(f.len() >= 5 && f[0] == "LAYOUT", "{name}: no probe result: {title}");
        assert!(f[1].parse::<u32>().unwrap() <= 1280, "{name}: the page scrolls sideways at 1280 px: {title}");
        assert_eq!(f[2], "triage", "{name}: the page opens with the triage");
        assert!(f[3].parse::<u32>().unwrap() > 20, "{name}: too few header words measured: {title}");
        assert_eq!(f[4..].join(" "), "ok", "{name}: columns narrower than their header word");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Elements that never have a closing tag.
const VOID: [&str; 9] = ["meta", "link", "br", "hr", "img", "input", "col", "source", "wbr"];

/// The page parses: every tag closes in order, ids are unique, every `#id` link has its target,
/// every relative link names a file next to the page, nothing is fetched from the network, and
/// the bucket data is JSON with one entry per bucket row.
pub fn check_html(path: &Path) {
    let html = std::fs::read_to_string(path).unwrap();
    let dir = path.parent().unwrap();
    let (mut stack, mut ids, mut links) = (Vec::<String>::new(), std::collections::BTreeSet::new(), Vec::new());
    let mut rest = html.as_str();
    let mut data = None;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let end = rest.find('>').unwrap_or_else(|| panic!("{}: a tag never ends", path.display()));
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('!') {
            continue;
        }
        let name =
            tag.trim_start_matches('/').split(|c: char| c.is_whitespace() || c == '/').next().unwrap().to_lowercase();
        if let Some(closing) = tag.strip_prefix('/') {
            let top = stack.pop().unwrap_or_else(|| panic!("{}: </{closing}> closes nothing", path.display()));
            assert_eq!(top, name, "{}: <{top}> closed by </{name}>", path.display());
            continue;
        }
        for (attr, value) in attributes(tag) {
            match attr.as_str() {
                "id" => assert!(ids.insert(value.clone()), "{}: id {value} twice", path.display()),
                "href" | "src" => links.push(value),
                _ => {}
            }
        }
        if name == "script" || name == "style" {
            let close = format!("</{name}>");
            let body_end = rest.find(&close).unwrap_or_else(|| panic!("{}: <{name}> never closes", path.display()));
            if tag.contains("id=\"bucket-data\"") {
                data = Some(rest[..body_end].to_string());
            }
            rest = &rest[body_end + close.len()..];
        } else if !VOID.contains(&name.as_str()) && !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "{}: unclosed {stack:?}", path.display());
    assert!(!html.contains("src=\"http") && !html.contains("<link"), "{}: fetches at view time", path.display());
    for l in &links {
        if let Some(id) = l.strip_prefix('#') {
            assert!(ids.contains(id), "{}: link to missing #{id}", path.display());
        } else {
            // Links to upstream issues are links, not fetches; nothing else leaves the page.
            if l.starts_with("https://github.com/") {
                continue;
            }
            assert!(!l.contains("://"), "{}: a network link {l}", path.display());
            let file =
                l.replace("%20", " ").replace("%23", "#").replace("%3F", "?").replace("%22", "\"").replace("%25", "%");
            assert!(dir.join(&file).is_file(), "{}: link to missing {l}", path.display());
        }
    }
    let data: Value = serde_json::from_str(&data.expect("the bucket data block")).expect("bucket data is JSON");
    assert_eq!(data.as_array().unwrap().len(), html.matches("<tr id=\"b-").count(), "one entry per bucket row");
}

/// (name, unescaped value) of each quoted attribute of a start tag.
fn attributes(tag: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = tag;
    while let Some(eq) = rest.find("=\"") {
        let name = rest[..eq].rsplit(|c: char| c.is_whitespace()).next().unwrap_or("").to_lowercase();
        let after = &rest[eq + 2..];
        let close = after.find('"').expect("a quoted attribute closes");
        let value =
            after[..close].replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&");
        out.push((name, value));
        rest = &after[close + 1..];
    }
    out
}
