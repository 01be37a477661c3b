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
        _ => unreachable!("like::propose called for {op:?}"),
    };
    let out: Vec<Placement> =
        a.placements.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect();
    Ok(Proposal::single(
        vec![Meta::new(a.meta.shape.clone(), dtype)],
        Strategy { outs: vec![out], ins: vec![a.placements.clone()] },
    ))
}
