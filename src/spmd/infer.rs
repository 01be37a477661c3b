//! Type inference for rank-local ops, as the library's checker does it (local mode, strict):
//! per mesh axis, from the operands' types and the op's linearity; with the checker's
//! messages and its fix suggestions.

use crate::error::{Result, SpmdError};
use crate::mesh::SpmdMesh;
use crate::types::{LocalType, Ty};

/// How an op treats Partial operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linearity {
    /// P cannot pass (the default for every op the library does not list).
    Nonlinear,
    /// A sum of its operands: all-P gives P; P with R or a scalar is affine (rejected).
    Linear,
    /// Linear in each factor: exactly one P factor with R or scalars gives P.
    Multilinear,
}

/// One operand's type on one axis: a tensor's type, or a Python number at a tensor position
/// (it adopts the other operands' type, and is affine next to a Partial in a linear op).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    T(Ty),
    Scalar,
}

impl Operand {
    fn repr(self) -> &'static str {
        match self {
            Operand::T(t) => t.letter(),
            Operand::Scalar => "Scalar",
        }
    }
}

fn list(ops: &[Operand]) -> String {
    format!("[{}]", ops.iter().map(|o| o.repr()).collect::<Vec<_>>().join(", "))
}

/// The checker's per-axis rule, without suggestions.
pub fn infer_axis_raw(axis: &str, ops: &[Operand], lin: Linearity, out_partial: bool) -> Result<Ty> {
    if ops.is_empty() {
        if out_partial {
            return Ok(Ty::P);
        }
        return Err(SpmdError::Value(format!("No types provided for axis {axis}")));
    }
    let has = |t: Ty| ops.contains(&Operand::T(t));
    let only = |allowed: &[Ty]| {
        ops.iter().all(|o| match o {
            Operand::Scalar => true,
            Operand::T(t) => allowed.contains(t),
        })
    };
    let inferred = if only(&[Ty::R]) {
        Ty::R
    } else if only(&[Ty::I]) {
        Ty::I
    } else if only(&[Ty::R, Ty::V]) {
        Ty::V
    } else if has(Ty::I) {
        return Err(SpmdError::Type(format!(
            "Invariant type on axis {axis} cannot mix with other types. Found types: {}",
            list(ops)
        )));
    } else if has(Ty::P) {
        let has_scalar = ops.contains(&Operand::Scalar);
        let p_count = ops.iter().filter(|o| **o == Operand::T(Ty::P)).count();
        let has_r = has(Ty::R);
        if has(Ty::V) {
            return Err(SpmdError::Type(format!(
                "Partial type on axis {axis} cannot combine with Varying. Reduce Partial first (all_reduce -> R, or \
                 reduce_scatter -> V). Found types: {}",
                list(ops)
            )));
        }
        match lin {
            Linearity::Nonlinear => {
                return Err(SpmdError::Type(format!(
                    "Partial type on axis {axis} cannot propagate through non-linear ops (non-linear of a partial sum \
                     != partial sum of non-linear). Reduce first with all_reduce or reduce_scatter. Found types: {}",
                    list(ops)
                )))
            }
            Linearity::Linear if has_r || has_scalar => {
                return Err(SpmdError::Type(format!(
                    "Partial type on axis {axis} in a linear op requires all operands to be Partial (sum of partial \
                     sums is a partial sum, but adding a Replicate or scalar value makes the result affine -- the \
                     non-partial term gets summed N times across ranks). Found types: {}",
                    list(ops)
                )))
            }
            Linearity::Multilinear if p_count > 1 => {
                return Err(SpmdError::Type(format!(
                    "Partial in multiple factors of multilinear op on axis {axis} is forbidden. Reduce all but one \
                     factor first. Found types: {}",
                    list(ops)
                )))
            }
            _ => Ty::P,
        }
    } else {
        return Err(SpmdError::Type(format!("Incompatible types on axis {axis}: {}", list(ops))));
    };
    if out_partial {
        return match inferred {
            Ty::V | Ty::P => Ok(Ty::P),
            Ty::R => Err(SpmdError::Type(format!(
                "out_partial_axes includes axis {axis} but inferred type is R (Replicate). A replicated result cannot \
                 be partial -- this likely indicates an unsharded contraction dimension. Input types: {}",
                list(ops)
            ))),
            t => Err(SpmdError::Type(format!(
                "Cannot mark axis {axis} as partial with type {}. out_partial_axes is only valid for V or P types.",
                t.long()
            ))),
        };
    }
    Ok(inferred)
}

/// The fix candidates the checker tries, in its order: (from, to, call, consequence).
const FIXES: [(Ty, Ty, &str, &str); 5] = [
    (Ty::I, Ty::R, "convert(tensor, {a}, src=I, dst=R)", "no-op forward, all-reduce in backward"),
    (Ty::I, Ty::P, "convert(tensor, {a}, src=I, dst=P)", "zeros non-rank-0 in forward, no-op backward"),
    (Ty::P, Ty::R, "all_reduce(tensor, {a}, src=P, dst=R)", "all-reduce in forward, all-reduce in backward"),
    (Ty::P, Ty::I, "all_reduce(tensor, {a}, src=P, dst=I)", "all-reduce in forward, no-op backward"),
    (Ty::R, Ty::P, "convert(tensor, {a}, src=R, dst=P)", "zeros non-rank-0 in forward, zeros non-rank-0 in backward"),
];

/// The per-axis rule with the checker's "Are you missing a collective..." suggestions.
pub fn infer_axis(axis: &str, ops: &[Operand], lin: Linearity, out_partial: bool) -> Result<Ty> {
    match infer_axis_raw(axis, ops, lin, out_partial) {
        Err(SpmdError::Type(base)) => {
            let mut lines = vec![base.clone()];
            for (from, to, call, why) in FIXES {
                let Some(idx) = ops.iter().position(|o| *o == Operand::T(from)) else { continue };
                let mut modified = ops.to_vec();
                modified[idx] = Operand::T(to);
                let Ok(fixed) = infer_axis_raw(axis, &modified, lin, out_partial) else { continue };
                let remaining: Vec<Operand> =
                    ops.iter().enumerate().filter(|(i, _)| *i != idx).map(|(_, o)| *o).collect();
                if !remaining.is_empty() {
                    if let Ok(natural) = infer_axis_raw(axis, &remaining, lin, out_partial) {
                        if natural != fixed {
                            continue;
                        }
                    }
                }
                if lines.len() == 1 {
                    lines.push("Are you missing a collective or a reinterpret/convert call? e.g.,".into());
                }
                lines.push(format!("  {} on the {} operand ({why})", call.replace("{a}", axis), from.full_name()));
            }
            Err(SpmdError::Type(lines.join("\n")))
        }
        other => other,
    }
}

/// One operand of a typed op: a tensor's local type, or a number at a tensor position.
#[derive(Clone, Debug)]
pub enum In<'a> {
    T(&'a LocalType),
    Scalar,
}

/// The output type of a rank-local op (strict mode): every axis of the mesh (size > 1) must be
/// typed on every tensor operand; axes are checked in display-name order.
pub fn infer_output(mesh: &SpmdMesh, ins: &[In], lin: Linearity) -> Result<LocalType> {
    let mesh_axes = mesh.typed_axes();
    let mut all: Vec<usize> = mesh_axes.clone();
    for i in ins {
        if let In::T(t) = i {
            for a in t.keys() {
                if !all.contains(a) {
                    all.push(*a);
                }
            }
        }
    }
    all.sort_by(|a, b| mesh.shown(*a).cmp(mesh.shown(*b)));
    let scalar_axes: bool = ins.iter().any(|i| matches!(i, In::T(t) if !t.is_empty()));
    let mut out = LocalType::new();
    for &axis in &all {
        let mut ops = Vec::new();
        let mut tensor_idx = 0;
        for i in ins {
            match i {
                In::T(t) => {
                    match t.get(&axis) {
                        Some(ty) => ops.push(Operand::T(*ty)),
                        None => {
                            return Err(SpmdError::Type(format!(
                                "args[{tensor_idx}] missing axis {} from the current mesh {}. args[{tensor_idx}] has \
                                 axes {}.",
                                mesh.shown(axis),
                                mesh.axis_set(&mesh_axes),
                                mesh.axis_set(t.keys())
                            )))
                        }
                    }
                    tensor_idx += 1;
                }
                In::Scalar => {
                    if scalar_axes {
                        ops.push(Operand::Scalar)
                    }
                }
            }
        }
        if ops.is_empty() {
            continue;
        }
        out.insert(axis, infer_axis(mesh.shown(axis), &ops, lin, false)?);
    }
    Ok(out)
}
