//! Executes a redistribution plan (`placement::plan`, the planner of the run's release) on the
//! locals of a DTensor, one mesh dim at a time, logging every collective. It plans nothing
//! itself. A `_MaskPartial` source reduces through its mask buffer (applied, then released), and
//! a `_MaskPartial` target masks the index and materializes the buffer.

use super::comm::{self, CommRecord};
use super::error::{DTensorError, Result};
use super::tensor::{DTensor, MaskBuffer};
use super::{Ctx, RuleSet};
use placement::plan::{plan_for, Collective, Footprint, Transform};
use placement::{normalize_all, Placement};
use std::sync::Arc;
use tch::Tensor;

/// One step on every rank's locals; `mask` is the buffer of a `_MaskPartial` involved.
fn apply(
    dt: &DTensor,
    t: &Transform,
    locals: &[Tensor],
    mask: &mut Option<Arc<MaskBuffer>>,
    rules: RuleSet,
) -> Result<Vec<Tensor>> {
    let m = &dt.mesh;
    let md = t.mesh_dim;
    let masked = |locals: &[Tensor], mask: &Option<Arc<MaskBuffer>>| -> Result<Vec<Tensor>> {
        match (t.from, mask) {
            (Placement::MaskPartial { .. }, Some(b)) => comm::apply_mask(locals, &b.take()?),
            (Placement::MaskPartial { .. }, None) => Err(DTensorError::MaskReleased),
            _ => Ok(locals.iter().map(|l| l.shallow_clone()).collect()),
        }
    };
    Ok(match (t.collective, t.from, t.to) {
        (Collective::AllGather, Placement::StridedShard { dim, sf }, _) => {
            comm::all_gather_strided(m, md, locals, dim as usize, sf)
        }
        (Collective::AllGather, from, _) => {
            let dim = from.shard_dim().expect("gather from a shard") as usize;
            comm::all_gather(m, md, locals, dim, rules.uneven_gather_is_strided())
        }
        (Collective::AllReduce(op), _, _) => comm::all_reduce(m, md, &masked(locals, mask)?, op),
        (Collective::ReduceScatter(op), _, to) => {
            let dim = to.shard_dim().expect("scatter to a shard") as usize;
            comm::reduce_scatter(m, md, &masked(locals, mask)?, op, dim)
        }
        (Collective::AllToAll, from, to) => {
            comm::all_to_all(m, md, locals, from.shard_dim().unwrap() as usize, to.shard_dim().unwrap() as usize)
        }
        (Collective::LocalChunk, _, Placement::StridedShard { dim, sf }) => {
            comm::local_strided_chunk(m, md, locals, dim as usize, sf)
        }
        (Collective::LocalChunk, _, to) => {
            comm::local_chunk(m, md, locals, to.shard_dim().expect("chunk to a shard") as usize)
        }
        (Collective::Partition(_), _, Placement::MaskPartial { id, size, .. }) => {
            let (idx, masks) = comm::mask_index(m, md, locals, size as usize);
            let buf = match mask.take() {
                Some(b) if b.id == id => b,
                _ => MaskBuffer::new(id),
            };
            buf.materialize(masks)?;
            *mask = Some(buf);
            idx
        }
        (Collective::Partition(op), _, _) => comm::partition(m, md, locals, op),
        (Collective::ZeroFill, from, _) => {
            comm::zero_fill(m, md, locals, from.shard_dim().expect("fill from a shard") as usize)
        }
    })
}

fn run(
    dt: &DTensor,
    target: &[Placement],
    rules: RuleSet,
    mut log: Option<(&mut Vec<CommRecord>, &str)>,
) -> Result<DTensor> {
    let target = normalize_all(target, dt.shape.len())?;
    if target == dt.placements {
        return Ok(dt.clone());
    }
    let t = Footprint { shape: &dt.shape, itemsize: dt.dtype.itemsize() };
    let steps = plan_for(&dt.mesh, &dt.placements, &target, t, rules.plan())?;
    let mut locals: Vec<Tensor> = dt.locals.iter().map(|t| t.shallow_clone()).collect();
    let mut mask = dt.mask.clone();
    for t in &steps {
        let most_before = locals.iter().map(|l| l.numel()).max().unwrap_or(0);
        locals = apply(dt, t, &locals, &mut mask, rules)?;
        if let Some((log, label)) = log.as_mut() {
            if t.collective.communicates() {
                // What a rank receives: an all_gather pads every piece to the largest one first.
                let most = match t.collective {
                    Collective::AllGather => dt.mesh.dim_size(t.mesh_dim) * most_before,
                    _ => locals.iter().map(|l| l.numel()).max().unwrap_or(0),
                };
                let bytes = most * dt.dtype.itemsize();
                log.push(CommRecord {
                    op: t.collective.name().into(),
                    mesh_dim: t.mesh_dim,
                    tensor: label.to_string(),
                    bytes,
                    axis: None,
                });
            }
        }
    }
    let keeps_mask = target.iter().any(|p| matches!(p, Placement::MaskPartial { .. }));
    Ok(DTensor { placements: target, locals, mask: if keeps_mask { mask } else { None }, ..dt.clone() })
}

/// `dt.redistribute(placements=target)` inside the program under test: the run's release plans
/// and gathers, collectives are logged under the context's current label.
pub fn redistribute(ctx: &mut Ctx, dt: &DTensor, target: &[Placement]) -> Result<DTensor> {
    let label = ctx.label.clone();
    run(dt, target, ctx.rules, Some((&mut ctx.comms, &label)))
}

/// The same, unlogged: for reading results out, not for the program under test.
pub fn redistribute_quiet(dt: &DTensor, target: &[Placement]) -> Result<DTensor> {
    run(dt, target, RuleSet::Torch213, None)
}

// Here rather than in tensor.rs, which the redistribution code builds on.
impl DTensor {
    /// `full_tensor()`: redistribute to all-Replicate through the simulated collectives (not
    /// logged: reading a result is not part of the program under test) and take rank 0's copy.
    pub fn full_tensor(&self) -> Result<Tensor> {
        let r = vec![Placement::Replicate; self.mesh.ndim()];
        let full = redistribute_quiet(self, &r)?;
        Ok(full.locals[0].shallow_clone())
    }
}
