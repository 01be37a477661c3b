//! `device`: the same case on CPU and on CUDA must agree. Errors (kind and key), placements,
//! per-rank global shapes and collectives exactly; values through the subject's own value rules
//! ([`Subject::values`]: the router's are dtype- and reduction-aware bounds, ids only where the
//! float64 margin decides them), with the CPU run standing in for the reference: once for the reference outputs, once for the sharded
//! ones. Kernels differ across devices, so bitwise equality is not expected; decided choices are.

use super::{Class, Judgement, Verdict};
use crate::case::Case;
use crate::run::{Named, Run};
use crate::subject::Subject;
use dtensor::{DTensor, DTensorError};
use placement::{Mesh, Placement};
use serde_json::json;
use std::sync::Arc;

fn push(
    j: &mut Judgement,
    output: Option<&str>,
    key: String,
    expected: serde_json::Value,
    actual: serde_json::Value,
    detail: String,
) {
    j.verdicts.push(Verdict {
        class: Class::Device,
        output: output.map(Into::into),
        expected,
        actual,
        detail,
        key,
        backward: false,
    });
}

fn error_key(r: &Result<impl Sized, DTensorError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => format!("{}:{}", e.kind(), e.key()),
    }
}

/// Full tensors of `s`, on the CPU (what a reference looks like).
fn gathered(s: &Named<DTensor>) -> Option<Named<tch::Tensor>> {
    s.try_map(|d| d.full_tensor().ok().map(|t| t.to_device(tch::Device::Cpu)))
}

/// Replicated one-rank DTensors of full tensors, so the value oracle can take them.
fn wrapped(r: &Named<tch::Tensor>) -> Option<Named<DTensor>> {
    let mesh = Arc::new(Mesh::new(vec![1], vec!["x".into()]).ok()?);
    r.try_map(|t| DTensor::distribute(&t.to_device(tch::Device::Cpu), &mesh, &[Placement::Replicate]).ok())
}

/// Value verdicts of `other` against `base` (CPU), renamed to the device class under `side`.
fn values<S: Subject>(
    case: &Case<S>,
    (cpu, extra): (&Run, &S::Extra),
    base: &Named<tch::Tensor>,
    other: &Named<DTensor>,
    side: &str,
    j: &mut Judgement,
) {
    let mut v = Judgement::default();
    case.subject.values(case, cpu, extra, base, other, &mut v);
    // Offsets are a property of one run, not a comparison; the per-device value oracle has them.
    for x in v.verdicts.into_iter().filter(|x| x.key != "inconsistent") {
        push(
            j,
            x.output.as_deref(),
            format!("{side}:{}", x.key),
            x.expected,
            x.actual,
            format!("{side} on {} vs cpu: {}", case.device, x.detail),
        );
    }
}

/// Compares the CPU run `cpu` and the run `other` (CUDA) of the same case.
pub fn check<S: Subject>(case: &Case<S>, (cpu, extra): (&Run, &S::Extra), other: &Run, j: &mut Judgement) {
    for (side, a, b) in [
        ("reference", error_key(&cpu.reference), error_key(&other.reference)),
        ("sharded", error_key(&cpu.sharded), error_key(&other.sharded)),
    ] {
        if a != b {
            push(
                j,
                None,
                format!("{side}:error"),
                json!(a),
                json!(b),
                format!("{side}: cpu gave {a}, the other device {b}"),
            );
        }
    }
    if let (Ok(cr), Ok(or)) = (&cpu.reference, &other.reference) {
        match wrapped(or) {
            Some(w) => values(case, (cpu, extra), cr, &w, "reference", j),
            None => push(
                j,
                None,
                "reference:gather".into(),
                json!("outputs"),
                json!("none"),
                "reference outputs could not be moved to the CPU".into(),
            ),
        }
    }
    if let (Ok(cs), Ok(os)) = (&cpu.sharded, &other.sharded) {
        for ((name, a), (_, b)) in cs.iter().zip(os.iter()) {
            if a.placements != b.placements || a.rank_global_shapes() != b.rank_global_shapes() {
                push(
                    j,
                    Some(name),
                    "sharded:layout".into(),
                    json!(format!("{:?} {:?}", a.placements, a.rank_global_shapes())),
                    json!(format!("{:?} {:?}", b.placements, b.rank_global_shapes())),
                    format!("{name}: placements or rank shapes differ between cpu and {}", case.device),
                );
            }
        }
        match gathered(cs) {
            Some(base) => values(case, (cpu, extra), &base, os, "sharded", j),
            None => push(
                j,
                None,
                "sharded:gather".into(),
                json!("outputs"),
                json!("none"),
                "cpu sharded outputs could not be gathered".into(),
            ),
        }
    }
    let ops = |r: &Run| r.comms.iter().map(|c| format!("{}@{}:{}", c.op, c.mesh_dim, c.tensor)).collect::<Vec<_>>();
    if ops(cpu) != ops(other) {
        push(
            j,
            None,
            "comms".into(),
            json!(ops(cpu)),
            json!(ops(other)),
            format!("collectives differ between cpu and {}", case.device),
        );
    }
}
