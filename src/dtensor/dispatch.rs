//! Running one op on DTensors, as DTensor's dispatcher does: check the arguments, propagate
//! sharding (once per distinct view of the global shapes, since ranks that disagree on a shape
//! decide on their own), redistribute the inputs, run the local op on every rank, and wrap the
//! results with the chosen output placements.

use super::error::{DTensorError, Result};
use super::local::{self, torch_err};
use super::op::Op;
use super::redistribute::redistribute;
use super::rules::{self, Arg, Strategy};
use super::tensor::{DTensor, MaskBuffer};
use super::Ctx;
use placement::{Placement, FRESH_MASK};
use tch::{Kind, Tensor};

/// A tensor argument: a DTensor, or a plain tensor (which DTensor refuses unless it is a
/// single element).
pub enum TArg<'a> {
    D(&'a DTensor),
    Plain(&'a Tensor),
}

/// Runs `op` on DTensor arguments.
pub fn call(ctx: &mut Ctx, op: &Op, args: &[&DTensor]) -> Result<Vec<DTensor>> {
    let n = args[0].mesh.size();
    // Ranks that see the same global shapes decide together.
    let mut groups: Vec<(Vec<Vec<usize>>, Vec<usize>)> = Vec::new();
    for r in 0..n {
        let view: Vec<Vec<usize>> = args.iter().map(|a| a.shape_of(r).to_vec()).collect();
        match groups.iter_mut().find(|(v, _)| *v == view) {
            Some((_, ranks)) => ranks.push(r),
            None => groups.push((view, vec![r])),
        }
    }
    let mut decisions: Vec<(Strategy, Vec<Vec<usize>>, Vec<usize>)> = Vec::new();
    for (view, ranks) in &groups {
        let rargs: Vec<Arg> = args
            .iter()
            .zip(view)
            .map(|(a, s)| Arg { meta: super::meta::Meta::new(s.clone(), a.dtype), placements: a.placements.clone() })
            .collect();
        let proposal = rules::propose(op, &rargs, &args[0].mesh, ctx.rules)?;
        let chosen = rules::select(op, &proposal, &rargs, &args[0].mesh)?;
        let out_shapes = proposal.out_metas.iter().map(|m| m.shape.clone()).collect();
        decisions.push((chosen, out_shapes, ranks.clone()));
    }
    let mut strategy = decisions[0].0.clone();
    if let Some((other, _, ranks)) = decisions.iter().find(|d| d.0 != strategy) {
        return Err(DTensorError::RankDesync {
            op: op.aten_name(),
            detail: format!("rank {} chose inputs {:?}, rank 0 chose {:?}", ranks[0], other.ins, strategy.ins),
        });
    }
    name_new_masks(&mut strategy);

    let moved: Vec<DTensor> =
        args.iter().zip(&strategy.ins).map(|(a, want)| redistribute(ctx, a, want)).collect::<Result<_>>()?;
    let mut per_rank: Vec<Vec<Tensor>> = Vec::with_capacity(n);
    for r in 0..n {
        let locals: Vec<&Tensor> = moved.iter().map(|d| &d.locals[r]).collect();
        // A view's (or a shaped factory's) local shape is what the output placements give this
        // rank (PyTorch computes it the same way, so a wrong rule shows up as libtorch's own view
        // error).
        let out_shape = if op.takes_local_shape() {
            let d = decisions.iter().find(|d| d.2.contains(&r)).expect("every rank decided");
            local_i64(&placement::layout::local_shape(
                &d.1[0],
                &args[0].mesh,
                &strategy.outs[0],
                &args[0].mesh.coord(r),
            ))
        } else {
            Vec::new()
        };
        per_rank.push(run_local(op, &locals, &out_shape)?);
    }
    let mut outs = Vec::with_capacity(op.n_outputs());
    for k in 0..op.n_outputs() {
        let locals: Vec<Tensor> = per_rank.iter_mut().map(|v| std::mem::replace(&mut v[k], Tensor::new())).collect();
        let mut rank_shapes = vec![Vec::new(); n];
        for (_, shapes, ranks) in &decisions {
            for &r in ranks {
                rank_shapes[r] = shapes[k].clone();
            }
        }
        let agree = rank_shapes.iter().all(|s| *s == rank_shapes[0]);
        // An output holding an input's `_MaskPartial` shares that input's mask buffer.
        let mask = strategy.outs[k].iter().find_map(|p| match p {
            Placement::MaskPartial { id, .. } => moved.iter().find_map(|d| d.mask.clone().filter(|b| b.id == *id)),
            _ => None,
        });
        outs.push(DTensor {
            mesh: args[0].mesh.clone(),
            placements: strategy.outs[k].clone(),
            shape: rank_shapes[0].clone(),
            rank_shapes: if agree { None } else { Some(rank_shapes) },
            dtype: local::dtype(locals[0].kind()),
            locals,
            mask,
        });
    }
    Ok(outs)
}

/// A `_MaskPartial` the chosen strategy created gets its own buffer id: one new placement
/// object per propagation, shared by the index it masks and the output it produces.
fn name_new_masks(s: &mut Strategy) {
    let fresh = |p: &Placement| matches!(p, Placement::MaskPartial { id: FRESH_MASK, .. });
    if !s.outs.iter().chain(&s.ins).flatten().any(fresh) {
        return;
    }
    let id = MaskBuffer::fresh_id();
    for p in s.outs.iter_mut().chain(s.ins.iter_mut()).flatten() {
        if let Placement::MaskPartial { id: i @ FRESH_MASK, .. } = p {
            *i = id;
        }
    }
}

/// Runs `op` with possibly plain tensor arguments: plain tensors of more than one element are
/// refused with DTensor's mixed-argument error.
pub fn call_mixed(ctx: &mut Ctx, op: &Op, args: &[TArg]) -> Result<Vec<DTensor>> {
    let mut ds: Vec<DTensor> = Vec::new();
    let mesh = args.iter().find_map(|a| match a {
        TArg::D(d) => Some(d.mesh.clone()),
        TArg::Plain(_) => None,
    });
    for a in args {
        match a {
            TArg::D(d) => ds.push((*d).clone()),
            TArg::Plain(t) => {
                let Some(mesh) = &mesh else { return Err(DTensorError::Unsupported("no DTensor argument".into())) };
                if t.numel() != 1 {
                    return Err(DTensorError::MixedTensor { op: op.aten_name() });
                }
                let locals = (0..mesh.size()).map(|_| t.shallow_clone()).collect();
                ds.push(DTensor::from_local(
                    locals,
                    mesh,
                    &vec![Placement::Replicate; mesh.ndim()],
                    Some(local::shape(t)),
                )?);
            }
        }
    }
    let refs: Vec<&DTensor> = ds.iter().collect();
    call(ctx, op, &refs)
}

/// The local computation of `op` on one rank's tensors; `out_shape` is this rank's output shape
/// for the ops that take one ([`Op::takes_local_shape`]).
pub(crate) fn run_local(op: &Op, x: &[&Tensor], out_shape: &[i64]) -> Result<Vec<Tensor>> {
    let one = |t: std::result::Result<Tensor, tch::TchError>| t.map(|t| vec![t]).map_err(torch_err);
    match op {
        Op::View { .. } => one(x[0].f_view_(out_shape)),
        Op::Expand { .. } => one(x[0].f_expand(out_shape, false)),
        Op::NewZeros { .. } => one(x[0].f_new_zeros(out_shape, (x[0].kind(), x[0].device()))),
        Op::Addmm if super::plant::active("addmm-panics") => panic!("planted: addmm panics"),
        Op::Addmm => one(x[0].f_addmm(x[1], x[2])),
        Op::SigmoidBackward => one(Tensor::f_sigmoid_backward(x[0], x[1])),
        Op::Neg => one(x[0].f_neg()),
        Op::SoftmaxBackward { dim, input_dtype } => {
            one(Tensor::f_internal_softmax_backward_data(x[0], x[1], *dim, local::kind(*input_dtype)))
        }
        Op::ScatterAdd { dim } => {
            local::check_index(x[0], *dim, x[1])?;
            one(x[0].f_scatter_add(*dim, x[1], x[2]))
        }
        Op::Unsqueeze { dim } => one(x[0].f_unsqueeze(*dim)),
        Op::T => one(x[0].f_tr()),
        Op::Mm => one(x[0].f_mm(x[1])),
        Op::Sigmoid => one(x[0].f_sigmoid()),
        Op::ToDtype(d) => one(x[0].f_to_kind(local::kind(*d))),
        Op::Add => one(x[0].f_add(x[1])),
        Op::Sub => one(x[0].f_sub(x[1])),
        Op::Mul => one(x[0].f_mul(x[1])),
        Op::Div => one(x[0].f_div(x[1])),
        // Arithmetic with a Python scalar cannot fail; the operators keep its promotion rules.
        Op::AddScalar(s) => Ok(vec![x[0] + *s]),
        Op::MulScalar(s) => Ok(vec![x[0] * *s]),
        Op::DivScalar(s) => Ok(vec![x[0] / *s]),
        Op::MaskedFill(v) => one(x[0].f_masked_fill_tensor(x[1], &local::scalar(*v, x[0]))),
        Op::Softmax { dim } => one(x[0].f_softmax(*dim, x[0].kind())),
        Op::Sum { dims, keepdim } => {
            let k = if x[0].is_floating_point() { x[0].kind() } else { Kind::Int64 };
            one(x[0].f_sum_dim_intlist(dims.as_slice(), *keepdim, k))
        }
        Op::Cumsum { dim, dtype } => {
            let k = dtype.map(local::kind).unwrap_or(if x[0].is_floating_point() { x[0].kind() } else { Kind::Int64 });
            one(x[0].f_cumsum(*dim, k))
        }
        Op::Topk { k, dim, largest, sorted } => {
            if crate::plant::active("topk-runner-up") {
                return runner_up_topk(x[0], *k as i64, *dim, *largest);
            }
            let (v, i) = x[0].f_topk(*k as i64, *dim, *largest, *sorted).map_err(torch_err)?;
            Ok(vec![v, i])
        }
        Op::Sort { dim, stable, descending } => {
            let (v, i) = x[0].f_sort_stable(*stable, *dim, *descending).map_err(torch_err)?;
            Ok(vec![v, i])
        }
        Op::Gather { dim } => {
            local::check_index(x[0], *dim, x[1])?;
            one(x[0].f_gather(*dim, x[1], false))
        }
        Op::ScatterValue { dim, value, .. } => Ok(vec![local::scatter_value(x[0], *dim, x[1], *value)?]),
        Op::ScatterSrc { dim, .. } => {
            local::check_index(x[0], *dim, x[1])?;
            one(x[0].f_scatter(*dim, x[1], x[2]))
        }
        Op::ZerosLike(d) => {
            one(x[0].f_zeros_like().and_then(|t| t.f_to_kind(local::kind(d.unwrap_or(local::dtype(x[0].kind()))))))
        }
        Op::OnesLike(d) => {
            one(x[0].f_ones_like().and_then(|t| t.f_to_kind(local::kind(d.unwrap_or(local::dtype(x[0].kind()))))))
        }
    }
}

fn local_i64(s: &[usize]) -> Vec<i64> {
    s.iter().map(|&d| d as i64).collect()
}

/// The `topk-runner-up` mutant: the K-th choice replaced by the (K+1)-th where there is one.
fn runner_up_topk(x: &Tensor, k: i64, dim: i64, largest: bool) -> Result<Vec<Tensor>> {
    let n = x.size()[(dim + x.dim() as i64) as usize % x.dim().max(1)];
    if k >= n {
        let (v, i) = x.f_topk(k, dim, largest, true).map_err(torch_err)?;
        return Ok(vec![v, i]);
    }
    let (v, i) = x.f_topk(k + 1, dim, largest, true).map_err(torch_err)?;
    let keep: Vec<i64> = (0..k - 1).chain([k]).collect();
    let keep = Tensor::from_slice(&keep).to_device(x.device());
    Ok(vec![v.index_select(dim, &keep), i.index_select(dim, &keep)])
}
