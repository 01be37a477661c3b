//! `shardfuzz bench --soak DURATION`: a campaign in this process for a long time, watching
//! for leaks and slowdowns. Every case goes the way a campaign worker's does ([`run_index`]:
//! generated, written to the in-flight file, checked, every 32nd twice), and the first case of
//! each new signature is written to a findings folder as the coordinator would. Every interval
//! (a minute by default) a row: cases so far, cases/s in that interval, resident memory from
//! `/proc/self/statm` and open file descriptors from `/proc/self/fd`. The verdict compares the
//! memory after the first interval (allocator pools and libtorch's caches are warm by then) with
//! the last one.

use crate::report::md_table;
use crate::subjects::{GenConfig, Kind};
use crate::worker::{run_index, Inflight, Reply, Setup};
use dtensor::device::Dev;
use harness::error::{Error, Result};
use harness::limits::Limits;
use harness::signature::Signature;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// How far the last interval's memory may be above the first's and still count as flat.
pub const FLAT_WITHIN: f64 = 0.10;

#[derive(Clone, Debug, Serialize)]
pub struct SoakRow {
    /// End of the interval, in minutes since the start.
    pub minute: f64,
    pub cases: u64,
    /// Cases per second within this interval.
    pub cases_per_s: f64,
    pub rss_mib: f64,
    /// Resident memory not backed by files (RSS less statm's `shared`): the heap. RSS also
    /// counts libtorch's code pages, which grow as new kernels are first run.
    pub anon_mib: f64,
    /// The C allocator's live and resident-but-unallocated memory (jemalloc's statistics).
    pub heap_used_mib: f64,
    pub heap_free_mib: f64,
    pub open_files: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    pub subjects: Vec<String>,
    pub device: String,
    pub seed: u64,
    pub rows: Vec<SoakRow>,
    /// Distinct signatures seen (each first case kept in the findings folder).
    pub signatures: usize,
}

/// What one soak runs.
#[derive(Clone, Debug)]
pub struct SoakSettings {
    pub subjects: Vec<Kind>,
    pub dev: Dev,
    pub seed: u64,
    pub duration: Duration,
    /// Time between rows.
    pub every: Duration,
}

/// Resident memory and its file-backed part in MiB (`/proc/self/statm`'s second and third
/// fields, in pages).
pub fn rss_mib() -> (f64, f64) {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let field = |i: usize| text.split_whitespace().nth(i).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as f64;
    let mib = |pages: u64| pages as f64 * page / (1024.0 * 1024.0);
    (mib(field(1)), mib(field(2)))
}

/// Open file descriptors of this process (`/proc/self/fd`, less the one reading it).
pub fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count().saturating_sub(1)).unwrap_or(0)
}

/// Runs the soak, printing each row on stderr as it comes; `scratch` holds the in-flight file
/// and the findings.
pub fn soak(s: &SoakSettings, scratch: &Path) -> Result<Soak> {
    let mut gen = GenConfig::default();
    gen.subjects.subjects = s.subjects.clone();
    gen.common.device = s.dev;
    let setup = Setup {
        seed: s.seed,
        gen,
        devices: vec![s.dev],
        inflight: Some(scratch.to_path_buf()),
        fault: None,
        limits: Limits::DEFAULT,
    };
    let findings = scratch.join("findings");
    std::fs::create_dir_all(&findings).map_err(Error::io(&findings))?;
    let path = scratch.join("inflight.json");
    let mut inflight = Inflight::create(&path).map_err(Error::io(&path))?;
    let mut seen: BTreeSet<Signature> = BTreeSet::new();
    let mut rows = Vec::new();
    let (start, mut mark, mut at_mark) = (Instant::now(), Instant::now(), 0u64);
    let mut index = 0u64;
    while start.elapsed() < s.duration {
        let reply = run_index(&setup, index, Some(&mut inflight)).map_err(Error::io(&path))?;
        if let Reply::Result { verdicts, .. } = reply {
            keep_findings(&setup, index, &verdicts, &mut seen, &findings)?;
        }
        index += 1;
        let since = mark.elapsed();
        if since >= s.every || start.elapsed() >= s.duration {
            let (rss, shared) = rss_mib();
            let heap = crate::heap::stats().unwrap_or_default();
            let row = SoakRow {
                minute: start.elapsed().as_secs_f64() / 60.0,
                cases: index,
                cases_per_s: (index - at_mark) as f64 / since.as_secs_f64().max(1e-9),
                rss_mib: rss,
                anon_mib: rss - shared,
                heap_used_mib: heap.used_mib,
                heap_free_mib: heap.free_mib,
                open_files: open_files(),
            };
            eprintln!(
                "soak: {:.2} min: {} cases, {:.0} cases/s, RSS {:.1} MiB (anonymous {:.1}, heap used {:.1}, heap free {:.1}), {} open files",
                row.minute, row.cases, row.cases_per_s, row.rss_mib, row.anon_mib, row.heap_used_mib, row.heap_free_mib, row.open_files
            );
            rows.push(row);
            (mark, at_mark) = (Instant::now(), index);
        }
    }
    Ok(Soak {
        subjects: s.subjects.iter().map(|k| k.to_string()).collect(),
        device: s.dev.to_string(),
        seed: s.seed,
        rows,
        signatures: seen.len(),
    })
}

/// Writes the first case of each signature not seen before to `dir`, as a campaign does.
fn keep_findings(
    setup: &Setup,
    index: u64,
    verdicts: &[harness::oracle::Verdict],
    seen: &mut BTreeSet<Signature>,
    dir: &Path,
) -> Result<()> {
    if verdicts.is_empty() {
        return Ok(());
    }
    let case = setup.case(index);
    for v in verdicts {
        let sig = v.signature(&case);
        if seen.insert(sig.clone()) {
            let file = dir.join(format!("{}.json", sig.slug()));
            std::fs::write(&file, case.to_json()).map_err(Error::io(&file))?;
        }
    }
    Ok(())
}

impl Soak {
    /// A memory figure after the first row against the last row's: `(first, last, flat)`;
    /// `None` with fewer than two rows.
    pub fn memory(&self, of: fn(&SoakRow) -> f64) -> Option<(f64, f64, bool)> {
        let (first, last) = (self.rows.first()?, self.rows.last()?);
        if self.rows.len() < 2 {
            return None;
        }
        let flat = of(last) <= of(first) * (1.0 + FLAT_WITHIN);
        Some((of(first), of(last), flat))
    }

    /// The table and the verdict line.
    pub fn markdown(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    trim_minute(r.minute),
                    r.cases.to_string(),
                    format!("{:.0}", r.cases_per_s),
                    format!("{:.1}", r.rss_mib),
                    format!("{:.1}", r.anon_mib),
                    format!("{:.1}", r.heap_used_mib),
                    format!("{:.1}", r.heap_free_mib),
                    r.open_files.to_string(),
                ]
            })
            .collect();
        let header =
            ["minute", "cases", "cases/s", "RSS MiB", "anonymous MiB", "heap used MiB", "heap free MiB", "open files"];
        let table = md_table(&header, &rows);
        let verdict = |what: &str, of: fn(&SoakRow) -> f64| match self.memory(of) {
            Some((a, b, flat)) => format!(
                "memory: {what} {a:.1} MiB after the first interval, {b:.1} MiB at the end ({:+.1}%): {}\n",
                (b / a.max(1e-9) - 1.0) * 100.0,
                if flat { "flat (within 10%)" } else { "NOT flat (more than 10% up)" }
            ),
            None => format!("memory: {what}: too short to judge (fewer than two intervals)\n"),
        };
        let verdict = verdict("RSS", |r| r.rss_mib) + &verdict("anonymous", |r| r.anon_mib);
        let subjects = self.subjects.join(",");
        format!(
            "soak: subjects {subjects}, device {}, seed {}, {} signature(s)\n\n{table}\n{verdict}",
            self.device, self.seed, self.signatures
        )
    }
}

/// Whole minutes without decimals, others with two.
fn trim_minute(m: f64) -> String {
    if (m - m.round()).abs() < 0.005 {
        format!("{:.0}", m.round())
    } else {
        format!("{m:.2}")
    }
}
