//! The data movement of collectives and conversions on simulated ranks: pure functions over
//! the per-rank locals of every group (fiber) of one mesh axis, each collective logged with
//! the bytes one rank receives (the largest over ranks), as the library's raw
//! `torch.distributed` calls would move them.

use crate::error::{Result, SpmdError};
use crate::mesh::SpmdMesh;
use tch::Tensor;

/// One collective the program ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommRecord {
    /// `all_reduce`, `all_gather`, `reduce_scatter` or `all_to_all`.
    pub op: &'static str,
    /// The mesh axis (its name, e.g. `tp`).
    pub axis: String,
    /// Bytes one rank receives into its output buffer (the largest over ranks).
    pub bytes: usize,
    /// Bytes each rank hands to the collective (its input buffer), by global rank: what a
    /// rank's own `c10d` call sees.
    pub sent: Vec<usize>,
    /// Whether it ran in the backward pass.
    pub backward: bool,
}

/// The mesh plus the communication log: what collectives need.
#[derive(Debug)]
pub struct Comm {
    pub mesh: SpmdMesh,
    pub log: Vec<CommRecord>,
    /// Set while the backward pass runs, so records are marked.
    pub in_backward: bool,
}

fn nbytes(t: &Tensor) -> usize {
    t.numel() * t.kind().elt_size_in_bytes()
}

impl Comm {
    fn record(&mut self, op: &'static str, axis: usize, bytes: usize, x: &[Tensor]) {
        let axis = self.mesh.name(axis).to_string();
        let sent = x.iter().map(nbytes).collect();
        self.log.push(CommRecord { op, axis, bytes, sent, backward: self.in_backward });
    }

    /// Applies `f` to every fiber of `axis` (the group's locals in axis order) and returns one
    /// output per rank.
    fn per_fiber(
        &self,
        axis: usize,
        locals: &[Tensor],
        mut f: impl FnMut(&[&Tensor]) -> Result<Vec<Tensor>>,
    ) -> Result<Vec<Tensor>> {
        let mut out: Vec<Option<Tensor>> = (0..locals.len()).map(|_| None).collect();
        for fiber in self.mesh.fibers(axis) {
            let g: Vec<&Tensor> = fiber.iter().map(|&r| &locals[r]).collect();
            for (&r, t) in fiber.iter().zip(f(&g)?) {
                out[r] = Some(t);
            }
        }
        Ok(out.into_iter().map(|t| t.expect("every rank is in one fiber")).collect())
    }

    fn max_bytes(out: &[Tensor]) -> usize {
        out.iter().map(nbytes).max().unwrap_or(0)
    }

    /// Sum over the group, every member gets the sum (no collective on a one-rank axis).
    pub fn all_reduce(&mut self, axis: usize, x: &[Tensor]) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            let mut acc = g[0].copy();
            for t in &g[1..] {
                acc += *t;
            }
            Ok(g.iter().map(|_| acc.copy()).collect())
        })?;
        if self.mesh.size(axis) > 1 {
            self.record("all_reduce", axis, Self::max_bytes(&out), x);
        }
        Ok(out)
    }

    /// Stack the group's locals along a new dim `dim` (a 0-d local gathers to a vector).
    pub fn all_gather_stack(&mut self, axis: usize, x: &[Tensor], dim: i64) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            let s = if g[0].dim() == 0 { Tensor::stack(g, 0) } else { Tensor::stack(g, dim) };
            Ok(g.iter().map(|_| s.copy()).collect())
        })?;
        self.record("all_gather", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// Concatenate the group's locals along `dim` (even sizes as the library requires them;
    /// `uneven` logs the list form the library uses with split sizes).
    pub fn all_gather_cat(&mut self, axis: usize, x: &[Tensor], dim: i64) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            let s = Tensor::cat(g, dim);
            Ok(g.iter().map(|_| s.copy()).collect())
        })?;
        self.record("all_gather", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// Uneven gather along `dim`: every rank's local has size `sizes[rank]` there.
    pub fn all_gather_uneven(&mut self, axis: usize, x: &[Tensor], dim: i64, sizes: &[i64]) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            for (t, &s) in g.iter().zip(sizes) {
                if t.size()[dim as usize] != s {
                    return Err(SpmdError::Runtime(format!(
                        "all_gather: a local of size {} on dim {dim} where split_sizes says {s}",
                        t.size()[dim as usize]
                    )));
                }
            }
            let s = Tensor::cat(g, dim);
            Ok(g.iter().map(|_| s.copy()).collect())
        })?;
        self.record("all_gather", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    fn sum_group(g: &[&Tensor]) -> Tensor {
        let mut acc = g[0].copy();
        for t in &g[1..] {
            acc += *t;
        }
        acc
    }

    /// Sum, then member i keeps index i of dim `dim` (that dim must have the group's size).
    pub fn reduce_scatter_stack(&mut self, axis: usize, x: &[Tensor], dim: i64) -> Result<Vec<Tensor>> {
        let n = self.mesh.size(axis) as i64;
        let out = self.per_fiber(axis, x, |g| {
            let s = Self::sum_group(g);
            if s.size()[dim as usize] != n {
                return Err(SpmdError::Runtime(format!(
                    "reduce_scatter(dst=V): dim {dim} has size {} but the mesh axis has {n} ranks",
                    s.size()[dim as usize]
                )));
            }
            Ok((0..g.len() as i64).map(|i| s.select(dim, i).contiguous()).collect())
        })?;
        self.record("reduce_scatter", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// Sum, then member i keeps rows [i*k, (i+1)*k) of dim `dim`, k = size / n (floor, as the
    /// library's reduce_scatter_tensor output buffer).
    pub fn reduce_scatter_shard(&mut self, axis: usize, x: &[Tensor], dim: i64) -> Result<Vec<Tensor>> {
        let n = self.mesh.size(axis) as i64;
        let out = self.per_fiber(axis, x, |g| {
            let s = Self::sum_group(g);
            let k = s.size()[dim as usize] / n;
            Ok((0..g.len() as i64).map(|i| s.narrow(dim, i * k, k).contiguous()).collect())
        })?;
        self.record("reduce_scatter", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// Sum, then member i keeps its `sizes[i]` rows of dim `dim`.
    pub fn reduce_scatter_uneven(&mut self, axis: usize, x: &[Tensor], dim: i64, sizes: &[i64]) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            let s = Self::sum_group(g);
            let parts = s.split_with_sizes(sizes, dim);
            Ok(parts.into_iter().map(|p| p.contiguous()).collect())
        })?;
        self.record("reduce_scatter", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// V -> V: member j's output stacks, along `concat_dim`, slice j (of `split_dim`) of every
    /// member's input.
    pub fn all_to_all_stack(
        &mut self,
        axis: usize,
        x: &[Tensor],
        split_dim: i64,
        concat_dim: i64,
    ) -> Result<Vec<Tensor>> {
        let out = self.per_fiber(axis, x, |g| {
            let n = g.len() as i64;
            for t in g {
                if t.size()[split_dim as usize] != n {
                    return Err(SpmdError::Runtime(format!(
                        "all_to_all(V, V): dim {split_dim} has size {} but the mesh axis has {n} ranks",
                        t.size()[split_dim as usize]
                    )));
                }
            }
            Ok((0..n)
                .map(|j| {
                    let parts: Vec<Tensor> = g.iter().map(|t| t.select(split_dim, j)).collect();
                    Tensor::stack(&parts, concat_dim)
                })
                .collect())
        })?;
        self.record("all_to_all", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// S(concat) -> S(split): chunk every input along `split_dim` (evenly), member j
    /// concatenates chunk j of every member along `concat_dim`.
    pub fn all_to_all_shard(
        &mut self,
        axis: usize,
        x: &[Tensor],
        split_dim: i64,
        concat_dim: i64,
    ) -> Result<Vec<Tensor>> {
        let n = self.mesh.size(axis) as i64;
        for t in x {
            let s = t.size()[split_dim as usize];
            if s % n != 0 {
                return Err(SpmdError::Value(format!(
                    "all_to_all: tensor dimension {split_dim} (size {s}) is not evenly divisible by world_size ({n})"
                )));
            }
        }
        let out = self.per_fiber(axis, x, |g| {
            let chunks: Vec<Vec<Tensor>> = g.iter().map(|t| t.chunk(n, split_dim)).collect();
            Ok((0..n as usize)
                .map(|j| {
                    let parts: Vec<&Tensor> = chunks.iter().map(|c| &c[j]).collect();
                    Tensor::cat(&parts, concat_dim)
                })
                .collect())
        })?;
        self.record("all_to_all", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// Uneven all-to-all on dim 0: `send[rank][j]` rows of rank's input (in order) go to
    /// member j; member j's output concatenates what it receives in member order. `send` is
    /// indexed by global rank, each row over the rank's group.
    pub fn all_to_all_uneven(&mut self, axis: usize, x: &[Tensor], send: &[Vec<i64>]) -> Result<Vec<Tensor>> {
        let mut out: Vec<Option<Tensor>> = (0..x.len()).map(|_| None).collect();
        for fiber in self.mesh.fibers(axis) {
            let pieces: Vec<Vec<Tensor>> = fiber
                .iter()
                .map(|&r| {
                    let total: i64 = send[r].iter().sum();
                    if x[r].size()[0] != total {
                        return Err(SpmdError::Runtime(format!(
                            "Split sizes doesn't match total dim 0 size: {} rows, input_split_sizes sum to {total}",
                            x[r].size()[0]
                        )));
                    }
                    Ok(x[r].split_with_sizes(&send[r], 0))
                })
                .collect::<Result<_>>()?;
            for (j, &r) in fiber.iter().enumerate() {
                let parts: Vec<&Tensor> = pieces.iter().map(|p| &p[j]).collect();
                out[r] = Some(Tensor::cat(&parts, 0));
            }
        }
        let out: Vec<Tensor> = out.into_iter().map(|t| t.expect("every rank is in one fiber")).collect();
        self.record("all_to_all", axis, Self::max_bytes(&out), x);
        Ok(out)
    }

    /// R/I -> V or S(dim), no communication: `torch.chunk(x, n, dim)[i]` (stack: `select`).
    /// Fewer chunks than ranks is the library's `tuple index out of range`.
    pub fn chunk_select(&self, axis: usize, x: &[Tensor], dim: i64, stack: bool) -> Result<Vec<Tensor>> {
        let n = self.mesh.size(axis) as i64;
        (0..x.len())
            .map(|r| {
                let i = self.mesh.coord(r, axis) as i64;
                if stack {
                    if x[r].size()[dim as usize] != n {
                        return Err(SpmdError::Runtime(format!(
                            "convert(dst=V): dim {dim} has size {} but the mesh axis has {n} ranks",
                            x[r].size()[dim as usize]
                        )));
                    }
                    Ok(x[r].select(dim, i).contiguous())
                } else {
                    let c = x[r].chunk(n, dim);
                    c.get(i as usize)
                        .map(|t| t.contiguous())
                        .ok_or_else(|| SpmdError::Index("tuple index out of range".into()))
                }
            })
            .collect()
    }

    /// V or S(dim) -> P, no communication: zeros n times the local size with the local at the
    /// rank's offset (stack: a new dim of size n).
    pub fn zero_pad(&self, axis: usize, x: &[Tensor], dim: i64, stack: bool) -> Vec<Tensor> {
        let n = self.mesh.size(axis) as i64;
        (0..x.len())
            .map(|r| {
                let i = self.mesh.coord(r, axis) as i64;
                let t = if stack { x[r].unsqueeze(dim) } else { x[r].shallow_clone() };
                let k = t.size()[dim as usize];
                let mut shape = t.size();
                shape[dim as usize] = k * n;
                let z = Tensor::zeros(shape.as_slice(), (t.kind(), t.device()));
                z.narrow(dim, i * k, k).copy_(&t);
                z
            })
            .collect()
    }

    /// R/I -> P, no communication: index 0 of the axis keeps its data, the others zeros.
    pub fn keep_first(&self, axis: usize, x: &[Tensor]) -> Vec<Tensor> {
        (0..x.len()).map(|r| if self.mesh.coord(r, axis) == 0 { x[r].copy() } else { x[r].zeros_like() }).collect()
    }

    /// Uneven split of a replicated gradient: each rank keeps its `sizes` piece along `dim`.
    pub fn split_select(&self, axis: usize, x: &[Tensor], dim: i64, sizes: &[i64]) -> Vec<Tensor> {
        (0..x.len())
            .map(|r| {
                let i = self.mesh.coord(r, axis);
                x[r].split_with_sizes(sizes, dim)[i].contiguous()
            })
            .collect()
    }
}
