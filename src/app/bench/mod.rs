//! The benchmark behind `shardfuzz bench`: cases/s per device and size class with a phase
//! breakdown, time to detect each known bug, and shrink time, all in this process on one
//! intra-op thread (so "cases/s" is per core).
//!
//! The floor is what libtorch alone needs for the ops a differential case must run: the router
//! computed once unsharded and once more for the sharded side (whose local ops together do at
//! least the unsharded math), i.e. twice the reference phase. Everything above it is the price
//! of the simulation, the float64 shadow, the oracles and generation.

use crate::subjects::{AnyCase, GenConfig, Kind};
use crate::worker::Inflight;
use dtensor::device::Dev;
use harness::error::{Error, Result};
use harness::generate::{BackwardMix, SizeClass};
use harness::subject::Subject;
use harness::timing::{micros, timed, Phases};
use harness::{check, shrink, Options, Signature};
use serde::Serialize;
use std::time::{Duration, Instant};

mod render;
pub mod soak;
pub mod versus;

pub use render::{Bench, Machine};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub subject: String,
    pub device: String,
    pub size: String,
    /// `off` (forward cases) or `only` (every case also runs a boundary revision's backward).
    pub backward: String,
    pub cases: u64,
    /// Runs measured; this is the median one.
    pub runs: usize,
    pub wall_s: f64,
    pub cases_per_s: f64,
    /// Summed time per phase (divide by `cases` for the mean).
    pub phases_us: Phases,
    /// Summed time writing each case to disk before it runs, as a campaign worker does.
    pub io_us: u64,
    /// Summed time per oracle (and per named part of one: `oracle: part`), first-seen order.
    pub oracles_us: Vec<(String, u64)>,
    /// 2 x the mean reference time: see the module comment.
    pub floor_us: f64,
    /// Mean time per case over the floor.
    pub over_floor: f64,
}

/// What one throughput measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub subject: Kind,
    pub dev: Dev,
    pub size: SizeClass,
    pub backward: BackwardMix,
}

/// Runs `cases` generated cases (seed `seed`) and times every phase.
pub fn throughput(mix: Mix, cases: u64, seed: u64, scratch: &std::path::Path) -> Result<Throughput> {
    let Mix { subject, dev, size, backward } = mix;
    let mut cfg = GenConfig::of_subject(subject);
    (cfg.common.size, cfg.common.device, cfg.common.backward) = (size, dev, backward);
    let path = scratch.join("inflight.json");
    let mut inflight = Inflight::create(&path).map_err(Error::io(&path))?;
    let (mut phases, mut io_us) = (Phases::default(), 0);
    harness::timing::record_oracles(true);
    let start = Instant::now();
    for i in 0..cases {
        let case = timed(&mut phases.generate_us, || cfg.nth(seed, i));
        timed(&mut io_us, || inflight.write(&case.to_json())).map_err(Error::io(&path))?;
        let c = check(&case, dev, Options::default())?;
        std::hint::black_box(&c.judgement);
        phases.add(&c.phases);
    }
    if let Dev::Cuda(n) = dev {
        tch::Cuda::synchronize(n as i64);
    }
    let wall = start.elapsed();
    let oracles_us = harness::timing::take_oracle_costs().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    harness::timing::record_oracles(false);
    let n = cases.max(1) as f64;
    let floor_us = 2.0 * phases.reference_us as f64 / n;
    Ok(Throughput {
        subject: subject.to_string(),
        device: dev.to_string(),
        size: size.name().into(),
        backward: backward.name().into(),
        cases,
        runs: 1,
        wall_s: wall.as_secs_f64(),
        cases_per_s: cases as f64 / wall.as_secs_f64().max(1e-9),
        phases_us: phases,
        io_us,
        oracles_us,
        floor_us,
        over_floor: micros(wall) as f64 / n / floor_us.max(1e-9),
    })
}

/// When each known bug was first seen in one seeded run of the default generator.
#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    pub seed: u64,
    /// Per known bug (in [`known_bugs`] order): seconds and cases until the first instance.
    pub found: Vec<Option<(f64, u64)>>,
    /// The first case of each found bug and its signature (for the shrink timing).
    #[serde(skip)]
    pub first: Vec<Option<(AnyCase, Signature)>>,
}

/// The known bugs of these subjects, in report order.
pub fn known_bugs(subjects: &[Kind]) -> Vec<&'static str> {
    subjects.iter().flat_map(|k| k.known_bugs()).collect()
}

/// Runs the default generator of one subject from `seed` until every known bug of it is seen
/// or `limit` passes.
pub fn detect(subject: Kind, dev: Dev, seed: u64, limit: Duration) -> Result<Detection> {
    let mut cfg = GenConfig::of_subject(subject);
    cfg.common.device = dev;
    let bugs = known_bugs(&[subject]);
    let mut d = Detection { seed, found: vec![None; bugs.len()], first: vec![None; bugs.len()] };
    let start = Instant::now();
    let mut i = 0u64;
    while d.found.iter().any(Option::is_none) && start.elapsed() < limit {
        let c = check(&cfg.nth(seed, i), dev, Options::default())?;
        for sig in c.signatures() {
            let of = c.case.subject.known(&c.case, &sig);
            for (k, known) in bugs.iter().enumerate() {
                if d.found[k].is_none() && of.contains(known) {
                    d.found[k] = Some((start.elapsed().as_secs_f64(), i + 1));
                    d.first[k] = Some((c.case.clone(), sig.clone()));
                }
            }
        }
        i += 1;
    }
    Ok(d)
}

#[derive(Clone, Debug, Serialize)]
pub struct ShrinkTiming {
    pub bug: String,
    pub signature: String,
    pub ms: f64,
    pub tried: usize,
    pub kept: usize,
    pub ranks_before: usize,
    pub ranks_after: usize,
    pub tokens_after: usize,
}

pub fn shrink_timing(
    dev: Dev,
    known: &str,
    case: &AnyCase,
    signature: &Signature,
    budget: shrink::Budget,
) -> ShrinkTiming {
    let t0 = Instant::now();
    let s = shrink::shrink(case, budget, crate::worker::keeps(case, dev, signature));
    let ranks = |c: &AnyCase| c.mesh.shape.iter().product::<usize>();
    ShrinkTiming {
        bug: known.into(),
        signature: signature.to_string(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
        tried: s.tried,
        kept: s.kept,
        ranks_before: ranks(case),
        ranks_after: ranks(&s.case),
        tokens_after: s.case.subject.size(&s.case).tokens,
    }
}

/// The median time to detect known bug `k` over seeds; a seed that never found it counts as
/// slower than any that did, so the median is `None` when half or more missed it.
pub fn median_found(runs: &[Detection], k: usize) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().map(|d| d.found[k].map_or(f64::INFINITY, |f| f.0)).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
    m.is_finite().then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(t: Option<f64>) -> Detection {
        Detection { seed: 0, found: vec![t.map(|x| (x, 1))], first: vec![None] }
    }

    #[test]
    fn median_counts_misses_as_slow() {
        let runs = [det(Some(0.3)), det(Some(0.1)), det(None), det(Some(0.2)), det(None)];
        assert_eq!(median_found(&runs, 0), Some(0.3));
        let runs = [det(Some(0.3)), det(None), det(None)];
        assert_eq!(median_found(&runs, 0), None);
        let runs = [det(Some(0.4)), det(Some(0.2))];
        assert_eq!(median_found(&runs, 0), Some(0.30000000000000004));
    }
}

/// One known bug's time to detect over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct DetectRow {
    pub device: String,
    pub bug: String,
    pub median_s: Option<f64>,
    /// Per seed: seconds and cases to the first instance, null when not found within the limit.
    pub per_seed: Vec<Option<(f64, u64)>>,
}

/// What `shardfuzz bench` measures.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Subjects measured, each with its own default generator.
    pub subjects: Vec<Kind>,
    pub devices: Vec<Dev>,
    /// Size classes per device (empty: small and medium, plus large on CUDA).
    pub sizes: Vec<SizeClass>,
    pub cases: u64,
    pub repeat: usize,
    pub seeds: u64,
    pub detect_limit: Duration,
    pub shrink_time: Duration,
    /// A directory for the in-flight case file.
    pub scratch: std::path::PathBuf,
}

/// Runs every measurement, printing progress on stderr.
pub fn measure(s: &Settings) -> Result<Bench> {
    let mut b =
        Bench { format: "shardfuzz.bench/1", machine: machine(), throughput: vec![], detect: vec![], shrink: vec![] };
    let mut mixes = Vec::new();
    for &dev in &s.devices {
        for &subject in &s.subjects {
            for size in sizes_for(s, dev) {
                for backward in [BackwardMix::Off, BackwardMix::Only] {
                    mixes.push(Mix { subject, dev, size, backward });
                }
            }
        }
    }
    b.throughput = median_throughputs(s, &mixes)?;
    for &dev in &s.devices {
        for &subject in &s.subjects {
            detect_and_shrink(s, subject, dev, &mut b)?;
        }
    }
    Ok(b)
}

/// Time to detect each known bug of `subject` over the seeds, and the shrink of its first case.
fn detect_and_shrink(s: &Settings, subject: Kind, dev: Dev, b: &mut Bench) -> Result<()> {
    let bugs = known_bugs(&[subject]);
    if bugs.is_empty() {
        return Ok(());
    }
    let mut runs: Vec<Detection> = Vec::new();
    for seed in 1..=s.seeds {
        eprintln!("bench: {dev}: {subject}: time to detect, seed {seed}/{}", s.seeds);
        runs.push(detect(subject, dev, seed, s.detect_limit)?);
    }
    for (k, known) in bugs.into_iter().enumerate() {
        let per_seed = runs.iter().map(|d| d.found[k]).collect();
        b.detect.push(DetectRow {
            device: dev.to_string(),
            bug: known.into(),
            median_s: median_found(&runs, k),
            per_seed,
        });
        if let Some((case, sig)) = runs.iter().find_map(|d| d.first[k].clone()) {
            eprintln!("bench: {dev}: shrinking {known}");
            let budget = shrink::Budget { max_tries: 5000, max_time: s.shrink_time };
            b.shrink.push(shrink_timing(dev, known, &case, &sig, budget));
        }
    }
    Ok(())
}

fn sizes_for(s: &Settings, dev: Dev) -> Vec<SizeClass> {
    match (s.sizes.is_empty(), dev) {
        (false, _) => s.sizes.clone(),
        (true, Dev::Cpu) => vec![SizeClass::Small, SizeClass::Medium],
        (true, Dev::Cuda(_)) => vec![SizeClass::Small, SizeClass::Medium, SizeClass::Large],
    }
}

/// How many cases one run of a size class takes.
fn cases_of(s: &Settings, size: SizeClass) -> u64 {
    match size {
        SizeClass::Small => s.cases,
        SizeClass::Medium => (s.cases / 4).max(5),
        SizeClass::Large => (s.cases / 100).max(5),
    }
}

fn label(mix: Mix) -> String {
    format!("{} {} {} backward={}", mix.subject, mix.dev, mix.size, mix.backward)
}

/// The median of `repeat` runs of every mix (shared machines are noisy), after a short warm-up
/// of each that keeps libtorch's one-time costs (allocator, CUDA context) out. The runs go in
/// rounds, each round running every mix once, so that a stretch of time in which the machine
/// is slower falls on every mix alike, not on one subject's rows: the ratios between rows (a
/// MoE case against a router case) then compare like with like.
fn median_throughputs(s: &Settings, mixes: &[Mix]) -> Result<Vec<Throughput>> {
    for &mix in mixes {
        eprintln!("bench: {}: warm-up", label(mix));
        throughput(mix, cases_of(s, mix.size).min(20), 999, &s.scratch)?;
    }
    let rounds = s.repeat.max(1);
    let mut runs: Vec<Vec<Throughput>> = mixes.iter().map(|_| Vec::with_capacity(rounds)).collect();
    for round in 1..=rounds {
        for (mix, runs) in mixes.iter().zip(&mut runs) {
            let n = cases_of(s, mix.size);
            let t = throughput(*mix, n, 1, &s.scratch)?;
            eprintln!("bench: round {round}/{rounds}: {}: {n} cases, {:.0} cases/s", label(*mix), t.cases_per_s);
            runs.push(t);
        }
    }
    Ok(runs
        .into_iter()
        .map(|mut runs| {
            runs.sort_by(|x, y| x.cases_per_s.total_cmp(&y.cases_per_s));
            let mut t = runs.swap_remove(runs.len() / 2);
            t.runs = rounds;
            t
        })
        .collect())
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        gpus: dtensor::device::gpu_names(),
        libtorch: dtensor::device::loaded_libtorch_version().unwrap_or_else(|| "unknown".into()),
        intra_op_threads: tch::get_num_threads(),
    }
}
