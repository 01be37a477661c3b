//! The simulated DTensor: a global spec (mesh, placements, shape, dtype) plus one local tensor
//! per rank. Values are immutable: an in-place op yields a new DTensor under the in-place
//! sharding rules, so replicated locals can share storage.

use super::error::{DTensorError, Result};
use super::local;
use super::meta::{DType, Meta};
use placement::{layout, normalize_all, Mesh, Placement, PlacementError, ReduceOp};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tch::Tensor;

/// `MaskBuffer` (`_ops/_mask_buffer.py`): the per-rank masks of one `_MaskPartial` placement
/// object, shared by every DTensor whose spec holds it (the gather output, the masked index, a
/// sum that passed it through). Materializing counts references; each reduction applies the
/// mask and releases one; at zero the masks are dropped, and reducing again is PyTorch's bare
/// AssertionError.
#[derive(Debug)]
pub struct MaskBuffer {
    pub id: u32,
    state: Mutex<MaskState>,
}

#[derive(Debug, Default)]
struct MaskState {
    masks: Option<Vec<Tensor>>,
    refcount: usize,
}

static NEXT_MASK: AtomicU32 = AtomicU32::new(1);

impl MaskBuffer {
    /// A buffer for a `_MaskPartial` a strategy just created.
    pub(crate) fn fresh_id() -> u32 {
        NEXT_MASK.fetch_add(1, Ordering::Relaxed)
    }

    pub fn new(id: u32) -> Arc<MaskBuffer> {
        Arc::new(MaskBuffer { id, state: Mutex::new(MaskState::default()) })
    }

    /// `materialize_mask`: the first reference stores the masks, later ones must agree.
    pub(crate) fn materialize(&self, masks: Vec<Tensor>) -> Result<()> {
        let mut st = self.state.lock().expect("mask buffer lock");
        if st.refcount == 0 {
            st.masks = Some(masks);
        } else {
            let held = st.masks.as_ref().ok_or(DTensorError::MaskReleased)?;
            if held.iter().zip(&masks).any(|(a, b)| !a.equal(b)) {
                return Err(DTensorError::MaskConflict);
            }
        }
        st.refcount += 1;
        Ok(())
    }

    /// `_reduce_value`'s prologue: the masks to apply, releasing one reference.
    pub fn take(&self) -> Result<Vec<Tensor>> {
        let mut st = self.state.lock().expect("mask buffer lock");
        let masks: Vec<Tensor> =
            st.masks.as_ref().ok_or(DTensorError::MaskReleased)?.iter().map(|t| t.shallow_clone()).collect();
        st.refcount -= 1;
        if st.refcount == 0 {
            st.masks = None;
        }
        Ok(masks)
    }
}

pub struct DTensor {
    pub mesh: Arc<Mesh>,
    /// One per mesh dim, shard dims normalised.
    pub placements: Vec<Placement>,
    /// The global shape rank 0 believes in.
    pub shape: Vec<usize>,
    /// Set only when ranks believe in different global shapes (a `from_local` without `shape=`
    /// on uneven shards); `rank_shapes[r]` is rank r's.
    pub rank_shapes: Option<Vec<Vec<usize>>>,
    pub dtype: DType,
    pub locals: Vec<Tensor>,
    /// The mask buffer of the `_MaskPartial` in `placements`, if any.
    pub mask: Option<Arc<MaskBuffer>>,
}

impl Clone for DTensor {
    fn clone(&self) -> Self {
        DTensor {
            mesh: self.mesh.clone(),
            placements: self.placements.clone(),
            shape: self.shape.clone(),
            rank_shapes: self.rank_shapes.clone(),
            dtype: self.dtype,
            locals: self.locals.iter().map(|t| t.shallow_clone()).collect(),
            mask: self.mask.clone(),
        }
    }
}

impl std::fmt::Debug for DTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DTensor({:?} {} {})", self.shape, self.dtype, placement::short_list(&self.placements))
    }
}

impl DTensor {
    /// `distribute_tensor(global, mesh, placements)` (`_api.py`, the same in 2.12.1, 2.13.0 and
    /// 2.14.0): mesh dims left to right, a Shard keeps its torch.chunk piece, a Replicate the
    /// whole, and a Partial replicates and then applies `Partial._partition_value`: `P(sum)`
    /// divides by the mesh dim's size in the tensor's dtype (`tensor / n`), `P(avg|max|min)`
    /// keep the value. `P(product)` and mixed reduce ops other than sum with avg raise
    /// ValueError, as in PyTorch.
    pub fn distribute(global: &Tensor, mesh: &Arc<Mesh>, placements: &[Placement]) -> Result<DTensor> {
        let shape = local::shape(global);
        if placements.len() != mesh.ndim() {
            return Err(PlacementError::WrongLength { found: placements.len(), mesh_ndim: mesh.ndim() }.into());
        }
        let ps = normalize_all(placements, shape.len())?;
        check_distributable(&ps)?;
        let mut locals: Vec<Tensor> = (0..mesh.size())
            .map(|r| {
                let idx = layout::local_indices(&shape, mesh, &ps, &mesh.coord(r));
                let mut t = global.shallow_clone();
                for (d, ix) in idx.iter().enumerate() {
                    if ix.len() == shape[d] {
                        continue;
                    }
                    let contiguous = ix.windows(2).all(|w| w[1] == w[0] + 1);
                    t = if contiguous {
                        let off = ix.first().copied().unwrap_or(shape[d]);
                        t.narrow(d as i64, off as i64, ix.len() as i64)
                    } else {
                        local::select_positions(&t, d, ix)
                    };
                }
                t.contiguous()
            })
            .collect();
        for (md, p) in ps.iter().enumerate() {
            if let Placement::Partial(op) = p {
                locals = super::comm::partition(mesh, md, &locals, *op);
            }
        }
        Ok(DTensor {
            mesh: mesh.clone(),
            placements: ps,
            shape,
            rank_shapes: None,
            dtype: local::dtype(global.kind()),
            locals,
            mask: None,
        })
    }

    /// `DTensor.from_local(locals, mesh, placements, shape=shape)`. Without `shape`, each rank
    /// infers its own global shape assuming even shards (what local_map's re-wrap does on
    /// torch 2.12/2.13); ranks that infer different shapes are kept apart in `rank_shapes`.
    pub fn from_local(
        locals: Vec<Tensor>,
        mesh: &Arc<Mesh>,
        placements: &[Placement],
        shape: Option<Vec<usize>>,
    ) -> Result<DTensor> {
        assert_eq!(locals.len(), mesh.size(), "one local tensor per rank");
        let ndim = locals[0].dim();
        let ps = normalize_all(placements, ndim)?;
        let dtype = local::dtype(locals[0].kind());
        let (shape, rank_shapes) = match shape {
            Some(s) => (s, None),
            None => {
                let per: Vec<Vec<usize>> = (0..mesh.size())
                    .map(|r| layout::from_local_global_shape(&local::shape(&locals[r]), mesh, &ps))
                    .collect();
                let agree = per.iter().all(|s| *s == per[0]);
                (per[0].clone(), if agree { None } else { Some(per) })
            }
        };
        Ok(DTensor { mesh: mesh.clone(), placements: ps, shape, rank_shapes, dtype, locals, mask: None })
    }

    pub fn meta(&self) -> Meta {
        Meta::new(self.shape.clone(), self.dtype)
    }

    /// Rank r's belief about the global shape.
    pub fn shape_of(&self, rank: usize) -> &[usize] {
        match &self.rank_shapes {
            Some(v) => &v[rank],
            None => &self.shape,
        }
    }

    /// Every rank's global shape (equal unless a re-wrap made them differ).
    pub fn rank_global_shapes(&self) -> Vec<Vec<usize>> {
        (0..self.mesh.size()).map(|r| self.shape_of(r).to_vec()).collect()
    }

    pub fn local_shapes(&self) -> Vec<Vec<usize>> {
        self.locals.iter().map(local::shape).collect()
    }

    pub fn to_local(&self, rank: usize) -> &Tensor {
        &self.locals[rank]
    }

    /// A same-spec DTensor with other locals (the result of an elementwise local op).
    pub fn with_locals(&self, locals: Vec<Tensor>) -> DTensor {
        let dtype = local::dtype(locals[0].kind());
        DTensor { locals, dtype, ..self.clone() }
    }
}

/// What `distribute_tensor` refuses among normalised placements: a `_MaskPartial` (only ops
/// create one), `P(product)` (`_partition_value` has no inverse for it) and Partials of mixed
/// reduce ops (`assert_no_mixed_partial_types`; sum with avg is allowed).
fn check_distributable(ps: &[Placement]) -> Result<()> {
    let mut ops: Vec<ReduceOp> = Vec::new();
    for (i, p) in ps.iter().enumerate() {
        match p {
            Placement::MaskPartial { .. } => {
                return Err(DTensorError::Unsupported(format!(
                    "Trying to distribute tensor with unsupported placements {} on device mesh dimension {i}!",
                    p.repr()
                )))
            }
            Placement::Partial(ReduceOp::Product) => {
                let message = "Replicate to Partial(product) conversion is not supported.".into();
                return Err(DTensorError::Local { kind: "ValueError", message });
            }
            Placement::Partial(op) if !ops.contains(op) => ops.push(*op),
            _ => {}
        }
    }
    ops.sort_unstable();
    if ops.len() > 1 && ops != [ReduceOp::Sum, ReduceOp::Avg] {
        let names: Vec<String> = ops.iter().map(|o| format!("'{}'", o.name())).collect();
        let message = format!(
            "Mixed Partial reduce types are not supported in the same placement list. Found reduce ops: {{{}}}. \
             Please ensure all Partial placements use the same reduce operation.",
            names.join(", ")
        );
        return Err(DTensorError::Local { kind: "ValueError", message });
    }
    Ok(())
}
