//! The real-PyTorch side of a report (`nightly --confirm`): each bucket's status, the fidelity
//! line (confirmed buckets of all buckets) and the model bugs (buckets real PyTorch does not
//! confirm). Shown only when some bucket carries a status.

use super::Report;
use crate::bucket::{Bucket, Confirmation, CONFIRM_FIELD};
use serde::{Deserialize, Serialize};

/// How many buckets real PyTorch confirmed, of all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fidelity {
    pub confirmed: usize,
    pub buckets: usize,
    /// Buckets real PyTorch does not confirm: the model is wrong on them.
    pub model_bugs: usize,
    pub not_run: usize,
}

impl Fidelity {
    /// The line both renderings print.
    pub fn line(&self) -> String {
        let pct = 100.0 * self.confirmed as f64 / self.buckets.max(1) as f64;
        format!(
            "Fidelity: {} of {} bucket(s) confirmed on real PyTorch ({pct:.1}%); {} model bug(s) (real PyTorch differs), {} not run.",
            self.confirmed, self.buckets, self.model_bugs, self.not_run
        )
    }
}

/// A bucket's cell in the "real PyTorch" column.
pub fn cell(b: &Bucket) -> String {
    match b.real() {
        Some(r) if r.status == Confirmation::Differs => format!("model bug: {}", r.cell()),
        Some(r) => r.cell(),
        None => "not run".into(),
    }
}

impl Report {
    /// Whether the report shows real-PyTorch results (some bucket was confirmed or tried).
    pub fn has_real(&self) -> bool {
        self.buckets.iter().any(|b| b.extra.contains_key(CONFIRM_FIELD))
    }

    /// The fidelity of the model on this campaign's buckets, when it was measured.
    pub fn measure_fidelity(&self) -> Option<Fidelity> {
        if !self.has_real() {
            return None;
        }
        let status: Vec<Option<Confirmation>> = self.buckets.iter().map(|b| b.real().map(|r| r.status)).collect();
        let n = |s: Confirmation| status.iter().filter(|x| **x == Some(s)).count();
        Some(Fidelity {
            confirmed: n(Confirmation::Confirmed),
            buckets: self.buckets.len(),
            model_bugs: n(Confirmation::Differs),
            not_run: self.buckets.len() - n(Confirmation::Confirmed) - n(Confirmation::Differs),
        })
    }

    /// The buckets real PyTorch does not confirm.
    pub fn model_bugs(&self) -> Vec<&Bucket> {
        self.buckets.iter().filter(|b| b.real().is_some_and(|r| r.status == Confirmation::Differs)).collect()
    }
}
