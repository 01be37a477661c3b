//! A real outcome as a [`Run`], so that our oracles can say which verdict classes real PyTorch's
//! results carry: the reference, the float64 shadow and the reference gradients are ours (the
//! same math); the sharded outputs, their collectives and the boundary program's gradients are
//! real DTensors rebuilt from every rank's local tensor.

use super::real::{self, RealBackward, RealOutcome, RealSharded, RealTensor};
use crate::dtensor::autograd::{Grad, Val};
use crate::dtensor::{DTensor, DTensorError, DType};
use crate::harness::check::Checked;
use crate::harness::runner::{self, Run};
use crate::placement::{Mesh, Placement};
use crate::router::backward::program::ProgramRun;
use crate::router::RouterOutputs;
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
        d => Tensor::from_slice(&real::floats(values)).to_kind(crate::dtensor::local::kind(d)),
    };
    Some(t.reshape(crate::dtensor::local::i64s(shape)))
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
    let dtype = crate::dtensor::local::dtype(locals[0].kind());
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
fn sharded(c: &Checked, real: &RealOutcome, rs: &RealSharded) -> Option<Result<RouterOutputs<DTensor>, DTensorError>> {
    if !rs.ok {
        return Some(Err(error(rs.error.as_ref())));
    }
    let Ok(ours) = &c.run.sharded else { return None };
    let mesh = &c.run.mesh;
    ours.try_map(|o| {
        let name = ours.named().into_iter().find(|(_, d)| std::ptr::eq(*d, o))?.0;
        let r = real.output(name)?;
        dtensor(mesh, &r.placements, &r.rank_global_shapes, r.locals.as_ref()?, o.dtype)
    })
    .map(Ok)
}

fn static_grad(name: &str) -> Option<&'static str> {
    ["gate.weight", "gate.bias", "x"].into_iter().find(|n| *n == name)
}

/// The real boundary program: its gradients (with our sites), ids and collectives.
fn program(c: &Checked, rb: &RealBackward) -> Option<Result<ProgramRun, DTensorError>> {
    if !rb.ok {
        return Some(Err(error(rb.error.as_ref())));
    }
    let ours = c.run.backward.as_ref()?.program.as_ref().ok()?;
    let mesh = &c.run.mesh;
    let mut grads = Vec::new();
    for (name, g) in &rb.grads {
        let (Some(g), Some(name)) = (g, static_grad(name)) else { continue };
        let og = ours.grads.iter().find(|(n, _)| *n == name).map(|(_, g)| g)?;
        let Val::D(od) = &og.val else { return None };
        let shape = g.shape.clone().unwrap_or_else(|| od.shape.clone());
        let d = dtensor(mesh, &g.placements, &vec![shape; mesh.size()], &g.locals, od.dtype)?;
        grads.push((name, Grad { val: Val::D(d), sites: og.sites.clone() }));
    }
    let ids = match &rb.ids {
        Some(t) => local(t, DType::I64)?,
        None => ours.ids.shallow_clone(),
    };
    let comms = rb.comms.iter().map(|c| real::comm_record(c, "grad")).collect();
    Some(Ok(ProgramRun { grads, ids, class: ours.class, comms }))
}

/// The real run, when the recording has every rank's locals and labelled collectives.
pub fn run(c: &Checked, real: &RealOutcome) -> Option<Run> {
    let rs = real.sharded.as_ref()?;
    if rs.comms.is_empty() && rs.comm_counts.as_ref().is_some_and(|m| !m.is_empty()) {
        return None; // counted, not labelled: the comm oracle could not place them
    }
    let mut run = runner::run(&c.case, Device::Cpu).ok()?;
    run.sharded = sharded(c, real, rs)?;
    run.comms = rs.comms.iter().map(|c| real::comm_record(c, "?")).collect();
    if let (Some(bw), Some(rb)) = (run.backward.as_mut(), real.backward.as_ref()) {
        bw.program = program(c, rb)?;
    }
    Some(run)
}

/// The real outputs' values, each replicated on the case's mesh, shaped like ours (None when
/// one is missing or holds another number of elements).
pub fn replicated(c: &Checked, real: &RealOutcome, ours: &RouterOutputs<Tensor>) -> Option<RouterOutputs<DTensor>> {
    let mesh = &c.run.mesh;
    ours.try_map(|o| {
        let name = ours.named().into_iter().find(|(_, t)| std::ptr::eq(*t, o))?.0;
        let r = real.output(name)?;
        let shape = crate::dtensor::local::shape(o);
        let dtype = crate::dtensor::local::dtype(o.kind());
        let t = tensor(r.values.as_ref()?, &shape, dtype)?;
        Some(DTensor {
            mesh: mesh.clone(),
            placements: vec![Placement::Replicate; mesh.ndim()],
            shape,
            rank_shapes: None,
            dtype,
            locals: (0..mesh.size()).map(|_| t.shallow_clone()).collect(),
            mask: None,
        })
    })
}
