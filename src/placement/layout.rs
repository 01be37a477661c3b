//! Where each rank's piece of a global tensor sits: torch.chunk semantics, nesting of several
//! mesh dims on one tensor dim (left to right), `_StridedShard`, and what `from_local` infers.
//!
//! Every function takes placements already normalised ([`super::normalize_all`]).

use super::{Mesh, Placement};

/// torch.chunk of `size` into `n` pieces, piece `idx`: `(length, offset)`.
/// Chunks are `ceil(size / n)` long; the last pieces are shorter or empty, and an empty piece
/// past the end reports offset `size` (PyTorch's `local_shard_size_and_offset`).
pub fn chunk(size: usize, n: usize, idx: usize) -> (usize, usize) {
    if planted_array_split() {
        let (q, r) = (size / n, size % n);
        return (q + usize::from(idx < r), idx * q + idx.min(r));
    }
    let full = size.div_ceil(n);
    let start = full * idx;
    if start > size {
        return (0, size);
    }
    ((start + full).min(size) - start, start)
}

/// The planted mutant `chunk-array-split` (listed, checked and announced with the others in the
/// simulated DTensor's `plant.rs`; this module reads the same variable itself because it stays
/// free of the simulator). Inert unless `SHARDFUZZ_PLANT` names it; one cached lookup.
fn planted_array_split() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("SHARDFUZZ_PLANT").is_ok_and(|v| v == "chunk-array-split"))
}

/// The lengths of all `n` chunks of `size`: 5 over 4 gives [2, 2, 1, 0].
pub fn chunk_sizes(size: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| chunk(size, n, i).0).collect()
}

/// Positions (into `cur`) that piece `idx` of a `_StridedShard` split keeps: chunk `cur` into
/// `sf` pieces, chunk each of those over `n`, and concatenate every piece's `idx`-th chunk.
fn strided_positions(len: usize, n: usize, idx: usize, sf: usize) -> Vec<usize> {
    let mut out = Vec::new();
    for j in 0..sf {
        let (plen, poff) = chunk(len, sf, j);
        let (clen, coff) = chunk(plen, n, idx);
        out.extend((0..clen).map(|k| poff + coff + k));
    }
    out
}

/// For a rank at `coord`, the global indices it holds along every tensor dim, in local order.
/// Mesh dims apply left to right, each splitting what the dims before it left.
pub fn local_indices(global: &[usize], mesh: &Mesh, placements: &[Placement], coord: &[usize]) -> Vec<Vec<usize>> {
    let mut idx: Vec<Vec<usize>> = global.iter().map(|&s| (0..s).collect()).collect();
    for (md, p) in placements.iter().enumerate() {
        let n = mesh.dim_size(md);
        match *p {
            Placement::Shard(d) => {
                let cur = &mut idx[d as usize];
                let (len, off) = chunk(cur.len(), n, coord[md]);
                *cur = cur[off.min(cur.len())..off.min(cur.len()) + len].to_vec();
            }
            Placement::StridedShard { dim, sf } => {
                let cur = &mut idx[dim as usize];
                *cur = strided_positions(cur.len(), n, coord[md], sf).into_iter().map(|i| cur[i]).collect();
            }
            Placement::Replicate | Placement::Partial(_) | Placement::MaskPartial { .. } => {}
        }
    }
    idx
}

/// The local shape of a rank at `coord`. Cheaper than [`local_indices`]: sizes only.
pub fn local_shape(global: &[usize], mesh: &Mesh, placements: &[Placement], coord: &[usize]) -> Vec<usize> {
    let mut shape = global.to_vec();
    for (md, p) in placements.iter().enumerate() {
        let n = mesh.dim_size(md);
        match *p {
            Placement::Shard(d) => shape[d as usize] = chunk(shape[d as usize], n, coord[md]).0,
            Placement::StridedShard { dim, sf } => {
                let s = shape[dim as usize];
                shape[dim as usize] = (0..sf).map(|j| chunk(chunk(s, sf, j).0, n, coord[md]).0).sum();
            }
            _ => {}
        }
    }
    shape
}

/// Local shapes of every rank, in rank order.
pub fn local_shapes(global: &[usize], mesh: &Mesh, placements: &[Placement]) -> Vec<Vec<usize>> {
    (0..mesh.size()).map(|r| local_shape(global, mesh, placements, &mesh.coord(r))).collect()
}

/// Local shape and global offset per tensor dim (meaningful for plain `Shard` layouts, where
/// each local piece is contiguous).
pub fn local_shape_and_offset(
    global: &[usize],
    mesh: &Mesh,
    placements: &[Placement],
    coord: &[usize],
) -> (Vec<usize>, Vec<usize>) {
    let idx = local_indices(global, mesh, placements, coord);
    let shape = idx.iter().map(Vec::len).collect();
    let off = idx.iter().zip(global).map(|(v, &g)| v.first().copied().unwrap_or(g)).collect();
    (shape, off)
}

/// How many pieces each tensor dim is cut into (product of the sizes of the mesh dims that
/// shard it).
pub fn shard_counts(mesh: &Mesh, placements: &[Placement], ndim: usize) -> Vec<usize> {
    shard_counts_on(mesh.shape(), placements, ndim)
}

/// `shard_counts` on a mesh given by its shape, for placements as a case file writes them
/// (negative shard dims count from the end; dims out of range are ignored).
pub fn shard_counts_on(mesh_shape: &[usize], placements: &[Placement], ndim: usize) -> Vec<usize> {
    let mut c = vec![1; ndim];
    for (p, &n) in placements.iter().zip(mesh_shape) {
        if let Some(d) = p.shard_dim() {
            let d = if d < 0 { d + ndim as i64 } else { d };
            if let Some(x) = usize::try_from(d).ok().and_then(|d| c.get_mut(d)) {
                *x *= n;
            }
        }
    }
    c
}

/// PyTorch's `is_tensor_shardable`: every sharded dim is at least as long as its shard count.
/// Uneven is fine; this does not promise that no rank is empty (6 over 4 gives [2, 2, 2, 0]).
/// A `_StridedShard(d, sf)` also needs the dim to be at least `sf` times the shard count so far
/// (mesh dims left to right, this one included): `_ops/utils.py` `is_tensor_shardable`, the same
/// in 2.12.1, 2.13.0 and 2.14.0. So a flattened `(B*L)` with `_S(0,B)` over more ranks than
/// `L` is not shardable and an `mm` keeping it is dropped (crosscheck case-1-000031).
pub fn is_shardable(global: &[usize], mesh: &Mesh, placements: &[Placement]) -> bool {
    let mut counts = vec![1usize; global.len()];
    for (md, p) in placements.iter().enumerate() {
        let Some(d) = p.shard_dim() else { continue };
        let Some(&g) = global.get(d as usize) else { return false };
        counts[d as usize] *= mesh.dim_size(md);
        let sf = match *p {
            Placement::StridedShard { sf, .. } => sf,
            _ => 1,
        };
        if g < counts[d as usize] * sf {
            return false;
        }
    }
    true
}

/// True when every sharded dim splits evenly over its shard count.
pub fn is_even(global: &[usize], mesh: &Mesh, placements: &[Placement]) -> bool {
    shard_counts(mesh, placements, global.len()).iter().zip(global).all(|(&c, &g)| g % c == 0)
}

/// The global shape `DTensor.from_local` infers without `shape=`: each sharded dim's local
/// size times its mesh dim sizes, as if every shard were as long as this rank's.
pub fn from_local_global_shape(local: &[usize], mesh: &Mesh, placements: &[Placement]) -> Vec<usize> {
    let mut g = local.to_vec();
    for (md, p) in placements.iter().enumerate() {
        if let Some(d) = p.shard_dim() {
            g[d as usize] *= mesh.dim_size(md);
        }
    }
    g
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Placement::*;

    fn mesh2x2() -> Mesh {
        Mesh::new(vec![2, 2], vec!["dp".into(), "tp".into()]).unwrap()
    }

    #[test]
    fn chunk_follows_torch_chunk() {
        assert_eq!(chunk_sizes(5, 4), vec![2, 2, 1, 0]);
        assert_eq!(chunk_sizes(6, 4), vec![2, 2, 2, 0]);
        assert_eq!(chunk_sizes(3, 4), vec![1, 1, 1, 0]);
        assert_eq!(chunk_sizes(1, 2), vec![1, 0]);
        assert_eq!(chunk_sizes(8, 4), vec![2, 2, 2, 2]);
        assert_eq!(chunk_sizes(0, 3), vec![0, 0, 0]);
        // An empty chunk past the end reports offset = size.
        assert_eq!(chunk(1, 4, 3), (0, 1));
        assert_eq!(chunk(5, 4, 3), (0, 5));
    }

    #[test]
    fn nested_uneven_sharding_is_not_a_flat_chunk() {
        // the worked example of PyTorch's `_compute_local_shape_and_global_offset`: [2,5] over mesh (2,2) with (S(1),S(1)).
        let m = mesh2x2();
        let ps = [Shard(1), Shard(1)];
        let shapes = local_shapes(&[2, 5], &m, &ps);
        assert_eq!(shapes, vec![vec![2, 2], vec![2, 1], vec![2, 1], vec![2, 1]]);
        let offs: Vec<usize> = (0..4).map(|r| local_shape_and_offset(&[2, 5], &m, &ps, &m.coord(r)).1[1]).collect();
        assert_eq!(offs, vec![0, 2, 3, 4]);
    }

    #[test]
    fn strided_shard_matches_the_docstring_example() {
        // [8] rows, mesh (2,2), (_S(0,2), S(0)): rank0 rows 0-1, rank1 4-5, rank2 2-3, rank3 6-7.
        let m = mesh2x2();
        let ps = [StridedShard { dim: 0, sf: 2 }, Shard(0)];
        let rows: Vec<Vec<usize>> = (0..4).map(|r| local_indices(&[8], &m, &ps, &m.coord(r))[0].clone()).collect();
        assert_eq!(rows, vec![vec![0, 1], vec![4, 5], vec![2, 3], vec![6, 7]]);
        // S(0), _S(0,2) on 8 gives {0,2}, {1,3}, {4,6}, {5,7}.
        let ps = [Shard(0), StridedShard { dim: 0, sf: 2 }];
        let rows: Vec<Vec<usize>> = (0..4).map(|r| local_indices(&[8], &m, &ps, &m.coord(r))[0].clone()).collect();
        assert_eq!(rows, vec![vec![0, 2], vec![1, 3], vec![4, 6], vec![5, 7]]);
    }

    #[test]
    fn flattening_a_sharded_inner_dim_is_a_strided_shard() {
        // (B=2, L=5) S(1) over 2 flattened to 10 rows is _S(0, sf=2): rank0 holds (b, l<3).
        let m = Mesh::tp(2);
        let rows = local_indices(&[10], &m, &[StridedShard { dim: 0, sf: 2 }], &[0])[0].clone();
        assert_eq!(rows, vec![0, 1, 2, 5, 6, 7]);
        assert_eq!(local_shape(&[10], &m, &[StridedShard { dim: 0, sf: 2 }], &[1]), vec![4]);
    }

    #[test]
    fn local_shape_agrees_with_local_indices() {
        let m = Mesh::new(vec![2, 3], vec!["a".into(), "b".into()]).unwrap();
        for ps in [
            [Shard(0), Shard(0)],
            [Shard(1), Shard(0)],
            [StridedShard { dim: 0, sf: 3 }, Shard(0)],
            [Replicate, StridedShard { dim: 1, sf: 2 }],
        ] {
            for g in [[7usize, 5], [1, 1], [12, 6], [0, 4]] {
                for r in 0..6 {
                    let c = m.coord(r);
                    let idx = local_indices(&g, &m, &ps, &c);
                    let lens: Vec<usize> = idx.iter().map(Vec::len).collect();
                    assert_eq!(lens, local_shape(&g, &m, &ps, &c), "{ps:?} {g:?} rank {r}");
                }
            }
        }
    }

    #[test]
    fn shards_partition_the_tensor() {
        // Every global index is held by exactly one rank per replica group.
        let m = Mesh::new(vec![2, 3], vec!["a".into(), "b".into()]).unwrap();
        let ps = [Shard(0), Shard(0)];
        let mut seen = vec![0; 7];
        for r in 0..6 {
            for i in &local_indices(&[7], &m, &ps, &m.coord(r))[0] {
                seen[*i] += 1;
            }
        }
        assert_eq!(seen, vec![1; 7]);
    }

    #[test]
    fn shardability_and_from_local() {
        let m = Mesh::tp(2);
        assert!(is_shardable(&[2, 5, 8], &m, &[Shard(1)]));
        assert!(!is_shardable(&[2, 1, 8], &m, &[Shard(1)]));
        assert!(!is_even(&[2, 5, 8], &m, &[Shard(1)]));
        // local_map re-wrap of L=5 over 2: rank0 (2,3,8) -> (2,6,8), rank1 (2,2,8) -> (2,4,8).
        assert_eq!(from_local_global_shape(&[2, 3, 8], &m, &[Shard(1)]), vec![2, 6, 8]);
        assert_eq!(from_local_global_shape(&[2, 2, 8], &m, &[Shard(1)]), vec![2, 4, 8]);
        let m2 = mesh2x2();
        assert!(!is_shardable(&[3], &m2, &[Shard(0), Shard(0)]));
        assert!(is_shardable(&[4], &m2, &[Shard(0), Shard(0)]));
    }
}
