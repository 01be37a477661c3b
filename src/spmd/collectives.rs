//! Collectives (`all_reduce`, `all_gather`, `reduce_scatter`, `all_to_all`), conversions
//! (`convert`, `reinterpret`) and `redistribute`, with the library's argument checks, type
//! checks, forward data movement and backward data movement (the backward is what the
//! library's autograd functions call, so the gradient of an R input is P, of I is I, of V is
//! V, of P is R).

use crate::comm::Comm;
use crate::error::{Result, SpmdError};
use crate::tape::BackFn;
use crate::types::{Arg, Ty};
use crate::{STensor, Spmd};
use tch::Tensor;

/// A data movement on one mesh axis (forward or backward half of an op).
#[derive(Clone, Debug)]
enum Move {
    Identity,
    AllReduce,
    GatherStack(i64),
    GatherCat(i64),
    GatherUneven(i64, Vec<i64>),
    RsStack(i64),
    RsShard(i64),
    RsUneven(i64, Vec<i64>),
    A2aStack(i64, i64),
    A2aShard(i64, i64),
    A2aUneven(Vec<Vec<i64>>),
    Chunk(i64, bool),
    SplitSelect(i64, Vec<i64>),
    Pad(i64, bool),
    KeepFirst,
}

impl Move {
    fn run(&self, comm: &mut Comm, axis: usize, x: &[Tensor]) -> Result<Vec<Tensor>> {
        match self {
            Move::Identity => Ok(x.iter().map(|t| t.shallow_clone()).collect()),
            Move::AllReduce => comm.all_reduce(axis, x),
            Move::GatherStack(d) => comm.all_gather_stack(axis, x, *d),
            Move::GatherCat(d) => comm.all_gather_cat(axis, x, *d),
            Move::GatherUneven(d, s) => comm.all_gather_uneven(axis, x, *d, s),
            Move::RsStack(d) => comm.reduce_scatter_stack(axis, x, *d),
            Move::RsShard(d) => comm.reduce_scatter_shard(axis, x, *d),
            Move::RsUneven(d, s) => comm.reduce_scatter_uneven(axis, x, *d, s),
            Move::A2aStack(s, c) => comm.all_to_all_stack(axis, x, *s, *c),
            Move::A2aShard(s, c) => comm.all_to_all_shard(axis, x, *s, *c),
            Move::A2aUneven(send) => comm.all_to_all_uneven(axis, x, send),
            Move::Chunk(d, stack) => comm.chunk_select(axis, x, *d, *stack),
            Move::SplitSelect(d, s) => Ok(comm.split_select(axis, x, *d, s)),
            Move::Pad(d, stack) => Ok(comm.zero_pad(axis, x, *d, *stack)),
            Move::KeepFirst => Ok(comm.keep_first(axis, x)),
        }
    }
}

/// The transposed send matrix of an uneven all-to-all, indexed by global rank: what each rank
/// received from each member of its group.
fn transpose_send(spmd: &Spmd, axis: usize, send: &[Vec<i64>]) -> Vec<Vec<i64>> {
    let mut out = vec![Vec::new(); send.len()];
    for fiber in spmd.mesh().fibers(axis) {
        for (j, &r) in fiber.iter().enumerate() {
            out[r] = fiber.iter().map(|&s| send[s][j]).collect();
        }
    }
    out
}

impl Spmd {
    /// Runs a typed collective/conversion: data first (runtime errors surface first, as in the
    /// library), then the input type check on `axis` against `src`, then the output type (the
    /// input's, with `dst` on `axis`), and the backward recorded.
    #[allow(clippy::too_many_arguments)]
    fn typed_move(
        &mut self,
        name: &str,
        x: &STensor,
        axis: usize,
        src: Ty,
        dst: Ty,
        fwd: Move,
        bwd: Move,
    ) -> Result<STensor> {
        let locals = fwd.run(&mut self.comm, axis, &x.locals)?;
        let mut ty = x.ty.clone();
        if self.mesh().size(axis) > 1 {
            match x.ty.get(&axis) {
                _ if !self.checking => {
                    ty.insert(axis, dst);
                }
                Some(cur) => {
                    if *cur != src && !(src == Ty::P && *cur == Ty::V) {
                        return Err(SpmdError::Type(format!(
                            "{name}: expected input type {} on axis {}, got {}",
                            src.long(),
                            self.mesh().shown(axis),
                            cur.long()
                        )));
                    }
                    ty.insert(axis, dst);
                }
                None => {
                    return Err(SpmdError::Type(format!(
                        "{name}: tensor has no type for axis {}. Use assert_type() to annotate the tensor on this \
                         axis before calling collectives.",
                        self.mesh().shown(axis)
                    )))
                }
            }
        }
        let id = match x.id {
            Some(xid) => {
                // The backward runs on the mesh the forward ran on, whatever mesh is current then.
                let mesh = self.comm.mesh.clone();
                let back: BackFn = Box::new(move |comm, g| {
                    let g = g[0].as_ref().expect("one output");
                    let current = std::mem::replace(&mut comm.mesh, mesh.clone());
                    let r = bwd.run(comm, axis, g);
                    comm.mesh = current;
                    Ok(vec![Some(r?)])
                });
                Some(self.tape.record(vec![Some(xid)], 1, back)[0])
            }
            None => None,
        };
        Ok(STensor { locals, ty, id })
    }

    /// `all_reduce(x, axis, src=P|V, dst=R|I)`: sum over the axis. Backward: all_reduce for
    /// dst=R, nothing for dst=I.
    pub fn all_reduce(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        match src {
            Arg::T(Ty::P) | Arg::T(Ty::V) => {}
            Arg::T(t @ (Ty::R | Ty::I)) => {
                return Err(SpmdError::Value(format!(
                "all_reduce src must be P, got {}. all_reduce on replicated/invariant data is usually a bug. If you \
                     really want to scale by mesh size, use reinterpret(src={}, dst=P) first.",
                t.long(),
                t.long()
            )))
            }
            s => return Err(SpmdError::Value(format!("all_reduce src must be P, got {}", s.long()))),
        }
        let bwd = match dst {
            Arg::T(Ty::R) => Move::AllReduce,
            Arg::T(Ty::I) => Move::Identity,
            d => return Err(SpmdError::Value(format!("all_reduce dst must be R or I, got {}", d.long()))),
        };
        self.typed_move("all_reduce", x, a, src.base(), dst.base(), Move::AllReduce, bwd)
    }

    /// `all_gather(x, axis, src=V|S(d), dst=R|I, split_sizes)`: V stacks on a new dim 0, S(d)
    /// concatenates along d (uneven with `split_sizes`). Backward: reduce_scatter for dst=R,
    /// the rank's own slice for dst=I.
    pub fn all_gather(
        &mut self,
        x: &STensor,
        axis: &str,
        src: Arg,
        dst: Arg,
        split_sizes: Option<&[i64]>,
    ) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        let src = src.canonical(x.shape().len()).map_err(SpmdError::Type)?;
        match src {
            Arg::T(Ty::V) | Arg::S(_) => {}
            s => return Err(SpmdError::Value(format!("all_gather src must be V or S(i), got {}", s.long()))),
        }
        if split_sizes.is_some() && !src.is_shard() {
            return Err(SpmdError::Value(format!(
                "all_gather split_sizes is only supported with src=S(i), got src={}",
                src.long()
            )));
        }
        let to_r = match dst {
            Arg::T(Ty::R) => true,
            Arg::T(Ty::I) => false,
            d => return Err(SpmdError::Value(format!("all_gather dst must be R or I, got {}", d.long()))),
        };
        let (fwd, bwd) = match (src, split_sizes) {
            (Arg::S(d), Some(s)) => (
                Move::GatherUneven(d, s.to_vec()),
                if to_r { Move::RsUneven(d, s.to_vec()) } else { Move::SplitSelect(d, s.to_vec()) },
            ),
            (Arg::S(d), None) => (Move::GatherCat(d), if to_r { Move::RsShard(d) } else { Move::Chunk(d, false) }),
            _ => (Move::GatherStack(0), if to_r { Move::RsStack(0) } else { Move::Chunk(0, true) }),
        };
        self.typed_move("all_gather", x, a, src.base(), dst.base(), fwd, bwd)
    }

    /// `reduce_scatter(x, axis, src=P|V, dst=V|S(d), split_sizes)`: sum, then V keeps index i
    /// of dim 0 and S(d) the i-th piece of dim d. Backward: all_gather to R.
    pub fn reduce_scatter(
        &mut self,
        x: &STensor,
        axis: &str,
        src: Arg,
        dst: Arg,
        split_sizes: Option<&[i64]>,
    ) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        let dst = dst.canonical(x.shape().len()).map_err(SpmdError::Type)?;
        match src {
            Arg::T(Ty::P) | Arg::T(Ty::V) => {}
            Arg::T(t @ (Ty::R | Ty::I)) => {
                return Err(SpmdError::Value(format!(
                    "reduce_scatter src must be P, got {}. reduce_scatter on replicated/invariant data is usually a \
                     bug. If you really want to scale by mesh size, use reinterpret(src={}, dst=P) first.",
                    t.long(),
                    t.long()
                )))
            }
            s => return Err(SpmdError::Value(format!("reduce_scatter src must be P, got {}", s.long()))),
        }
        match dst {
            Arg::T(Ty::V) | Arg::S(_) => {}
            d => return Err(SpmdError::Value(format!("reduce_scatter dst must be V or S(i), got {}", d.long()))),
        }
        if split_sizes.is_some() && !dst.is_shard() {
            return Err(SpmdError::Value(format!(
                "reduce_scatter split_sizes is only supported with dst=S(i), got dst={}",
                dst.long()
            )));
        }
        let (fwd, bwd) = match (dst, split_sizes) {
            (Arg::S(d), Some(s)) => (Move::RsUneven(d, s.to_vec()), Move::GatherUneven(d, s.to_vec())),
            (Arg::S(d), None) => (Move::RsShard(d), Move::GatherCat(d)),
            _ => (Move::RsStack(0), Move::GatherStack(0)),
        };
        self.typed_move("reduce_scatter", x, a, src.base(), dst.base(), fwd, bwd)
    }

    fn a2a_dims(src: Arg, dst: Arg) -> Result<(i64, i64)> {
        match (src, dst) {
            (Arg::T(Ty::V) | Arg::S(_), Arg::T(Ty::V) | Arg::S(_)) => {}
            (Arg::T(Ty::V) | Arg::S(_), d) => {
                return Err(SpmdError::Value(format!("all_to_all dst must be V or S(i), got {}", d.long())))
            }
            (s, _) => return Err(SpmdError::Value(format!("all_to_all src must be V or S(i), got {}", s.long()))),
        }
        Ok(match (src, dst) {
            (Arg::S(i), Arg::S(j)) => (j, i),
            (Arg::S(i), _) => (i, 0),
            (_, Arg::S(j)) => (0, j),
            _ => (0, 0),
        })
    }

    /// `all_to_all(x, axis, src=V|S(i), dst=V|S(j))`: V->V transposes the mesh axis with dim 0;
    /// S(i)->S(j) splits dim j and concatenates along i. Backward: the reverse all_to_all.
    pub fn all_to_all(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        let nd = x.shape().len();
        let src = src.canonical(nd).map_err(SpmdError::Type)?;
        let dst = dst.canonical(nd).map_err(SpmdError::Type)?;
        let (split, concat) = Self::a2a_dims(src, dst)?;
        let (fwd, bwd) = if src == Arg::T(Ty::V) && dst == Arg::T(Ty::V) {
            (Move::A2aStack(split, concat), Move::A2aStack(concat, split))
        } else {
            (Move::A2aShard(split, concat), Move::A2aShard(concat, split))
        };
        self.typed_move("all_to_all", x, a, src.base(), dst.base(), fwd, bwd)
    }

    /// The uneven all-to-all (all-to-all-v on dim 0, torchtitan's token dispatch and combine):
    /// `send[rank][j]` rows of `rank`'s local go to member j of its group (the rank's
    /// `input_split_sizes`; the `output_split_sizes` are what the others send it). Backward:
    /// the same with the lists swapped.
    pub fn all_to_all_uneven(
        &mut self,
        x: &STensor,
        axis: &str,
        src: Arg,
        dst: Arg,
        send: &[Vec<i64>],
    ) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        let nd = x.shape().len();
        let src = src.canonical(nd).map_err(SpmdError::Type)?;
        let dst = dst.canonical(nd).map_err(SpmdError::Type)?;
        let (split, concat) = Self::a2a_dims(src, dst)?;
        if split != 0 || concat != 0 {
            return Err(SpmdError::Value(format!(
                "output_split_sizes/input_split_sizes only supported with src=S(0), dst=S(0), got src={}, dst={}",
                src.long(),
                dst.long()
            )));
        }
        let back = transpose_send(self, a, send);
        self.typed_move(
            "all_to_all",
            x,
            a,
            src.base(),
            dst.base(),
            Move::A2aUneven(send.to_vec()),
            Move::A2aUneven(back),
        )
    }

    /// `convert(x, axis, src, dst, expert_mode)`: a type change that keeps the meaning, with
    /// no communication forward (R->V/S chunks, R->P keeps rank 0, ...).
    pub fn convert(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg, expert_mode: bool) -> Result<STensor> {
        self.convert_as("convert", x, axis, src, dst, expert_mode)
    }

    /// `shard(x, axis, src=R|I, dst=S(d))`: the library's alias of `convert` to a shard (how
    /// torchtitan materialises a parameter's local shard). Every rank keeps
    /// `torch.chunk(x, n, d)[i]`: a dim with fewer chunks than the axis has ranks raises
    /// `IndexError: tuple index out of range` on the ranks past the last chunk.
    pub fn shard(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg) -> Result<STensor> {
        if !dst.is_shard() {
            return Err(SpmdError::Value(format!("shard dst must be S(i), got {}", dst.long())));
        }
        self.convert_as("convert", x, axis, src, dst, false)
    }

    fn convert_as(&mut self, name: &str, x: &STensor, axis: &str, src: Arg, dst: Arg, expert: bool) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        let nd = x.shape().len();
        let src = src.canonical(nd).map_err(SpmdError::Type)?;
        let dst = dst.canonical(nd).map_err(SpmdError::Type)?;
        let mut dim = 0;
        if let Arg::S(d) = src {
            dim = d;
        }
        if let Arg::S(d) = dst {
            dim = d;
        }
        let (sb, db) = (src.base(), dst.base());
        if !expert {
            if sb == Ty::R && db == Ty::I {
                return Err(SpmdError::Value(
                    "convert(R, I) requires expert_mode=True. This treats a replicate tensor as invariant, which is \
                     rarely what you want in the forward pass. It exists as a backward for convert(I, P)."
                        .into(),
                ));
            }
            if sb == Ty::I && db == Ty::P {
                return Err(SpmdError::Value(
                    "convert(I, P) requires expert_mode=True. This zeros out all non-rank-0 tensors, which is rarely \
                     what you want. It exists as a backward for convert(R, I)."
                        .into(),
                ));
            }
            if sb == Ty::V && db == Ty::P {
                return Err(SpmdError::Value(format!(
                    "convert({}, P) requires expert_mode=True. This pads with zeros to create a partial tensor, which is \
                     rarely what you want in the forward pass. It exists as a backward for convert(R, {}).",
                    src.long(),
                    src.long()
                )));
            }
        }
        if sb == db {
            if let (Arg::S(i), Arg::S(j)) = (src, dst) {
                if i != j {
                    return Err(SpmdError::Value(format!(
                        "convert(S({i}), S({j})) cannot change the shard dimension without communication. Use \
                         all_to_all() instead."
                    )));
                }
            }
            return self.typed_move(name, x, a, sb, db, Move::Identity, Move::Identity);
        }
        let (fwd, bwd) = match (sb, db) {
            (Ty::R, Ty::V) => {
                let stack = !dst.is_shard();
                (Move::Chunk(dim, stack), Move::Pad(dim, stack))
            }
            (Ty::R, Ty::P) => (Move::KeepFirst, Move::KeepFirst),
            (Ty::R, Ty::I) => (Move::Identity, Move::KeepFirst),
            (Ty::I, Ty::V) => {
                let stack = !dst.is_shard();
                (Move::Chunk(dim, stack), if stack { Move::GatherStack(0) } else { Move::GatherCat(dim) })
            }
            (Ty::I, Ty::P) => (Move::KeepFirst, Move::Identity),
            (Ty::I, Ty::R) => (Move::Identity, Move::AllReduce),
            (Ty::V, Ty::P) => {
                let stack = !src.is_shard();
                (Move::Pad(dim, stack), Move::Chunk(dim, stack))
            }
            (Ty::P, Ty::R | Ty::I) => {
                return Err(SpmdError::Value(format!(
                    "convert({}, {}) is not supported. Use all_reduce(src=P, dst={}) to perform the reduction and get \
                     the full sum.",
                    src.long(),
                    dst.long(),
                    dst.long()
                )))
            }
            (Ty::P, Ty::V) => {
                return Err(SpmdError::Value(format!(
                    "convert({}, {}) is not supported. Use reduce_scatter(src=P, dst={}) to perform the reduction and \
                     get shards of the sum.",
                    src.long(),
                    dst.long(),
                    dst.long()
                )))
            }
            _ => return Err(SpmdError::Value(format!("convert({}, {}) is not supported.", src.long(), dst.long()))),
        };
        self.typed_move(name, x, a, sb, db, fwd, bwd)
    }

    /// `reinterpret(x, axis, src, dst, expert_mode)`: keeps the local data and changes the
    /// meaning (V->P: the meaning becomes the sum; R->V: N copies; ...).
    pub fn reinterpret(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg, expert_mode: bool) -> Result<STensor> {
        let a = self.mesh().axis(axis)?;
        if src.is_shard() || dst.is_shard() {
            return Err(SpmdError::Value(format!(
                "reinterpret does not support S(i). Use V instead, or use convert for semantics-preserving \
                 conversions. Got src={}, dst={}",
                src.long(),
                dst.long()
            )));
        }
        let (sb, db) = (src.base(), dst.base());
        if sb == db {
            return self.typed_move("reinterpret", x, a, sb, db, Move::Identity, Move::Identity);
        }
        if !expert_mode {
            let msg = match (sb, db) {
                (Ty::R, Ty::I) => Some(
                    "reinterpret(R, I) requires expert_mode=True. This is rarely what you want in the forward pass; it \
                     exists as a backward for convert(I, P). Prefer convert(R, I) which is the primary API for R<->I \
                     transitions.",
                ),
                (Ty::R, Ty::P) => Some(
                    "reinterpret(R, P) requires expert_mode=True. This scales the semantic value by the mesh axis \
                     size, which is rarely intentional. If you want to preserve semantics, use convert(R, P) instead.",
                ),
                (Ty::I, Ty::R) => Some(
                    "reinterpret(I, R) requires expert_mode=True. Use convert(I, R) instead, which is the primary API \
                     for I<->R transitions.",
                ),
                (Ty::R, Ty::V) => Some(
                    "reinterpret(R, V) requires expert_mode=True. This makes N copies of the input, which is rarely \
                     what you want in the forward pass. If you want to shard a replicated value, use convert(R, V) or \
                     convert(R, S(i)) instead.",
                ),
                _ => None,
            };
            if let Some(m) = msg {
                return Err(SpmdError::Value(m.into()));
            }
        }
        let (fwd, bwd) = match (sb, db) {
            (Ty::R, Ty::I) => (Move::Identity, Move::KeepFirst),
            (Ty::I, Ty::R) => (Move::Identity, Move::AllReduce),
            (Ty::R, Ty::V) | (Ty::R, Ty::P) | (Ty::V, Ty::P) => (Move::Identity, Move::Identity),
            (Ty::I, Ty::V) | (Ty::I, Ty::P) => (Move::Identity, Move::AllReduce),
            (Ty::P, _) => {
                return Err(SpmdError::Value(format!(
                    "reinterpret({}, {}) is not supported; it is semantically ill-defined. Call all_reduce(src=P, \
                     dst=R) first to materialize the sum, then do whatever conversion you need from R.",
                    src.long(),
                    dst.long()
                )))
            }
            (Ty::V, _) => {
                return Err(SpmdError::Value(format!(
                    "reinterpret({}, {}) is not supported. We cannot unsafely assert that varying values on all ranks \
                     are actually the same. Ensure your source is already {} instead.",
                    src.long(),
                    dst.long(),
                    dst.long()
                )))
            }
            _ => {
                return Err(SpmdError::Value(format!("reinterpret({}, {}) is not supported.", src.long(), dst.long())))
            }
        };
        self.typed_move("reinterpret", x, a, sb, db, fwd, bwd)
    }

    /// `redistribute(x, axis, src, dst)`: the meaning-preserving change, with communication
    /// where needed: S->R/I all_gather, P->R/I all_reduce, P->S reduce_scatter, S(i)->S(j)
    /// all_to_all, the rest through `convert(expert_mode=True)`.
    pub fn redistribute(&mut self, x: &STensor, axis: &str, src: Arg, dst: Arg) -> Result<STensor> {
        let nd = x.shape().len();
        let src = src.canonical(nd).map_err(SpmdError::Type)?;
        let dst = dst.canonical(nd).map_err(SpmdError::Type)?;
        let (sb, db) = (src.base(), dst.base());
        let a = self.mesh().axis(axis)?;
        if sb == db {
            if let (Arg::S(_), Arg::S(_)) = (src, dst) {
                if src != dst {
                    return self.redistribute_as(x, a, src, dst, "a2a");
                }
            }
            return self.typed_move("redistribute", x, a, sb, db, Move::Identity, Move::Identity);
        }
        match (sb, db) {
            (Ty::V, Ty::R) | (Ty::V, Ty::I) => self.redistribute_as(x, a, src, dst, "gather"),
            (Ty::P, Ty::R) | (Ty::P, Ty::I) => self.redistribute_as(x, a, src, dst, "reduce"),
            (Ty::P, Ty::V) => self.redistribute_as(x, a, src, dst, "rs"),
            (Ty::R, Ty::I)
            | (Ty::I, Ty::R)
            | (Ty::R, Ty::V)
            | (Ty::R, Ty::P)
            | (Ty::I, Ty::V)
            | (Ty::I, Ty::P)
            | (Ty::V, Ty::P) => self.convert_as("redistribute", x, axis, src, dst, true),
            _ => Err(SpmdError::Value(format!("redistribute({}, {}) is not supported.", src.short(), dst.short()))),
        }
    }

    /// The collective a redistribute routes to, type-checked under the name `redistribute`.
    fn redistribute_as(&mut self, x: &STensor, a: usize, src: Arg, dst: Arg, how: &str) -> Result<STensor> {
        let to_r = dst.base() == Ty::R;
        let (fwd, bwd) = match how {
            "gather" => match src {
                Arg::S(d) => (Move::GatherCat(d), if to_r { Move::RsShard(d) } else { Move::Chunk(d, false) }),
                _ => (Move::GatherStack(0), if to_r { Move::RsStack(0) } else { Move::Chunk(0, true) }),
            },
            "reduce" => (Move::AllReduce, if to_r { Move::AllReduce } else { Move::Identity }),
            "rs" => match dst {
                Arg::S(d) => (Move::RsShard(d), Move::GatherCat(d)),
                _ => (Move::RsStack(0), Move::GatherStack(0)),
            },
            _ => {
                let (split, concat) = Self::a2a_dims(src, dst)?;
                (Move::A2aShard(split, concat), Move::A2aShard(concat, split))
            }
        };
        self.typed_move("redistribute", x, a, src.base(), dst.base(), fwd, bwd)
    }
}
