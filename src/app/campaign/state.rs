//! What a campaign has learned so far: cases and divergences per revision row, buckets with
//! their first and smallest cases, near-tie and time statistics. Every new bucket is on disk
//! (its first case in `cases/`, a line in `findings.jsonl`) before the next reply is read.

use super::Config;
use crate::bucket::{Bucket, ShrinkInfo};
use crate::report::{write_atomic, Coverage, GridCell, Report, Row, TieStats, Timing, REPORT_FORMAT};
use crate::subjects::{AnyCase, AnySpec};
use dtensor::RuleSet;
use harness::data;
use harness::oracle::{Class, GradTally, NearTies, Verdict};
use harness::shrink;
use harness::signature::Signature;
use harness::subject::{Program, Subject};
use harness::timing::Phases;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

pub struct State {
    /// The comparison table, in the registry's program order then rule-set order.
    rows: Vec<Row>,
    pub buckets: BTreeMap<Signature, Bucket>,
    /// Smallest case per bucket (kept in memory for shrinking).
    pub smallest: BTreeMap<Signature, AnyCase>,
    ties: TieStats,
    grads: GradTally,
    grid: BTreeMap<(String, String), (u64, u64)>,
    phases: Phases,
    cases: u64,
    diverging: u64,
    shrink_ms: u64,
}

fn mesh_label(c: &AnyCase) -> String {
    let v: Vec<String> = c.mesh.shape.iter().map(|s| s.to_string()).collect();
    format!("({})", v.join(","))
}

pub fn known_names(sig: &Signature, case: &AnyCase) -> Vec<String> {
    case.subject.known(case, sig).into_iter().map(String::from).collect()
}

impl State {
    /// Cases whose results have come in.
    pub fn cases_done(&self) -> u64 {
        self.cases
    }

    pub fn new(cfg: &Config) -> State {
        let mut rules = cfg.gen.common.rule_sets().to_vec();
        rules.sort();
        let mut rows = Vec::new();
        for p in AnySpec::all_programs(&cfg.gen.common, &cfg.gen.subjects) {
            rows.extend(rules.iter().map(|&s| Row::new(&p, s)));
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
        case: &AnyCase,
        verdicts: &[Verdict],
    ) -> anyhow::Result<Vec<Signature>> {
        self.cases += 1;
        for p in case.subject.programs() {
            let mine = |v: &&Verdict| p.backward.is_none_or(|b| v.backward == b);
            self.count_row(&p, case.rules, verdicts.iter().filter(mine));
        }
        let g = self.grid.entry((mesh_label(case), case.subject.layout_label())).or_insert((0, 0));
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
    fn count_row<'v>(&mut self, p: &Program, rules: RuleSet, verdicts: impl Iterator<Item = &'v Verdict>) {
        let at = match self.rows.iter().position(|r| r.program == p.name && r.rules == rules) {
            Some(i) => i,
            None => {
                self.rows.push(Row::new(p, rules));
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[at];
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
    fn open(&mut self, out: &Path, sig: &Signature, index: u64, case: &AnyCase, v: &Verdict) -> anyhow::Result<()> {
        let first_case = format!("cases/{}.json", sig.slug());
        write_case(&out.join(&first_case), case, false)?;
        append_finding(out, sig, (index, case), &first_case, v)?;
        let b = Bucket {
            signature: sig.clone(),
            class: v.class,
            count: 1,
            first_index: index,
            smallest_index: index,
            smallest_size: shrink::size(case).key(),
            detail: v.detail.clone(),
            explanation: case.subject.explain(v),
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
    fn update(&mut self, out: &Path, sig: &Signature, index: u64, case: &AnyCase, v: &Verdict) -> anyhow::Result<()> {
        let b = self.buckets.get_mut(sig).expect("bucket exists");
        b.count += 1;
        if index < b.first_index {
            // Everything a report says of the first case comes from the lowest index, so a
            // report does not depend on which worker answered first, nor on how a campaign
            // was cut into shards.
            b.first_index = index;
            b.known = known_names(sig, case);
            b.explanation = case.subject.explain(v);
            write_case(&out.join(&b.first_case), case, false)?;
        }
        // Instances of a known bug come first, so its reproducer shrinks as one; the order is
        // total, so arrival order does not matter.
        let unknown = |c: &AnyCase| c.subject.known(c, sig).is_empty();
        let was = self.smallest.get(sig).is_none_or(unknown);
        let size = shrink::size(case).key();
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
            b.extra.insert(crate::bucket::SCRIPT_FIELD.into(), script.into());
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
        let mut rows = self.rows.clone();
        let buckets: Vec<Bucket> = self.buckets.values().cloned().collect();
        link_rows(&mut rows, &buckets);
        Report {
            format: REPORT_FORMAT.into(),
            seed: cfg.seed,
            jobs: cfg.jobs,
            cases: self.cases,
            diverging_cases: self.diverging,
            devices: cfg.devices.iter().map(|d| d.to_string()).collect(),
            libtorch: dtensor::device::loaded_libtorch_version().unwrap_or_else(|| "unknown".into()),
            size: cfg.gen.common.size.name().into(),
            interrupted,
            shards,
            rows,
            buckets,
            known_bugs: cfg.gen.subjects.subjects.iter().flat_map(|k| k.known_bugs()).map(String::from).collect(),
            near_ties: self.ties.clone(),
            grads: self.grads,
            grid: self
                .grid
                .iter()
                .map(|((m, l), (c, d))| GridCell { mesh: m.clone(), layout: l.clone(), cases: *c, diverging: *d })
                .collect(),
            regression: None,
            findings: Vec::new(),
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
pub fn write_case(path: &Path, case: &AnyCase, inline: bool) -> anyhow::Result<()> {
    let c = if inline { data::with_inline(case) } else { case.clone() };
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

fn append_finding(
    out: &Path,
    sig: &Signature,
    (index, case): (u64, &AnyCase),
    file: &str,
    v: &Verdict,
) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(out.join("findings.jsonl"))?;
    let line = Finding {
        signature: sig.clone(),
        index,
        case: file.into(),
        detail: v.detail.clone(),
        explanation: case.subject.explain(v),
    };
    writeln!(f, "{}", serde_json::to_string(&line)?)?;
    f.flush()?;
    Ok(())
}
