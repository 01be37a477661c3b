//! `shardfuzz export` for router cases: a case as a standalone PyTorch script, for an upstream
//! issue. It imports only torch, holds the inputs inline, builds the mesh, distributes the
//! inputs, runs the case's router revision written out plainly (and, for a backward case, the
//! boundary revision's program and loss), computes the unsharded reference with the same code,
//! and prints the divergence in the report's words and its verdict classes. It runs as
//! `torchrun --nproc-per-node N OUT.py` (CPU, gloo) and as `python OUT.py` (one process, fake
//! process group + LocalTensorMode).
//!
//! The case-specific part (docstring, inputs, router, program) is written here; the generic part
//! (running both ways, judging) is `python/export/harness.py` (and `backward.py`), appended.

mod backward;
mod program;

use crate::contract;
use crate::spec::RouterSpec;
use harness::case::Common;
use harness::pyfmt::{placements, quoted, tensor, tuple};
use harness::subject::Model;
use harness::tensor_data::Tensors;

const HARNESS: &str = include_str!("../../../../python/export/harness.py");

/// The docstring: what the case is, what the model says, how to run it.
fn docstring(c: &Common, s: &RouterSpec, signatures: &[String]) -> String {
    let world: usize = c.mesh.shape.iter().product();
    let d = s.dims;
    let mesh = format!("{:?} {:?}", c.mesh.shape, c.mesh.names);
    let says = if signatures.is_empty() { "no divergence".to_string() } else { signatures.join("\n    ") };
    let what = match &s.backward {
        None => format!("torchtitan's MoE router as revision `{}` writes it", s.revision.router),
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
        c.dtype,
        placement::short_list(&s.layout.x),
        placement::short_list(&s.layout.gate),
        c.rules,
        s.revision.size1,
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
fn constants(c: &Common, s: &RouterSpec, t: &Tensors, classes: &[String]) -> String {
    let world: usize = c.mesh.shape.iter().product();
    let d = s.dims;
    let mesh = c.mesh().expect("a validated case");
    let resolved = contract::resolve(&s.layout.counts_contract, &mesh, s.revision.size1);
    let resolved = placement::normalize_all(&resolved, 1).unwrap_or(resolved);
    let groups = s.router.groups.map(|g| format!("({}, {})", g.num_groups, g.num_limited));
    let title = format!("{} / {} / size1={}", s.revision.router, c.rules, s.revision.size1);
    let mut out = format!(
        "TITLE = \"{title}\"\nMODEL = {}  # the verdict classes shardfuzz's model gives\nRULES = \"{}\"\n\
         MESH_SHAPE, MESH_NAMES, WORLD = {}, {}, {world}\nB, L, D, E, K = {}, {}, {}, {}, {}\n\
         SCORE_FUNC, GROUPS, ROUND_ROBIN = \"{}\", {}, {}\n\nINPUTS = {{\n",
        quoted(classes),
        c.rules,
        tuple(&c.mesh.shape.iter().map(|x| x.to_string()).collect::<Vec<_>>()),
        tuple(&c.mesh.names.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>()),
        d.batch,
        d.seq,
        d.model,
        d.experts,
        d.top_k,
        s.router.score_func,
        groups.unwrap_or_else(|| "None".into()),
        if s.router.force_load_balance { "True" } else { "False" },
    );
    let l = &s.layout;
    let get = |n: &str| t.get(n).expect("an input of the case");
    let mut pls = vec![format!("\"x\": {}", placements(&l.x))];
    out.push_str(&format!("    \"x\": {},\n", tensor(get("x"), "    ")));
    out.push_str(&format!("    \"gate_weight\": {},\n", tensor(get("gate"), "    ")));
    pls.push(format!("\"gate_weight\": {}", placements(&l.gate)));
    for (name, lay) in [("gate_bias", &l.gate_bias), ("expert_bias", &l.expert_bias)] {
        if let (Some(td), Some(lay)) = (t.get(name), lay) {
            out.push_str(&format!("    \"{name}\": {},\n", tensor(td, "    ")));
            pls.push(format!("\"{name}\": {}", placements(lay)));
        }
    }
    out.push_str(&format!("}}\nPLACEMENTS = {{{}}}\n", pls.join(", ")));
    let contract: Vec<String> = resolved.iter().map(|p| format!("{p:?}", p = p.to_string())).collect();
    out.push_str(&format!(
        "CONTRACT = [{}]  # the counts' placements the experts require (layout.counts_contract, size1={})\n",
        contract.join(", "),
        s.revision.size1
    ));
    if s.backward.is_none() {
        out.push_str("BACKWARD = None  # a forward case\n");
    }
    out
}

/// The tables the Python worker takes with every router case: how this revision writes its
/// two scatter sites (`sharded::sites`), which sites promise no collective on this rule set,
/// and the release the rule set models.
pub fn tables(c: &Common, s: &RouterSpec) -> serde_json::Value {
    let (group_mask, routing_map) = crate::sharded::sites(s.revision.router);
    let name = |site: crate::body::Site| match site {
        crate::body::Site::InPlace => "in_place",
        crate::body::Site::OutOfPlace => "out_of_place",
        crate::body::Site::LocalMap => "local_map",
    };
    let quiet: Vec<&str> = if c.rules.scatter_is_local() { crate::run::SCATTER_SITES.to_vec() } else { vec![] };
    serde_json::json!({
        "sites": { "group_mask": name(group_mask), "routing_map": name(routing_map) },
        "quiet_sites": quiet,
        "release": c.rules.release(),
    })
}

/// The whole script for a validated case (tensors inline or drawn from its seed), with what
/// the model says of it.
pub fn script(c: &Common, s: &RouterSpec, model: &Model) -> String {
    let case = harness::case::Case { common: c.clone(), subject: s.clone() };
    let t = harness::data::inline(&case);
    let mut out = docstring(c, s, &model.signatures);
    out.push_str(IMPORTS);
    out.push('\n');
    out.push_str(&constants(c, s, &t, &model.classes));
    out.push_str("\n\n");
    out.push_str(&program::router(c, s));
    if let Some(b) = &s.backward {
        out.push_str("\n\n");
        out.push_str(&backward::program(c, s, b));
    }
    out.push_str("\n\n");
    out.push_str(HARNESS);
    if s.backward.is_some() {
        out.push('\n');
        out.push_str(backward::HARNESS);
    }
    out.push_str("\n\nif __name__ == \"__main__\":\n    main()\n");
    out
}
