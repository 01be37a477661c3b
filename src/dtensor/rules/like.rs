//! Factories shaped like their input (`zeros_like`, `ones_like`): the output keeps the input's
//! placements, except that a Partial becomes Replicate (a constant is the same on every rank).
//! The input is never redistributed: only its metadata is read.

use super::{Arg, Proposal, Strategy};
use crate::dtensor::error::Result;
use crate::dtensor::meta::Meta;
use crate::dtensor::op::Op;
use crate::placement::Placement;

pub fn propose(op: &Op, args: &[Arg]) -> Result<Proposal> {
    let a = &args[0];
    let dtype = match op {
        Op::ZerosLike(d) | Op::OnesLike(d) => d.unwrap_or(a.meta.dtype),
        // `new_zeros` of another shape is replicated zeros: nothing of the input's layout carries.
        Op::NewZeros { shape } if *shape != a.meta.shape => {
            let out = vec![Placement::Replicate; a.placements.len()];
            let meta = Meta::new(shape.clone(), a.meta.dtype);
            return Ok(Proposal::single(vec![meta], Strategy { outs: vec![out], ins: vec![a.placements.clone()] }));
        }
        Op::NewZeros { .. } => a.meta.dtype,
        _ => unreachable!("like::propose called for {op:?}"),
    };
    let out: Vec<Placement> =
        a.placements.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect();
    Ok(Proposal::single(
        vec![Meta::new(a.meta.shape.clone(), dtype)],
        Strategy { outs: vec![out], ins: vec![a.placements.clone()] },
    ))
}
