//! The backward sweep: steps in reverse order, each turning its outputs' gradients into its
//! inputs' (summed where a value feeds several steps), the boundaries applying their labels.

use super::formulas;
use super::{apply, Id, Step, Tape, Val};
use crate::error::Result;
use crate::op::Op;
use crate::redistribute::redistribute;
use crate::tensor::DTensor;
use crate::Ctx;
use placement::{short_list, Placement};
use std::collections::BTreeMap;

/// A boundary a gradient crossed, and the label it got there.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Site {
    /// Where in the program (`gate.to_local`, `experts.local_map`).
    pub name: String,
    /// What happened: `label [P(sum)]`, `[P(sum)] -> [R]`.
    pub what: String,
}

/// A gradient, and the boundary sites it crossed on its way from the loss.
#[derive(Clone, Debug)]
pub struct Grad {
    pub val: Val,
    pub sites: Vec<Site>,
}

/// Forward placements with every Partial as Replicate: the default gradient label.
fn normalized(ps: &[Placement]) -> Vec<Placement> {
    ps.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect()
}

impl Tape {
    /// Backpropagates `seeds` (gradients of some values, usually per-rank losses' inputs) and
    /// returns the gradient of every leaf that needs one and received one.
    pub fn backward(&self, ctx: &mut Ctx, seeds: Vec<(Id, Val)>) -> Result<BTreeMap<Id, Grad>> {
        let mut grads: Vec<Option<Grad>> = vec![None; self.vals.len()];
        for (id, v) in seeds {
            grads[id] = Some(Grad { val: v, sites: Vec::new() });
        }
        for step in self.steps.iter().rev() {
            self.back_step(ctx, step, &mut grads)?;
        }
        let leaves: Vec<bool> = self.leaf_mask();
        Ok(grads
            .into_iter()
            .enumerate()
            .filter_map(|(id, g)| g.filter(|_| leaves[id] && self.needs_grad[id]).map(|g| (id, g)))
            .collect())
    }

    fn leaf_mask(&self) -> Vec<bool> {
        let mut leaf = vec![true; self.vals.len()];
        for step in &self.steps {
            match step {
                Step::Op { outs, .. } => outs.iter().for_each(|&o| leaf[o] = false),
                Step::Redistribute { out, .. } | Step::ToLocal { out, .. } | Step::FromLocal { out, .. } => {
                    leaf[*out] = false
                }
            }
        }
        leaf
    }

    fn back_step(&self, ctx: &mut Ctx, step: &Step, grads: &mut [Option<Grad>]) -> Result<()> {
        match step {
            Step::Op { op, ins, outs } => {
                let gouts: Vec<Option<Grad>> = outs.iter().map(|&o| grads[o].take()).collect();
                if gouts.iter().all(Option::is_none) {
                    return Ok(());
                }
                let mut sites: Vec<Site> = Vec::new();
                for g in gouts.iter().flatten() {
                    merge(&mut sites, &g.sites);
                }
                ctx.label(&format!("grad:{}", self.names[ins[0]]));
                let gvals: Vec<Option<Val>> = gouts.into_iter().map(|g| g.map(|g| g.val)).collect();
                let gins = formulas::backward(ctx, self, op, ins, outs, &gvals)?;
                for (&i, g) in ins.iter().zip(gins) {
                    if let (true, Some(val)) = (self.needs_grad[i], g) {
                        self.accumulate(ctx, grads, i, Grad { val, sites: sites.clone() })?;
                    }
                }
            }
            Step::Redistribute { x, out, site } => {
                let Some(g) = grads[*out].take() else { return Ok(()) };
                ctx.label(&format!("grad:{}", self.names[*x]));
                let src = &self.vals[*x].dtensor().placements;
                let gd = g.val.dtensor();
                // A forward source Partial stays Partial only for a Partial gradient.
                let target: Vec<Placement> = src
                    .iter()
                    .zip(&gd.placements)
                    .map(|(s, c)| if s.is_partial() && !c.is_partial() { Placement::Replicate } else { *s })
                    .collect();
                let target = planted_target(target, gd);
                let mark = ctx.comms.len();
                let moved = redistribute(ctx, gd, &target)?;
                planted_axis(ctx, mark);
                let what = format!("{} -> {}", short_list(&gd.placements), short_list(&target));
                self.pass(ctx, grads, *x, g, Val::D(moved), Site { name: site.clone(), what })?;
            }
            Step::ToLocal { x, out, grad, site } => {
                let Some(g) = grads[*out].take() else { return Ok(()) };
                let fwd = self.vals[*x].dtensor();
                let grad = grad.clone().filter(|_| !crate::plant::active("to-local-default-label"));
                let label = grad.clone().unwrap_or_else(|| normalized(&fwd.placements));
                let locals = g.val.locals().iter().map(|t| t.shallow_clone()).collect();
                let d = DTensor::from_local(locals, &self.mesh, &label, Some(fwd.shape.clone()))?;
                let what =
                    format!("to_local label {}{}", short_list(&label), if grad.is_none() { " (default)" } else { "" });
                self.pass(ctx, grads, *x, g, Val::D(d), Site { name: site.clone(), what })?;
            }
            Step::FromLocal { x, out, grad, site } => {
                let Some(g) = grads[*out].take() else { return Ok(()) };
                ctx.label(&format!("grad:{}", self.names[*x]));
                let target = grad.clone().unwrap_or_else(|| normalized(&self.vals[*out].dtensor().placements));
                let gd = g.val.dtensor();
                let what = format!("from_local {} -> {}", short_list(&gd.placements), short_list(&target));
                let mark = ctx.comms.len();
                let moved = if gd.placements == target { gd.clone() } else { redistribute(ctx, gd, &target)? };
                planted_axis(ctx, mark);
                let locals = moved.locals.iter().map(|t| t.shallow_clone()).collect();
                self.pass(ctx, grads, *x, g, Val::L(locals), Site { name: site.clone(), what })?;
            }
        }
        Ok(())
    }

    /// Hands `val` (what `g` became at boundary `site`) to value `x`.
    fn pass(&self, ctx: &mut Ctx, grads: &mut [Option<Grad>], x: Id, g: Grad, val: Val, site: Site) -> Result<()> {
        let mut sites = g.sites;
        merge(&mut sites, &[site]);
        self.accumulate(ctx, grads, x, Grad { val, sites })
    }

    /// Adds `g` to what value `id` already received (`add.Tensor`, as autograd accumulates).
    fn accumulate(&self, ctx: &mut Ctx, grads: &mut [Option<Grad>], id: Id, g: Grad) -> Result<()> {
        let merged = match grads[id].take() {
            None => g,
            Some(prev) => {
                let val = apply(ctx, &Op::Add, &[&prev.val, &g.val])?.remove(0);
                let mut sites = prev.sites;
                merge(&mut sites, &g.sites);
                Grad { val, sites }
            }
        };
        grads[id] = Some(merged);
        Ok(())
    }
}

/// Planted bugs in the backward of `redistribute` (src/dtensor/plant.rs): a Partial gradient
/// all-reduced to Replicate where its source is a Shard (`partial-grad-all-reduced`), or a Shard
/// source's gradient sent to the next tensor dim (`grad-wrong-shard-dim`).
fn planted_target(target: Vec<Placement>, g: &DTensor) -> Vec<Placement> {
    use crate::plant::active;
    let ndim = g.shape.len() as i64;
    target
        .into_iter()
        .zip(&g.placements)
        .map(|(t, c)| match t {
            Placement::Shard(_) if c.is_partial() && active("partial-grad-all-reduced") => Placement::Replicate,
            Placement::Shard(d) if d + 1 < ndim && active("grad-wrong-shard-dim") => Placement::Shard(d + 1),
            t => t,
        })
        .collect()
}

/// Planted bug `bwd-comm-wrong-axis`: the collectives a boundary's backward issued since `mark`
/// go on record against the mesh axis after the one they ran on.
fn planted_axis(ctx: &mut Ctx, mark: usize) {
    if crate::plant::active("bwd-comm-wrong-axis") {
        ctx.comms[mark..].iter_mut().for_each(|c| c.mesh_dim += 1);
    }
}

fn merge(into: &mut Vec<Site>, more: &[Site]) {
    for s in more {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}
