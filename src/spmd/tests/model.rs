//! The model's own promises: gradient types and backward collectives through chains of ops,
//! the uneven all-to-all round trip of a token dispatch, and the checker's rejections.

use spmd::{Spmd, SpmdError, SpmdMesh, Ty, I, P, R, V};
use tch::{Device, Kind, Tensor};

fn mesh(axes: &[(&str, usize)]) -> Spmd {
    Spmd::new(SpmdMesh::new(axes).unwrap())
}

fn rows(n: i64, d: i64, seed: f64) -> Tensor {
    (Tensor::arange(n * d, (Kind::Float, Device::Cpu)) * 0.37 + seed).sin().reshape([n, d])
}

#[test]
fn replicated_weight_gets_a_partial_gradient_without_communication() {
    let mut s = mesh(&[("dp", 2), ("tp", 2)]);
    let x = s.tensor((0..4).map(|r| rows(3, 4, r as f64)).collect(), &[("dp", V), ("tp", V)]).unwrap();
    let w = s.same_on_all(&rows(5, 4, 9.0), &[("dp", R), ("tp", R)]).unwrap();
    let w = s.leaf(w);
    let y = s.linear(&x, &w).unwrap();
    assert_eq!(y.axis_type(0), Some(Ty::V));
    let l = s.sum(&y, &[], false).unwrap();
    let l = s.reinterpret(&l, "dp", V, P, false).unwrap();
    let l = s.reinterpret(&l, "tp", V, P, false).unwrap();
    s.backward(&l, None).unwrap();
    let g = s.grad(&w).unwrap();
    assert_eq!(g.axis_type(0), Some(Ty::P));
    assert_eq!(g.axis_type(1), Some(Ty::P));
    // each rank's gradient is its own rows' column sums: different per rank, summing to the total
    let expect0 = rows(3, 4, 0.0).sum_dim_intlist([0i64].as_slice(), false, Kind::Float).expand([5, 4], false);
    assert!(g.locals[0].allclose(&expect0, 1e-5, 1e-5, false));
    assert!(s.comms().is_empty());
}

#[test]
fn all_reduce_to_invariant_has_an_identity_backward() {
    let mut s = mesh(&[("tp", 2)]);
    let x = s.tensor(vec![rows(2, 3, 0.0), rows(2, 3, 1.0)], &[("tp", P)]).unwrap();
    let x = s.leaf(x);
    let y = s.all_reduce(&x, "tp", P, I).unwrap();
    let l = s.sum(&y, &[], false).unwrap();
    s.backward(&l, None).unwrap();
    let g = s.grad(&x).unwrap();
    assert_eq!(g.axis_type(0), Some(Ty::R));
    assert!(g.locals[0].allclose(&Tensor::ones([2, 3], (Kind::Float, Device::Cpu)), 0.0, 0.0, false));
    let ops: Vec<(&str, bool)> = s.comms().iter().map(|c| (c.op, c.backward)).collect();
    assert_eq!(ops, vec![("all_reduce", false)]);
    // dst=R: the backward all-reduces too
    let mut s = mesh(&[("tp", 2)]);
    let x = s.leaf(s.tensor(vec![rows(2, 3, 0.0), rows(2, 3, 1.0)], &[("tp", P)]).unwrap());
    let y = s.all_reduce(&x, "tp", P, R).unwrap();
    s.backward(&y, Some(vec![rows(2, 3, 5.0), rows(2, 3, 6.0)])).unwrap();
    let ops: Vec<(&str, bool)> = s.comms().iter().map(|c| (c.op, c.backward)).collect();
    assert_eq!(ops, vec![("all_reduce", false), ("all_reduce", true)]);
    let g = s.grad(&x).unwrap();
    assert!(g.locals[1].allclose(&(rows(2, 3, 5.0) + rows(2, 3, 6.0)), 1e-6, 1e-6, false));
}

#[test]
fn uneven_all_to_all_dispatch_and_combine_round_trip() {
    let mut s = mesh(&[("ep", 3)]);
    let send = vec![vec![2, 0, 1], vec![0, 0, 0], vec![1, 3, 2]];
    let xs: Vec<Tensor> = send.iter().enumerate().map(|(r, v)| rows(v.iter().sum(), 2, r as f64)).collect();
    let x = s.leaf(s.tensor(xs.iter().map(|t| t.copy()).collect(), &[("ep", V)]).unwrap());
    let routed = s.all_to_all_uneven(&x, "ep", V, V, &send).unwrap();
    assert_eq!(routed.locals[1].size(), vec![3, 2]);
    let back: Vec<Vec<i64>> = (0..3).map(|r| (0..3).map(|j| send[j][r]).collect()).collect();
    let y = s.all_to_all_uneven(&routed, "ep", V, V, &back).unwrap();
    for (yr, xr) in y.locals.iter().zip(&xs) {
        assert!(yr.equal(xr));
    }
    let g: Vec<Tensor> = xs.iter().map(|t| t.ones_like() * 2.0).collect();
    s.backward(&y, Some(g)).unwrap();
    let gx = s.grad(&x).unwrap();
    for (gr, xr) in gx.locals.iter().zip(&xs) {
        assert!(gr.equal(&(xr.ones_like() * 2.0)));
    }
    assert_eq!(s.comms().len(), 4);
}

#[test]
fn partial_values_are_rejected_by_nonlinear_ops_and_counts_can_be_retyped() {
    let mut s = mesh(&[("dp", 2), ("tp", 2)]);
    let c = s.tensor((0..4).map(|r| rows(1, 4, r as f64)).collect(), &[("dp", P), ("tp", R)]).unwrap();
    let e = s.sigmoid(&c).unwrap_err();
    assert!(matches!(e, SpmdError::Type(_)));
    assert!(e.message().starts_with("Partial type on axis mesh_dp cannot propagate through non-linear ops"));
    let mut c2 = c.clone();
    s.mutate_type(&mut c2, "dp", P, V).unwrap();
    assert_eq!(c2.axis_type(0), Some(Ty::V));
    assert!(s.sigmoid(&c2).is_ok());
    let e = s.mutate_type(&mut c2, "dp", P, V).unwrap_err();
    assert_eq!(
        e.message(),
        "mutate_type: expected current type PerMeshAxisLocalSpmdType.P on axis mesh_dp, got PerMeshAxisLocalSpmdType.V"
    );
}

#[test]
fn shard_past_the_last_chunk_is_the_librarys_index_error() {
    // torch.chunk(3 rows, 4) gives 3 pieces: rank 3's index is past the last one.
    let mut s = mesh(&[("ep", 4)]);
    let w = s.same_on_all(&rows(3, 2, 0.0), &[("ep", I)]).unwrap();
    let e = s.shard(&w, "ep", I, spmd::S(0)).unwrap_err();
    assert_eq!((e.kind(), e.message()), ("IndexError", "tuple index out of range"));
    // Four rows: every rank keeps its own.
    let w = s.same_on_all(&rows(4, 2, 0.0), &[("ep", I)]).unwrap();
    let got = s.shard(&w, "ep", I, spmd::S(0)).unwrap();
    assert_eq!(got.axis_type(0), Some(Ty::V));
    assert!(got.locals[3].equal(&rows(4, 2, 0.0).narrow(0, 3, 1)));
    assert!(s.comms().is_empty());
    let e = s.shard(&w, "ep", I, V).unwrap_err();
    assert_eq!(e, SpmdError::Value("shard dst must be S(i), got PerMeshAxisLocalSpmdType.V".into()));
    // An empty dim chunks into as many empty pieces as asked (torch.chunk): no error.
    let w = s.same_on_all(&rows(0, 2, 0.0), &[("ep", I)]).unwrap();
    assert!(s.shard(&w, "ep", I, spmd::S(0)).is_ok());
}

#[test]
fn rank_local_ops_raise_torchs_errors_from_the_first_failing_rank() {
    let mut s = mesh(&[("tp", 2)]);
    // topk past the dim's size: torch's text on plain tensors.
    let x = s.tensor(vec![rows(2, 3, 0.0), rows(2, 3, 1.0)], &[("tp", V)]).unwrap();
    let e = s.topk(&x, 4, -1).unwrap_err();
    assert_eq!(e, SpmdError::Runtime("selected index k out of range".into()));
    // A view to a shape the element count does not fit.
    let c = s.tensor(vec![rows(1, 3, 0.0).reshape([3]), rows(1, 3, 1.0).reshape([3])], &[("tp", V)]).unwrap();
    let e = s.view(&c, &[2, -1]).unwrap_err();
    assert_eq!(e, SpmdError::Runtime("shape '[2, -1]' is invalid for input of size 3".into()));
    // An add whose shapes differ on rank 1 only: rank 1's error (rank 0 ran).
    let a = s.tensor(vec![rows(2, 3, 0.0).unsqueeze(0), rows(4, 3, 0.0).unsqueeze(0)], &[("tp", V)]).unwrap();
    let b = s.tensor(vec![rows(2, 3, 1.0).unsqueeze(0), rows(3, 3, 1.0).unsqueeze(0)], &[("tp", V)]).unwrap();
    let e = s.add(&a, &b).unwrap_err();
    assert_eq!(
        (e.kind(), e.message()),
        ("RuntimeError", "The size of tensor a (4) must match the size of tensor b (3) at non-singleton dimension 1")
    );
    // The checker's error comes first.
    let p = s.tensor(vec![rows(2, 3, 0.0), rows(2, 3, 1.0)], &[("tp", P)]).unwrap();
    assert_eq!(s.topk(&p, 4, -1).unwrap_err().kind(), "SpmdTypeError");
}
