//! View ops (`_view_ops.py`). Placeholder until the rules are confirmed on real PyTorch.

use super::{Arg, Proposal, RuleSet, Strategy};
use crate::dtensor::error::Result;
use crate::dtensor::meta::Meta;
use crate::dtensor::op::Op;
use crate::placement::Mesh;

pub fn propose(op: &Op, args: &[Arg], _mesh: &Mesh, _rules: RuleSet) -> Result<Proposal> {
    let a = &args[0];
    let shape = match op {
        Op::View { shape, .. } => shape.iter().map(|&d| d as usize).collect(),
        Op::Unsqueeze { dim } => {
            let mut s = a.meta.shape.clone();
            s.insert(*dim as usize, 1);
            s
        }
        _ => unreachable!(),
    };
    Ok(Proposal::single(vec![Meta::new(shape, a.meta.dtype)], Strategy { outs: vec![a.placements.clone()], ins: vec![a.placements.clone()] }))
}
