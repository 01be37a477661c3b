//! Simulated collectives: pure functions over the local tensors of every fiber (process group)
//! of one mesh dim, as LocalTensorMode computes them; and the communication log, the
//! equivalent of CommDebugMode.

use super::error::DTensorError;
use super::local;
use placement::layout::chunk;
use placement::{Mesh, ReduceOp};
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
    /// Bytes one rank receives (the largest over ranks; an all_gather pads every piece to the
    /// largest first, as DTensor does for uneven shards).
    #[serde(default)]
    pub bytes: usize,
    /// The named group it ran on, for a subject whose groups are not all dims of one mesh (the
    /// MoE layer: `tp`, `ep` of the sparse mesh, `loss` = dp·cp flattened); `None` where
    /// `mesh_dim` says it all (the router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axis: Option<String>,
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

/// Shard(dim) -> Replicate: concatenate the fiber's pieces along `dim`. PyTorch pads uneven
/// pieces to equal size and unpads after; with chunk layouts the values are the concatenation.
/// `padded` keeps 2.12.1's layout of the result: the padded gather narrowed back, so an uneven
/// gather along a dim other than 0 leaves a non-contiguous tensor (a later local `view` then
/// fails as it does there).
pub fn all_gather(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize, padded: bool) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let logical: i64 = g.iter().map(|t| t.size()[dim]).sum();
        let n = g.len() as i64;
        let full = (logical + n - 1) / n;
        let cat = if padded && logical % n != 0 {
            let pieces: Vec<Tensor> = g
                .iter()
                .map(|t| {
                    let mut pad = t.size();
                    pad[dim] = full - pad[dim];
                    Tensor::cat(
                        &[(*t).shallow_clone(), t.new_zeros(pad.as_slice(), (t.kind(), t.device()))],
                        dim as i64,
                    )
                })
                .collect();
            Tensor::cat(&pieces, dim as i64).narrow(dim as i64, 0, logical)
        } else {
            Tensor::cat(g, dim as i64)
        };
        g.iter().map(|_| cat.shallow_clone()).collect()
    })
}

/// _StridedShard(dim, sf) -> Replicate: gather, then put rows back in global order.
pub(crate) fn all_gather_strided(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize, sf: usize) -> Vec<Tensor> {
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
pub(crate) fn local_strided_chunk(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize, sf: usize) -> Vec<Tensor> {
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

/// Shard(dim) -> Partial(sum) (2.14's graph planner, an explicit step): each member's shard in
/// zeros of the fiber's whole size along `dim`, so the pieces sum to the gathered tensor.
pub fn zero_fill(mesh: &Mesh, md: usize, locals: &[Tensor], dim: usize) -> Vec<Tensor> {
    per_fiber(mesh, md, locals, |g| {
        let total: i64 = g.iter().map(|t| t.size()[dim]).sum();
        let mut offset = 0;
        g.iter()
            .map(|t| {
                let mut shape = t.size();
                shape[dim] = total;
                let z = t.new_zeros(shape.as_slice(), (t.kind(), t.device()));
                let len = t.size()[dim];
                z.narrow(dim as i64, offset, len).copy_(t);
                offset += len;
                z
            })
            .collect()
    })
}

/// Replicate index -> `_MaskPartial` on mesh dim `md` (`_MaskPartial._partition_value`): each
/// rank keeps the indices of its own chunk of a dim of `size`, shifted to local positions, the
/// others set to 0; returns (masked indices, masks of the indices that were outside).
pub(crate) fn mask_index(mesh: &Mesh, md: usize, locals: &[Tensor], size: usize) -> (Vec<Tensor>, Vec<Tensor>) {
    let n = mesh.dim_size(md);
    let (mut out, mut masks) = (Vec::with_capacity(locals.len()), Vec::with_capacity(locals.len()));
    for (r, t) in locals.iter().enumerate() {
        let (len, off) = chunk(size, n, mesh.coord(r)[md]);
        let (lo, hi) = (off as i64, (off + len) as i64);
        let mask = t.lt(lo).logical_or(&t.ge(hi));
        out.push((t - lo).masked_fill(&mask, 0));
        masks.push(mask);
    }
    (out, masks)
}

/// `MaskBuffer.apply_mask` (`tensor[mask] = 0`): what each rank gathered through a masked index
/// is zeroed. A mask made before the index was chunked no longer fits a result gathered back
/// afterwards, and boolean indexing raises (real 2.13.0/2.14.0: gather of `[S(2), S(1)]` scores
/// with a `[R, S(0)]` index, then `full_tensor()`).
pub(crate) fn apply_mask(locals: &[Tensor], masks: &[Tensor]) -> Result<Vec<Tensor>, DTensorError> {
    let mut out = Vec::with_capacity(locals.len());
    for (t, m) in locals.iter().zip(masks) {
        let (ts, ms) = (t.size(), m.size());
        if let Some(i) = (0..ms.len().min(ts.len())).find(|&i| ms[i] != ts[i]) {
            let list = |v: &[i64]| format!("[{}]", v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
            return Err(DTensorError::Local {
                kind: "IndexError",
                message: format!(
                    "The shape of the mask {} at index {i} does not match the shape of the indexed tensor {} at index {i}",
                    list(&ms),
                    list(&ts)
                ),
            });
        }
        out.push(t.f_masked_fill_tensor(m, &local::scalar(0.0, t)).map_err(local::torch_err)?);
    }
    Ok(out)
}

/// Replicate -> Partial(op): sum splits the value evenly (x / n), avg/max/min keep it.
pub fn partition(mesh: &Mesh, md: usize, locals: &[Tensor], op: ReduceOp) -> Vec<Tensor> {
    let n = mesh.dim_size(md) as f64;
    locals.iter().map(|t| if op == ReduceOp::Sum { t / n } else { t.shallow_clone() }).collect()
}
