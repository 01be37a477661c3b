//! `merge`: joins the directories of a campaign's shards (or of earlier merges) into one, with
//! the report a single run over the same cases would have written.
//!
//! Counts add up. Per bucket, the first case is the lowest index over all parts, and the
//! smallest case is the least by the campaign's own order (instances of a known bug first, then
//! size, then index: `state::State::update`). Each shard shrank its own smallest case, and a
//! shrink is a deterministic function of its starting case and budget, so the reproducer of the
//! part holding the least smallest case is the one a single run would have shrunk: it is copied
//! byte for byte, with its shrink statistics. (Shrinking again after the merge would give the
//! same file, at the cost of a second shrink per bucket on one machine.)
//!
//! Merging is order-independent (parts are sorted by the shards they hold) and idempotent (a
//! merged directory carries a manifest covering its shards, so it can be merged again alone or
//! with the other shards of its campaign).

use super::recover;
use super::shard::Manifest;
use super::state::{link_rows, write_case, Finding};
use crate::bucket::Bucket;
use crate::report::{write_atomic, Coverage, GridCell, PartTiming, Report, Row, TieStats, Timing};
use crate::worker::Setup;
use harness::signature::Signature;
use harness::subject::Subject;
use harness::timing::Phases;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub struct Options {
    pub out: PathBuf,
    /// Where reproducers go (default `OUT/repro`), as `nightly --corpus`.
    pub corpus: Option<PathBuf>,
    /// Merge what there is when some shards are missing (the report says which it covers).
    pub allow_missing: bool,
}

/// One input directory.
pub struct Part {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub report: Report,
}

/// Merges `dirs` into `opts.out` and returns the merged report (written there).
pub fn merge(dirs: &[PathBuf], opts: &Options) -> anyhow::Result<Report> {
    let parts = load(dirs, &opts.out)?;
    let manifest = joint_manifest(&parts, opts.allow_missing)?;
    let setup = manifest.setup();
    prepare_out(&opts.out)?;
    let mut report = combine(&parts, &manifest);
    report.buckets = merge_buckets(&parts, &setup, opts)?;
    link_rows(&mut report.rows, &report.buckets);
    write_findings(&opts.out, &report.buckets)?;
    manifest.write(&opts.out)?;
    report.write(&opts.out)?;
    Ok(report)
}

/// Whether two paths name the same existing file or directory.
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Reads every input (a killed part's report is rebuilt), sorted by the shards it holds; the
/// same directory named twice counts once.
fn load(dirs: &[PathBuf], out: &Path) -> anyhow::Result<Vec<Part>> {
    if dirs.is_empty() {
        anyhow::bail!("merge: no input directories");
    }
    let mut parts: Vec<Part> = Vec::new();
    for dir in dirs {
        if !dir.is_dir() {
            anyhow::bail!("{}: no such directory", dir.display());
        }
        if same_path(dir, out) {
            anyhow::bail!("{}: --out must not be one of the inputs", dir.display());
        }
        if parts.iter().any(|p| same_path(&p.dir, dir)) {
            continue;
        }
        let manifest = Manifest::load(dir)?;
        let report = recover::load(dir)?;
        parts.push(Part { dir: dir.clone(), manifest, report });
    }
    parts.sort_by(|a, b| a.manifest.covered.cmp(&b.manifest.covered));
    Ok(parts)
}

/// The merged manifest: the parts must be of one campaign and hold disjoint shards.
fn joint_manifest(parts: &[Part], allow_missing: bool) -> anyhow::Result<Manifest> {
    let mut m = parts[0].manifest.clone();
    let mut owner: BTreeMap<u64, &Path> = BTreeMap::new();
    for p in parts {
        if let Some(d) = parts[0].manifest.differs(&p.manifest) {
            anyhow::bail!("{} and {} are not parts of one campaign: {d}", parts[0].dir.display(), p.dir.display());
        }
        for &i in &p.manifest.covered {
            if let Some(other) = owner.insert(i, &p.dir) {
                anyhow::bail!("shard {i}/{} is in both {} and {}", m.shards, other.display(), p.dir.display());
            }
        }
    }
    m.covered = owner.keys().copied().collect();
    let missing: Vec<String> = (0..m.shards).filter(|i| !owner.contains_key(i)).map(|i| i.to_string()).collect();
    if !missing.is_empty() && !allow_missing {
        anyhow::bail!(
            "shard(s) {} of {} missing (pass --allow-missing to merge the others)",
            missing.join(", "),
            m.shards
        );
    }
    Ok(m)
}

/// The output's cases/ and repro/ are rewritten whole, so nothing of an earlier merge lingers.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for sub in ["cases", "repro"] {
        let d = out.join(sub);
        if d.is_dir() {
            std::fs::remove_dir_all(&d)?;
        }
    }
    for stale in ["findings.jsonl", recover::CHECKPOINT_FILE] {
        std::fs::remove_file(out.join(stale)).ok();
    }
    std::fs::create_dir_all(out.join("cases"))?;
    Ok(())
}

/// Everything but the buckets: counts summed, rows and grid cells joined by key.
fn combine(parts: &[Part], m: &Manifest) -> Report {
    // Rows in the parts' order (the registry's): parts of one campaign hold the same rows.
    let mut rows: Vec<Row> = Vec::new();
    let mut grid: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let (mut ties, mut grads) = (TieStats::default(), Default::default());
    let mut libtorch: Vec<String> = Vec::new();
    for p in parts {
        let r = &p.report;
        for row in &r.rows {
            let at = match rows.iter().position(|r| r.program == row.program && r.rules == row.rules) {
                Some(i) => i,
                None => {
                    rows.push(Row { cases: 0, diverging: 0, classes: Default::default(), ..row.clone() });
                    rows.len() - 1
                }
            };
            let acc = &mut rows[at];
            acc.cases += row.cases;
            acc.diverging += row.diverging;
            for (class, cell) in &row.classes {
                acc.classes.entry(*class).or_default().cases += cell.cases;
            }
        }
        for g in &r.grid {
            let acc = grid.entry((g.mesh.clone(), g.layout.clone())).or_default();
            acc.0 += g.cases;
            acc.1 += g.diverging;
        }
        ties.add(&r.near_ties);
        harness::oracle::GradTally::add(&mut grads, &r.grads);
        if !libtorch.contains(&r.libtorch) {
            libtorch.push(r.libtorch.clone());
        }
    }
    libtorch.sort();
    let first = &parts[0].report;
    Report {
        format: first.format.clone(),
        seed: m.seed,
        jobs: parts.iter().map(|p| p.report.jobs).sum(),
        cases: parts.iter().map(|p| p.report.cases).sum(),
        diverging_cases: parts.iter().map(|p| p.report.diverging_cases).sum(),
        devices: first.devices.clone(),
        libtorch: libtorch.join(", "),
        size: first.size.clone(),
        interrupted: parts.iter().any(|p| p.report.interrupted),
        shards: (!m.complete()).then(|| Coverage { of: m.shards, covered: m.covered.clone() }),
        rows,
        buckets: vec![],
        known_bugs: first.known_bugs.clone(),
        near_ties: ties,
        grads,
        grid: grid
            .into_iter()
            .map(|((mesh, layout), (cases, diverging))| GridCell { mesh, layout, cases, diverging })
            .collect(),
        regression: None,
        findings: Vec::new(),
        fidelity: None,
        timing: timing(parts),
    }
}

/// Parts ran side by side: the merged wall time is the longest part's; work adds up.
fn timing(parts: &[Part]) -> Timing {
    let mut phases = Phases::default();
    let mut list = Vec::new();
    for p in parts {
        let t = &p.report.timing;
        phases.add(&t.phases_us);
        if t.parts.is_empty() {
            let covered: Vec<String> = p.manifest.covered.iter().map(|i| i.to_string()).collect();
            list.push(PartTiming {
                shards: format!("{}/{}", covered.join(","), p.manifest.shards),
                cases: p.report.cases,
                wall_s: t.wall_s,
                cases_per_s: t.cases_per_s,
            });
        } else {
            list.extend(t.parts.iter().cloned());
        }
    }
    let wall_s = parts.iter().map(|p| p.report.timing.wall_s).fold(0.0, f64::max);
    let cases: u64 = parts.iter().map(|p| p.report.cases).sum();
    Timing {
        wall_s,
        cases_per_s: cases as f64 / wall_s.max(1e-9),
        // Summed in whole milliseconds (what shrink times are measured in), so a merge of merges
        // adds up to the same bits as one merge.
        shrink_s: parts.iter().map(|p| (p.report.timing.shrink_s * 1000.0).round() as u64).sum::<u64>() as f64 / 1000.0,
        phases_us: phases,
        parts: list,
    }
}

/// Per signature, the bucket a single run would have kept, with its files copied to the output.
fn merge_buckets(parts: &[Part], setup: &Setup, opts: &Options) -> anyhow::Result<Vec<Bucket>> {
    let mut by_sig: BTreeMap<&Signature, Vec<(&Part, &Bucket)>> = BTreeMap::new();
    for p in parts {
        for b in &p.report.buckets {
            by_sig.entry(&b.signature).or_default().push((p, b));
        }
    }
    let mut out = Vec::with_capacity(by_sig.len());
    for (sig, found) in by_sig {
        let (fp, first) = *found.iter().min_by_key(|(_, b)| b.first_index).expect("a bucket per entry");
        let unknown = |b: &Bucket| {
            let c = setup.case(b.smallest_index);
            c.subject.known(&c, sig).is_empty()
        };
        let (sp, small) =
            *found.iter().min_by_key(|(_, b)| (unknown(b), b.smallest_size, b.smallest_index)).expect("a bucket");
        let mut extra = first.extra.clone();
        extra.extend(small.extra.clone());
        let mut b = Bucket {
            count: found.iter().map(|(_, b)| b.count).sum(),
            smallest_index: small.smallest_index,
            smallest_size: small.smallest_size,
            detail: small.detail.clone(),
            repro: None,
            shrink: small.shrink.clone(),
            extra,
            ..first.clone()
        };
        copy_first_case(fp, first, setup, &opts.out)?;
        if let Some(rel) = &small.repro {
            b.repro = Some(copy_repro(&sp.dir.join(rel), sig, opts)?);
        }
        if let (Some(rel), Some(_)) = (&b.repro, small.script()) {
            // The script is made again from the merged reproducer, in the merged directory.
            let case = crate::replay::load(&opts.out.join(rel))?;
            super::write_script(&opts.out, sig, &case)?;
        }
        out.push(b);
    }
    Ok(out)
}

/// The first case file, byte for byte; regenerated from its index when the part lost it.
fn copy_first_case(p: &Part, b: &Bucket, setup: &Setup, out: &Path) -> anyhow::Result<()> {
    let (from, to) = (p.dir.join(&b.first_case), out.join(&b.first_case));
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if from.exists() {
        std::fs::copy(&from, &to).map_err(|e| anyhow::anyhow!("{}: {e}", from.display()))?;
        Ok(())
    } else {
        write_case(&to, &setup.case(b.first_index), false)
    }
}

/// Copies a reproducer where this merge keeps them; returns its path relative to the output.
fn copy_repro(from: &Path, sig: &Signature, opts: &Options) -> anyhow::Result<String> {
    let name = format!("{}.json", sig.slug());
    let dir = opts.corpus.clone().unwrap_or_else(|| opts.out.join("repro"));
    std::fs::create_dir_all(&dir)?;
    let to = dir.join(&name);
    if !same_path(from, &to) {
        std::fs::copy(from, &to).map_err(|e| anyhow::anyhow!("reproducer {}: {e}", from.display()))?;
    }
    Ok(match &opts.corpus {
        None => format!("repro/{name}"),
        Some(_) => super::relative(&to, &opts.out),
    })
}

/// findings.jsonl of the merged campaign: one line per bucket, in order of discovery.
fn write_findings(out: &Path, buckets: &[Bucket]) -> anyhow::Result<()> {
    let mut sorted: Vec<&Bucket> = buckets.iter().collect();
    sorted.sort_by(|a, b| (a.first_index, &a.signature).cmp(&(b.first_index, &b.signature)));
    let mut text = String::new();
    for b in sorted {
        let f = Finding {
            signature: b.signature.clone(),
            index: b.first_index,
            case: b.first_case.clone(),
            detail: b.detail.clone(),
            explanation: b.explanation.clone(),
        };
        text.push_str(&serde_json::to_string(&f)?);
        text.push('\n');
    }
    write_atomic(&out.join("findings.jsonl"), &text)?;
    Ok(())
}
