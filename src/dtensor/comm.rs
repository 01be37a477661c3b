//! Simulated collectives: pure functions over the local tensors of every fiber (process group)
//! of one mesh dim, as LocalTensorMode computes them; and the communication log, the
//! equivalent of CommDebugMode.

use super::local;
use crate::placement::layout::chunk;
use crate::placement::{Mesh, ReduceOp};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// One collective the program issued.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommRecord {
    /// `all_gather`, `all_reduce`, `reduce_scatter` or `all_to_all`.
    pub op: String,
    pub mesh_dim: usize,
    /// The router value being computed when the collective ran (e.g. `routing_map`).
    pub tensor: String,
    /// Bytes one rank receives (the largest over ranks).
    #[serde(default)]
    pub bytes: usize,
}

/// Applies `f` to every fiber of mesh dim `md`: it gets the fiber's locals in coordinate order
/// and returns one output per member.
fn per_fiber(mesh: &Mesh, md: usize, locals: &[Tensor], f: impl Fn(&[&Tensor]) -> Vec<Tensor>) -> Vec<Tensor> {
    let mut out: Vec<Option<Tensor>> = (0..locals.len()).map(|_| None).collect();
    for fiber in mesh.fibers(md) {
        let group: Vec<&Tensor> = fiber.iter().map(|&r| &locals[r]).collect();
        for (&r, t) in fiber.iter().zip(f(&group)) {
            out[r] = Some(t);
        }
    }
    out.into_iter().map(|t| t.expect("every rank is in one fiber")).collect()
}

/// Shard(dim) -> Replicate: concatenate the fiber's pieces along `dim`. (PyTorch pads uneven
/// pieces to equal size and unpads after; with chunk layouts the result is the concatenation.)
pub fn all_gather(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let cat = Tensor::cat(g, dim as i64);
        g.iter().map(|_| cat.shallow_clone()).collect()
    })
}

/// _StridedShard(dim, sf) -> Replicate: gather, then put rows back in global order.
pub fn all_gather_strided(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize, sf: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let n = g.len();
        let total: usize = g.iter().map(|t| t.size()[dim] as usize).sum();
        // gathered row k holds logical row order[k]
        let mut order = Vec::with_capacity(total);
        for i in 0..n {
            for j in 0..sf {
                let (plen, poff) = chunk(total, sf, j);
                let (clen, coff) = chunk(plen, n, i);
                order.extend((0..clen).map(|k| poff + coff + k));
            }
        }
        let mut inv = vec![0usize; total];
        for (k, &o) in order.iter().enumerate() {
            inv[o] = k;
        }
        let cat = Tensor::cat(g, dim as i64);
        let full = local::select_positions(&cat, dim, &inv);
        g.iter().map(|_| full.shallow_clone()).collect()
    })
}

fn reduce(g: &[&Tensor], op: ReduceOp) -> Tensor {
    let mut acc = g[0].shallow_clone();
    for t in &g[1..] {
        acc = match op {
            ReduceOp::Sum | ReduceOp::Avg => &acc + *t,
            ReduceOp::Max => acc.maximum(t),
            ReduceOp::Min => acc.minimum(t),
            ReduceOp::Product => &acc * *t,
        };
    }
    if op == ReduceOp::Avg {
        // LocalTensorMode's avg = sum / group size; integer partials floor like torch's div.
        acc = if acc.is_floating_point() { acc / g.len() as f64 } else { acc.floor_divide_scalar(g.len() as i64) };
    }
    acc
}

/// Partial(op) -> Replicate.
pub fn all_reduce(mesh: &Mesh, md: usize, locals: &[Tensor], op: ReduceOp) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let r = reduce(g, op);
        g.iter().map(|_| r.shallow_clone()).collect()
    })
}

/// Partial(op) -> Shard(dim): reduce, then each member keeps its chunk.
pub fn reduce_scatter(mesh: &Mesh, md: usize, locals: &[Tensor], op: ReduceOp, dim: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let r = reduce(g, op);
        (0..g.len()).map(|i| local::chunk(&r, dim, g.len(), i)).collect()
    })
}

/// Shard(from) -> Shard(to): concatenate along `from`, then each member keeps its chunk of `to`.
pub fn all_to_all(mesh: &Mesh, md: usize, locals: &[Tensor], from: usize, to: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let cat = Tensor::cat(g, from as i64);
        (0..g.len()).map(|i| local::chunk(&cat, to, g.len(), i)).collect()
    })
}

/// Replicate -> Shard(dim): each member keeps its chunk; no communication.
pub fn local_chunk(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| (0..g.len()).map(|i| local::chunk(g[i], dim, g.len(), i)).collect())
}

/// Replicate -> _StridedShard(dim, sf): each member keeps its strided rows; no communication.
pub fn local_strided_chunk(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize, sf: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let n = g.len();
        (0..n)
            .map(|i| {
                let len = g[i].size()[dim] as usize;
                let mut pos = Vec::new();
                for j in 0..sf {
                    let (plen, poff) = chunk(len, sf, j);
                    let (clen, coff) = chunk(plen, n, i);
                    pos.extend((0..clen).map(|k| poff + coff + k));
                }
                local::select_positions(g[i], dim, &pos)
            })
            .collect()
    })
}

/// Replicate -> Partial(op): sum splits the value evenly (x / n), avg/max/min keep it.
pub fn partition(mesh: &Mesh, md: usize, locals: &[Tensor], op: ReduceOp) -> Vec<Tensor> {
    let n = mesh.dim_size(md) as f64;
    locals.iter().map(|t| if op == ReduceOp::Sum { t / n } else { t.shallow_clone() }).collect()
}
