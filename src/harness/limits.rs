//! Size limits, checked on a case's numbers before anything is allocated, so that a hostile or
//! mistyped case file is a clear error and not an out-of-memory abort or a run of hours. The
//! defaults fit a laptop; `--max-elements` raises them, and generating `--size large` cases (the
//! real presets, for a GPU) raises them to what those need.

use std::sync::atomic::{AtomicU64, Ordering};

/// The most simulated ranks a case may have.
pub const MAX_RANKS: usize = 64;

/// How many elements one tensor may have, and how many a case may hold over all its ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    pub tensor_elements: u64,
    pub case_elements: u64,
}

impl Limits {
    /// 16 Mi elements per tensor (64 MiB in float32), 256 Mi over all ranks.
    pub const DEFAULT: Limits = Limits { tensor_elements: 1 << 24, case_elements: 1 << 28 };
    /// The real presets: DeepSeek-V3's 8,192 tokens x 7,168 on up to 16 ranks.
    pub const LARGE: Limits = Limits { tensor_elements: 1 << 27, case_elements: 1 << 31 };

    /// Limits with `tensor` elements per tensor and 16 times that per case.
    pub fn per_tensor(tensor: u64) -> Limits {
        Limits { tensor_elements: tensor, case_elements: tensor.saturating_mul(16) }
    }
}

static TENSOR: AtomicU64 = AtomicU64::new(Limits::DEFAULT.tensor_elements);
static CASE: AtomicU64 = AtomicU64::new(Limits::DEFAULT.case_elements);

/// The limits in force in this process.
pub fn get() -> Limits {
    Limits { tensor_elements: TENSOR.load(Ordering::Relaxed), case_elements: CASE.load(Ordering::Relaxed) }
}

/// Sets the limits for this process (the command line does, once, before any case is read).
pub fn set(l: Limits) {
    TENSOR.store(l.tensor_elements, Ordering::Relaxed);
    CASE.store(l.case_elements, Ordering::Relaxed);
}

/// Raises the limits to at least `l`.
pub fn raise(l: Limits) {
    TENSOR.fetch_max(l.tensor_elements, Ordering::Relaxed);
    CASE.fetch_max(l.case_elements, Ordering::Relaxed);
}

/// The product of `sizes`, or None when it overflows.
pub fn product(sizes: &[usize]) -> Option<u64> {
    sizes.iter().try_fold(1u64, |acc, &s| acc.checked_mul(s as u64))
}

/// Checks the sizes a case implies: `x` (B, L, D), `gate` (E, D), the (B·L, E) score-shaped
/// tensors, each within the per-tensor limit, and all of them on every rank within the case
/// limit. Returns the field at fault and why.
pub fn check_case(ranks: usize, batch: usize, seq: usize, model: usize, experts: usize) -> Result<(), String> {
    let l = get();
    let hint = "(raise it with --max-elements)";
    let too_big = |what: &str, formula: &str, n: Option<u64>| -> Result<u64, String> {
        match n {
            Some(n) if n <= l.tensor_elements => Ok(n),
            Some(n) => Err(format!(
                "dims: {what} has {formula} = {n} elements, more than the limit of {} per tensor {hint}",
                l.tensor_elements
            )),
            None => Err(format!("dims: {what} has {formula} elements, which overflows 64 bits")),
        }
    };
    let x = too_big("x", "batch·seq·model", product(&[batch, seq, model]))?;
    let gate = too_big("gate", "experts·model", product(&[experts, model]))?;
    let scores = too_big("scores", "batch·seq·experts", product(&[batch, seq, experts]))?;
    // The router holds about four score-shaped tensors; a replicated layout puts all on each rank.
    let total = x.saturating_add(gate).saturating_add(scores.saturating_mul(4)).saturating_mul(ranks as u64);
    if total > l.case_elements {
        return Err(format!(
            "dims: the case holds about {total} elements over its {ranks} rank(s), more than the limit of {} {hint}",
            l.case_elements
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_that_overflow_are_errors_not_wraps() {
        assert_eq!(product(&[1 << 40, 1 << 40]), None);
        assert_eq!(product(&[3, 4]), Some(12));
        let e = check_case(1, 1 << 40, 1 << 40, 1, 2).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = check_case(1, 1, 1_000_000_000_000, 4, 2).unwrap_err();
        assert!(e.starts_with("dims: x has") && e.contains("--max-elements"), "{e}");
        assert!(check_case(4, 2, 16, 64, 16).is_ok());
        let e = check_case(64, 4, 4096, 512, 8).unwrap_err();
        assert!(e.contains("over its 64 rank(s)"), "{e}");
    }
}
