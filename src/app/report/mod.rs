//! Campaign reports: the data (`report.json`, stable field names) and its renderings
//! (`report.md` with tables, `junit.xml` for CI systems, `report.html`), one file each.
//! Rendering is a pure function of the data, so `shardfuzz report DIR` can redo it, and two
//! runs with the same seed and case count give byte-identical files apart from timing lines.

use crate::bucket::Bucket;
use dtensor::RuleSet;
use harness::oracle::{Class, GradTally, NearTies};
use harness::signature::Signature;
use harness::subject::Program;
use harness::timing::Phases;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tabled::settings::Style;
use tabled::Table;

mod findings;
mod html;
mod junit;
mod markdown;
pub mod real;

pub const REPORT_FORMAT: &str = "shardfuzz.report/1";

/// Everything that depends on the machine's speed, kept apart from the deterministic data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub wall_s: f64,
    pub cases_per_s: f64,
    pub shrink_s: f64,
    /// Summed time per phase over all cases, in microseconds.
    pub phases_us: Phases,
    /// A merged report: each part's own wall time and throughput (the merged `wall_s` is the
    /// longest part's, as parts run side by side).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartTiming>,
}

/// The timing of one merged part.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PartTiming {
    /// The shards the part held, as `I/N` (or `I,J/N`).
    pub shards: String,
    pub cases: u64,
    pub wall_s: f64,
    pub cases_per_s: f64,
}

/// Which shards of the case stream a report covers, when not all of them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// The number of shards the stream is cut into.
    pub of: u64,
    pub covered: Vec<u64>,
}

/// One row of the comparison table: a program (for the router, a router revision with its
/// forward verdicts or a boundary revision with the backward ones) x a rule set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The program (the field kept its first name).
    #[serde(rename = "router")]
    pub program: String,
    /// What kind of program it is ("router", "boundary", ...).
    #[serde(default)]
    pub kind: String,
    pub rules: RuleSet,
    pub cases: u64,
    pub diverging: u64,
    /// Per class: diverging cases, and the bucket signature of the smallest reproducer.
    pub classes: BTreeMap<Class, Cell>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub cases: u64,
    pub smallest: Option<Signature>,
}

impl Row {
    pub fn new(program: &Program, rules: RuleSet) -> Row {
        let (program, kind) = (program.name.clone(), program.kind.to_string());
        Row { program, kind, rules, cases: 0, diverging: 0, classes: BTreeMap::new() }
    }
}

/// Cases and diverging cases per (mesh shape, x layout), for the chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridCell {
    pub mesh: String,
    pub layout: String,
    pub cases: u64,
    pub diverging: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TieStats {
    pub tokens: u64,
    pub topk_near_ties: u64,
    pub group_near_ties: u64,
    pub flipped: u64,
    pub cases_with_near_ties: u64,
    /// Near-tie tokens whose choice could not even be checked for validity (the value oracle's
    /// blind spot; the undecided checks cover the rest).
    #[serde(default)]
    pub unchecked: u64,
}

impl TieStats {
    /// Adds one case's near-tie counts.
    pub fn add_case(&mut self, t: &NearTies) {
        self.tokens += t.rows as u64;
        self.topk_near_ties += t.topk_rows as u64;
        self.group_near_ties += t.group_rows as u64;
        self.flipped += t.flipped_rows as u64;
        self.cases_with_near_ties += u64::from(t.topk_rows + t.group_rows > 0);
        self.unchecked += t.unchecked_rows as u64;
    }

    /// Adds another run's totals (a shard's, when merging).
    pub fn add(&mut self, o: &TieStats) {
        self.tokens += o.tokens;
        self.topk_near_ties += o.topk_near_ties;
        self.group_near_ties += o.group_near_ties;
        self.flipped += o.flipped;
        self.cases_with_near_ties += o.cases_with_near_ties;
        self.unchecked += o.unchecked;
    }

    /// The unchecked tokens as a percentage of the tokens compared, "-" when none were.
    pub fn unchecked_share(&self) -> String {
        if self.tokens == 0 {
            return "-".into();
        }
        format!("{:.3}%", 100.0 * self.unchecked as f64 / self.tokens as f64)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub baseline: String,
    pub new: Vec<String>,
    pub fixed: Vec<String>,
    pub still_failing: Vec<String>,
    /// Buckets of this campaign that an earlier night had fixed (in `fixed` or `gone`): back now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regressed: Vec<String>,
    /// Buckets fixed in an earlier night and not seen since (carried from night to night, so a
    /// bucket that comes back later is a regression).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
    /// Earlier nights, oldest first: the baseline's own history, then the baseline.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Night>,
}

/// One earlier campaign in a regression history.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Night {
    pub name: String,
    pub cases: u64,
    pub buckets: usize,
    pub new: usize,
    pub fixed: usize,
}

/// Nights kept in a regression history.
pub const HISTORY: usize = 30;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub format: String,
    pub seed: u64,
    pub jobs: usize,
    pub cases: u64,
    pub diverging_cases: u64,
    pub devices: Vec<String>,
    pub libtorch: String,
    pub size: String,
    pub interrupted: bool,
    /// Present when the report covers only some shards of the case stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<Coverage>,
    pub rows: Vec<Row>,
    pub buckets: Vec<Bucket>,
    /// The known upstream bugs of the campaign's subjects, in the known-bugs table's order.
    #[serde(default = "crate::subjects::all_known_bugs")]
    pub known_bugs: Vec<String>,
    pub near_ties: TieStats,
    /// Backward cases: how many, how many compared, how many skipped and why.
    #[serde(default)]
    pub grads: GradTally,
    pub grid: Vec<GridCell>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
    /// The findings (buckets grouped by mechanism, each with its status); recomputed on every
    /// write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<crate::triage::Finding>,
    /// Confirmed buckets of all buckets (`nightly --confirm`); recomputed on every write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fidelity: Option<real::Fidelity>,
    pub timing: Timing,
}

impl Report {
    /// The kind of a program, as the comparison table's rows give it.
    pub fn kind_of(&self, program: &str) -> &str {
        self.rows.iter().find(|r| r.program == program).map_or("", |r| r.kind.as_str())
    }

    pub fn load(dir: &Path) -> anyhow::Result<Report> {
        let p = dir.join("report.json");
        let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a shardfuzz report: {e}", p.display()))
    }

    /// Adds the regression section against an earlier report.
    pub fn compare(&mut self, baseline: &Report, name: &str) {
        let now: std::collections::BTreeSet<String> = self.buckets.iter().map(|b| b.signature.to_string()).collect();
        let before: std::collections::BTreeSet<String> =
            baseline.buckets.iter().map(|b| b.signature.to_string()).collect();
        let mut history = baseline.regression.as_ref().map(|r| r.history.clone()).unwrap_or_default();
        history.push(Night {
            name: name.into(),
            cases: baseline.cases,
            buckets: baseline.buckets.len(),
            new: baseline.regression.as_ref().map_or(0, |r| r.new.len()),
            fixed: baseline.regression.as_ref().map_or(0, |r| r.fixed.len()),
        });
        let drop = history.len().saturating_sub(HISTORY);
        history.drain(..drop);
        // Fixed in some earlier night: the baseline's fixed buckets and those it carried.
        let mut earlier: std::collections::BTreeSet<String> = Default::default();
        if let Some(r) = &baseline.regression {
            earlier.extend(r.fixed.iter().chain(&r.gone).cloned());
        }
        let regressed: Vec<String> = now.intersection(&earlier).cloned().collect();
        self.regression = Some(Regression {
            baseline: name.into(),
            new: now.difference(&before).filter(|s| !earlier.contains(*s)).cloned().collect(),
            fixed: before.difference(&now).cloned().collect(),
            still_failing: now.intersection(&before).cloned().collect(),
            regressed,
            gone: earlier.difference(&now).filter(|s| !before.contains(*s)).cloned().collect(),
            history,
        });
    }

    /// The findings: buckets grouped by mechanism, each with its status (crate::triage).
    pub fn triage(&self) -> Vec<crate::triage::Finding> {
        let base = self.regression.as_ref().map(|r| crate::triage::Baseline {
            still_failing: &r.still_failing,
            regressed: &r.regressed,
            fixed: &r.fixed,
        });
        crate::triage::findings(&self.buckets, base)
    }

    /// Whether any finding fails CI under `fail` (junit.xml and `nightly`'s exit status).
    pub fn fails(&self, fail: &crate::triage::FailOn) -> bool {
        self.triage().iter().any(|f| fail.fails(f.status))
    }

    /// Writes report.json, report.md, junit.xml and report.html into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        self.write_with(dir, &crate::triage::FailOn::default())
    }

    /// [`Report::write`], with junit.xml failing the findings of the statuses in `fail`.
    pub fn write_with(&self, dir: &Path, fail: &crate::triage::FailOn) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut data = self.clone();
        data.fidelity = self.measure_fidelity();
        data.findings = self.triage();
        write_atomic(&dir.join("report.json"), &(serde_json::to_string_pretty(&data)? + "\n"))?;
        write_atomic(&dir.join("report.md"), &self.markdown())?;
        write_atomic(&dir.join("junit.xml"), &self.junit(fail))?;
        write_atomic(&dir.join("report.html"), &self.html(dir))?;
        Ok(())
    }
}

pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A markdown table through tabled.
pub fn md_table<R: AsRef<[String]>>(header: &[&str], rows: &[R]) -> String {
    let mut b = tabled::builder::Builder::default();
    b.push_record(header.iter().map(|h| h.to_string()));
    for r in rows {
        b.push_record(r.as_ref().iter().cloned());
    }
    let mut t: Table = b.build();
    t.with(Style::markdown());
    t.to_string()
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
pub fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with one bucket per signature (the fields triage reads).
    fn night(sigs: &[&str]) -> Report {
        let buckets: Vec<serde_json::Value> = sigs
            .iter()
            .map(|s| {
                serde_json::json!({"signature": s, "class": s.split(':').next().unwrap(), "count": 1, "first_index": 0,
                    "smallest_index": 0, "smallest_size": [1, 1, 1, 1], "detail": "", "explanation": format!("x {s}"),
                    "first_case": "cases/a.json", "repro": null, "shrink": null})
            })
            .collect();
        // The example's fields, with these buckets.
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/example/report.json");
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        v["buckets"] = buckets.into();
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_bucket_fixed_one_night_and_back_later_is_a_regression() {
        use crate::triage::{FailOn, Status};
        let (a, b) = ("value:counts:p:torch-2.13:values", "shape:counts:p:torch-2.13:rank_dependent");
        let mut n2 = night(&[b]);
        n2.compare(&night(&[a, b]), "n1");
        let st =
            |r: &Report, s: &str| r.triage().into_iter().find(|f| f.buckets.iter().any(|x| x == s)).unwrap().status;
        assert_eq!((st(&n2, a), st(&n2, b)), (Status::Fixed, Status::Open));
        assert!(!n2.fails(&FailOn::default()));
        let mut n3 = night(&[b]);
        n3.compare(&n2, "n2");
        assert_eq!(n3.regression.as_ref().unwrap().gone, vec![a.to_string()], "carried while it stays away");
        let mut n4 = night(&[a, b]);
        n4.compare(&n3, "n3");
        assert_eq!(st(&n4, a), Status::Regression);
        assert!(n4.regression.as_ref().unwrap().new.is_empty());
        assert!(n4.fails(&FailOn::default()) && !n4.fails(&"new".parse().unwrap()));
        let junit = n4.junit(&FailOn::default());
        assert_eq!(junit.matches("<failure ").count(), 1, "{junit}");
    }

    #[test]
    fn tie_stats_sum_cases_and_give_the_unchecked_share() {
        let mut t = TieStats::default();
        assert_eq!(t.unchecked_share(), "-");
        let a = NearTies { topk_rows: 3, group_rows: 1, flipped_rows: 1, rows: 6, unchecked_rows: 2 };
        let b = NearTies { rows: 2, ..NearTies::default() };
        t.add_case(&a);
        t.add_case(&b);
        assert_eq!((t.tokens, t.topk_near_ties, t.group_near_ties, t.flipped), (8, 3, 1, 1));
        assert_eq!((t.cases_with_near_ties, t.unchecked), (1, 2));
        assert_eq!(t.unchecked_share(), "25.000%");
        let mut sum = t.clone();
        sum.add(&t);
        assert_eq!((sum.tokens, sum.flipped, sum.cases_with_near_ties, sum.unchecked), (16, 2, 2, 4));
    }
}
