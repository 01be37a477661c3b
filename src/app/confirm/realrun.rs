//! A real outcome as a [`Run`], so that our oracles can say which verdict classes real PyTorch's
//! results carry: the reference, the float64 shadow and the reference gradients are ours (the
//! same math); the sharded outputs, their collectives and the boundary program's gradients are
//! real DTensors rebuilt from every rank's local tensor.

use super::real::{self, RealBackward, RealOutcome, RealSharded, RealTensor};
use crate::subjects::{AnyChecked, AnyExtra};
use dtensor::autograd::{Grad, Val};
use dtensor::{DTensor, DTensorError, DType};
use harness::run::{GradRun, Named, Run};
use harness::runner;
use placement::{Mesh, Placement};
use serde_json::Value;
use std::sync::Arc;
use tch::{Device, Tensor};

/// A recorded tensor's values as a tensor of `shape` and `dtype` (None when they do not fit).
fn tensor(values: &[Value], shape: &[usize], dtype: DType) -> Option<Tensor> {
    let n: usize = shape.iter().product();
    if values.len() != n {
        return None;
    }
    let t = match dtype {
        DType::Bool => Tensor::from_slice(&values.iter().map(|v| v.as_bool().unwrap_or(false)).collect::<Vec<_>>()),
        DType::I64 | DType::I32 => {
            Tensor::from_slice(&values.iter().map(|v| v.as_i64().unwrap_or(0)).collect::<Vec<_>>())
        }
        d => Tensor::from_slice(&real::floats(values)).to_kind(dtensor::local::kind(d)),
    };
    Some(t.reshape(dtensor::local::i64s(shape)))
}

fn local(t: &RealTensor, dtype: DType) -> Option<Tensor> {
    tensor(&t.values, &t.shape, real::dtype(t.dtype.as_deref(), dtype))
}

/// A real DTensor from its placements, every rank's global shape and local tensor.
fn dtensor(
    mesh: &Arc<Mesh>,
    pls: &[String],
    shapes: &[Vec<usize>],
    locals: &[RealTensor],
    dt: DType,
) -> Option<DTensor> {
    let placements: Vec<Placement> = pls.iter().map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let locals: Vec<Tensor> = locals.iter().map(|t| local(t, dt)).collect::<Option<_>>()?;
    if placements.len() != mesh.ndim() || locals.len() != mesh.size() || shapes.is_empty() {
        return None;
    }
    let rank_shapes = shapes.iter().any(|s| *s != shapes[0]).then(|| shapes.to_vec());
    let dtype = dtensor::local::dtype(locals[0].kind());
    Some(DTensor { mesh: mesh.clone(), placements, shape: shapes[0].clone(), rank_shapes, dtype, locals, mask: None })
}

/// The Python exception class as the `&'static str` our errors carry.
fn static_kind(kind: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "RuntimeError",
        "ValueError",
        "AssertionError",
        "TypeError",
        "IndexError",
        "KeyError",
        "NotImplementedError",
        "Hang",
        "WorkerCrash",
    ];
    KNOWN.iter().copied().find(|k| *k == kind).unwrap_or_else(|| Box::leak(kind.to_string().into_boxed_str()))
}

fn error(e: Option<&real::RealError>) -> DTensorError {
    let (kind, message) = e.map(|e| (e.kind.as_str(), e.message.clone())).unwrap_or(("RuntimeError", String::new()));
    DTensorError::Local { kind: static_kind(kind), message }
}

/// The real sharded outputs as DTensors (None without every rank's locals).
fn sharded(c: &AnyChecked, real: &RealOutcome, rs: &RealSharded) -> Option<Result<Named<DTensor>, DTensorError>> {
    if !rs.ok {
        return Some(Err(error(rs.error.as_ref())));
    }
    let Ok(ours) = &c.run.sharded else { return None };
    let mesh = &c.run.mesh;
    let mut out = Named::default();
    for (name, o) in ours.iter() {
        let r = real.output(name)?;
        out.push(name, dtensor(mesh, &r.placements, &r.rank_global_shapes, r.locals.as_ref()?, o.dtype)?);
    }
    Some(Ok(out))
}

fn program(c: &AnyChecked, rb: &RealBackward) -> Option<Result<GradRun, DTensorError>> {
    if !rb.ok {
        return Some(Err(error(rb.error.as_ref())));
    }
    let ours = c.run.backward.as_ref()?.program.as_ref().ok()?;
    let mesh = &c.run.mesh;
    let mut grads = Named::default();
    for (name, g) in &rb.grads {
        let Some(g) = g else { continue };
        let Some(og) = ours.grads.get(name) else { continue };
        let Val::D(od) = &og.val else { return None };
        let shape = g.shape.clone().unwrap_or_else(|| od.shape.clone());
        let d = dtensor(mesh, &g.placements, &vec![shape; mesh.size()], &g.locals, od.dtype)?;
        grads.push(name, Grad { val: Val::D(d), sites: og.sites.clone() });
    }
    let choice = match &rb.ids {
        Some(t) => Some(local(t, DType::I64)?),
        None => ours.choice.as_ref().map(|t| t.shallow_clone()),
    };
    let mut comms: Vec<_> = rb.comms.iter().map(|c| real::comm_record(c, "grad")).collect();
    if comms.is_empty() {
        comms = counted(rb, ours.expected.as_ref());
    }
    // Our derivation judges the real run as it judges ours.
    let expected = ours.expected.clone();
    Some(Ok(GradRun { grads, comms, choice, expected }))
}

/// The real run (with our run's extra), when the recording has every rank's locals and
/// labelled collectives.
pub fn run(c: &AnyChecked, real: &RealOutcome) -> Option<(Run, AnyExtra)> {
    let rs = real.sharded.as_ref()?;
    if rs.comms.is_empty() && rs.comm_counts.as_ref().is_some_and(|m| !m.is_empty()) {
        return None; // counted, not labelled: the comm oracle could not place them
    }
    let (mut run, extra) = runner::run(&c.case, Device::Cpu).ok()?;
    run.sharded = sharded(c, real, rs)?;
    run.comms = rs.comms.iter().map(|c| real::comm_record(c, "?")).collect();
    if let (Some(bw), Some(rb)) = (run.backward.as_mut(), real.backward.as_ref()) {
        bw.program = program(c, rb)?;
    }
    Some((run, extra))
}

/// The real outputs' values, each replicated on the case's mesh, shaped like ours (None when
/// one is missing or holds another number of elements).
pub fn replicated(c: &AnyChecked, real: &RealOutcome, ours: &Named<Tensor>) -> Option<Named<DTensor>> {
    let mesh = &c.run.mesh;
    let mut out = Named::default();
    for (name, o) in ours.iter() {
        let r = real.output(name)?;
        let shape = dtensor::local::shape(o);
        let dtype = dtensor::local::dtype(o.kind());
        let t = tensor(r.values.as_ref()?, &shape, dtype)?;
        out.push(
            name,
            DTensor {
                mesh: mesh.clone(),
                placements: vec![Placement::Replicate; mesh.ndim()],
                shape,
                rank_shapes: None,
                dtype,
                locals: (0..mesh.size()).map(|_| t.shallow_clone()).collect(),
                mask: None,
            },
        );
    }
    Some(out)
}

/// Collectives only counted (the backward recorder, gloo ranks): on the 1-D meshes of backward
/// cases each runs on mesh dim 0, bytes unknown; gloo has no all_to_all and runs each as an
/// all_gather, so an all_gather stands for each all_to_all the derivation expects.
fn counted(rb: &RealBackward, expected: Option<&harness::run::GradExpect>) -> Vec<dtensor::CommRecord> {
    let mut comms = Vec::new();
    for (op, n) in rb.comm_counts.iter().flatten() {
        let c = real::RealComm { op: op.clone(), mesh_dim: Some(0), tensor: None, bytes: None };
        comms.extend((0..*n).map(|_| real::comm_record(&c, "grad")));
    }
    let a2a = expected.map_or(0, |e| e.comms.iter().filter(|c| c.op == "all_to_all").count());
    for c in comms.iter_mut().filter(|c| c.op == "all_gather").take(a2a) {
        c.op = "all_to_all".into();
    }
    comms
}
