//! What a campaign has learned so far: cases and divergences per revision row, buckets with
//! their first and smallest cases, near-tie and time statistics. Every new bucket is on disk
//! (its first case in `cases/`, a line in `findings.jsonl`) before the next reply is read.

use super::Config;
use crate::dtensor::RuleSet;
use crate::harness::bucket::{self, Bucket, ShrinkInfo};
use crate::harness::case::Case;
use crate::harness::data;
use crate::harness::generate::BackwardMix;
use crate::harness::known::Known;
use crate::harness::oracle::{Class, GradTally, NearTies, Verdict};
use crate::harness::report::{write_atomic, Coverage, GridCell, Report, Row, TieStats, Timing, REPORT_FORMAT};
use crate::harness::shrink;
use crate::harness::signature::Signature;
use crate::harness::timing::Phases;
use crate::router::Program;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub struct State {
    rows: BTreeMap<(Program, RuleSet), Row>,
    pub buckets: BTreeMap<Signature, Bucket>,
    /// Smallest case per bucket (kept in memory for shrinking).
    pub smallest: BTreeMap<Signature, Case>,
    ties: TieStats,
    grads: GradTally,
    grid: BTreeMap<(String, String), (u64, u64)>,
    phases: Phases,
    cases: u64,
    diverging: u64,
    shrink_ms: u64,
}

fn mesh_label(c: &Case) -> String {
    let v: Vec<String> = c.mesh.shape.iter().map(|s| s.to_string()).collect();
    format!("({})", v.join(","))
}

fn layout_label(c: &Case) -> String {
    let v: Vec<String> = c.layout.x.iter().map(|p| p.to_string()).collect();
    v.join(",")
}

fn known_names(sig: &Signature, case: &Case) -> Vec<String> {
    Known::of(sig, case).into_iter().map(|k| k.name().to_string()).collect()
}

impl State {
    pub fn new(cfg: &Config) -> State {
        let mut programs: Vec<Program> = cfg.gen.router_revisions().iter().map(|&r| Program::Router(r)).collect();
        if cfg.gen.backward != BackwardMix::Off {
            programs.extend(cfg.gen.boundary_revisions().iter().map(|&b| Program::Boundary(b)));
        }
        let mut rows = BTreeMap::new();
        for &p in &programs {
            for &s in cfg.gen.rule_sets() {
                rows.insert((p, s), Row::new(p, s));
            }
        }
        State {
            rows,
            buckets: BTreeMap::new(),
            smallest: BTreeMap::new(),
            ties: TieStats::default(),
            grads: GradTally::default(),
            grid: BTreeMap::new(),
            phases: Phases::default(),
            cases: 0,
            diverging: 0,
            shrink_ms: 0,
        }
    }

    pub fn cases(&self) -> u64 {
        self.cases
    }

    /// Adds a case's near-tie and gradient-check counts and phase times.
    pub fn add_stats(&mut self, t: &NearTies, grads: &GradTally, phases: &Phases) {
        self.grads.add(grads);
        self.ties.add_case(t);
        self.phases.add(phases);
    }

    /// Records one judged case; returns the signatures seen for the first time.
    pub fn record(
        &mut self,
        out: &Path,
        index: u64,
        case: &Case,
        verdicts: &[Verdict],
    ) -> anyhow::Result<Vec<Signature>> {
        self.cases += 1;
        let rules = case.revision.rules;
        self.count_row(Program::Router(case.revision.router), rules, verdicts.iter().filter(|v| !v.backward));
        if let Some(b) = &case.backward {
            self.count_row(Program::Boundary(b.boundary), rules, verdicts.iter().filter(|v| v.backward));
        }
        let g = self.grid.entry((mesh_label(case), layout_label(case))).or_insert((0, 0));
        g.0 += 1;
        if verdicts.is_empty() {
            return Ok(vec![]);
        }
        self.diverging += 1;
        g.1 += 1;
        let mut new = Vec::new();
        for v in verdicts {
            let sig = v.signature(case);
            if self.buckets.contains_key(&sig) {
                self.update(out, &sig, index, case, v)?;
            } else {
                self.open(out, &sig, index, case, v)?;
                new.push(sig);
            }
        }
        Ok(new)
    }

    /// Counts one case in a row, with the verdicts that belong to it.
    fn count_row<'v>(&mut self, p: Program, rules: RuleSet, verdicts: impl Iterator<Item = &'v Verdict>) {
        let row = self.rows.entry((p, rules)).or_insert_with(|| Row::new(p, rules));
        row.cases += 1;
        let mut classes: Vec<Class> = verdicts.map(|v| v.class).collect();
        classes.sort();
        classes.dedup();
        row.diverging += u64::from(!classes.is_empty());
        for c in classes {
            row.classes.entry(c).or_default().cases += 1;
        }
    }

    /// A new bucket: its first case and its finding line go to disk at once.
    fn open(&mut self, out: &Path, sig: &Signature, index: u64, case: &Case, v: &Verdict) -> anyhow::Result<()> {
        let first_case = format!("cases/{}.json", sig.slug());
        write_case(&out.join(&first_case), case, false)?;
        append_finding(out, sig, index, &first_case, v)?;
        let b = Bucket {
            signature: sig.clone(),
            class: v.class,
            count: 1,
            first_index: index,
            smallest_index: index,
            smallest_size: shrink::size_key(case),
            detail: v.detail.clone(),
            explanation: bucket::explain(v),
            first_case,
            repro: None,
            shrink: None,
            known: known_names(sig, case),
            extra: Default::default(),
        };
        self.buckets.insert(sig.clone(), b);
        self.smallest.insert(sig.clone(), case.clone());
        Ok(())
    }

    /// Another case of a known bucket: it may be the first (by index) or the smallest.
    fn update(&mut self, out: &Path, sig: &Signature, index: u64, case: &Case, v: &Verdict) -> anyhow::Result<()> {
        let b = self.buckets.get_mut(sig).expect("bucket exists");
        b.count += 1;
        if index < b.first_index {
            // Everything a report says of the first case comes from the lowest index, so a
            // report does not depend on which worker answered first, nor on how a campaign
            // was cut into shards.
            b.first_index = index;
            b.known = known_names(sig, case);
            b.explanation = bucket::explain(v);
            write_case(&out.join(&b.first_case), case, false)?;
        }
        // Instances of a known bug come first, so its reproducer shrinks as one; the order is
        // total, so arrival order does not matter.
        let unknown = |c: &Case| Known::of(sig, c).is_empty();
        let was = self.smallest.get(sig).is_none_or(unknown);
        let size = shrink::size_key(case);
        if (unknown(case), size, index) < (was, b.smallest_size, b.smallest_index) {
            b.smallest_size = size;
            b.smallest_index = index;
            b.detail = v.detail.clone();
            self.smallest.insert(sig.clone(), case.clone());
        }
        Ok(())
    }

    /// A bucket's minimized reproducer, written at `file` (relative to the campaign directory).
    /// A bucket's minimized reproducer and its exported PyTorch script (the bucket's `pytorch`).
    pub fn shrunk(&mut self, sig: &Signature, file: String, script: String, info: ShrinkInfo) {
        if let Some(b) = self.buckets.get_mut(sig) {
            b.repro = Some(file);
            b.extra.insert(crate::harness::bucket::SCRIPT_FIELD.into(), script.into());
            b.shrink = Some(info);
        }
    }

    pub fn add_shrink_time(&mut self, ms: u64) {
        self.shrink_ms += ms;
    }

    pub fn report(&self, cfg: &Config, interrupted: bool, wall_s: f64) -> Report {
        let timing = Timing {
            wall_s,
            cases_per_s: self.cases as f64 / wall_s.max(1e-9),
            shrink_s: self.shrink_ms as f64 / 1000.0,
            phases_us: self.phases.clone(),
            parts: vec![],
        };
        let shards = (cfg.shard.count > 1).then(|| Coverage { of: cfg.shard.count, covered: vec![cfg.shard.index] });
        let mut rows: Vec<Row> = self.rows.values().cloned().collect();
        let buckets: Vec<Bucket> = self.buckets.values().cloned().collect();
        link_rows(&mut rows, &buckets);
        Report {
            format: REPORT_FORMAT.into(),
            seed: cfg.seed,
            jobs: cfg.jobs,
            cases: self.cases,
            diverging_cases: self.diverging,
            devices: cfg.devices.iter().map(|d| d.to_string()).collect(),
            libtorch: crate::device::loaded_libtorch_version().unwrap_or_else(|| "unknown".into()),
            size: cfg.gen.size.name().into(),
            interrupted,
            shards,
            rows,
            buckets,
            near_ties: self.ties.clone(),
            grads: self.grads,
            grid: self
                .grid
                .iter()
                .map(|((m, l), (c, d))| GridCell { mesh: m.clone(), layout: l.clone(), cases: *c, diverging: *d })
                .collect(),
            regression: None,
            fidelity: None,
            timing,
        }
    }
}

/// Links each class cell of `rows` to the smallest bucket of that class in that row.
pub fn link_rows(rows: &mut [Row], buckets: &[Bucket]) {
    for r in rows {
        for (class, cell) in r.classes.iter_mut() {
            cell.smallest = buckets
                .iter()
                .filter(|b| b.class == *class && b.signature.program == r.program && b.signature.rules == r.rules)
                .min_by_key(|b| (b.minimized_size(), b.signature.clone()))
                .map(|b| b.signature.clone());
        }
    }
}

/// Writes a case file atomically; with `inline`, the inputs go in too (a reproducer must replay
/// anywhere), else a generated case keeps only its seed, which regenerates them.
pub fn write_case(path: &Path, case: &Case, inline: bool) -> anyhow::Result<()> {
    let mut c = case.clone();
    if inline && c.tensors.is_none() {
        c.tensors = Some(data::inline(&c));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    write_atomic(path, &(c.to_json() + "\n"))?;
    Ok(())
}

/// One line of `findings.jsonl`: enough to list the bucket in a report if the campaign is
/// killed before it writes one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub signature: Signature,
    pub index: u64,
    pub case: String,
    #[serde(default)]
    pub detail: String,
    #[serde(default)]
    pub explanation: String,
}

fn append_finding(out: &Path, sig: &Signature, index: u64, file: &str, v: &Verdict) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out.join("findings.jsonl"))?;
    let line = Finding {
        signature: sig.clone(),
        index,
        case: file.into(),
        detail: v.detail.clone(),
        explanation: bucket::explain(v),
    };
    writeln!(f, "{}", serde_json::to_string(&line)?)?;
    f.flush()?;
    Ok(())
}
