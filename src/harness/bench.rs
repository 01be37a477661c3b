//! The benchmark behind `shardfuzz bench`: cases/s per device and size class with a phase
//! breakdown, time to detect each known bug, and shrink time, all in this process on one
//! intra-op thread (so "cases/s" is per core).
//!
//! The floor is what libtorch alone needs for the ops a differential case must run: the router
//! computed once unsharded and once more for the sharded side (whose local ops together do at
//! least the unsharded math), i.e. twice the reference phase. Everything above it is the price
//! of the simulation, the float64 shadow, the oracles and generation.

use super::case::Case;
use super::generate::{self, GenConfig, SizeClass};
use super::known::Known;
use super::{oracle, runner, shrink};
use crate::device::Dev;
use serde::Serialize;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Throughput {
    pub device: String,
    pub size: String,
    pub cases: u64,
    /// Runs measured; this is the median one.
    pub runs: usize,
    pub wall_s: f64,
    pub cases_per_s: f64,
    /// Mean microseconds per case in each phase.
    pub generate_us: f64,
    pub inputs_us: f64,
    pub reference_us: f64,
    pub sharded_us: f64,
    pub shadow_us: f64,
    pub oracles_us: f64,
    pub io_us: f64,
    /// 2 x reference: see the module comment.
    pub floor_us: f64,
    /// Mean time per case over the floor.
    pub over_floor: f64,
}

/// Runs `cases` generated cases (seed `seed`) and times every phase.
pub fn throughput(
    dev: Dev,
    size: SizeClass,
    cases: u64,
    seed: u64,
    scratch: &std::path::Path,
) -> Result<Throughput, String> {
    let cfg = GenConfig { size, device: dev.into(), ..GenConfig::default() };
    let mut t = Throughput { device: dev.name(), size: format!("{size:?}").to_lowercase(), ..Default::default() };
    let (mut gen, mut io) = (Duration::ZERO, Duration::ZERO);
    let (mut inputs, mut reference, mut sharded, mut shadow, mut oracles) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut inflight = super::worker::Inflight::create(&scratch.join("inflight.json"))
        .map_err(|e| format!("{}: {e}", scratch.display()))?;
    let start = Instant::now();
    for i in 0..cases {
        let t0 = Instant::now();
        let case = generate::nth(seed, i, &cfg);
        gen += t0.elapsed();
        // A campaign worker writes each case to disk before running it; so does the bench.
        let t0 = Instant::now();
        inflight.write(&case.to_json()).map_err(|e| format!("{}: {e}", scratch.display()))?;
        io += t0.elapsed();
        let run = runner::run(&case, dev.tch()).map_err(|e| e.0)?;
        let t0 = Instant::now();
        let j = oracle::judge(&case, &run);
        oracles += t0.elapsed();
        std::hint::black_box(&j);
        inputs += run.timings.inputs;
        reference += run.timings.reference;
        sharded += run.timings.sharded;
        shadow += run.timings.shadow;
    }
    if dev != Dev::Cpu {
        tch::Cuda::synchronize(match dev {
            Dev::Cuda(n) => n as i64,
            Dev::Cpu => 0,
        });
    }
    let wall = start.elapsed();
    let n = cases.max(1) as f64;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    t.cases = cases;
    t.wall_s = wall.as_secs_f64();
    t.cases_per_s = cases as f64 / t.wall_s.max(1e-9);
    t.generate_us = us(gen);
    t.inputs_us = us(inputs);
    t.reference_us = us(reference);
    t.sharded_us = us(sharded);
    t.shadow_us = us(shadow);
    t.oracles_us = us(oracles);
    t.io_us = us(io);
    t.floor_us = 2.0 * t.reference_us;
    t.over_floor = us(wall) / t.floor_us.max(1e-9);
    Ok(t)
}

/// When each known bug was first seen in one seeded run of the default generator.
#[derive(Clone, Debug, Serialize)]
pub struct Detection {
    pub seed: u64,
    /// Per known bug (in `Known::ALL` order): seconds and cases until the first instance.
    pub found: Vec<Option<(f64, u64)>>,
    /// The first case of each found bug and its signature (for the shrink timing).
    #[serde(skip)]
    pub first: Vec<Option<(Case, String)>>,
}

/// Runs the default generator from `seed` until every known bug is seen or `limit` passes.
pub fn detect(dev: Dev, seed: u64, limit: Duration) -> Result<Detection, String> {
    let cfg = GenConfig { device: dev.into(), ..GenConfig::default() };
    let mut d = Detection { seed, found: vec![None; Known::ALL.len()], first: vec![None; Known::ALL.len()] };
    let start = Instant::now();
    let mut i = 0u64;
    while d.found.iter().any(Option::is_none) && start.elapsed() < limit {
        let case = generate::nth(seed, i, &cfg);
        let run = runner::run(&case, dev.tch()).map_err(|e| e.0)?;
        let j = oracle::judge(&case, &run);
        for v in &j.verdicts {
            let sig = v.signature(&case);
            for (k, known) in Known::ALL.iter().enumerate() {
                if d.found[k].is_none() && known.matches(&sig, &case) {
                    d.found[k] = Some((start.elapsed().as_secs_f64(), i + 1));
                    d.first[k] = Some((case.clone(), sig.clone()));
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

pub fn shrink_timing(dev: Dev, known: Known, case: &Case, signature: &str, budget: shrink::Budget) -> ShrinkTiming {
    let t0 = Instant::now();
    let s = shrink::shrink(case, budget, super::worker::keeps(case, dev, signature));
    let ranks = |c: &Case| c.mesh.shape.iter().product::<usize>();
    ShrinkTiming {
        bug: known.name().into(),
        signature: signature.into(),
        ms: t0.elapsed().as_secs_f64() * 1e3,
        tried: s.tried,
        kept: s.kept,
        ranks_before: ranks(case),
        ranks_after: ranks(&s.case),
        tokens_after: s.case.dims.batch * s.case.dims.seq,
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
