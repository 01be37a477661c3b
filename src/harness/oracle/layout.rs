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

fn lens(idx: &[Tensor]) -> Vec<usize> {
    idx.iter().map(|t| t.size()[0] as usize).collect()
}

/// The elements of `full` at the given indices per dim.
fn select(full: &Tensor, idx: &[Tensor]) -> Tensor {
    let mut t = full.to_device(Device::Cpu);
    for (d, ix) in idx.iter().enumerate() {
        t = t.index_select(d as i64, ix);
    }
    t
}

/// Bitwise-equal elements (NaN equal to NaN): the gather only moves bits.
fn same_elements(a: &Tensor, b: &Tensor) -> bool {
    let f = |t: &Tensor| -> Vec<f64> {
        Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).unwrap_or_default()
    };
    let (x, y) = (f(a), f(b));
    x.len() == y.len() && x.iter().zip(&y).all(|(p, q)| p == q || (p.is_nan() && q.is_nan()))
}

/// The first rank whose local is not its torch.chunk piece: (rank, what differs).
fn first_misplaced(d: &DTensor) -> Option<(usize, String, Vec<Vec<usize>>)> {
    let mesh_shape = d.mesh.shape().to_vec();
    let want: Vec<Vec<Tensor>> =
        (0..d.mesh.size()).map(|r| held(d.shape_of(r), &mesh_shape, &d.placements, &coords(&mesh_shape, r))).collect();
    let shapes: Vec<Vec<usize>> = want.iter().map(|w| lens(w)).collect();
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
    for (r, w) in want.iter().enumerate() {
        if !same_elements(&d.locals[r], &select(&full.locals[r], w)) {
            let first: Vec<i64> = w.iter().map(|t| if t.size()[0] > 0 { t.int64_value(&[0]) } else { -1 }).collect();
            let why = format!("rank {r} holds other elements than torch.chunk's piece (which starts at {first:?})");
            return Some((r, why, shapes));
        }
    }
    None
}

/// One `local_layout` verdict per output whose locals are not torch.chunk's pieces.
pub fn check(s: &Named<DTensor>, j: &mut Judgement) {
    for (name, d) in s.iter() {
        let Some((_, why, want)) = first_misplaced(d) else { continue };
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
    fn agrees_with_the_models_layout_on_small_cases() {
        use placement::layout::local_indices;
        let ps = [
            Placement::Replicate,
            Placement::Shard(0),
            Placement::Shard(1),
            Placement::StridedShard { dim: 0, sf: 2 },
            Placement::StridedShard { dim: 1, sf: 3 },
        ];
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
