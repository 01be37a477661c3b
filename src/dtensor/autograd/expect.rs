//! What DTensor's autograd must give for a recorded forward, derived on placements alone: the
//! placement of every leaf's gradient and the collectives of the backward (kind, mesh axis,
//! bytes one rank receives).
//!
//! This is a second derivation, kept apart from the engine that computes the gradients
//! (`engine.rs`, `formulas.rs`): it runs no local kernel, holds no tensor, and writes the
//! boundary rules out again from DTensor's autograd functions:
//!
//! - `to_local(grad_placements)`: the gradient is labelled `grad_placements`, or the forward
//!   placements with every Partial as Replicate; no communication;
//! - `from_local(grad_placements)`: the gradient is redistributed to `grad_placements`, or to the
//!   forward placements with every Partial as Replicate, where it is elsewhere;
//! - `redistribute`: the gradient goes back to the forward source placements, a source Partial
//!   becoming Replicate unless the gradient is Partial on that mesh dim;
//! - a value that feeds several steps receives the sum of their gradients (`add.Tensor`).
//!
//! Between the boundaries each op's backward is the list of ops PyTorch's derivative formula
//! emits; on DTensors each goes through the sharding rules of the case's release
//! ([`crate::rules::propose`], [`crate::rules::select`]) and each input move through the
//! release's planner, exactly what DTensor's dispatcher does with them. What this shares with the
//! engine is therefore the op rules and the planner (which the forward oracles and the op tests
//! judge), not the boundary code, the accumulation or the backward's redistributions.

use super::{Id, Step, Tape, Val};
use crate::comm::CommRecord;
use crate::error::{DTensorError, Result};
use crate::meta::{DType, Meta};
use crate::op::Op;
use crate::rules::{self, Arg};
use crate::RuleSet;
use placement::plan::{plan_for, Collective, Footprint};
use placement::{layout, normalize_all, Mesh, Placement};
use std::collections::BTreeMap;

/// The derived backward: each leaf's gradient placements (leaves that need a gradient and get
/// one; a plain per-rank gradient has none) and the backward's collectives, in issue order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Expected {
    pub grads: BTreeMap<Id, Option<Vec<Placement>>>,
    pub comms: Vec<CommRecord>,
}

/// A gradient as placements see it: per-rank plain tensors, or a DTensor's metadata.
#[derive(Clone, Debug)]
enum G {
    Local,
    D(Arg),
}

impl G {
    fn d(&self) -> Result<&Arg> {
        match self {
            G::D(a) => Ok(a),
            G::Local => Err(DTensorError::Unsupported("a DTensor gradient was expected".into())),
        }
    }
}

struct Walk<'a> {
    tape: &'a Tape,
    mesh: &'a Mesh,
    rules: RuleSet,
    comms: Vec<CommRecord>,
    label: String,
}

/// Derives the backward of `tape` from gradients seeded at `seeds` (plain per-rank values, as a
/// per-rank loss seeds them, or DTensors with the given placements).
pub fn expected(tape: &Tape, rules: RuleSet, seeds: &[(Id, Option<Vec<Placement>>)]) -> Result<Expected> {
    let mut w = Walk { tape, mesh: &tape.mesh, rules, comms: Vec::new(), label: String::new() };
    let mut grads: Vec<Option<G>> = vec![None; tape.vals.len()];
    for (id, ps) in seeds {
        grads[*id] = Some(match ps {
            None => G::Local,
            Some(ps) => G::D(w.arg_of(*id, ps.clone())),
        });
    }
    for step in tape.steps.iter().rev() {
        w.step(step, &mut grads)?;
    }
    let mut made = vec![false; tape.vals.len()];
    for step in &tape.steps {
        match step {
            Step::Op { outs, .. } => outs.iter().for_each(|&o| made[o] = true),
            Step::Redistribute { out, .. } | Step::ToLocal { out, .. } | Step::FromLocal { out, .. } => {
                made[*out] = true
            }
        }
    }
    let mut out = BTreeMap::new();
    for (id, g) in grads.into_iter().enumerate() {
        if let (Some(g), false, true) = (g, made[id], tape.needs_grad[id]) {
            out.insert(id, if let G::D(a) = g { Some(a.placements) } else { None });
        }
    }
    Ok(Expected { grads: out, comms: w.comms })
}

impl Walk<'_> {
    /// The metadata of value `id` with placements `ps` (a gradient has its value's shape and dtype).
    fn arg_of(&self, id: Id, ps: Vec<Placement>) -> Arg {
        let v = &self.tape.vals[id];
        Arg { meta: Meta::new(v.shape(), v.dtype()), placements: ps }
    }

    fn fwd(&self, id: Id) -> Result<Arg> {
        match &self.tape.vals[id] {
            Val::D(d) => Ok(Arg { meta: Meta::new(d.shape.clone(), d.dtype), placements: d.placements.clone() }),
            Val::L(_) => Err(DTensorError::Unsupported("a DTensor forward value was expected".into())),
        }
    }

    /// The forward value as an operand of a backward op: a DTensor's metadata, or plain.
    fn operand(&self, id: Id) -> G {
        self.fwd(id).map(G::D).unwrap_or(G::Local)
    }

    /// Moves `a` to `to` as DTensor's redistribution does, logging the collectives; returns `a`
    /// at its new placements.
    fn moved(&mut self, a: &Arg, to: &[Placement]) -> Result<Arg> {
        let to = normalize_all(to, a.meta.shape.len())?;
        if to == a.placements {
            return Ok(a.clone());
        }
        let t = Footprint { shape: &a.meta.shape, itemsize: a.meta.dtype.itemsize() };
        let mut now = a.placements.clone();
        let most_of = |ps: &[Placement]| {
            let shapes = layout::local_shapes(&a.meta.shape, self.mesh, ps);
            shapes.iter().map(|l| l.iter().product::<usize>()).max().unwrap_or(0)
        };
        for s in plan_for(self.mesh, &a.placements, &to, t, self.rules.plan())? {
            let before = most_of(&now);
            now[s.mesh_dim] = s.to;
            if s.collective.communicates() {
                // A rank receives every piece padded to the largest (DTensor pads uneven gathers).
                let most = match s.collective {
                    Collective::AllGather => self.mesh.dim_size(s.mesh_dim) * before,
                    _ => most_of(&now),
                };
                let bytes = most * a.meta.dtype.itemsize();
                let op = s.collective.name().to_string();
                self.comms.push(CommRecord { op, mesh_dim: s.mesh_dim, tensor: self.label.clone(), bytes, axis: None });
            }
        }
        Ok(Arg { placements: to, ..a.clone() })
    }

    /// One op on gradients: plain when every operand is, else through the release's rules (the
    /// chosen strategy's input moves logged); returns the first output.
    fn op(&mut self, op: Op, args: &[&G]) -> Result<G> {
        if args.iter().all(|a| matches!(a, G::Local)) {
            return Ok(G::Local);
        }
        let ds: Vec<Arg> = args.iter().map(|a| a.d().cloned()).collect::<Result<_>>()?;
        let proposal = rules::propose(&op, &ds, self.mesh, self.rules)?;
        let chosen = rules::select(&op, &proposal, &ds, self.mesh)?;
        for (a, want) in ds.iter().zip(&chosen.ins) {
            self.moved(a, want)?;
        }
        Ok(G::D(Arg { meta: proposal.out_metas[0].clone(), placements: chosen.outs[0].clone() }))
    }

    fn step(&mut self, step: &Step, grads: &mut [Option<G>]) -> Result<()> {
        match step {
            Step::Op { op, ins, outs } => {
                let Some(g) = grads[outs[0]].take() else { return Ok(()) };
                outs[1..].iter().for_each(|&o| grads[o] = None);
                self.label = format!("grad:{}", self.tape.names[ins[0]]);
                let gins = self.formula(op, ins, outs[0], &g)?;
                for (&i, gi) in ins.iter().zip(gins) {
                    if let (true, Some(gi)) = (self.tape.needs_grad[i], gi) {
                        self.accumulate(grads, i, gi)?;
                    }
                }
            }
            Step::Redistribute { x, out, .. } => {
                let Some(g) = grads[*out].take() else { return Ok(()) };
                self.label = format!("grad:{}", self.tape.names[*x]);
                let g = g.d()?.clone();
                let src = self.fwd(*x)?.placements;
                let back: Vec<Placement> = src
                    .iter()
                    .zip(&g.placements)
                    .map(|(s, now)| if s.is_partial() && !now.is_partial() { Placement::Replicate } else { *s })
                    .collect();
                let at = self.moved(&g, &back)?;
                self.accumulate(grads, *x, G::D(at))?;
            }
            Step::ToLocal { x, out, grad, .. } => {
                let Some(_) = grads[*out].take() else { return Ok(()) };
                let label = match grad {
                    Some(l) => l.clone(),
                    None => as_grad(&self.fwd(*x)?.placements),
                };
                let g = G::D(self.arg_of(*x, label));
                self.accumulate(grads, *x, g)?;
            }
            Step::FromLocal { x, out, grad, .. } => {
                let Some(g) = grads[*out].take() else { return Ok(()) };
                self.label = format!("grad:{}", self.tape.names[*x]);
                let target = match grad {
                    Some(l) => l.clone(),
                    None => as_grad(&self.fwd(*out)?.placements),
                };
                self.moved(g.d()?, &target)?;
                self.accumulate(grads, *x, G::Local)?;
            }
        }
        Ok(())
    }

    /// Adds `g` to what `id` already received (`prev + g`, autograd's order).
    fn accumulate(&mut self, grads: &mut [Option<G>], id: Id, g: G) -> Result<()> {
        grads[id] = Some(match grads[id].take() {
            None => g,
            Some(prev) => self.op(Op::Add, &[&prev, &g])?,
        });
        Ok(())
    }
}

/// Forward placements with every Partial as Replicate: the default gradient placements.
fn as_grad(ps: &[Placement]) -> Vec<Placement> {
    ps.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect()
}

impl Walk<'_> {
    /// The gradients of `op`'s inputs from its first output's `g`: the ops PyTorch's formula
    /// for `op` emits, in its order (`None` for an input that needs none).
    fn formula(&mut self, op: &Op, ins: &[Id], out: Id, g: &G) -> Result<Vec<Option<G>>> {
        let needs: Vec<bool> = ins.iter().map(|&i| self.tape.needs_grad[i]).collect();
        let shape = |w: &Self, i: Id| w.tape.vals[i].shape();
        let ishape = |w: &Self, i: Id| w.tape.vals[i].shape().iter().map(|&d| d as i64).collect::<Vec<i64>>();
        let one = |g: G| Ok(vec![Some(g)]);
        match op {
            Op::ToDtype(_) => {
                let dt: DType = self.tape.vals[ins[0]].dtype();
                one(self.op(Op::ToDtype(dt), &[g])?)
            }
            Op::T => one(self.op(Op::T, &[g])?),
            Op::View { .. } => one(self.op(Op::View { shape: ishape(self, ins[0]), unsafe_view: false }, &[g])?),
            Op::Mm => {
                let (a, b) = (self.operand(ins[0]), self.operand(ins[1]));
                let (ga, gb) = self.mm(g, &a, &b, (needs[0], needs[1]))?;
                Ok(vec![ga, gb])
            }
            Op::Addmm => {
                let (a, b) = (self.operand(ins[1]), self.operand(ins[2]));
                let (ga, gb) = self.mm(g, &a, &b, (needs[1], needs[2]))?;
                let gbias = if needs[0] {
                    let s = self.op(Op::Sum { dims: vec![0], keepdim: true }, &[g])?;
                    Some(self.op(Op::View { shape: ishape(self, ins[0]), unsafe_view: false }, &[&s])?)
                } else {
                    None
                };
                Ok(vec![gbias, ga, gb])
            }
            Op::Sigmoid => one(self.op(Op::SigmoidBackward, &[g, &self.operand(out)])?),
            Op::Softmax { dim } => {
                let input_dtype = self.tape.vals[ins[0]].dtype();
                one(self.op(Op::SoftmaxBackward { dim: *dim, input_dtype }, &[g, &self.operand(out)])?)
            }
            Op::AddScalar(_) => one(g.clone()),
            Op::MulScalar(s) => one(self.op(Op::MulScalar(*s), &[g])?),
            Op::Neg => one(self.op(Op::Neg, &[g])?),
            Op::Add | Op::Sub => {
                let mut v = Vec::new();
                for (k, &i) in ins.iter().enumerate() {
                    if !needs[k] {
                        v.push(None);
                        continue;
                    }
                    let gi = if k == 1 && matches!(op, Op::Sub) { self.op(Op::Neg, &[g])? } else { g.clone() };
                    v.push(Some(self.sum_to(gi, &shape(self, i))?));
                }
                Ok(v)
            }
            Op::Mul => {
                let (x, y) = (self.operand(ins[0]), self.operand(ins[1]));
                let mut v = vec![None, None];
                for (k, other) in [(0, &y), (1, &x)] {
                    if needs[k] {
                        let m = self.op(Op::Mul, &[g, other])?;
                        v[k] = Some(self.sum_to(m, &shape(self, ins[k]))?);
                    }
                }
                Ok(v)
            }
            Op::Div => self.div(g, ins, &needs),
            Op::Sum { dims, keepdim } => {
                let mut g = g.clone();
                if !*keepdim {
                    let nd = shape(self, ins[0]).len() as i64;
                    let mut ds: Vec<i64> = dims.iter().map(|&d| if d < 0 { d + nd } else { d }).collect();
                    ds.sort_unstable();
                    for d in ds {
                        g = self.op(Op::Unsqueeze { dim: d }, &[&g])?;
                    }
                }
                one(self.op(Op::Expand { shape: shape(self, ins[0]) }, &[&g])?)
            }
            Op::Gather { dim } => {
                let zeros = self.op(Op::NewZeros { shape: shape(self, ins[0]) }, &[g])?;
                let gin = self.op(Op::ScatterAdd { dim: *dim }, &[&zeros, &self.operand(ins[1]), g])?;
                Ok(vec![Some(gin), None])
            }
            other => Err(DTensorError::Unsupported(format!("no derived backward for {}", other.aten_name()))),
        }
    }

    /// `mm(a, b)`'s gradients, `b` a transposed view: `g · bᵀ` and `(gᵀ · a)ᵀ`.
    fn mm(&mut self, g: &G, a: &G, b: &G, need: (bool, bool)) -> Result<(Option<G>, Option<G>)> {
        let ga = if need.0 {
            let bt = self.op(Op::T, &[b])?;
            Some(self.op(Op::Mm, &[g, &bt])?)
        } else {
            None
        };
        let gb = if need.1 {
            let gt = self.op(Op::T, &[g])?;
            let m = self.op(Op::Mm, &[&gt, a])?;
            Some(self.op(Op::T, &[&m])?)
        } else {
            None
        };
        Ok((ga, gb))
    }

    /// `x / y`: the denominator's `-g · ((x / y) / y)` summed to y's shape first, then `g / y`.
    fn div(&mut self, g: &G, ins: &[Id], needs: &[bool]) -> Result<Vec<Option<G>>> {
        let (x, y) = (self.operand(ins[0]), self.operand(ins[1]));
        let gy = if needs[1] {
            let q = self.op(Op::Div, &[&x, &y])?;
            let q2 = self.op(Op::Div, &[&q, &y])?;
            let ng = self.op(Op::Neg, &[g])?;
            let m = self.op(Op::Mul, &[&ng, &q2])?;
            Some(self.sum_to(m, &self.tape.vals[ins[1]].shape())?)
        } else {
            None
        };
        let gx = if needs[0] { Some(self.op(Op::Div, &[g, &y])?) } else { None };
        Ok(vec![gx, gy])
    }

    /// Sums a broadcast gradient back to `shape`: leading dims away, then size-1 dims kept.
    fn sum_to(&mut self, g: G, shape: &[usize]) -> Result<G> {
        let from = match &g {
            G::D(a) => a.meta.shape.clone(),
            G::Local => return Ok(G::Local),
        };
        let mut g = g;
        for op in super::sum_to_ops(&from, shape) {
            g = self.op(op, &[&g])?;
        }
        Ok(g)
    }
}
