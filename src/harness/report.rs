//! Campaign reports: the data (`report.json`, stable field names) and its renderings
//! (`report.md` with tables, `junit.xml` for CI systems, `report.html` with an SVG chart).
//! Rendering is a pure function of the data, so `shardfuzz report DIR` can redo it, and two
//! runs with the same seed and case count give byte-identical files apart from timing lines.

use super::bucket::Bucket;
use super::oracle::Class;
use super::worker::Phases;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use tabled::settings::Style;
use tabled::Table;

pub const REPORT_FORMAT: &str = "shardfuzz.report/1";

/// Everything that depends on the machine's speed, kept apart from the deterministic data.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub wall_s: f64,
    pub cases_per_s: f64,
    pub shrink_s: f64,
    /// Summed time per phase over all cases, in microseconds.
    pub phases_us: Phases,
}

/// One router revision x rule set row of the comparison table.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub router: String,
    pub rules: String,
    pub cases: u64,
    pub diverging: u64,
    /// Per class: diverging cases, and the bucket signature of the smallest reproducer.
    pub classes: BTreeMap<Class, Cell>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub cases: u64,
    pub smallest: Option<String>,
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
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Regression {
    pub baseline: String,
    pub new: Vec<String>,
    pub fixed: Vec<String>,
    pub still_failing: Vec<String>,
}

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
    pub rows: Vec<Row>,
    pub buckets: Vec<Bucket>,
    pub near_ties: TieStats,
    pub grid: Vec<GridCell>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regression: Option<Regression>,
    pub timing: Timing,
}

impl Report {
    pub fn load(dir: &Path) -> anyhow::Result<Report> {
        let p = dir.join("report.json");
        let text = std::fs::read_to_string(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: not a shardfuzz report: {e}", p.display()))
    }

    /// Adds the regression section against an earlier report.
    pub fn compare(&mut self, baseline: &Report, name: &str) {
        let now: std::collections::BTreeSet<&str> = self.buckets.iter().map(|b| b.signature.as_str()).collect();
        let before: std::collections::BTreeSet<&str> = baseline.buckets.iter().map(|b| b.signature.as_str()).collect();
        self.regression = Some(Regression {
            baseline: name.into(),
            new: now.difference(&before).map(|s| s.to_string()).collect(),
            fixed: before.difference(&now).map(|s| s.to_string()).collect(),
            still_failing: now.intersection(&before).map(|s| s.to_string()).collect(),
        });
    }

    /// Writes report.json, report.md, junit.xml and report.html into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        write_atomic(&dir.join("report.json"), &(serde_json::to_string_pretty(self)? + "\n"))?;
        write_atomic(&dir.join("report.md"), &self.markdown())?;
        write_atomic(&dir.join("junit.xml"), &self.junit())?;
        write_atomic(&dir.join("report.html"), &self.html())?;
        Ok(())
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# shardfuzz campaign report\n");
        if self.interrupted {
            let _ = writeln!(
                s,
                "**Interrupted**: the campaign was stopped early; the counts below cover the cases that finished.\n"
            );
        }
        let summary = vec![
            ["cases".to_string(), self.cases.to_string()],
            ["diverging cases".into(), self.diverging_cases.to_string()],
            ["buckets".into(), self.buckets.len().to_string()],
            ["seed".into(), self.seed.to_string()],
            ["case size".into(), self.size.clone()],
            ["devices".into(), self.devices.join(", ")],
            ["libtorch".into(), self.libtorch.clone()],
            ["workers".into(), self.jobs.to_string()],
            ["wall time".into(), format!("{:.1} s (timing)", self.timing.wall_s)],
            ["cases/s".into(), format!("{:.0} (timing)", self.timing.cases_per_s)],
        ];
        let _ = writeln!(s, "## Summary\n\n{}\n", md_table(&["", "value"], &summary));

        let _ = writeln!(s, "## Comparison: router revision x rule set\n");
        let _ = writeln!(
            s,
            "Diverging cases per verdict class; `[min]` links the smallest reproducer of that class in that row.\n"
        );
        let classes: Vec<Class> = Class::ALL.to_vec();
        let mut header = vec!["router".to_string(), "rules".into(), "cases".into(), "diverging".into()];
        header.extend(classes.iter().map(|c| c.name().to_string()));
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let mut v = vec![
                    format!("`{}`", r.router),
                    format!("`{}`", r.rules),
                    r.cases.to_string(),
                    r.diverging.to_string(),
                ];
                for c in &classes {
                    v.push(match r.classes.get(c) {
                        Some(cell) if cell.cases > 0 => match cell
                            .smallest
                            .as_ref()
                            .and_then(|sig| self.buckets.iter().find(|b| &b.signature == sig))
                        {
                            Some(b) => format!("{} [min]({})", cell.cases, b.repro.as_deref().unwrap_or(&b.first_case)),
                            None => cell.cases.to_string(),
                        },
                        _ => "0".into(),
                    });
                }
                v
            })
            .collect();
        let hdr: Vec<&str> = header.iter().map(String::as_str).collect();
        let _ = writeln!(s, "{}\n", md_table(&hdr, &rows));

        let _ = writeln!(s, "## Known upstream bugs\n");
        let _ = writeln!(s, "The bugs of the comparison table in router.md (§5, §9, §10); a bucket counts when its first case is an instance.\n");
        let krows: Vec<Vec<String>> = super::known::Known::ALL
            .iter()
            .map(|k| {
                let hits: Vec<&Bucket> =
                    self.buckets.iter().filter(|b| b.known.iter().any(|n| n == k.name())).collect();
                let first = hits.iter().map(|b| b.first_index).min();
                // The smallest minimized reproducer among the matching buckets.
                let best = hits
                    .iter()
                    .filter_map(|b| b.shrink.as_ref().map(|x| (x.ranks, x.tokens, x.experts * x.model, *b)))
                    .min_by_key(|t| (t.0, t.1, t.2));
                vec![
                    k.name().to_string(),
                    if hits.is_empty() { "not found".into() } else { format!("found ({} bucket(s))", hits.len()) },
                    first.map_or("-".into(), |i| i.to_string()),
                    match best {
                        Some((r, t, _, b)) => {
                            format!("[{r} rank(s), {t} token(s)]({})", b.repro.as_deref().unwrap_or(&b.first_case))
                        }
                        None => hits.first().map_or("-".into(), |b| format!("[first]({})", b.first_case)),
                    },
                ]
            })
            .collect();
        let _ = writeln!(s, "{}\n", md_table(&["bug", "status", "first case", "smallest reproducer"], &krows));

        let _ = writeln!(s, "## Buckets\n");
        let _ = writeln!(s, "One row per signature (`class:output:router:rules:key`). Minimized: ranks/tokens/experts/model dim of the shrunk reproducer.\n");
        let brows: Vec<Vec<String>> = self
            .buckets
            .iter()
            .map(|b| {
                let min = match &b.shrink {
                    Some(x) => format!("{}r {}t {}e {}d", x.ranks, x.tokens, x.experts, x.model),
                    None => "-".into(),
                };
                vec![
                    format!("`{}`", b.signature),
                    b.count.to_string(),
                    b.first_index.to_string(),
                    min,
                    match &b.repro {
                        Some(r) => format!("[repro]({r})"),
                        None => format!("[first]({})", b.first_case),
                    },
                    b.explanation.replace('|', "\\|"),
                ]
            })
            .collect();
        let _ = writeln!(
            s,
            "{}\n",
            md_table(&["signature", "cases", "first", "minimized", "file", "what it means"], &brows)
        );

        let t = &self.near_ties;
        let _ = writeln!(s, "## Near-ties\n");
        let _ = writeln!(
            s,
            "Tokens whose top-k (or group) choice was within the rounding bound of the next candidate are compared as information only.\n\n{}\n",
            md_table(
                &["tokens compared", "top-k near-ties", "group near-ties", "flipped (benign)", "cases with near-ties"],
                &[vec![t.tokens.to_string(), t.topk_near_ties.to_string(), t.group_near_ties.to_string(), t.flipped.to_string(), t.cases_with_near_ties.to_string()]]
            )
        );
        if let Some(r) = &self.regression {
            let _ = writeln!(s, "## Regression against `{}`\n", r.baseline);
            let list = |v: &Vec<String>| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.iter().map(|x| format!("- `{x}`")).collect::<Vec<_>>().join("\n")
                }
            };
            let _ = writeln!(
                s,
                "**New** ({}):\n\n{}\n\n**Fixed** ({}):\n\n{}\n\n**Still failing** ({}):\n\n{}\n",
                r.new.len(),
                list(&r.new),
                r.fixed.len(),
                list(&r.fixed),
                r.still_failing.len(),
                list(&r.still_failing)
            );
        }
        let p = &self.timing.phases_us;
        let total =
            (p.generate_us + p.inputs_us + p.reference_us + p.sharded_us + p.shadow_us + p.oracles_us).max(1) as f64;
        let pct = |x: u64| format!("{:.0}%", 100.0 * x as f64 / total);
        let _ = writeln!(s, "## Where the time went (timing)\n");
        let _ = writeln!(
            s,
            "{}\n",
            md_table(
                &["generate", "inputs", "reference", "sharded", "float64 shadow", "oracles", "shrinking"],
                &[vec![
                    pct(p.generate_us),
                    pct(p.inputs_us),
                    pct(p.reference_us),
                    pct(p.sharded_us),
                    pct(p.shadow_us),
                    pct(p.oracles_us),
                    format!("{:.1} s", self.timing.shrink_s)
                ]]
            )
        );
        s
    }

    pub fn junit(&self) -> String {
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let failures: usize = self.buckets.len();
        let _ = writeln!(
            s,
            "<testsuites name=\"shardfuzz\" tests=\"{}\" failures=\"{failures}\">",
            self.rows.len() + failures
        );
        for r in &self.rows {
            let bs: Vec<&Bucket> = self
                .buckets
                .iter()
                .filter(|b| {
                    let p = super::bucket::parts(&b.signature);
                    p.router == r.router && p.rules == r.rules
                })
                .collect();
            let _ = writeln!(
                s,
                "  <testsuite name=\"{}/{}\" tests=\"{}\" failures=\"{}\">",
                xml(&r.router),
                xml(&r.rules),
                bs.len().max(1),
                bs.len()
            );
            if bs.is_empty() {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{}.{}\" name=\"no divergence in {} cases\"/>",
                    xml(&r.router),
                    xml(&r.rules),
                    r.cases
                );
            }
            for b in bs {
                let _ = writeln!(
                    s,
                    "    <testcase classname=\"{}.{}\" name=\"{}\">",
                    xml(&r.router),
                    xml(&r.rules),
                    xml(&b.signature)
                );
                let _ = writeln!(
                    s,
                    "      <failure message=\"{}\">{} case(s); reproducer {}; {}</failure>",
                    xml(&b.explanation),
                    b.count,
                    xml(b.repro.as_deref().unwrap_or(&b.first_case)),
                    xml(&b.detail)
                );
                let _ = writeln!(s, "    </testcase>");
            }
            let _ = writeln!(s, "  </testsuite>");
        }
        s.push_str("</testsuites>\n");
        s
    }

    pub fn html(&self) -> String {
        let md = self.markdown();
        let mut s = String::from("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>shardfuzz report</title>\n<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}pre{white-space:pre-wrap}</style></head><body>\n");
        let _ = writeln!(
            s,
            "<h1>shardfuzz campaign</h1>\n<p>{} cases, {} diverging, {} buckets, seed {}.</p>",
            self.cases,
            self.diverging_cases,
            self.buckets.len(),
            self.seed
        );
        let _ = writeln!(s, "<h2>Divergence rate by mesh shape and token layout</h2>\n{}", self.svg());
        let _ = writeln!(s, "<h2>Tables</h2>\n<pre>{}</pre>\n</body></html>", xml(&md));
        s
    }

    /// A heat map: one row per mesh shape, one column per x layout, shade = divergence rate.
    fn svg(&self) -> String {
        let mut meshes: Vec<&str> = self.grid.iter().map(|g| g.mesh.as_str()).collect();
        meshes.sort_unstable();
        meshes.dedup();
        let mut layouts: Vec<&str> = self.grid.iter().map(|g| g.layout.as_str()).collect();
        layouts.sort_unstable();
        layouts.dedup();
        let (cw, ch, left, top) = (44, 22, 90, 110);
        let w = left + cw * layouts.len() + 10;
        let h = top + ch * meshes.len() + 10;
        let mut s =
            format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-size=\"10\">\n");
        for (j, l) in layouts.iter().enumerate() {
            let x = left + j * cw + cw / 2;
            let _ = writeln!(s, "<text transform=\"translate({x},{}) rotate(-60)\">{}</text>", top - 4, xml(l));
        }
        for (i, m) in meshes.iter().enumerate() {
            let y = top + i * ch;
            let _ = writeln!(s, "<text x=\"4\" y=\"{}\">mesh {}</text>", y + 15, xml(m));
            for (j, l) in layouts.iter().enumerate() {
                if let Some(g) = self.grid.iter().find(|g| g.mesh == *m && g.layout == *l) {
                    let rate = g.diverging as f64 / g.cases.max(1) as f64;
                    let red = 255;
                    let other = (255.0 * (1.0 - rate)) as u8;
                    let _ = writeln!(
                        s,
                        "<rect x=\"{}\" y=\"{y}\" width=\"{}\" height=\"{}\" fill=\"rgb({red},{other},{other})\" stroke=\"#999\"><title>mesh {} x {}: {}/{} diverging</title></rect>",
                        left + j * cw,
                        cw - 2,
                        ch - 2,
                        xml(m),
                        xml(l),
                        g.diverging,
                        g.cases
                    );
                }
            }
        }
        s.push_str("</svg>");
        s
    }
}

fn xml(s: &str) -> String {
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
