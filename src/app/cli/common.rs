//! Flags shared by the commands that run cases, and their parsing into harness settings.

use crate::subjects::{GenConfig, Kind, SubjectArgs};
use dtensor::device::{self, Dev, DeviceArg};
use dtensor::RuleSet;
use harness::generate::{BackwardMix, GenCommon, ShapeMix, SizeClass};
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct GenArgs {
    /// Device to run cases on: auto (CUDA when present), cpu, cuda, cuda:N
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    #[command(flatten)]
    pub draw: Draw,
}

/// What to draw cases from: shared by `run`, `gen` and `nightly` (whose `--device` takes a list).
#[derive(clap::Args, Debug, Clone)]
pub struct Draw {
    #[command(flatten)]
    pub subjects: SubjectArgs,
    /// DTensor rule sets to draw from (comma-separated; default all)
    #[arg(long, value_delimiter = ',')]
    pub rules: Vec<RuleSet>,
    /// Case sizes: small (<= 4 ranks, <= 64 tokens), medium (<= 16 ranks), large (real presets, GPU)
    #[arg(long, default_value = "small")]
    pub size: SizeClass,
    /// Shapes: any (short, uneven, empty shards) or valid (every sharded dim at least as long as
    /// its shard count, batch even; uneven sequences stay)
    #[arg(long, default_value = "any")]
    pub shapes: ShapeMix,
    /// Backward cases: off, on (half the cases also check the gradients at a torchtitan MoE
    /// boundary) or only
    #[arg(long, default_value = "on")]
    pub backward: BackwardMix,
}

impl Draw {
    /// The generator settings, for cases on `device`; `subjects` unless `--subject` names others.
    pub fn config(&self, device: Dev, subjects: &[Kind]) -> GenConfig {
        if self.size == SizeClass::Large {
            harness::limits::raise(harness::limits::Limits::LARGE);
        }
        let common = GenCommon {
            size: self.size,
            rules: self.rules.clone(),
            device,
            max_ranks: 16,
            shapes: self.shapes,
            backward: self.backward,
        };
        GenConfig { common, subjects: self.subjects.gen(subjects) }
    }
}

impl GenArgs {
    pub fn device(&self) -> anyhow::Result<Dev> {
        device::resolve(self.device).map_err(anyhow::Error::msg)
    }

    /// The generator settings of `run` and `gen`: the router unless `--subject` says otherwise.
    pub fn config(&self, dev: Dev) -> GenConfig {
        self.draw.config(dev, &[Kind::Router])
    }
}

/// The case files named on a command line: files as they are; a directory gives its `.json`
/// files, sorted, and a campaign directory (one with a report.json) the reproducers in its
/// `repro/` (else its first cases in `cases/`).
pub fn case_files(args: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    const NOT_CASES: [&str; 4] = ["report.json", "campaign.json", "checkpoint.json", "bench.json"];
    let mut out = Vec::new();
    for p in args {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let dir = match ["repro", "cases"].iter().map(|d| p.join(d)).find(|d| d.is_dir()) {
            Some(d) if p.join("report.json").is_file() => d,
            _ => p.clone(),
        };
        let mut v: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|f| f.extension().is_some_and(|x| x == "json"))
            .filter(|f| !f.file_name().is_some_and(|n| NOT_CASES.iter().any(|x| n == *x)))
            .collect();
        v.sort();
        anyhow::ensure!(!v.is_empty(), "{}: no case files (.json) in this directory", dir.display());
        out.extend(v);
    }
    Ok(out)
}

/// Makes `out` ready for a campaign: created when missing; an empty directory is used as it
/// is; a directory with files in it is refused (one line, exit 2) unless `force`, which clears
/// it, and only when it holds a campaign (a `campaign.json` or `report.json`), so `--force` never
/// empties a directory shardfuzz did not write.
pub fn prepare_out(out: &std::path::Path, seed: u64, force: bool) -> anyhow::Result<()> {
    let entries: Vec<std::path::PathBuf> = match std::fs::read_dir(out) {
        Ok(d) => d.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => anyhow::bail!("--out {}: {e}", out.display()),
    };
    if entries.is_empty() {
        return Ok(());
    }
    let manifest = crate::campaign::shard::Manifest::load(out).ok();
    let campaign = manifest.is_some() || out.join("report.json").is_file();
    let what = match &manifest {
        Some(m) if m.seed == seed => format!("an earlier campaign of seed {seed}"),
        Some(m) => format!("a campaign of seed {}", m.seed),
        None if campaign => "an earlier campaign's report".to_string(),
        None => format!("{} file(s) that are not a campaign", entries.len()),
    };
    if !force {
        anyhow::bail!(
            "--out {} is not empty: it holds {what}; pass --force to clear it, or choose another directory",
            out.display()
        );
    }
    anyhow::ensure!(campaign, "--out {} holds {what}; --force clears only a campaign directory", out.display());
    for p in entries {
        let r = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        r.map_err(|e| anyhow::anyhow!("--force: {}: {e}", p.display()))?;
    }
    Ok(())
}

/// Parses `90s`, `30m`, `2h`, `1h30m` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("bad duration '{s}' (examples: 90s, 30m, 2h, 1h30m)");
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = 0u64;
    let mut num = String::new();
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            num.push(ch);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        total += n * match ch {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(bad()),
        };
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
