//! `shardfuzz bench`: a benchmark, not a test. Prints the table and writes bench.md and
//! bench.json to --out.

use super::common::parse_duration;
use super::CliResult;
use crate::bench::{self, Settings};
use crate::report::write_atomic;
use dtensor::device::{self, DeviceArg};
use harness::generate::SizeClass;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Subjects to measure, comma-separated (router, moe), each with its default generator
    #[arg(long, value_delimiter = ',', default_value = "router,moe")]
    pub subject: Vec<crate::subjects::Kind>,
    /// Devices to measure, comma-separated (auto, cpu, cuda, cuda:N)
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub device: Vec<DeviceArg>,
    /// Size classes to measure (default: small and medium; large too on CUDA)
    #[arg(long = "size", alias = "sizes", value_delimiter = ',')]
    pub sizes: Vec<SizeClass>,
    /// Cases per small-class measurement (medium runs a quarter, large 1/100, at least 5)
    #[arg(long, default_value_t = 2000)]
    pub cases: u64,
    /// Throughput runs per device and size, taken in rounds over every row; the median one is reported (shared machines are noisy)
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// How many seeds (0, 1, ...) the time-to-detect medians take
    #[arg(long = "seed-count", alias = "seeds", default_value_t = 5)]
    pub seeds: u64,
    /// Longest search for the known bugs per seed
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub detect_limit: Duration,
    /// Longest shrink per bug
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub shrink_time: Duration,
    /// Where bench.md and bench.json go (the default is untracked; the committed figures in
    /// reports/bench/ are refreshed by passing --out reports/bench)
    #[arg(long, default_value = "target/shardfuzz-bench")]
    pub out: PathBuf,
    /// Instead of the benchmark: a campaign in this process for this long (e.g. 30m), printing
    /// cases/s, resident memory and open files every --soak-every, and whether memory stayed flat
    #[arg(long, value_parser = parse_duration)]
    pub soak: Option<Duration>,
    /// Time between the soak's rows
    #[arg(long, value_parser = parse_duration, default_value = "1m")]
    pub soak_every: Duration,
    /// Instead of the benchmark: time per case against real DTensor of this torch release
    /// (X.Y.Z; LocalTensorMode in one process, from the venv `confirm` manages) on the same router
    /// cases, start-up removed by timing 1 and N cases
    #[arg(long, value_name = "RELEASE")]
    pub versus_dtensor: Option<crate::confirm::Release>,
    /// Cases --versus-dtensor times (each side runs them --repeat times; the fastest counts)
    #[arg(long, default_value_t = 100)]
    pub versus_cases: usize,
}

pub fn run(a: Args) -> CliResult {
    let mut devices = Vec::new();
    for d in &a.device {
        let dev = device::resolve(*d).map_err(anyhow::Error::msg)?;
        if !devices.contains(&dev) {
            devices.push(dev);
        }
    }
    if let Some(r) = &a.versus_dtensor {
        return versus(&a, r.clone());
    }
    if let Some(d) = a.soak {
        return soak(&a, devices[0], d);
    }
    anyhow::ensure!(a.cases > 0, "--cases must be at least 1");
    let cuda = devices.iter().any(|d| *d != device::Dev::Cpu);
    if a.sizes.contains(&SizeClass::Large) || (a.sizes.is_empty() && cuda) {
        harness::limits::raise(harness::limits::Limits::LARGE);
    }
    anyhow::ensure!(a.seeds > 0, "--seeds must be at least 1");
    let scratch = a.out.join("scratch");
    std::fs::create_dir_all(&scratch).map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    let mut subjects = a.subject.clone();
    subjects.dedup();
    let settings = Settings {
        subjects,
        devices,
        sizes: a.sizes,
        cases: a.cases,
        repeat: a.repeat,
        seeds: a.seeds,
        detect_limit: a.detect_limit,
        shrink_time: a.shrink_time,
        scratch: scratch.clone(),
    };
    let b = bench::measure(&settings)?;
    std::fs::remove_dir_all(&scratch).ok();
    let md = b.markdown();
    write_atomic(&a.out.join("bench.json"), &(serde_json::to_string_pretty(&b)? + "\n"))?;
    write_atomic(&a.out.join("bench.md"), &md)?;
    println!("{md}");
    eprintln!("bench: wrote {}/bench.md and bench.json", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `--soak`: the table on stdout and in --out/soak.md (and soak.json).
fn soak(a: &Args, dev: device::Dev, duration: Duration) -> CliResult {
    anyhow::ensure!(!a.soak_every.is_zero(), "--soak-every must be more than 0");
    let scratch = a.out.join("soak-scratch");
    std::fs::remove_dir_all(&scratch).ok();
    std::fs::create_dir_all(&scratch).map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    let mut subjects = a.subject.clone();
    subjects.dedup();
    let settings = bench::soak::SoakSettings { subjects, dev, seed: 0, duration, every: a.soak_every };
    let names: Vec<String> = settings.subjects.iter().map(ToString::to_string).collect();
    eprintln!("soak: {} on {dev} for {duration:?}, a row every {:?}", names.join(","), a.soak_every);
    let s = bench::soak::soak(&settings, &scratch)?;
    std::fs::remove_dir_all(&scratch).ok();
    let md = s.markdown();
    write_atomic(&a.out.join("soak.json"), &(serde_json::to_string_pretty(&s)? + "\n"))?;
    write_atomic(&a.out.join("soak.md"), &md)?;
    println!("{md}");
    eprintln!("soak: wrote {}/soak.md and soak.json", a.out.display());
    Ok(ExitCode::SUCCESS)
}

/// `--versus-dtensor`: the comparison on stdout and in --out/versus.md (and versus.json).
fn versus(a: &Args, release: crate::confirm::Release) -> CliResult {
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    let settings = bench::versus::VersusSettings { release, cases: a.versus_cases, repeat: a.repeat, seed: 7 };
    let v = bench::versus::versus(&settings, &a.out)?;
    let md = v.markdown();
    write_atomic(&a.out.join("versus.json"), &(serde_json::to_string_pretty(&v)? + "\n"))?;
    write_atomic(&a.out.join("versus.md"), &md)?;
    println!("{md}");
    Ok(ExitCode::SUCCESS)
}
