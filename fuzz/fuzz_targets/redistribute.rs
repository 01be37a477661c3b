//! A random DTensor (mesh, shape, placements, partial pieces) redistributed to random target
//! placements must hold the same full tensor, with the target's chunk-layout local shapes.
#![no_main]

use arbitrary::Arbitrary;
use dtensor::redistribute::redistribute;
use dtensor::{Ctx, DTensor, RuleSet};
use libfuzzer_sys::fuzz_target;
use placement::{layout, Mesh, Placement, ReduceOp};
use std::sync::Arc;
use tch::{Kind, Tensor};

const MESHES: &[&[usize]] = &[&[2], &[3], &[4], &[1, 2], &[2, 2], &[2, 3], &[2, 1, 2], &[2, 2, 2]];
const OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Avg, ReduceOp::Max, ReduceOp::Min];

#[derive(Arbitrary, Debug)]
struct Input {
    mesh: u8,
    dims: [u8; 3],
    rank: u8,
    src: [u8; 3],
    dst: [u8; 3],
}

fn placement(code: u8, rank: usize, partial: bool) -> Placement {
    let n = rank + 1 + if partial { OPS.len() } else { 0 };
    match (code as usize) % n {
        0 => Placement::Replicate,
        c if c <= rank => Placement::Shard(c as i64 - 1),
        c => Placement::Partial(OPS[c - rank - 1]),
    }
}

fuzz_target!(|inp: Input| {
    let shape_m = MESHES[inp.mesh as usize % MESHES.len()];
    let mesh = Arc::new(Mesh::new(shape_m.to_vec(), (0..shape_m.len()).map(|i| format!("d{i}")).collect()).unwrap());
    let rank = 1 + inp.rank as usize % 3;
    let shape: Vec<i64> = inp.dims[..rank].iter().map(|d| (*d % 7) as i64).collect();
    let src: Vec<Placement> = (0..mesh.ndim()).map(|i| placement(inp.src[i], rank, true)).collect();
    // A target Partial must be the source's own kind on that dim (DTensor allows R -> P and P -> P).
    let dst: Vec<Placement> = (0..mesh.ndim())
        .map(|i| match placement(inp.dst[i], rank, true) {
            Placement::Partial(_) if src[i].is_replicate() || src[i].is_partial() => {
                if src[i].is_partial() {
                    src[i]
                } else {
                    Placement::Partial(ReduceOp::Sum)
                }
            }
            Placement::Partial(_) => Placement::Replicate,
            p => p,
        })
        .collect();
    let numel: i64 = shape.iter().product();
    let full = Tensor::arange(numel, (Kind::Float, tch::Device::Cpu)).reshape(&shape);
    // Partial sources: rank 0 of each fiber holds the value, the others hold the op's identity-ish
    // piece (0 for sum, the value for avg/max/min), so the logical value is `full`.
    let r: Vec<Placement> = src.iter().map(|p| if p.is_partial() { Placement::Replicate } else { *p }).collect();
    let mut dt = DTensor::distribute(&full, &mesh, &r).unwrap();
    for (md, p) in src.iter().enumerate() {
        if let Placement::Partial(ReduceOp::Sum) = p {
            for fiber in mesh.fibers(md) {
                for &rk in &fiber[1..] {
                    dt.locals[rk] = dt.locals[rk].zeros_like();
                }
            }
        }
    }
    dt.placements = src.clone();
    let mut ctx = Ctx::new(RuleSet::Torch213);
    let moved = match redistribute(&mut ctx, &dt, &dst) {
        Ok(m) => m,
        Err(e) => panic!("{src:?} -> {dst:?} on {shape_m:?} {shape:?}: {e}"),
    };
    let shape_u: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    assert_eq!(
        moved.local_shapes(),
        layout::local_shapes(&shape_u, &mesh, &dst),
        "{src:?} -> {dst:?} on {shape_m:?} {shape:?}: local shapes"
    );
    let got = moved.full_tensor().unwrap();
    assert!(got.equal(&full), "{src:?} -> {dst:?} on {shape_m:?} {shape:?}: values\n{got}\n{full}");
});
