//! The pure placement algebra, no libtorch on the hot path: layouts partition the tensor, the
//! fast local-shape path agrees with the index path, and redistribution plans are legal and end
//! at their target.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use placement::{layout, plan, Mesh, Placement, ReduceOp};

#[derive(Arbitrary, Debug)]
struct Input {
    mesh: [u8; 3],
    ndim_mesh: u8,
    dims: [u8; 3],
    rank: u8,
    src: [(u8, u8); 3],
    dst: [(u8, u8); 3],
}

fn placement((code, sf): (u8, u8), rank: usize) -> Placement {
    match code as usize % (2 * rank + 2) {
        0 => Placement::Replicate,
        1 => Placement::Partial(ReduceOp::Sum),
        c if c < rank + 2 => Placement::Shard((c - 2) as i64),
        c => Placement::StridedShard { dim: (c - rank - 2) as i64, sf: 1 + sf as usize % 4 },
    }
}

fuzz_target!(|inp: Input| {
    let nd = 1 + inp.ndim_mesh as usize % 3;
    let mesh_shape: Vec<usize> = inp.mesh[..nd].iter().map(|s| 1 + *s as usize % 4).collect();
    let mesh = Mesh::new(mesh_shape.clone(), (0..nd).map(|i| format!("d{i}")).collect()).unwrap();
    let rank = 1 + inp.rank as usize % 3;
    let shape: Vec<usize> = inp.dims[..rank].iter().map(|d| *d as usize % 9).collect();
    let src: Vec<Placement> = (0..nd).map(|i| placement(inp.src[i], rank)).collect();
    let dst: Vec<Placement> = (0..nd).map(|i| placement(inp.dst[i], rank)).collect();

    // Every element is held exactly once per replica group, and both local-shape paths agree.
    let mut seen = vec![0usize; shape.iter().product()];
    for r in 0..mesh.size() {
        let c = mesh.coord(r);
        let idx = layout::local_indices(&shape, &mesh, &src, &c);
        let lens: Vec<usize> = idx.iter().map(Vec::len).collect();
        assert_eq!(lens, layout::local_shape(&shape, &mesh, &src, &c), "{mesh_shape:?} {shape:?} {src:?} rank {r}");
        // Count this rank's elements only if it is the first of its replica group.
        let first = src.iter().enumerate().all(|(md, p)| p.is_shard() || c[md] == 0);
        if first && !shape.is_empty() {
            let mut pos = vec![0usize; rank];
            'all: loop {
                if lens.contains(&0) {
                    break;
                }
                let mut off = 0;
                for d in 0..rank {
                    off = off * shape[d] + idx[d][pos[d]];
                }
                seen[off] += 1;
                for d in (0..rank).rev() {
                    pos[d] += 1;
                    if pos[d] < lens[d] {
                        continue 'all;
                    }
                    pos[d] = 0;
                }
                break;
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "{mesh_shape:?} {shape:?} {src:?}: coverage {seen:?}");

    // Plans: every step is legal on its own, and applying them in order ends at the target.
    if let Ok(steps) = plan::plan(&mesh, &src, &dst) {
        let mut cur = src.clone();
        for s in &steps {
            assert_eq!(cur[s.mesh_dim], s.from, "{src:?} -> {dst:?}: step {s} starts elsewhere");
            assert!(
                plan::classify(s.from, s.to).is_ok()
                    || matches!((s.from, s.to), (Placement::StridedShard { .. }, Placement::StridedShard { .. }))
            );
            assert!(!(s.from.is_shard() && s.to.is_partial()), "{src:?} -> {dst:?}: S -> P step");
            cur[s.mesh_dim] = s.to;
        }
        for md in 0..nd {
            if mesh.dim_size(md) > 1 {
                assert_eq!(cur[md], dst[md], "{src:?} -> {dst:?} on {mesh_shape:?}: plan ends at {cur:?}");
            }
        }
    }
});
