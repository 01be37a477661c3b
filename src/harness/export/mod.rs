//! `shardfuzz export FILE --pytorch OUT.py`: a case as a standalone PyTorch script, for an
//! upstream issue. It imports only torch, holds the inputs inline, builds the mesh, distributes
//! the inputs, runs the case's router revision written out plainly (and, for a backward case,
//! the boundary revision's program and loss), computes the unsharded reference with the same
//! code, and prints the divergence in the report's words and its verdict classes. It runs as
//! `torchrun --nproc-per-node N OUT.py` (CPU, gloo) and as `python OUT.py` (one process, fake
//! process group + LocalTensorMode).
//!
//! The case-specific part (docstring, inputs, router, program) is written here; the generic part
//! (running both ways, judging) is `python/export/harness.py` (and `backward.py`), appended.

mod backward;
mod router;

use crate::device::Dev;
use crate::harness::case::Case;
use crate::harness::check::{check_guarded, Options};
use crate::harness::confirm::compare;
use crate::harness::data;
use crate::harness::tensor_data::{TensorData, Values};
use crate::placement::Placement;
use crate::router::contract;

const HARNESS: &str = include_str!("../../../python/export/harness.py");

/// Python for a placement: `Shard(1)`, `Replicate()`, `Partial("avg")`.
pub fn placement(p: &Placement) -> String {
    match p {
        Placement::Replicate => "Replicate()".into(),
        Placement::Shard(d) => format!("Shard({d})"),
        Placement::StridedShard { dim, sf } => format!("_StridedShard({dim}, split_factor={sf})"),
        Placement::Partial(op) if op.name() == "sum" => "Partial()".into(),
        Placement::Partial(op) => format!("Partial(\"{op}\")"),
        Placement::MaskPartial { .. } => "Partial()".into(),
    }
}

pub fn placements(ps: &[Placement]) -> String {
    format!("[{}]", ps.iter().map(placement).collect::<Vec<_>>().join(", "))
}

/// A float as Python reads it back exactly (at float32 precision).
fn float(v: f64) -> String {
    match v {
        v if v.is_nan() => "math.nan".into(),
        v if v.is_infinite() => if v > 0.0 { "math.inf" } else { "-math.inf" }.into(),
        v => format!("{:?}", v as f32),
    }
}

/// `torch.tensor([...]).reshape(...)` in the tensor's dtype, values wrapped at 100 columns.
pub fn tensor(t: &TensorData, indent: &str) -> String {
    let vals: Vec<String> = match &t.values {
        Values::Float(v) => v.iter().map(|&x| float(x)).collect(),
        Values::Int(v) => v.iter().map(|x| x.to_string()).collect(),
        Values::Bool(v) => v.iter().map(|&b| if b { "True" } else { "False" }.to_string()).collect(),
    };
    let mut lines = vec![String::new()];
    for v in vals {
        if lines.last().is_some_and(|l| l.len() + v.len() > 88) {
            lines.push(String::new());
        }
        let l = lines.last_mut().expect("one line at least");
        l.push_str(&v);
        l.push_str(", ");
    }
    let body = lines.iter().map(|l| format!("{indent}    {}", l.trim_end())).collect::<Vec<_>>().join("\n");
    let shape = t.shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
    let dtype = match t.dtype.name() {
        "bf16" => ".to(torch.bfloat16)",
        "f16" => ".to(torch.float16)",
        _ => "",
    };
    format!("torch.tensor([\n{body}\n{indent}], dtype=torch.float32).reshape({shape}){dtype}")
}

/// The model's verdict classes and signatures for `case` (a crash is a class too).
fn model(case: &Case) -> (Vec<String>, Vec<String>) {
    match check_guarded(case, Dev::Cpu, Options::default()) {
        Ok(c) => (compare::classes(&c.judgement), c.signatures().iter().map(|s| s.to_string()).collect()),
        Err(crashed) => (vec!["crash".into()], vec![crashed.signature().to_string()]),
    }
}

fn quoted(v: &[String]) -> String {
    format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "))
}

/// The docstring: what the case is, what the model says, how to run it.
fn docstring(case: &Case, signatures: &[String]) -> String {
    let world: usize = case.mesh.shape.iter().product();
    let d = case.dims;
    let mesh = format!("{:?} {:?}", case.mesh.shape, case.mesh.names);
    let says = if signatures.is_empty() { "no divergence".to_string() } else { signatures.join("\n    ") };
    let what = match &case.backward {
        None => format!("torchtitan's MoE router as revision `{}` writes it", case.revision.router),
        Some(b) => {
            format!("torchtitan's MoE router at boundary revision `{}` ({b}), its loss and backward", b.boundary)
        }
    };
    format!(
        "#!/usr/bin/env python3\n\"\"\"shardfuzz reproducer: {what}, on DTensor.\n\n\
         Mesh {mesh}; B={} L={} D={} E={} K={}, {}; x {}, gate {}.\n\
         shardfuzz's model of DTensor ({} rules, size1={}) says:\n    {says}\n\n\
         \x20   torchrun --nproc-per-node {world} THIS.py   # CPU, one gloo process per rank\n\
         \x20   python THIS.py                          # one process: fake process group + LocalTensorMode\n\"\"\"\n",
        d.batch,
        d.seq,
        d.model,
        d.experts,
        d.top_k,
        case.dtype,
        crate::placement::short_list(&case.layout.x),
        crate::placement::short_list(&case.layout.gate),
        case.revision.rules,
        case.revision.size1,
    )
}

const IMPORTS: &str = "import contextlib
import datetime
import math
import os
import pickle
import re
import tempfile

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed._local_tensor import LocalTensorMode
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.experimental import local_map
from torch.distributed.tensor.placement_types import _StridedShard  # noqa: F401

try:
    from torch.distributed.tensor.debug import CommDebugMode
except ImportError:  # torch 2.11's debug package imports numpy for its visualizer
    from torch.distributed.tensor.debug._comm_mode import CommDebugMode
";

/// The case's constants: mesh, sizes, inputs inline, their placements, the counts contract.
fn constants(case: &Case, classes: &[String]) -> String {
    let world: usize = case.mesh.shape.iter().product();
    let d = case.dims;
    let t = case.tensors.clone().unwrap_or_else(|| data::inline(case));
    let mesh = case.mesh().expect("a validated case");
    let resolved = contract::resolve(&case.layout.counts_contract, &mesh, case.revision.size1);
    let resolved = crate::placement::normalize_all(&resolved, 1).unwrap_or(resolved);
    let groups = case.router.groups.map(|g| format!("({}, {})", g.num_groups, g.num_limited));
    let mut s = format!(
        "TITLE = \"{}\"\nMODEL = {}  # the verdict classes shardfuzz's model gives\nRULES = \"{}\"\n\
         MESH_SHAPE, MESH_NAMES, WORLD = {}, {}, {world}\nB, L, D, E, K = {}, {}, {}, {}, {}\n\
         SCORE_FUNC, GROUPS, ROUND_ROBIN = \"{}\", {}, {}\n\nINPUTS = {{\n",
        case.revision,
        quoted(classes),
        case.revision.rules,
        tuple(&case.mesh.shape.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        tuple(&case.mesh.names.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>()),
        d.batch,
        d.seq,
        d.model,
        d.experts,
        d.top_k,
        case.router.score_func,
        groups.unwrap_or_else(|| "None".into()),
        if case.router.force_load_balance { "True" } else { "False" },
    );
    let mut pls = vec![format!("\"x\": {}", placements(&case.layout.x))];
    s.push_str(&format!("    \"x\": {},\n", tensor(&t.x, "    ")));
    s.push_str(&format!("    \"gate_weight\": {},\n", tensor(&t.gate, "    ")));
    pls.push(format!("\"gate_weight\": {}", placements(&case.layout.gate)));
    for (name, td, lay) in
        [("gate_bias", &t.gate_bias, &case.layout.gate_bias), ("expert_bias", &t.expert_bias, &case.layout.expert_bias)]
    {
        if let (Some(td), Some(lay)) = (td, lay) {
            s.push_str(&format!("    \"{name}\": {},\n", tensor(td, "    ")));
            pls.push(format!("\"{name}\": {}", placements(lay)));
        }
    }
    s.push_str(&format!("}}\nPLACEMENTS = {{{}}}\n", pls.join(", ")));
    let contract: Vec<String> = resolved.iter().map(|p| format!("{p:?}", p = p.to_string())).collect();
    s.push_str(&format!(
        "CONTRACT = [{}]  # the counts' placements the experts require (layout.counts_contract, size1={})\n",
        contract.join(", "),
        case.revision.size1
    ));
    if case.backward.is_none() {
        s.push_str("BACKWARD = None  # a forward case\n");
    }
    s
}

fn tuple(items: &[String]) -> String {
    if items.len() == 1 {
        format!("({},)", items[0])
    } else {
        format!("({})", items.join(", "))
    }
}

/// The whole script for `case` (validated; tensors inline or drawn from its seed).
pub fn script(case: &Case) -> String {
    let (classes, signatures) = model(case);
    let mut s = docstring(case, &signatures);
    s.push_str(IMPORTS);
    s.push('\n');
    s.push_str(&constants(case, &classes));
    s.push_str("\n\n");
    s.push_str(&router::router(case));
    if let Some(b) = &case.backward {
        s.push_str("\n\n");
        s.push_str(&backward::program(case, b));
    }
    s.push_str("\n\n");
    s.push_str(HARNESS);
    if case.backward.is_some() {
        s.push('\n');
        s.push_str(backward::HARNESS);
    }
    s.push_str("\n\nif __name__ == \"__main__\":\n    main()\n");
    s
}
