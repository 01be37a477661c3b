//! Autograd on the simulated DTensor, as DTensor's own autograd behaves: every op records what
//! its backward needs on a [`Tape`]; [`Tape::backward`] runs each op's backward as ops of the
//! same kind (DTensor ops through the same sharding rules and rule set, with every collective
//! logged; plain per-rank ops between a `to_local` and a `from_local`), and the boundaries
//! attach gradient labels exactly as DTensor does:
//!
//! - `to_local(grad_placements)`: the per-rank gradient is wrapped with the label (or the
//!   forward placements with Partial as Replicate) and nothing is communicated or checked;
//! - `from_local(grad_placements)`: a DTensor gradient whose placements differ from the label
//!   (or the forward placements, Partial as Replicate) is redistributed to it;
//! - `redistribute`: the gradient goes back to the forward source placements, a source Partial
//!   becoming Replicate when the gradient is not Partial there.
//!
//! Nothing here calls libtorch's autograd: every rank's local gradient is computed by the same
//! local kernels the forward uses, so a wrong label shows up as a wrong gradient, as it would on
//! real ranks.

mod engine;
pub mod expect;
mod formulas;

pub use engine::{Grad, Site};

use super::dispatch::{call, run_local};
use super::error::Result;
use super::meta::DType;
use super::op::Op;
use super::redistribute::redistribute;
use super::tensor::DTensor;
use super::{local, Ctx};
use placement::{Mesh, Placement};
use std::sync::Arc;
use tch::Tensor;

/// A value of the program: a DTensor, or one plain tensor per rank.
#[derive(Debug)]
pub enum Val {
    D(DTensor),
    L(Vec<Tensor>),
}

impl Clone for Val {
    fn clone(&self) -> Self {
        match self {
            Val::D(d) => Val::D(d.clone()),
            Val::L(v) => Val::L(v.iter().map(|t| t.shallow_clone()).collect()),
        }
    }
}

impl Val {
    pub fn dtype(&self) -> DType {
        match self {
            Val::D(d) => d.dtype,
            Val::L(v) => local::dtype(v[0].kind()),
        }
    }

    /// The global shape of a DTensor; rank 0's shape of per-rank tensors.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Val::D(d) => d.shape.clone(),
            Val::L(v) => local::shape(&v[0]),
        }
    }

    pub fn dtensor(&self) -> &DTensor {
        match self {
            Val::D(d) => d,
            Val::L(_) => panic!("a DTensor was expected where the program holds local tensors"),
        }
    }

    pub fn locals(&self) -> &[Tensor] {
        match self {
            Val::D(d) => &d.locals,
            Val::L(v) => v,
        }
    }
}

/// Runs `op` on values of one kind: DTensors through the dispatcher (sharding rules,
/// redistribution, logged collectives), per-rank tensors through the local kernel on each rank.
pub fn apply(ctx: &mut Ctx, op: &Op, args: &[&Val]) -> Result<Vec<Val>> {
    if let Val::D(_) = args[0] {
        let ds: Vec<&DTensor> = args.iter().map(|a| a.dtensor()).collect();
        return Ok(call(ctx, op, &ds)?.into_iter().map(Val::D).collect());
    }
    let shape: Vec<i64> = match op {
        Op::View { shape, .. } => shape.clone(),
        Op::Expand { shape } | Op::NewZeros { shape } => local::i64s(shape),
        _ => Vec::new(),
    };
    let ranks = args[0].locals().len();
    let mut outs: Vec<Vec<Tensor>> = (0..op.n_outputs()).map(|_| Vec::with_capacity(ranks)).collect();
    for r in 0..ranks {
        let locals: Vec<&Tensor> = args.iter().map(|a| &a.locals()[r]).collect();
        for (k, t) in run_local(op, &locals, &shape)?.into_iter().enumerate() {
            outs[k].push(t);
        }
    }
    Ok(outs.into_iter().map(Val::L).collect())
}

/// A value's index on its tape.
pub type Id = usize;

/// One recorded step of the forward program.
#[derive(Debug)]
enum Step {
    Op { op: Op, ins: Vec<Id>, outs: Vec<Id> },
    Redistribute { x: Id, out: Id, site: String },
    ToLocal { x: Id, out: Id, grad: Option<Vec<Placement>>, site: String },
    FromLocal { x: Id, out: Id, grad: Option<Vec<Placement>>, site: String },
}

/// The values of a program and the steps that made them.
pub struct Tape {
    vals: Vec<Val>,
    needs_grad: Vec<bool>,
    /// The value each step computes, for the communication log of its backward.
    names: Vec<String>,
    steps: Vec<Step>,
    mesh: Arc<Mesh>,
    name: String,
}

impl Tape {
    pub fn new(mesh: &Arc<Mesh>) -> Tape {
        Tape { vals: vec![], needs_grad: vec![], names: vec![], steps: vec![], mesh: mesh.clone(), name: String::new() }
    }

    /// Names the values the next steps compute (and sets the context's label for their comms).
    pub fn name(&mut self, ctx: &mut Ctx, name: &str) {
        self.name = name.to_string();
        ctx.label(name);
    }

    fn push(&mut self, v: Val, needs_grad: bool) -> Id {
        self.vals.push(v);
        self.needs_grad.push(needs_grad);
        self.names.push(self.name.clone());
        self.vals.len() - 1
    }

    /// A value that does not come from a step: an input or a parameter.
    pub fn leaf(&mut self, v: Val, requires_grad: bool) -> Id {
        self.push(v, requires_grad)
    }

    pub fn val(&self, id: Id) -> &Val {
        &self.vals[id]
    }

    pub fn mesh(&self) -> &Arc<Mesh> {
        &self.mesh
    }

    /// Runs `op` and records it when any input needs a gradient. Integer and boolean outputs
    /// (indices, masks) carry none.
    pub fn op(&mut self, ctx: &mut Ctx, op: Op, ins: &[Id]) -> Result<Vec<Id>> {
        let args: Vec<&Val> = ins.iter().map(|&i| &self.vals[i]).collect();
        let outs = apply(ctx, &op, &args)?;
        let needs = ins.iter().any(|&i| self.needs_grad[i]);
        let ids: Vec<Id> = outs
            .into_iter()
            .map(|v| {
                let float = v.dtype().is_float();
                self.push(v, needs && float)
            })
            .collect();
        if needs {
            self.steps.push(Step::Op { op, ins: ins.to_vec(), outs: ids.clone() });
        }
        Ok(ids)
    }

    pub fn op1(&mut self, ctx: &mut Ctx, op: Op, ins: &[Id]) -> Result<Id> {
        Ok(self.op(ctx, op, ins)?[0])
    }

    /// `x.redistribute(placements)` of a DTensor.
    pub fn redistribute(&mut self, ctx: &mut Ctx, x: Id, to: &[Placement], site: &str) -> Result<Id> {
        let out = redistribute(ctx, self.vals[x].dtensor(), to)?;
        let id = self.push(Val::D(out), self.needs_grad[x]);
        self.record(x, Step::Redistribute { x, out: id, site: site.into() });
        Ok(id)
    }

    /// `x.to_local(grad_placements=grad)`.
    pub fn to_local(&mut self, x: Id, grad: Option<Vec<Placement>>, site: &str) -> Id {
        let locals = self.vals[x].dtensor().locals.iter().map(|t| t.shallow_clone()).collect();
        let id = self.push(Val::L(locals), self.needs_grad[x]);
        self.record(x, Step::ToLocal { x, out: id, grad, site: site.into() });
        id
    }

    /// `DTensor.from_local(x, mesh, placements, run_check=False, grad_placements=grad)`: each
    /// rank infers the global shape from its own piece, as without `shape=`.
    pub fn from_local(
        &mut self,
        x: Id,
        placements: &[Placement],
        grad: Option<Vec<Placement>>,
        site: &str,
    ) -> Result<Id> {
        let locals: Vec<Tensor> = self.vals[x].locals().iter().map(|t| t.shallow_clone()).collect();
        let d = DTensor::from_local(locals, &self.mesh, placements, None)?;
        let id = self.push(Val::D(d), self.needs_grad[x]);
        self.record(x, Step::FromLocal { x, out: id, grad, site: site.into() });
        Ok(id)
    }

    fn record(&mut self, x: Id, step: Step) {
        if self.needs_grad[x] {
            self.steps.push(step);
        }
    }
}

/// The sums that take a gradient of a broadcast result's shape `from` back to an operand's
/// `shape`, as autograd's `sum_to` does: the leading dims away, then the dims the operand has
/// as size 1 kept. Pure shape arithmetic, shared by the engine's formulas and the placement
/// derivation (expect.rs), which must not run the formulas themselves.
fn sum_to_ops(from: &[usize], shape: &[usize]) -> Vec<Op> {
    let lead = from.len() - shape.len();
    let mut ops = Vec::new();
    if lead > 0 {
        ops.push(Op::Sum { dims: (0..lead as i64).collect(), keepdim: false });
    }
    let ones: Vec<i64> = (0..shape.len()).filter(|&d| shape[d] == 1 && from[lead + d] != 1).map(|d| d as i64).collect();
    if !ones.is_empty() {
        ops.push(Op::Sum { dims: ones, keepdim: true });
    }
    ops
}
