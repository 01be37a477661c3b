//! Executes a redistribution plan (`placement::plan`) on the locals of a DTensor, one mesh dim
//! at a time, logging every collective. It plans nothing itself.

use super::comm::{self, CommRecord};
use super::error::Result;
use super::tensor::DTensor;
use super::Ctx;
use crate::placement::plan::{plan, Collective, Transform};
use crate::placement::{normalize_all, Placement};
use tch::Tensor;

fn apply(dt: &DTensor, t: &Transform, locals: &[Tensor]) -> Vec<Tensor> {
    let m = &dt.mesh;
    let md = t.mesh_dim;
    match (t.collective, t.from, t.to) {
        (Collective::AllGather, Placement::StridedShard { dim, sf }, _) => {
            comm::all_gather_strided(m, md, locals, dim as usize, sf)
        }
        (Collective::AllGather, from, _) => {
            comm::all_gather(m, md, locals, from.shard_dim().expect("gather from a shard") as usize)
        }
        (Collective::AllReduce(op), _, _) => comm::all_reduce(m, md, locals, op),
        (Collective::ReduceScatter(op), _, to) => {
            comm::reduce_scatter(m, md, locals, op, to.shard_dim().expect("scatter to a shard") as usize)
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
        (Collective::Partition(op), _, _) => comm::partition(m, md, locals, op),
    }
}

fn run(dt: &DTensor, target: &[Placement], mut log: Option<(&mut Vec<CommRecord>, &str)>) -> Result<DTensor> {
    let target = normalize_all(target, dt.shape.len())?;
    if target == dt.placements {
        return Ok(dt.clone());
    }
    let steps = plan(&dt.mesh, &dt.placements, &target)?;
    let mut locals: Vec<Tensor> = dt.locals.iter().map(|t| t.shallow_clone()).collect();
    for t in &steps {
        locals = apply(dt, t, &locals);
        if let Some((log, label)) = log.as_mut() {
            if t.collective.communicates() {
                let bytes = locals.iter().map(|l| l.numel() * dt.dtype.itemsize()).max().unwrap_or(0);
                log.push(CommRecord {
                    op: t.collective.name().into(),
                    mesh_dim: t.mesh_dim,
                    tensor: label.to_string(),
                    bytes,
                });
            }
        }
    }
    Ok(DTensor { placements: target, locals, ..dt.clone() })
}

/// `dt.redistribute(placements=target)` inside the program under test: collectives are logged
/// under the context's current label.
pub fn redistribute(ctx: &mut Ctx, dt: &DTensor, target: &[Placement]) -> Result<DTensor> {
    let label = ctx.label.clone();
    run(dt, target, Some((&mut ctx.comms, &label)))
}

/// The same, unlogged: for reading results out, not for the program under test.
pub fn redistribute_quiet(dt: &DTensor, target: &[Placement]) -> Result<DTensor> {
    run(dt, target, None)
}
