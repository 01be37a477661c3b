//! `local_map`: run a function on each rank's local tensors and re-wrap the results.
//!
//! Inputs must already have the declared placements (else PyTorch's ValueError, unless
//! `redistribute_inputs`); outputs are wrapped with `DTensor.from_local` without a shape, so
//! with uneven shards each rank infers its own global shape (torch 2.12 / 2.13, VERIFIED).

use super::error::{DTensorError, Result};
use super::redistribute::redistribute;
use super::tensor::DTensor;
use super::Ctx;
use placement::{normalize_all, repr_tuple, Placement};
use tch::Tensor;

/// Calls `f(rank, locals)` on every rank and wraps its outputs with `out_placements`.
pub fn local_map(
    ctx: &mut Ctx,
    args: &[&DTensor],
    in_placements: &[Vec<Placement>],
    out_placements: &[Vec<Placement>],
    redistribute_inputs: bool,
    f: impl Fn(usize, &[&Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<DTensor>> {
    let mut moved = Vec::with_capacity(args.len());
    for (i, (a, want)) in args.iter().zip(in_placements).enumerate() {
        let want = normalize_all(want, a.shape.len())?;
        if a.placements != want {
            if !redistribute_inputs {
                return Err(DTensorError::LocalMapMismatch {
                    arg: format!("{i}"),
                    actual: repr_tuple(&a.placements),
                    expected: repr_tuple(&want),
                });
            }
            moved.push(redistribute(ctx, a, &want)?);
        } else {
            moved.push((*a).clone());
        }
    }
    let mesh = args[0].mesh.clone();
    let mut per_rank = Vec::with_capacity(mesh.size());
    for r in 0..mesh.size() {
        let locals: Vec<&Tensor> = moved.iter().map(|d| &d.locals[r]).collect();
        per_rank.push(f(r, &locals)?);
    }
    let mut outs = Vec::new();
    for (k, ps) in out_placements.iter().enumerate() {
        let locals: Vec<Tensor> = per_rank.iter().map(|v| v[k].shallow_clone()).collect();
        let shape = if ctx.rules.local_map_exact_shapes() {
            let ps = normalize_all(ps, locals[0].dim())?;
            Some(exact_global_shape(&locals, &mesh, &ps))
        } else {
            None
        };
        outs.push(DTensor::from_local(locals, &mesh, ps, shape)?);
    }
    Ok(outs)
}

/// The global shape from every rank's local size (pytorch#172927): sum the local sizes along
/// each sharded mesh dim.
fn exact_global_shape(locals: &[Tensor], mesh: &placement::Mesh, ps: &[Placement]) -> Vec<usize> {
    let mut g: Vec<usize> = super::local::shape(&locals[0]);
    for (md, p) in ps.iter().enumerate() {
        if let Some(d) = p.shard_dim() {
            let fiber = &mesh.fibers(md)[0];
            g[d as usize] = fiber.iter().map(|&r| locals[r].size()[d as usize] as usize).sum();
        }
    }
    g
}
