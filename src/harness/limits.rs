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

/// One tensor of a case: its name, how its size is written, and its dims.
pub struct TensorSize<'a> {
    pub what: &'a str,
    pub formula: &'a str,
    pub dims: &'a [usize],
    /// How many tensors of this size the program holds on each rank at most.
    pub copies: u64,
}

/// Checks the sizes a case implies: each tensor within the per-tensor limit, and all of them
/// (times their copies) on every rank within the case limit. Returns the field at fault and why.
pub fn check_sizes(ranks: usize, tensors: &[TensorSize]) -> Result<(), String> {
    let l = get();
    let hint = "(raise it with --max-elements)";
    let mut total = 0u64;
    for t in tensors {
        let n = match product(t.dims) {
            Some(n) if n <= l.tensor_elements => n,
            Some(n) => {
                return Err(format!(
                    "dims: {} has {} = {n} elements, more than the limit of {} per tensor {hint}",
                    t.what, t.formula, l.tensor_elements
                ))
            }
            None => return Err(format!("dims: {} has {} elements, which overflows 64 bits", t.what, t.formula)),
        };
        total = total.saturating_add(n.saturating_mul(t.copies));
    }
    // A replicated layout puts every tensor on each rank.
    let total = total.saturating_mul(ranks as u64);
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
        fn x(dims: &[usize]) -> Vec<TensorSize<'_>> {
            vec![TensorSize { what: "x", formula: "batch·seq·model", dims, copies: 1 }]
        }
        let e = check_sizes(1, &x(&[1 << 40, 1 << 40, 1])).unwrap_err();
        assert!(e.contains("overflows"), "{e}");
        let e = check_sizes(1, &x(&[1, 1_000_000_000_000, 4])).unwrap_err();
        assert!(e.starts_with("dims: x has") && e.contains("--max-elements"), "{e}");
        assert!(check_sizes(4, &x(&[2, 16, 64])).is_ok());
        let e = check_sizes(64, &x(&[4, 4096, 1024])).unwrap_err();
        assert!(e.contains("over its 64 rank(s)"), "{e}");
    }
}
