//! `shape` verdicts keyed `local_layout`: every rank's local piece of every output must be the
//! piece torch.chunk gives it. PyTorch's rule (`_utils._compute_local_shape_and_global_offset`,
//! `Shard._split_tensor`, `_StridedShard._split_tensor`): mesh dims left to right, each `S(d)`
//! chunks what the dims before it left of tensor dim d with `torch.chunk` (ceil-sized pieces,
//! missing pieces empty), each `_S(d, sf)` chunks it into `sf` pieces, chunks each of those and
//! concatenates every piece's chunk; Replicate and Partial keep the whole dim.
//!
//! The layout here is computed apart from the model's own (`placement::layout`, which the
//! simulated DTensor uses to distribute, gather and shape its locals): it chunks an `arange` of
//! every tensor dim with libtorch's `chunk`, and takes rank coordinates row-major from the mesh
//! shape. A layout mistake the model makes everywhere at once gathers back to the right values
//! and passes every other oracle; here it shows as a local of the wrong shape, or (a mistake
//! that keeps the shapes) as a local whose elements the model's gather puts elsewhere than
//! torch.chunk's piece.

use super::{Class, Judgement, Verdict};
use crate::run::Named;
use dtensor::redistribute::redistribute_quiet;
use dtensor::{local, DTensor};
use placement::{short_list, Placement};
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// Row-major coordinates of `rank` in a mesh of `shape` (`init_device_mesh`'s arange layout).
fn coords(shape: &[usize], rank: usize) -> Vec<usize> {
    let mut c = vec![0; shape.len()];
    let mut r = rank;
    for d in (0..shape.len()).rev() {
        c[d] = r % shape[d];
        r /= shape[d];
    }
    c
}

/// Piece `k` of `torch.chunk(t, n)`, empty when chunk returns fewer than `k + 1` pieces.
fn piece(t: &Tensor, n: usize, k: usize) -> Tensor {
    if t.size()[0] == 0 {
        return t.shallow_clone();
    }
    let pieces = t.chunk(n as i64, 0);
    match pieces.get(k) {
        Some(p) => p.shallow_clone(),
        None => t.narrow(0, 0, 0),
    }
}

/// The global indices a rank at `coord` holds along each tensor dim, in local order.
pub fn held(global: &[usize], mesh_shape: &[usize], placements: &[Placement], coord: &[usize]) -> Vec<Tensor> {
    let mut idx: Vec<Tensor> = global.iter().map(|&s| Tensor::arange(s as i64, (Kind::Int64, Device::Cpu))).collect();
    for (md, p) in placements.iter().enumerate() {
        let (n, k) = (mesh_shape[md], coord[md]);
        match *p {
            Placement::Shard(d) => idx[d as usize] = piece(&idx[d as usize], n, k),
            Placement::StridedShard { dim, sf } => {
                let cur = &idx[dim as usize];
                let parts: Vec<Tensor> = if cur.size()[0] == 0 {
                    vec![cur.shallow_clone()]
                } else {
                    cur.chunk(sf as i64, 0).iter().map(|pc| piece(pc, n, k)).collect()
                };
                idx[dim as usize] = Tensor::cat(&parts, 0);
            }
            Placement::Replicate | Placement::Partial(_) | Placement::MaskPartial { .. } => {}
        }
    }
    idx
}

/// Piece `k` of `torch.chunk` of `v` into `n`: ceil-sized pieces, empty past the last one
/// (the arithmetic of [`piece`], on plain indices; a test holds the two together).
fn piece_ix(v: &[usize], n: usize, k: usize) -> Vec<usize> {
    let c = v.len().div_ceil(n.max(1));
    match k.checked_mul(c) {
        Some(start) if start < v.len() => v[start..(start + c).min(v.len())].to_vec(),
        _ => Vec::new(),
    }
}

/// [`held`] on plain indices: what the oracle uses per case (libtorch calls on tiny index
/// tensors cost more than the rest of the oracle).
pub fn held_ix(global: &[usize], mesh_shape: &[usize], placements: &[Placement], coord: &[usize]) -> Vec<Vec<usize>> {
    let mut idx: Vec<Vec<usize>> = global.iter().map(|&s| (0..s).collect()).collect();
    for (md, p) in placements.iter().enumerate() {
        let (n, k) = (mesh_shape[md], coord[md]);
        match *p {
            Placement::Shard(d) => idx[d as usize] = piece_ix(&idx[d as usize], n, k),
            Placement::StridedShard { dim, sf } => {
                let cur = &idx[dim as usize];
                let c = cur.len().div_ceil(sf.max(1));
                idx[dim as usize] =
                    if cur.is_empty() { Vec::new() } else { cur.chunks(c).flat_map(|pc| piece_ix(pc, n, k)).collect() };
            }
            Placement::Replicate | Placement::Partial(_) | Placement::MaskPartial { .. } => {}
        }
    }
    idx
}

/// The elements of `full` at the given indices per dim.
fn select(full: &Tensor, idx: &[Tensor]) -> Tensor {
    let mut t = full.to_device(Device::Cpu);
    for (d, ix) in idx.iter().enumerate() {
        t = t.index_select(d as i64, ix);
    }
    t
}

fn as_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).unwrap_or_default()
}

/// Bitwise-equal elements (NaN equal to NaN): the gather only moves bits.
fn same_elements(a: &Tensor, b: &Tensor) -> bool {
    same_values(&as_f64(a), &as_f64(b))
}

fn same_values(x: &[f64], y: &[f64]) -> bool {
    x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
}

/// `local` holds exactly the elements of `full` at `idx` (per dim), row-major: [`select`] and
/// [`same_elements`] on plain values. `full` must have the shape the indices were taken from.
fn holds_piece(local: &Tensor, full: &Tensor, idx: &[Vec<usize>]) -> bool {
    let (x, f) = (as_f64(local), as_f64(full));
    let want: usize = idx.iter().map(Vec::len).product();
    if x.len() != want || idx.is_empty() {
        return x.len() == want && same_values(&x, &f[..want.min(f.len())]);
    }
    let mut strides = vec![1usize; idx.len()];
    let dims = local::shape(full);
    for d in (0..idx.len() - 1).rev() {
        strides[d] = strides[d + 1] * dims[d + 1];
    }
    let mut at = vec![0usize; idx.len()];
    for &v in &x {
        let flat: usize = (0..idx.len()).map(|d| idx[d][at[d]] * strides[d]).sum();
        let e = f[flat];
        if !(v == e || (v.is_nan() && e.is_nan())) {
            return false;
        }
        for d in (0..idx.len()).rev() {
            at[d] += 1;
            if at[d] < idx[d].len() {
                break;
            }
            at[d] = 0;
        }
    }
    true
}

/// The first rank whose local is not its torch.chunk piece: (rank, what differs). Leaves the
/// gathered tensor it built (rank 0's copy) in `gathered` for the value oracle.
fn first_misplaced(d: &DTensor, gathered: &mut Option<Tensor>) -> Option<(usize, String, Vec<Vec<usize>>)> {
    let mesh_shape = d.mesh.shape().to_vec();
    let want: Vec<Vec<Vec<usize>>> = (0..d.mesh.size())
        .map(|r| held_ix(d.shape_of(r), &mesh_shape, &d.placements, &coords(&mesh_shape, r)))
        .collect();
    let shapes: Vec<Vec<usize>> = want.iter().map(|w| w.iter().map(Vec::len).collect()).collect();
    for (r, s) in shapes.iter().enumerate() {
        let got = local::shape(&d.locals[r]);
        if got != *s {
            let why = format!("rank {r} holds a {got:?} local where torch.chunk gives {s:?}");
            return Some((r, why, shapes));
        }
    }
    // Elements: only where the pieces are whole values (no Partial) of one agreed global shape.
    // Each rank's global tensor is what its own fibers gather (replicas that disagree are not a
    // layout matter), and its local must sit where torch.chunk puts it in that tensor.
    let sharded = d.placements.iter().any(|p| p.is_shard());
    if !sharded || d.rank_shapes.is_some() || d.placements.iter().any(|p| p.is_partial()) {
        return None;
    }
    let full = redistribute_quiet(d, &vec![Placement::Replicate; d.placements.len()]).ok()?;
    *gathered = full.locals.first().map(Tensor::shallow_clone);
    for (r, w) in want.iter().enumerate() {
        let same = if local::shape(&full.locals[r]) == d.shape_of(r) {
            holds_piece(&d.locals[r], &full.locals[r], w)
        } else {
            let ix: Vec<Tensor> = w.iter().map(|v| Tensor::from_slice(&to_i64(v))).collect();
            same_elements(&d.locals[r], &select(&full.locals[r], &ix))
        };
        if !same {
            let first: Vec<i64> = w.iter().map(|v| v.first().map_or(-1, |&i| i as i64)).collect();
            let why = format!("rank {r} holds other elements than torch.chunk's piece (which starts at {first:?})");
            return Some((r, why, shapes));
        }
    }
    None
}

fn to_i64(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&i| i as i64).collect()
}

/// One `local_layout` verdict per output whose locals are not torch.chunk's pieces.
pub fn check(s: &Named<DTensor>, j: &mut Judgement) {
    for (name, d) in s.iter() {
        let mut gathered = None;
        let misplaced = first_misplaced(d, &mut gathered);
        if let Some(t) = gathered {
            j.gathered.put(name, t);
        }
        let Some((_, why, want)) = misplaced else { continue };
        j.verdicts.push(Verdict {
            class: Class::Shape,
            output: Some(name.into()),
            expected: json!(want),
            actual: json!(d.local_shapes()),
            detail: format!("{why} ({} of global {:?})", short_list(&d.placements), d.shape),
            key: "local_layout".into(),
            backward: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use placement::Mesh;
    use std::sync::Arc;

    /// Every kind of placement the layout oracle reads, strided shards included.
    const PLACEMENTS: [Placement; 5] = [
        Placement::Replicate,
        Placement::Shard(0),
        Placement::Shard(1),
        Placement::StridedShard { dim: 0, sf: 2 },
        Placement::StridedShard { dim: 1, sf: 3 },
    ];

    fn ints(t: &Tensor) -> Vec<i64> {
        Vec::<i64>::try_from(t).unwrap()
    }

    #[test]
    fn chunks_are_torch_chunk_pieces_nested_left_to_right() {
        // 5 over 4: torch.chunk gives 2, 2, 1 and an empty fourth piece.
        let got: Vec<Vec<i64>> = (0..4).map(|k| ints(&held(&[5], &[4], &[Placement::Shard(0)], &[k])[0])).collect();
        assert_eq!(got, vec![vec![0, 1], vec![2, 3], vec![4], vec![]]);
        // The spec's worked example: [2, 5] on (2, 2) with (S(1), S(1)): offsets 0, 2, 3, 4.
        let p = [Placement::Shard(1), Placement::Shard(1)];
        let firsts: Vec<Vec<i64>> = (0..4).map(|r| ints(&held(&[2, 5], &[2, 2], &p, &coords(&[2, 2], r))[1])).collect();
        assert_eq!(firsts, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        // _S(0, 2) over 2 on 6 rows: pieces [0,1,2] and [3,4,5], each chunked: rank 0 [0,1,3,4].
        let s = [Placement::StridedShard { dim: 0, sf: 2 }];
        assert_eq!(ints(&held(&[6], &[2], &s, &[0])[0]), vec![0, 1, 3, 4]);
        assert_eq!(ints(&held(&[6], &[2], &s, &[1])[0]), vec![2, 5]);
        assert_eq!(coords(&[2, 3], 4), vec![1, 1]);
    }

    #[test]
    fn plain_indices_are_libtorchs_chunks() {
        let ps = PLACEMENTS;
        for mesh_shape in [vec![3], vec![4], vec![2, 3], vec![3, 2, 2]] {
            for a in 0..ps.len().pow(mesh_shape.len() as u32) {
                let pl: Vec<Placement> =
                    (0..mesh_shape.len()).map(|i| ps[a / ps.len().pow(i as u32) % ps.len()]).collect();
                for global in [[0usize, 5], [7, 4], [1, 12], [5, 0], [13, 9]] {
                    for r in 0..mesh_shape.iter().product() {
                        let c = coords(&mesh_shape, r);
                        let lib: Vec<Vec<i64>> = held(&global, &mesh_shape, &pl, &c).iter().map(ints).collect();
                        let plain: Vec<Vec<i64>> =
                            held_ix(&global, &mesh_shape, &pl, &c).iter().map(|v| to_i64(v)).collect();
                        assert_eq!(lib, plain, "{global:?} {pl:?} rank {r}");
                    }
                }
            }
        }
    }

    #[test]
    fn plain_element_check_is_select_and_compare() {
        let full = Tensor::arange(35, (Kind::Float, Device::Cpu)).view([5, 7]);
        let idx = vec![vec![1usize, 3], vec![0usize, 4, 6]];
        let ix: Vec<Tensor> = idx.iter().map(|v| Tensor::from_slice(&to_i64(v))).collect();
        let piece = select(&full, &ix);
        assert!(holds_piece(&piece, &full, &idx));
        let other = piece.copy();
        let _ = other.get(1).get(2).fill_(-1.0);
        assert!(!holds_piece(&other, &full, &idx));
        assert!(holds_piece(&full.narrow(0, 0, 0), &full, &[vec![], vec![0]]));
    }

    #[test]
    fn agrees_with_the_models_layout_on_small_cases() {
        use placement::layout::local_indices;
        let ps = PLACEMENTS;
        for mesh_shape in [vec![3], vec![2, 3], vec![2, 1, 2]] {
            let mesh = Mesh::new(mesh_shape.clone(), (0..mesh_shape.len()).map(|i| format!("m{i}")).collect()).unwrap();
            for a in 0..ps.len().pow(mesh_shape.len() as u32) {
                let pl: Vec<Placement> =
                    (0..mesh_shape.len()).map(|i| ps[a / ps.len().pow(i as u32) % ps.len()]).collect();
                for global in [[0usize, 5], [7, 4], [1, 12]] {
                    for r in 0..mesh.size() {
                        let mine: Vec<Vec<i64>> =
                            held(&global, &mesh_shape, &pl, &coords(&mesh_shape, r)).iter().map(ints).collect();
                        let model = local_indices(&global, &mesh, &pl, &mesh.coord(r));
                        let model: Vec<Vec<i64>> =
                            model.iter().map(|v| v.iter().map(|&i| i as i64).collect()).collect();
                        assert_eq!(mine, model, "{global:?} {pl:?} rank {r}");
                    }
                }
            }
        }
    }

    fn outputs(d: &DTensor) -> Named<DTensor> {
        let names = ["topk_scores", "topk_ids", "scores", "routing_map", "counts"];
        Named(names.iter().map(|n| (n.to_string(), d.clone())).collect())
    }

    #[test]
    fn a_local_of_the_wrong_shape_or_elements_is_a_verdict() {
        let mesh = Arc::new(Mesh::new(vec![3], vec!["tp".into()]).unwrap());
        let global = Tensor::arange(7, (Kind::Float, Device::Cpu));
        let good = DTensor::distribute(&global, &mesh, &[Placement::Shard(0)]).unwrap();
        let mut j = Judgement::default();
        check(&outputs(&good), &mut j);
        assert!(j.verdicts.is_empty(), "{:?}", j.verdicts);
        // np.array_split's 3, 2, 2 instead of torch.chunk's 3, 3, 1: gathers back to the same values.
        let split = vec![global.narrow(0, 0, 3), global.narrow(0, 3, 2), global.narrow(0, 5, 2)];
        let bad = good.with_locals(split);
        assert!(bad.full_tensor().unwrap().equal(&global));
        let mut j = Judgement::default();
        check(&outputs(&bad), &mut j);
        assert_eq!(j.verdicts.len(), 5);
        let v = &j.verdicts[0];
        assert_eq!((v.class, v.key.as_str()), (Class::Shape, "local_layout"));
        assert_eq!(v.expected, json!([[3], [3], [1]]));
        assert!(v.detail.contains("rank 1 holds a [2] local where torch.chunk gives [3]"), "{}", v.detail);
    }
}
