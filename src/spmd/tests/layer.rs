//! Replays tests/pytorch/spmd/layer.jsonl (docs/pytorch-checks/spmd_types_layer.py): what
//! spmd_types 0.2.3 does where torchtitan's MoE layer goes beyond the local typing rules:
//! `reinterpret_mesh` between the dense mesh (dp, cp, tp) and the sparse mesh (dp_replicate,
//! efsdp, ep), global mode's sum over sharded token dims, the grouped GEMM's typing, and the
//! `local_map` output boundary.
//!
//! The library names an axis both meshes share by a name of its own choosing (`mesh_ep` for the
//! dense tp's ranks, say); types and messages are compared with every axis name replaced by its
//! rank layout (size, stride).

use serde_json::Value;
use spmd::{Arg, LocalType, OpSpec, STensor, Spmd, SpmdMesh, Ty};
use std::collections::BTreeMap;
use tch::Tensor;

fn lines() -> Vec<Value> {
    let path = format!("{}/../../tests/pytorch/spmd/layer.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().map(|l| serde_json::from_str(l).expect("a json line")).collect()
}

fn shape(v: &Value) -> Vec<usize> {
    v.as_array().expect("a shape").iter().map(|x| x.as_u64().expect("a size") as usize).collect()
}

fn dense(v: &Value) -> SpmdMesh {
    let s = shape(v);
    SpmdMesh::new(&[("dp", s[0]), ("cp", s[1]), ("tp", s[2])]).expect("a mesh")
}

fn sparse(v: &Value) -> SpmdMesh {
    let s = shape(v);
    SpmdMesh::new(&[("dp_replicate", s[0]), ("efsdp", s[1]), ("ep", s[2])]).expect("a mesh")
}

fn ty(s: &str) -> Ty {
    match s {
        "R" => Ty::R,
        "I" => Ty::I,
        "V" => Ty::V,
        "P" => Ty::P,
        _ => panic!("a type: {s}"),
    }
}

/// Every display name of both meshes, with its layout.
fn layouts(ms: &[&SpmdMesh]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = ms
        .iter()
        .flat_map(|m| (0..m.ndim()).map(move |a| (m.shown(a).to_string(), format!("({},{})", m.size(a), m.stride(a)))))
        .collect();
    // Longest names first, so `mesh_dp_replicate` is replaced before `mesh_dp`.
    v.sort_by_key(|a| std::cmp::Reverse(a.0.len()));
    v
}

fn by_layout(text: &str, ms: &[&SpmdMesh]) -> String {
    layouts(ms).iter().fold(text.to_string(), |t, (name, lay)| t.replace(name.as_str(), lay))
}

fn typed(s: &Spmd, types: &Value) -> STensor {
    let pairs: Vec<(String, Arg)> = types
        .as_object()
        .expect("types")
        .iter()
        .map(|(k, v)| (k.clone(), Arg::T(ty(v.as_str().expect("a type")))))
        .collect();
    let refs: Vec<(&str, Arg)> = pairs.iter().map(|(k, a)| (k.as_str(), *a)).collect();
    let locals = (0..s.mesh().ranks()).map(|_| Tensor::zeros([4, 2], (tch::Kind::Float, tch::Device::Cpu))).collect();
    s.tensor(locals, &refs).expect("typed")
}

/// A type as {layout: letter}.
fn shown_type(ty: &LocalType, m: &SpmdMesh) -> BTreeMap<String, String> {
    ty.iter().map(|(a, t)| (format!("({},{})", m.size(*a), m.stride(*a)), t.letter().to_string())).collect()
}

fn recorded_type(v: &Value, ms: &[&SpmdMesh]) -> BTreeMap<String, String> {
    v.as_object()
        .expect("a type")
        .iter()
        .map(|(k, t)| (by_layout(k, ms), t.as_str().expect("a letter").to_string()))
        .collect()
}

#[test]
fn reinterpret_mesh_between_the_dense_and_the_sparse_mesh() {
    let mut n = 0;
    for l in lines().iter().filter(|l| l["case"] == "reinterpret_mesh") {
        let (d, sm) = (dense(&l["dense"]), sparse(&l["sparse"]));
        let s = Spmd::new(d.clone());
        let x = typed(&s, &l["types"]);
        let ms = [&d, &sm];
        match (s.reinterpret_mesh(&x, &sm), l.get("out")) {
            (Ok(y), Some(out)) => assert_eq!(shown_type(&y.ty, &sm), recorded_type(out, &ms), "{l}"),
            (Err(e), None) => {
                assert_eq!(by_layout(e.message(), &ms), by_layout(l["error"].as_str().unwrap(), &ms), "{l}")
            }
            (got, _) => panic!("{l}: ours {:?}", got.map(|y| shown_type(&y.ty, &sm))),
        }
        n += 1;
    }
    assert_eq!(n, 80);
}

#[test]
fn global_sum_over_sharded_token_dims_is_partial() {
    let mut n = 0;
    for l in lines().iter().filter(|l| l["case"] == "sum_sharded") {
        let d = dense(&l["dense"]);
        let mut s = Spmd::new(d.clone());
        let x = typed(&s, &l["types"]);
        // The PartitionSpec torchtitan's layouts give: dp shards dim 0, cp and tp dim 1.
        let shards: Vec<(&str, i64)> = vec![("dp", 0), ("cp", 1), ("tp", 1)];
        let y = s.sum_sharded(&x.detach(), &[0, 1], &shards).expect("typed");
        assert_eq!(shown_type(&y.ty, &d), recorded_type(&l["out"], &[&d]), "{l}");
        n += 1;
    }
    assert_eq!(n, 12);
}

#[test]
fn grouped_mm_typing_in_local_mode() {
    let mut n = 0;
    for l in lines().iter().filter(|l| l["case"] == "grouped_mm") {
        let d = dense(&l["dense"]);
        let s = Spmd::new(d.clone());
        let xs: Vec<STensor> = l["types"].as_array().unwrap().iter().map(|t| typed(&s, t)).collect();
        let tys: Vec<&LocalType> = xs.iter().map(|x| &x.ty).collect();
        match (s.op_type(&OpSpec::nonlinear("_grouped_mm"), &tys), l.get("out")) {
            (Ok(t), Some(out)) => assert_eq!(shown_type(&t, &d), recorded_type(out, &[&d]), "{l}"),
            (Err(e), None) => assert_eq!(e.message(), l["error"].as_str().unwrap(), "{l}"),
            (got, _) => panic!("{l}: ours {got:?}"),
        }
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn local_map_output_boundary_refines_the_declared_type() {
    let mut n = 0;
    for l in lines().iter().filter(|l| l["case"] == "local_map") {
        let d = dense(&l["dense"]);
        let s = Spmd::new(d.clone());
        let mut x = typed(&s, &l["body"]);
        let want = ty(l["declared"]["tp"].as_str().unwrap());
        match (s.stamp(&mut x, &[("tp", Arg::T(want))]), l.get("out")) {
            (Ok(()), Some(out)) => assert_eq!(shown_type(&x.ty, &d), recorded_type(out, &[&d]), "{l}"),
            (Err(e), None) => assert_eq!(e.message(), l["error"].as_str().unwrap(), "{l}"),
            (got, _) => panic!("{l}: ours {got:?}"),
        }
        n += 1;
    }
    assert_eq!(n, 16);
}
