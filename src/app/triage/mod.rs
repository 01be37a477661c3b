//! Triage: a status for every bucket, and buckets of one mechanism grouped under one finding.
//!
//! - new: not in the baseline and not settled by the triage table (`table.rs`);
//! - regression: fixed in an earlier night (the baseline's fixed list or before), back now;
//! - open: in the baseline too, and not settled by the table (seen before, still unfiled);
//! - known: a known upstream bug (the table gives its issue);
//! - expected: an expected limitation, by design (the table gives the reason);
//! - fixed: in the baseline, gone now.
//!
//! A finding is one mechanism: the table entry that settles its buckets, else the known bug the
//! subject's mechanism matcher named, else the bucket's one-line explanation (with the program's
//! name taken out, so one root cause on nine programs is one finding). Subject-generic: nothing
//! here knows a subject; its known bugs and explanations arrive with the buckets.

pub mod table;

use crate::bucket::Bucket;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    New,
    Regression,
    Open,
    Known,
    Expected,
    Fixed,
}

impl Status {
    pub const ALL: [Status; 6] =
        [Status::New, Status::Regression, Status::Open, Status::Known, Status::Expected, Status::Fixed];

    pub fn name(self) -> &'static str {
        match self {
            Status::New => "new",
            Status::Regression => "regression",
            Status::Open => "open",
            Status::Known => "known",
            Status::Expected => "expected",
            Status::Fixed => "fixed",
        }
    }

    /// What the status means and what to do, one line (the report's legend and the README's).
    pub fn meaning(self) -> &'static str {
        match self {
            Status::New => "not in the baseline and not a known mechanism: look at it, confirm it, file it upstream or add it to the triage table",
            Status::Regression => "fixed in an earlier night and back now: find the change that brought it back",
            Status::Open => "seen in the baseline too and not settled yet: a new finding of an earlier night, still waiting for a look",
            Status::Known => "a known upstream bug (linked): nothing to do until upstream fixes it",
            Status::Expected => "an expected limitation, by design (the reason is given): nothing to do",
            Status::Fixed => "in the baseline, gone now: check that the fix was meant",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "regressed" => return Ok(Status::Regression),
            "known-upstream" => return Ok(Status::Known),
            _ => {}
        }
        Status::ALL.into_iter().find(|x| x.name() == s).ok_or_else(|| format!("unknown status '{s}'"))
    }
}

/// Which statuses fail CI (junit.xml's failures and `nightly`'s exit status): by default new
/// and regressed findings; `any` is every status but fixed, `none` none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOn(pub Vec<Status>);

impl Default for FailOn {
    fn default() -> Self {
        FailOn(vec![Status::New, Status::Regression])
    }
}

impl std::str::FromStr for FailOn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut v = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "any" => v.extend(Status::ALL.into_iter().filter(|x| *x != Status::Fixed)),
                "none" => {}
                p => v.push(p.parse().map_err(|e| format!("{e} (new, regressed, open, known, expected, any, none)"))?),
            }
        }
        v.sort();
        v.dedup();
        Ok(FailOn(v))
    }
}

impl FailOn {
    pub fn fails(&self, s: Status) -> bool {
        self.0.contains(&s)
    }
}

/// What the baseline says, as signatures' printed forms.
#[derive(Clone, Copy, Debug, Default)]
pub struct Baseline<'a> {
    /// Buckets of this campaign that the baseline had too.
    pub still_failing: &'a [String],
    /// Buckets of this campaign that an earlier night had fixed.
    pub regressed: &'a [String],
    /// Buckets of the baseline that are gone now.
    pub fixed: &'a [String],
}

/// One mechanism: its buckets, their status and the smallest reproducer among them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub status: Status,
    /// The one line that names the mechanism.
    pub mechanism: String,
    /// The upstream issue of a known bug.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link: String,
    /// Why an expected limitation is expected.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Its buckets' signatures (a fixed finding's: the baseline's).
    pub buckets: Vec<String>,
    /// Diverging cases over its buckets.
    pub cases: u64,
    /// The signature of the bucket with the smallest reproducer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smallest: Option<String>,
    /// Indices of its buckets in the report (not kept in report.json).
    #[serde(skip)]
    pub index: Vec<usize>,
}

/// The mechanism a bucket's finding will be grouped under (the key [`findings`] uses).
pub fn mechanism_of(b: &Bucket) -> String {
    mechanism(b, table::lookup(b))
}

/// The grouping key of a bucket: its table entry's mechanism, else the first known bug its
/// subject named, else its explanation without the program's name.
fn mechanism(b: &Bucket, entry: Option<&table::Entry>) -> String {
    if let Some(e) = entry {
        return e.mechanism.to_string();
    }
    if let Some(k) = b.known.first() {
        return k.clone();
    }
    let p = &b.signature.program;
    let line = b.explanation.replace(&format!("the {p} program"), "one program");
    let line = line.trim().trim_end_matches(':').trim_end();
    match line {
        "" => format!("{} divergence: {}", b.class.name(), b.signature.key),
        // An explanation without its particulars (an error text left empty): the key names them.
        l if l.ends_with(" raised") => format!("{l}: {}", b.signature.key),
        l => l.to_string(),
    }
}

/// The findings of a campaign's buckets: new first, then regressions, open, known, expected
/// and fixed; within a status, most buckets first.
pub fn findings(buckets: &[Bucket], base: Option<Baseline>) -> Vec<Finding> {
    let base = base.unwrap_or_default();
    let seen: BTreeSet<&str> = base.still_failing.iter().map(String::as_str).collect();
    let regressed: BTreeSet<&str> = base.regressed.iter().map(String::as_str).collect();
    let mut groups: BTreeMap<String, (Option<&table::Entry>, Vec<usize>)> = BTreeMap::new();
    for (i, b) in buckets.iter().enumerate() {
        let entry = table::lookup(b);
        groups.entry(mechanism(b, entry)).or_insert((entry, Vec::new())).1.push(i);
    }
    let mut out: Vec<Finding> = groups
        .into_iter()
        .map(|(line, (entry, index))| {
            let sigs: Vec<String> = index.iter().map(|&i| buckets[i].signature.to_string()).collect();
            let status = if sigs.iter().any(|s| regressed.contains(s.as_str())) {
                Status::Regression
            } else if let Some(e) = entry {
                match e.standing {
                    table::Standing::Upstream(_) => Status::Known,
                    table::Standing::Expected(_) => Status::Expected,
                }
            } else if sigs.iter().any(|s| seen.contains(s.as_str())) {
                Status::Open
            } else {
                Status::New
            };
            let smallest = index
                .iter()
                .min_by_key(|&&i| (buckets[i].minimized_size(), buckets[i].signature.to_string()))
                .map(|&i| buckets[i].signature.to_string());
            let mut f = settled(status, line, entry, sigs);
            f.cases = index.iter().map(|&i| buckets[i].count).sum();
            f.smallest = smallest;
            f.index = index;
            f
        })
        .collect();
    out.extend(fixed(base.fixed));
    out.sort_by(|a, b| {
        (a.status, std::cmp::Reverse(a.buckets.len()), &a.mechanism).cmp(&(
            b.status,
            std::cmp::Reverse(b.buckets.len()),
            &b.mechanism,
        ))
    });
    out
}

fn settled(status: Status, mechanism: String, entry: Option<&table::Entry>, buckets: Vec<String>) -> Finding {
    let (link, reason) = match entry.map(|e| e.standing) {
        Some(table::Standing::Upstream(l)) => (l.to_string(), String::new()),
        Some(table::Standing::Expected(r)) => (String::new(), r.to_string()),
        None => Default::default(),
    };
    Finding { status, mechanism, link, reason, buckets, cases: 0, smallest: None, index: Vec::new() }
}

/// The baseline's buckets that are gone, grouped by the table where their signature alone
/// says which entry they belong to.
fn fixed(sigs: &[String]) -> Vec<Finding> {
    let mut groups: BTreeMap<String, (Option<&table::Entry>, Vec<String>)> = BTreeMap::new();
    for s in sigs {
        let entry = s.parse().ok().and_then(|sig| table::ENTRIES.iter().find(|e| e.matches_signature(&sig)));
        let key = entry.map_or_else(|| s.clone(), |e| e.mechanism.to_string());
        groups.entry(key).or_insert((entry, Vec::new())).1.push(s.clone());
    }
    groups.into_iter().map(|(line, (entry, v))| settled(Status::Fixed, line, entry, v)).collect()
}

/// A draft upstream issue for a finding, from its smallest bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Draft {
    pub title: String,
    pub body: String,
    /// The exported PyTorch script (relative to the campaign directory), when there is one.
    pub script: Option<String>,
    /// The command that writes the script.
    pub export: String,
}

impl Finding {
    /// The bucket with the smallest reproducer.
    pub fn smallest_bucket<'a>(&self, buckets: &'a [Bucket]) -> Option<&'a Bucket> {
        let s = self.smallest.as_deref()?;
        self.index.iter().map(|&i| &buckets[i]).find(|b| b.signature.to_string() == s)
    }

    /// `shardfuzz export` of its smallest reproducer (run in the campaign directory).
    pub fn export_command(&self, buckets: &[Bucket]) -> Option<String> {
        let b = self.smallest_bucket(buckets)?;
        let file = b.repro.as_deref().unwrap_or(&b.first_case);
        Some(format!("shardfuzz export {file} --pytorch {}.py", b.signature.slug()))
    }

    /// The draft upstream issue: title, body and script.
    pub fn draft(&self, buckets: &[Bucket]) -> Option<Draft> {
        let b = self.smallest_bucket(buckets)?;
        let (ranks, tokens, _) = b.minimized_size();
        let script = b.script().map(String::from);
        let export = self.export_command(buckets)?;
        let run = match &script {
            Some(s) => format!("torchrun --nproc-per-node {ranks} {s}"),
            None => format!("{export}\ntorchrun --nproc-per-node {ranks} {}.py", b.signature.slug()),
        };
        // Said only when the campaign confirmed it (`nightly --confirm`, `shardfuzz confirm`).
        let real = b.real().map_or(String::new(), |r| format!("\n\n**On real PyTorch**: {}.", r.cell()));
        let more = if self.buckets.len() > 1 {
            format!(
                "\n\nThe same mechanism shows in {} signatures ({} cases in all), e.g.:\n\n",
                self.buckets.len(),
                self.cases
            ) + &self.buckets.iter().take(6).map(|s| format!("- `{s}`\n")).collect::<String>()
        } else {
            String::new()
        };
        let body = format!(
            "**What happens**: {}.\n\n**Smallest reproducer** ({ranks} rank(s), {tokens} token(s)), signature `{}`:\n\n```\n{}\n```\n\n\
             **Run it** (CPU, gloo, torch only):\n\n```sh\n{run}\n```{real}{more}\n\nFound by shardfuzz (differential testing against an unsharded reference).\n",
            self.mechanism.trim_end_matches('.'),
            b.signature,
            b.detail.trim()
        );
        let title = format!("{} ({}, {})", self.mechanism, b.signature.program, b.signature.rules.name());
        Some(Draft { title, body, script, export })
    }
}

#[cfg(test)]
mod tests;
