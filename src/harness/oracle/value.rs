//! `value`: a gathered sharded output against the reference, element by element within a bound
//! the subject derives (from the dtype of its arithmetic and its reduction lengths), or exactly.
//! Rows the subject cannot decide (a near-tie choice) are left out and counted by the subject.
//! Subjects with a richer notion of agreement (the router's top-k choices compared as sets)
//! give their own [`crate::subject::Subject::values`] and may still use these helpers.

use super::{Class, Judgement, Verdict};
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// How one output compares.
pub struct Compare<'a> {
    pub name: &'a str,
    /// Per-element bound (0 for exact); one value for every element, or one per element.
    pub bound: Bound,
    /// Leading-dim rows not to compare (near-ties); empty when every row is compared.
    pub skip_rows: &'a [bool],
}

pub enum Bound {
    Exact,
    Abs(f64),
    PerElement(Vec<f64>),
}

pub fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).expect("float values")
}

/// True when `a` and `b` agree within `tol` (NaN agrees with NaN).
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol
}

/// Pushes a value verdict unless one of this output and key is there already (the first
/// offending element tells the story).
pub fn push(
    j: &mut Judgement,
    output: &str,
    key: &str,
    expected: serde_json::Value,
    actual: serde_json::Value,
    detail: String,
) {
    let seen = |v: &Verdict| v.class == Class::Value && v.output.as_deref() == Some(output) && v.key == key;
    if !j.verdicts.iter().any(seen) {
        let (output, key) = (Some(output.into()), key.into());
        j.verdicts.push(Verdict { class: Class::Value, output, expected, actual, detail, key, backward: false });
    }
}

/// Compares `ours` (gathered) with `reference` as `c` says: a `shape` verdict when they differ
/// in shape, else the first element off by more than its bound (`values`, or `nan` when only one
/// side is NaN).
pub fn compare(c: &Compare, reference: &Tensor, ours: &Tensor, j: &mut Judgement) {
    if reference.size() != ours.size() {
        let (a, b) = (reference.size(), ours.size());
        push(
            j,
            c.name,
            "shape",
            json!(a),
            json!(b),
            format!("{}: gathered shape {b:?} differs from the reference's {a:?}", c.name),
        );
        return;
    }
    let (r, s) = (f64s(reference), f64s(ours));
    let rows = reference.size().first().copied().unwrap_or(1).max(1) as usize;
    let per_row = r.len() / rows.max(1);
    for (i, (&a, &b)) in r.iter().zip(&s).enumerate() {
        let row = i.checked_div(per_row).unwrap_or(0);
        if c.skip_rows.get(row).copied().unwrap_or(false) {
            continue;
        }
        let tol = match &c.bound {
            Bound::Exact => 0.0,
            Bound::Abs(t) => *t,
            Bound::PerElement(v) => v[i],
        };
        if !close(a, b, tol) {
            let key = if a.is_nan() != b.is_nan() { "nan" } else { "values" };
            let detail = format!("{}[{i}] (row {row}): {b} vs reference {a} (bound {tol:.3e})", c.name);
            push(j, c.name, key, json!(a), json!(b), detail);
            return;
        }
    }
}
