//! Deterministic shrinking: a fixpoint over the subject's candidates ([`Subject::candidates`]:
//! every candidate a valid case smaller in one respect: fewer or smaller mesh dims, smaller
//! dims, fewer features, placements nearer R, f32, simpler values); a candidate is kept when it
//! still shows the same signature. Passes repeat until none makes progress or the budget runs
//! out. The helpers here are what every subject's candidates use.
//!
//! Tensors are cut, not redrawn, when dims shrink (the leading block of each dim), so a value
//! bug keeps the values that exposed it.

use super::case::{Case, Style};
use super::data;
use super::subject::{Size, Subject};
use super::tensor_data::{TensorData, Values};
use dtensor::DType;
use std::time::{Duration, Instant};

/// What a shrink did.
#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk<S> {
    pub case: Case<S>,
    /// Candidates tried.
    pub tried: usize,
    /// Candidates kept.
    pub kept: usize,
    pub elapsed: Duration,
    /// True when the budget ended the search before a fixpoint.
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_tries: usize,
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_tries: 2000, max_time: Duration::from_secs(30) }
    }
}

/// Cuts a row-major tensor to the leading `new` block of each dim.
pub fn cut(t: &TensorData, new: &[usize]) -> TensorData {
    let old = &t.shape;
    let n: usize = new.iter().product();
    let mut idx = vec![0usize; new.len()];
    let mut src = Vec::with_capacity(n);
    for _ in 0..n {
        let mut off = 0;
        for d in 0..old.len() {
            off = off * old[d] + idx[d];
        }
        src.push(off);
        for d in (0..new.len()).rev() {
            idx[d] += 1;
            if idx[d] < new[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let values = match &t.values {
        Values::Float(v) => Values::Float(src.iter().map(|&i| v[i]).collect()),
        Values::Int(v) => Values::Int(src.iter().map(|&i| v[i]).collect()),
        Values::Bool(v) => Values::Bool(src.iter().map(|&i| v[i]).collect()),
    };
    TensorData { shape: new.to_vec(), dtype: t.dtype, values }
}

/// Smaller values to try for a dim currently `v` (at least `lo`).
pub fn smaller(v: usize, lo: usize) -> Vec<usize> {
    let mut out = vec![lo, 2, v / 2, v.saturating_sub(1)];
    out.retain(|&x| x >= lo && x < v);
    out.sort_unstable();
    out.dedup();
    out
}

pub(crate) fn map_values(t: &TensorData, f: impl Fn(f64) -> f64) -> TensorData {
    let values = match &t.values {
        Values::Float(v) => Values::Float(v.iter().map(|&x| f(x)).collect()),
        other => other.clone(),
    };
    TensorData { values, ..t.clone() }
}

/// A simplification of the input values.
type Simplify = fn(f64) -> f64;

/// f32 (every input in the case dtype with it), then simpler values: zeros, signs, integers,
/// tenths, one tensor at a time in input order. For the end of a subject's candidate list.
pub fn value_candidates<S: Subject>(c: &Case<S>, out: &mut Vec<Case<S>>) {
    if c.dtype != DType::F32 {
        let mut n = c.clone();
        let old = c.dtype;
        n.dtype = DType::F32;
        if let Some(t) = &mut n.data.tensors {
            t.0.iter_mut().filter(|(_, td)| td.dtype == old).for_each(|(_, td)| td.dtype = DType::F32);
        }
        out.push(n);
    }
    let Some(tensors) = &c.data.tensors else { return };
    let simplify: [Simplify; 4] =
        [|_| 0.0, |x| if x == 0.0 { 0.0 } else { x.signum() }, f64::round, |x| (x * 10.0).round() / 10.0];
    for f in simplify {
        for i in 0..tensors.0.len() {
            let new = map_values(&tensors.0[i].1, f);
            if new != tensors.0[i].1 {
                let mut n = c.clone();
                n.data.tensors.as_mut().expect("tensors").0[i].1 = new;
                n.data.style = Style::Normal;
                out.push(n);
            }
        }
    }
}

/// Shrinks `case` while `interesting` holds. The input must be interesting.
pub fn shrink<S: Subject>(case: &Case<S>, budget: Budget, mut interesting: impl FnMut(&Case<S>) -> bool) -> Shrunk<S> {
    let start = Instant::now();
    let mut cur = data::with_inline(case);
    let (mut tried, mut kept) = (0, 0);
    let mut truncated = false;
    'outer: loop {
        for cand in S::candidates(&cur) {
            if tried >= budget.max_tries || start.elapsed() >= budget.max_time {
                truncated = true;
                break 'outer;
            }
            if cand.validate().is_err() {
                continue;
            }
            tried += 1;
            if interesting(&cand) {
                cur = cand;
                kept += 1;
                continue 'outer;
            }
        }
        break;
    }
    Shrunk { case: cur, tried, kept, elapsed: start.elapsed(), truncated }
}

/// How big a case is, for picking the smallest of a bucket: ranks, then tokens, then elements.
pub fn size<S: Subject>(c: &Case<S>) -> Size {
    c.subject.size(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_takes_the_leading_block() {
        let t =
            TensorData { shape: vec![2, 3], dtype: DType::F32, values: Values::Float(vec![0., 1., 2., 3., 4., 5.]) };
        assert_eq!(cut(&t, &[1, 2]).values, Values::Float(vec![0., 1.]));
        assert_eq!(cut(&t, &[2, 1]).values, Values::Float(vec![0., 3.]));
    }
}
