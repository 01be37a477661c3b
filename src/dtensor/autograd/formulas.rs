//! Each op's backward, written as the ops PyTorch's autograd formulas emit (so that on DTensors
//! they go through the same sharding rules, in the same order): `gather` becomes `new_zeros` +
//! out-of-place `scatter_add` (the tensor-subclass path), `div`'s denominator gradient is
//! `-grad * ((a / b) / b)` summed back to its shape, `sum` expands, `mm`'s second operand (a
//! transposed view) gets `(gradᵀ · mat1)ᵀ`, `addmm`'s bias gets `sum(grad, 0, keepdim)` viewed
//! back, a float cast casts back, and a scalar add passes the gradient through.

use super::{apply, Id, Tape, Val};
use crate::error::{DTensorError, Result};
use crate::op::Op;
use crate::Ctx;

struct B<'a> {
    ctx: &'a mut Ctx,
    tape: &'a Tape,
}

impl B<'_> {
    fn op(&mut self, op: Op, args: &[&Val]) -> Result<Val> {
        Ok(apply(self.ctx, &op, args)?.remove(0))
    }

    fn t(&mut self, v: &Val) -> Result<Val> {
        self.op(Op::T, &[v])
    }

    fn val(&self, id: Id) -> &Val {
        self.tape.val(id)
    }

    /// Sums `g` down to `shape` (broadcast dims: leading ones away, size-1 ones kept), as
    /// autograd's `sum_to` does for a broadcast operand.
    fn sum_to(&mut self, g: Val, shape: &[usize]) -> Result<Val> {
        let from = g.shape();
        let mut g = g;
        for op in super::sum_to_ops(&from, shape) {
            g = self.op(op, &[&g])?;
        }
        Ok(g)
    }

    /// `mm(a, b)` where `b` is a transposed view (the gate weight's `t`): (dA, dB).
    fn mm(&mut self, g: &Val, a: &Val, b: &Val, need: (bool, bool)) -> Result<(Option<Val>, Option<Val>)> {
        let ga = if need.0 {
            let bt = self.t(b)?;
            Some(self.op(Op::Mm, &[g, &bt])?)
        } else {
            None
        };
        let gb = if need.1 {
            let gt = self.t(g)?;
            let m = self.op(Op::Mm, &[&gt, a])?;
            Some(self.t(&m)?)
        } else {
            None
        };
        Ok((ga, gb))
    }
}

/// The gradients of `op`'s inputs given its outputs' (`None`: no gradient reached that output).
pub fn backward(
    ctx: &mut Ctx,
    tape: &Tape,
    op: &Op,
    ins: &[Id],
    outs: &[Id],
    gouts: &[Option<Val>],
) -> Result<Vec<Option<Val>>> {
    let mut b = B { ctx, tape };
    let Some(g) = gouts[0].clone() else {
        // Only the first output of an op carries a gradient (the others are indices).
        return Ok(vec![None; ins.len()]);
    };
    let needs: Vec<bool> = ins.iter().map(|&i| tape.needs_grad[i]).collect();
    let one = |v: Val| Ok(vec![Some(v)]);
    match op {
        Op::ToDtype(_) => {
            let dt = b.val(ins[0]).dtype();
            one(b.op(Op::ToDtype(dt), &[&g])?)
        }
        Op::T => one(b.t(&g)?),
        Op::View { .. } => {
            let shape = b.val(ins[0]).shape().iter().map(|&d| d as i64).collect();
            one(b.op(Op::View { shape, unsafe_view: false }, &[&g])?)
        }
        Op::Mm => {
            let (a, w) = (b.val(ins[0]).clone(), b.val(ins[1]).clone());
            let (ga, gb) = b.mm(&g, &a, &w, (needs[0], needs[1]))?;
            Ok(vec![ga, gb])
        }
        Op::Addmm => {
            let (a, w) = (b.val(ins[1]).clone(), b.val(ins[2]).clone());
            let (ga, gw) = b.mm(&g, &a, &w, (needs[1], needs[2]))?;
            let gbias = if needs[0] {
                let s = b.op(Op::Sum { dims: vec![0], keepdim: true }, &[&g])?;
                let shape = b.val(ins[0]).shape().iter().map(|&d| d as i64).collect();
                Some(b.op(Op::View { shape, unsafe_view: false }, &[&s])?)
            } else {
                None
            };
            Ok(vec![gbias, ga, gw])
        }
        Op::Sigmoid => {
            let out = b.val(outs[0]).clone();
            one(b.op(Op::SigmoidBackward, &[&g, &out])?)
        }
        Op::Softmax { dim } => {
            let (out, input_dtype) = (b.val(outs[0]).clone(), b.val(ins[0]).dtype());
            one(b.op(Op::SoftmaxBackward { dim: *dim, input_dtype }, &[&g, &out])?)
        }
        Op::AddScalar(_) => one(g),
        Op::MulScalar(s) => one(b.op(Op::MulScalar(*s), &[&g])?),
        Op::Neg => one(b.op(Op::Neg, &[&g])?),
        Op::Add | Op::Sub => {
            let mut v = Vec::new();
            for (k, &i) in ins.iter().enumerate() {
                let shape = b.val(i).shape();
                let gi = if k == 1 && matches!(op, Op::Sub) { b.op(Op::Neg, &[&g])? } else { g.clone() };
                v.push(if needs[k] { Some(b.sum_to(gi, &shape)?) } else { None });
            }
            Ok(v)
        }
        Op::Mul => {
            let (x, y) = (b.val(ins[0]).clone(), b.val(ins[1]).clone());
            let gx =
                if needs[0] { Some(b.op(Op::Mul, &[&g, &y]).and_then(|m| b.sum_to(m, &x.shape()))?) } else { None };
            let gy =
                if needs[1] { Some(b.op(Op::Mul, &[&g, &x]).and_then(|m| b.sum_to(m, &y.shape()))?) } else { None };
            Ok(vec![gx, gy])
        }
        Op::Div => div(&mut b, &g, ins, &needs),
        Op::Sum { dims, keepdim } => one(sum_backward(&mut b, g, ins[0], dims, *keepdim)?),
        Op::Gather { dim } => {
            let (input, index) = (b.val(ins[0]).clone(), b.val(ins[1]).clone());
            let zeros = b.op(Op::NewZeros { shape: input.shape() }, &[&g])?;
            let gin = b.op(Op::ScatterAdd { dim: *dim }, &[&zeros, &index, &g])?;
            Ok(vec![Some(gin), None])
        }
        other => Err(DTensorError::Unsupported(format!("no backward for {}", other.aten_name()))),
    }
}

/// `a / b`: the denominator's gradient `-grad * ((a / b) / b)` first, summed to b's shape, then
/// the numerator's `grad / b` (PyTorch's order).
fn div(b: &mut B, g: &Val, ins: &[Id], needs: &[bool]) -> Result<Vec<Option<Val>>> {
    let (x, y) = (b.val(ins[0]).clone(), b.val(ins[1]).clone());
    let gy = if needs[1] {
        let q = b.op(Op::Div, &[&x, &y])?;
        let q2 = b.op(Op::Div, &[&q, &y])?;
        let ng = b.op(Op::Neg, &[g])?;
        let m = b.op(Op::Mul, &[&ng, &q2])?;
        Some(b.sum_to(m, &y.shape())?)
    } else {
        None
    };
    let gx = if needs[0] { Some(b.op(Op::Div, &[g, &y])?) } else { None };
    Ok(vec![gx, gy])
}

/// `sum(dims, keepdim)`: the gradient, with the reduced dims put back, expanded to the input.
fn sum_backward(b: &mut B, g: Val, input: Id, dims: &[i64], keepdim: bool) -> Result<Val> {
    let shape = b.val(input).shape();
    let nd = shape.len() as i64;
    let mut g = g;
    if !keepdim {
        let mut ds: Vec<i64> = dims.iter().map(|&d| if d < 0 { d + nd } else { d }).collect();
        ds.sort_unstable();
        for d in ds {
            g = b.op(Op::Unsqueeze { dim: d }, &[&g])?;
        }
    }
    b.op(Op::Expand { shape }, &[&g])
}
