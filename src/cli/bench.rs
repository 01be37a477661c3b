//! `shardfuzz bench`: a benchmark, not a test. Prints the table and writes bench.md and
//! bench.json to --out.

use super::common::{parse_duration, SizeArg};
use super::CliResult;
use crate::device::{self, Dev, DeviceArg};
use crate::harness::bench::{self, Detection, ShrinkTiming, Throughput};
use crate::harness::known::Known;
use crate::harness::report::{md_table, write_atomic};
use crate::harness::shrink::Budget;
use serde::Serialize;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Devices to measure, comma-separated (auto, cpu, cuda, cuda:N)
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub device: Vec<DeviceArg>,
    /// Size classes to measure (default: small and medium; large too on CUDA)
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<SizeArg>,
    /// Cases per small-class measurement (medium runs a quarter, large 1/100, at least 5)
    #[arg(long, default_value_t = 2000)]
    pub cases: u64,
    /// Throughput runs per device and size; the median one is reported (shared machines are noisy)
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Seeds for the time-to-detect medians
    #[arg(long, default_value_t = 5)]
    pub seeds: u64,
    /// Longest search for the known bugs per seed
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub detect_limit: Duration,
    /// Longest shrink per bug
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub shrink_time: Duration,
    /// Where bench.md and bench.json go
    #[arg(long, default_value = "reports/bench")]
    pub out: PathBuf,
}

#[derive(Serialize)]
struct Bench {
    format: &'static str,
    machine: Machine,
    throughput: Vec<Throughput>,
    detect: Vec<DetectRow>,
    shrink: Vec<ShrinkTiming>,
}

#[derive(Serialize)]
struct Machine {
    cpu: String,
    cores: usize,
    gpus: Vec<String>,
    libtorch: String,
    intra_op_threads: i32,
}

#[derive(Serialize)]
struct DetectRow {
    device: String,
    bug: String,
    median_s: Option<f64>,
    /// Per seed: seconds and cases to the first instance, null when not found within the limit.
    per_seed: Vec<Option<(f64, u64)>>,
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn run(a: Args) -> CliResult {
    let mut devs: Vec<Dev> = Vec::new();
    for d in &a.device {
        let dev = device::resolve(*d).map_err(anyhow::Error::msg)?;
        if !devs.contains(&dev) {
            devs.push(dev);
        }
    }
    anyhow::ensure!(a.cases > 0, "--cases must be at least 1");
    anyhow::ensure!(a.seeds > 0, "--seeds must be at least 1");
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    let scratch = a.out.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let machine = Machine {
        cpu: cpu_model(),
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        gpus: device::gpu_names(),
        libtorch: device::loaded_libtorch_version().unwrap_or_else(|| "unknown".into()),
        intra_op_threads: tch::get_num_threads(),
    };
    let mut b =
        Bench { format: "shardfuzz.bench/1", machine, throughput: Vec::new(), detect: Vec::new(), shrink: Vec::new() };
    for &dev in &devs {
        let sizes: Vec<SizeArg> = if !a.sizes.is_empty() {
            a.sizes.clone()
        } else if dev == Dev::Cpu {
            vec![SizeArg::Small, SizeArg::Medium]
        } else {
            vec![SizeArg::Small, SizeArg::Medium, SizeArg::Large]
        };
        for size in sizes {
            let n = match size {
                SizeArg::Small => a.cases,
                SizeArg::Medium => (a.cases / 4).max(5),
                SizeArg::Large => (a.cases / 100).max(5),
            };
            eprintln!("bench: {dev} {size:?}: {n} cases");
            // A short warm-up keeps libtorch's one-time costs (allocator, CUDA context) out.
            bench::throughput(dev, size.class(), n.min(20), 999, &scratch).map_err(anyhow::Error::msg)?;
            let mut runs = Vec::new();
            for _ in 0..a.repeat.max(1) {
                let t = bench::throughput(dev, size.class(), n, 1, &scratch).map_err(anyhow::Error::msg)?;
                eprintln!("bench: {dev} {size:?}: {:.0} cases/s", t.cases_per_s);
                runs.push(t);
            }
            runs.sort_by(|x, y| x.cases_per_s.total_cmp(&y.cases_per_s));
            let mut t = runs.swap_remove(runs.len() / 2);
            t.runs = a.repeat.max(1);
            b.throughput.push(t);
        }
        let mut runs: Vec<Detection> = Vec::new();
        for seed in 1..=a.seeds {
            eprintln!("bench: {dev}: time to detect, seed {seed}/{}", a.seeds);
            runs.push(bench::detect(dev, seed, a.detect_limit).map_err(anyhow::Error::msg)?);
        }
        for (k, known) in Known::ALL.iter().enumerate() {
            b.detect.push(DetectRow {
                device: dev.name(),
                bug: known.name().into(),
                median_s: bench::median_found(&runs, k),
                per_seed: runs.iter().map(|d| d.found[k]).collect(),
            });
            if let Some((case, sig)) = runs.iter().find_map(|d| d.first[k].clone()) {
                eprintln!("bench: {dev}: shrinking {}", known.name());
                let budget = Budget { max_tries: 5000, max_time: a.shrink_time };
                b.shrink.push(bench::shrink_timing(dev, *known, &case, &sig, budget));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let md = markdown(&b);
    write_atomic(&a.out.join("bench.json"), &(serde_json::to_string_pretty(&b)? + "\n"))?;
    write_atomic(&a.out.join("bench.md"), &md)?;
    println!("{md}");
    eprintln!("bench: wrote {}/bench.md and bench.json", a.out.display());
    Ok(ExitCode::SUCCESS)
}

fn markdown(b: &Bench) -> String {
    let mut s = String::new();
    let m = &b.machine;
    let _ = writeln!(s, "# shardfuzz bench\n");
    let _ = writeln!(
        s,
        "Machine: {} ({} cores), GPUs: {}, libtorch {}, {} intra-op thread(s): every figure is for one core.\n",
        m.cpu,
        m.cores,
        if m.gpus.is_empty() { "none".into() } else { m.gpus.join(", ") },
        m.libtorch,
        m.intra_op_threads
    );
    let _ = writeln!(s, "## Cases per second and where a case's time goes (mean µs per case)\n");
    let _ = writeln!(s, "Each row is the median of `runs` runs of the same cases. floor = 2 x reference: libtorch computing the router once unsharded and once for the sharded side.\n");
    let rows: Vec<Vec<String>> = b
        .throughput
        .iter()
        .map(|t| {
            vec![
                t.device.clone(),
                t.size.clone(),
                format!("{} x {}", t.cases, t.runs),
                format!("{:.0}", t.cases_per_s),
                format!("{:.0}", t.generate_us),
                format!("{:.0}", t.inputs_us),
                format!("{:.0}", t.reference_us),
                format!("{:.0}", t.sharded_us),
                format!("{:.0}", t.shadow_us),
                format!("{:.0}", t.oracles_us),
                format!("{:.0}", t.io_us),
                format!("{:.0}", t.floor_us),
                format!("{:.1}x", t.over_floor),
            ]
        })
        .collect();
    let _ = writeln!(
        s,
        "{}\n",
        md_table(
            &[
                "device",
                "size",
                "cases x runs",
                "cases/s",
                "generate",
                "inputs",
                "reference",
                "sharded",
                "shadow",
                "oracles",
                "I/O",
                "floor",
                "time/floor"
            ],
            &rows
        )
    );
    let _ = writeln!(s, "## Time to detect each known bug (default generator, in-process, one core)\n");
    let rows: Vec<Vec<String>> = b
        .detect
        .iter()
        .map(|d| {
            let per: Vec<String> =
                d.per_seed.iter().map(|f| f.map_or("-".into(), |(t, n)| format!("{t:.3}s/{n}"))).collect();
            vec![
                d.device.clone(),
                d.bug.clone(),
                d.median_s.map_or("not found".into(), |m| format!("{m:.3} s")),
                per.join(" "),
            ]
        })
        .collect();
    let _ = writeln!(s, "{}\n", md_table(&["device", "bug", "median", "per seed (time/cases)"], &rows));
    let _ = writeln!(s, "## Shrink time per bug (first instance of the first seed that found it)\n");
    let rows: Vec<Vec<String>> = b
        .shrink
        .iter()
        .map(|x| {
            vec![
                x.bug.clone(),
                format!("{:.0} ms", x.ms),
                x.tried.to_string(),
                x.kept.to_string(),
                format!("{} -> {}", x.ranks_before, x.ranks_after),
                x.tokens_after.to_string(),
            ]
        })
        .collect();
    let _ = writeln!(s, "{}", md_table(&["bug", "shrink time", "tried", "kept", "ranks", "tokens after"], &rows));
    s
}
