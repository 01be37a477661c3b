//! A simulated local-SPMD type system, as the `spmd_types` library (0.2.3) that torchtitan's
//! default MoE backend runs on: plain per-rank tensors (one libtorch tensor per simulated
//! rank), each carrying one local type per mesh axis (R, I, V, P; S(d) as a refinement of V
//! in collective arguments), the checker's typing rules and messages for rank-local ops, the
//! collectives and conversions with the library's forward and backward data movement, a
//! communication log, and a small autograd tape whose backward runs the library's backward
//! collectives.
//!
//! The model is the library's *local* checking mode in strict mode; see docs/spmd-types.md
//! for its rules table and limits.

pub mod collectives;
pub mod comm;
pub mod engine;
pub mod error;
pub mod infer;
pub mod mesh;
pub mod ops;
pub mod region;
mod tape;
pub mod types;

pub use comm::{Comm, CommRecord};
pub use error::{Result, SpmdError};
pub use infer::{Linearity, Operand};
pub use mesh::SpmdMesh;
pub use ops::OpSpec;
pub use types::{Arg, LocalType, Ty, I, P, R, S, V};

use std::collections::HashMap;
use tape::Tape;
use tch::Tensor;

/// A typed value of the program: one local tensor per rank and its local type.
#[derive(Debug)]
pub struct STensor {
    pub locals: Vec<Tensor>,
    pub ty: LocalType,
    /// The autograd identity when the value takes part in a backward.
    pub(crate) id: Option<usize>,
}

impl Clone for STensor {
    fn clone(&self) -> Self {
        STensor { locals: self.locals.iter().map(|t| t.shallow_clone()).collect(), ty: self.ty.clone(), id: self.id }
    }
}

impl STensor {
    /// The type on an axis (None for an untyped or size-1 axis).
    pub fn axis_type(&self, axis: usize) -> Option<Ty> {
        self.ty.get(&axis).copied()
    }

    pub fn requires_grad(&self) -> bool {
        self.id.is_some()
    }

    pub fn kind(&self) -> tch::Kind {
        self.locals[0].kind()
    }

    /// Rank 0's local shape.
    pub fn shape(&self) -> Vec<i64> {
        self.locals[0].size()
    }

    /// The same value, cut from the autograd graph.
    pub fn detach(&self) -> STensor {
        STensor { locals: self.locals.iter().map(|t| t.detach()).collect(), ty: self.ty.clone(), id: None }
    }
}

/// One program run on the simulated mesh: the mesh, the communication log, the autograd tape
/// and the gradients of the leaves after a backward.
pub struct Spmd {
    pub comm: Comm,
    tape: Tape,
    grads: HashMap<usize, Vec<Tensor>>,
    /// Whether the checker runs (`typecheck()` active): off, no op or collective is rejected
    /// for its types (types are still carried where they can be inferred), as the library
    /// behaves outside a typecheck session.
    pub(crate) checking: bool,
}

impl Spmd {
    pub fn new(mesh: SpmdMesh) -> Spmd {
        Spmd {
            comm: Comm { mesh, log: Vec::new(), in_backward: false },
            tape: Tape::default(),
            grads: HashMap::new(),
            checking: true,
        }
    }

    pub fn mesh(&self) -> &SpmdMesh {
        &self.comm.mesh
    }

    /// Turns the checker on or off (on by default).
    pub fn set_checking(&mut self, on: bool) {
        self.checking = on;
    }

    pub fn checking(&self) -> bool {
        self.checking
    }

    /// Makes `mesh` the current mesh (the library's `set_current_mesh`); returns the previous
    /// one. Values keep the types they have: move one onto the new mesh with
    /// [`Spmd::reinterpret_mesh`]. Backward collectives run on the mesh their forward ran on.
    pub fn set_mesh(&mut self, mesh: SpmdMesh) -> SpmdMesh {
        assert_eq!(mesh.ranks(), self.mesh().ranks(), "a mesh over the same ranks");
        std::mem::replace(&mut self.comm.mesh, mesh)
    }

    /// The collectives run so far, forward and backward.
    pub fn comms(&self) -> &[CommRecord] {
        &self.comm.log
    }

    /// Resolves `(axis name, type)` pairs to a local type: S(d) is stored as V, axes of size 1
    /// are dropped (the library never stores them).
    pub fn local_type(&self, types: &[(&str, Arg)]) -> Result<LocalType> {
        let mut out = LocalType::new();
        for (name, t) in types {
            let a = self.mesh().axis(name)?;
            if self.mesh().size(a) > 1 {
                out.insert(a, t.base());
            }
        }
        Ok(out)
    }

    /// A typed value from per-rank locals (the library's `assert_type` on a fresh tensor).
    pub fn tensor(&self, locals: Vec<Tensor>, types: &[(&str, Arg)]) -> Result<STensor> {
        assert_eq!(locals.len(), self.mesh().ranks(), "one local per rank");
        Ok(STensor { locals, ty: self.local_type(types)?, id: None })
    }

    /// A typed value holding the same tensor on every rank (for R or I axes).
    pub fn same_on_all(&self, t: &Tensor, types: &[(&str, Arg)]) -> Result<STensor> {
        self.tensor((0..self.mesh().ranks()).map(|_| t.copy()).collect(), types)
    }

    /// A value with no type (`{}`): strict checking rejects it next to typed operands.
    pub fn untyped(&self, locals: Vec<Tensor>) -> STensor {
        STensor { locals, ty: LocalType::new(), id: None }
    }

    /// A deterministic factory (zeros, ones, full, arange) under the current mesh: R on
    /// every axis, the same tensor on every rank.
    pub fn factory(&self, t: &Tensor) -> STensor {
        let ty = self.mesh().typed_axes().into_iter().map(|a| (a, Ty::R)).collect();
        STensor { locals: (0..self.mesh().ranks()).map(|_| t.copy()).collect(), ty, id: None }
    }

    /// Marks a value as an autograd leaf: `grad` returns its gradient after `backward`.
    pub fn leaf(&mut self, mut x: STensor) -> STensor {
        x.id = Some(self.tape.fresh());
        x
    }

    /// `assert_type` on a typed value: every given axis must already have that type.
    pub fn assert_type(&self, x: &STensor, types: &[(&str, Arg)]) -> Result<()> {
        for (name, t) in types {
            let a = self.mesh().axis(name)?;
            if self.mesh().size(a) == 1 {
                continue;
            }
            match x.ty.get(&a) {
                Some(cur) if *cur == t.base() => {}
                Some(cur) => {
                    return Err(SpmdError::Type(format!(
                        "Type mismatch on axis {}: tensor has {}, expected {}",
                        self.mesh().shown(a),
                        cur.letter(),
                        t.base().letter()
                    )))
                }
                None => return Err(SpmdError::Type(format!("Tensor has no type on axis {}", self.mesh().shown(a)))),
            }
        }
        Ok(())
    }

    /// `mutate_type(x, axis, src=, dst=)`: overwrites one axis's type after checking it is
    /// `src` (a size-1 axis is skipped). Types only: the data is unchanged.
    pub fn mutate_type(&self, x: &mut STensor, axis: &str, src: Arg, dst: Arg) -> Result<()> {
        let a = self.mesh().axis(axis)?;
        if self.mesh().size(a) == 1 {
            return Ok(());
        }
        let Some(cur) = x.ty.get(&a).copied() else {
            let mut names: Vec<String> = x.ty.keys().map(|k| format!("'{}'", self.mesh().shown(*k))).collect();
            names.sort();
            let set = if names.is_empty() { "set()".to_string() } else { format!("{{{}}}", names.join(", ")) };
            return Err(SpmdError::Type(format!(
                "mutate_type: axis {} not found in tensor's SPMD type. Tensor has axes: {set}",
                self.mesh().shown(a)
            )));
        };
        if cur != src.base() {
            return Err(SpmdError::Type(format!(
                "mutate_type: expected current type {} on axis {}, got {}",
                src.base().long(),
                self.mesh().shown(a),
                cur.long()
            )));
        }
        x.ty.insert(a, dst.base());
        Ok(())
    }

    /// The gradient of a leaf after `backward` (typed with the gradient types: R<->P, I, V),
    /// or None when no gradient reached it.
    pub fn grad(&self, x: &STensor) -> Option<STensor> {
        let id = x.id?;
        let g = self.grads.get(&id)?;
        let ty = x.ty.iter().map(|(a, t)| (*a, t.backward())).collect();
        Some(STensor { locals: g.iter().map(|t| t.shallow_clone()).collect(), ty, id: None })
    }

    /// `loss.backward()` (grad None: the implicit 1.0 on every rank, accepted only when the loss
    /// is I or P on every axis, as the checker requires) or `y.backward(grad)` with per-rank
    /// output gradients. Runs the tape's backward, the library's backward collectives logged.
    pub fn backward(&mut self, loss: &STensor, grad: Option<Vec<Tensor>>) -> Result<()> {
        let g = match grad {
            Some(g) => g,
            None => {
                for a in self.mesh().typed_axes_in_mesh_order() {
                    let Some(t) = loss.ty.get(&a) else { continue };
                    let shown = self.mesh().shown(a).to_string();
                    let fix = match t {
                        Ty::I | Ty::P => continue,
                        Ty::R => format!(
                            "The loss is Replicate on axis {shown} -- this usually means an upstream all_reduce reduced \
                             to R instead of I. Consider:\n  - Changing the upstream reduction to all_reduce(..., dst=I) \
                             so the loss is Invariant, or\n  - Removing the all_reduce entirely and calling backward() \
                             on the local (Partial) loss, which is also more efficient"
                        ),
                        Ty::V => format!(
                            "The loss is Varying -- each rank holds a different local loss. Use reinterpret(loss, \
                             {shown}, src=V, dst=P) to declare that the semantics is that you want to differentiate \
                             with regards to the (pending) reduction of the loss on all ranks"
                        ),
                    };
                    return Err(SpmdError::Type(format!(
                        "backward() on a {} loss on axis {shown} would produce incorrect gradients. The implicit \
                         grad_output is a 1.0 scalar on each rank (Invariant), but only Invariant or Partial losses are \
                         valid for backward() without an explicit gradient.\n{fix}",
                        t.full_name()
                    )));
                }
                loss.locals.iter().map(|t| t.ones_like()).collect()
            }
        };
        let Some(id) = loss.id else { return Ok(()) };
        self.comm.in_backward = true;
        let r = self.tape.backward(&mut self.comm, id, g, &mut self.grads);
        self.comm.in_backward = false;
        r
    }
}

impl SpmdMesh {
    /// The typed axes in mesh order (the order a tensor's type dict lists them).
    pub fn typed_axes_in_mesh_order(&self) -> Vec<usize> {
        (0..self.ndim()).filter(|&a| self.size(a) > 1).collect()
    }
}
