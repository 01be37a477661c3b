//! Scale-out: a campaign's case stream cut into shards that independent processes (cluster jobs,
//! CI matrix entries) run, and the manifest (`campaign.json`) that lets `merge` check that
//! directories are parts of one campaign and regenerate any of its cases.
//!
//! Case i belongs to shard `i mod N`. Striding rather than contiguous blocks, because a `--time`
//! campaign has no known length to cut into blocks, and every shard then sees the same mix of
//! the stream's early and late cases.

use super::Config;
use crate::report::write_atomic;
use crate::subjects::GenConfig;
use crate::worker::{Fault, Setup};
use dtensor::device::Dev;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(&self, case: u64) -> bool {
        case % self.count == self.index
    }

    /// How many of the cases `0..limit` this shard runs.
    pub fn len_below(&self, limit: u64) -> u64 {
        if limit <= self.index {
            0
        } else {
            (limit - self.index).div_ceil(self.count)
        }
    }
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad shard '{s}' (expected I/N with 0 <= I < N, e.g. 0/4)");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u64, u64) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

pub const MANIFEST_FORMAT: &str = "shardfuzz.campaign/1";
pub const MANIFEST: &str = "campaign.json";

/// `campaign.json`: everything that decides which cases a campaign runs and what it keeps of
/// them, written before the first case. Two directories are parts of one campaign when their
/// manifests agree on everything but `covered`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub seed: u64,
    /// `--cases` (the whole stream's length, whichever shards run it); absent with `--time`.
    pub cases: Option<u64>,
    pub gen: GenConfig,
    pub devices: Vec<Dev>,
    pub fault: Option<Fault>,
    pub per_case_timeout_ms: u64,
    pub shrink_tries: usize,
    pub shrink_ms: u64,
    pub no_shrink: bool,
    /// The number of shards the stream is cut into.
    pub shards: u64,
    /// The shards this directory holds (sorted).
    pub covered: Vec<u64>,
}

impl Manifest {
    pub fn of(cfg: &Config) -> Manifest {
        Manifest {
            format: MANIFEST_FORMAT.into(),
            seed: cfg.seed,
            cases: cfg.cases,
            gen: cfg.gen.clone(),
            devices: cfg.devices.clone(),
            fault: cfg.fault,
            per_case_timeout_ms: cfg.per_case_timeout.as_millis() as u64,
            shrink_tries: cfg.shrink.max_tries,
            shrink_ms: cfg.shrink.max_time.as_millis() as u64,
            no_shrink: cfg.no_shrink,
            shards: cfg.shard.count,
            covered: vec![cfg.shard.index],
        }
    }

    pub fn load(dir: &Path) -> anyhow::Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&p).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e} (not a campaign directory, or written before shardfuzz kept manifests)",
                p.display()
            )
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a shardfuzz campaign manifest: {e}", p.display()))?;
        if m.format != MANIFEST_FORMAT {
            anyhow::bail!("{}: format '{}', expected '{MANIFEST_FORMAT}'", p.display(), m.format);
        }
        if m.shards == 0 || m.covered.iter().any(|&i| i >= m.shards) {
            anyhow::bail!("{}: covered shards {:?} do not fit {} shard(s)", p.display(), m.covered, m.shards);
        }
        Ok(m)
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        write_atomic(&dir.join(MANIFEST), &(serde_json::to_string_pretty(self)? + "\n"))?;
        Ok(())
    }

    /// The setup that regenerates this campaign's cases (case i is `setup().case(i)`).
    pub fn setup(&self) -> Setup {
        Setup {
            seed: self.seed,
            gen: self.gen.clone(),
            devices: self.devices.clone(),
            inflight: None,
            fault: self.fault,
            limits: harness::limits::get(),
        }
    }

    /// The first field on which `other` is not the same campaign, as `field (a vs b)`.
    pub fn differs(&self, other: &Manifest) -> Option<String> {
        let strip = |m: &Manifest| {
            let mut v = serde_json::to_value(m).expect("manifests serialize");
            v.as_object_mut().expect("an object").remove("covered");
            v
        };
        let (a, b) = (strip(self), strip(other));
        let (a, b) = (a.as_object().expect("an object"), b.as_object().expect("an object"));
        a.iter().find(|(k, v)| b.get(*k) != Some(v)).map(|(k, v)| {
            let w = b.get(k).map_or("absent".to_string(), |w| w.to_string());
            format!("{k} ({v} vs {w})")
        })
    }

    /// True when this directory holds the whole case stream.
    pub fn complete(&self) -> bool {
        (0..self.shards).all(|i| self.covered.contains(&i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_partition_the_stream() {
        let s: Shard = "1/4".parse().unwrap();
        assert_eq!(s, Shard { index: 1, count: 4 });
        assert_eq!(s.to_string(), "1/4");
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3", "1/-3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Every case of a stream of any length belongs to exactly one shard.
        for n in 1..6u64 {
            for limit in 0..20u64 {
                let shards: Vec<Shard> = (0..n).map(|index| Shard { index, count: n }).collect();
                assert_eq!(shards.iter().map(|s| s.len_below(limit)).sum::<u64>(), limit);
                for c in 0..limit {
                    assert_eq!(shards.iter().filter(|s| s.owns(c)).count(), 1);
                }
                for s in &shards {
                    assert_eq!(s.len_below(limit), (0..limit).filter(|&c| s.owns(c)).count() as u64);
                }
            }
        }
    }
}
