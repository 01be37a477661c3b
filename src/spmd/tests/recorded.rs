//! Replays every outcome recorded from the real spmd_types 0.2.3 (docs/pytorch-checks/
//! spmd_types_rules.py, tests/pytorch/spmd/*.jsonl): output types and checker messages of
//! rank-local ops, values / types / gradients / collectives of every collective and
//! conversion, and the texts of invalid calls.

use serde_json::Value;
use spmd::{Arg, STensor, Spmd, SpmdError, SpmdMesh};
use std::collections::BTreeMap;
use tch::{Kind, Tensor};

fn lines(name: &str) -> Vec<Value> {
    let path = format!("{}/../../tests/pytorch/spmd/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn mesh_of(v: &Value) -> Spmd {
    let axes: Vec<(String, usize)> = v["mesh"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a[0].as_str().unwrap().to_string(), a[1].as_u64().unwrap() as usize))
        .collect();
    let refs: Vec<(&str, usize)> = axes.iter().map(|(n, s)| (n.as_str(), *s)).collect();
    Spmd::new(SpmdMesh::new(&refs).unwrap())
}

fn types_of(v: &Value) -> Vec<(String, Arg)> {
    v.as_object().unwrap().iter().map(|(k, t)| (k.clone(), Arg::parse(t.as_str().unwrap()).unwrap())).collect()
}

fn as_refs(t: &[(String, Arg)]) -> Vec<(&str, Arg)> {
    t.iter().map(|(n, a)| (n.as_str(), *a)).collect()
}

/// The type as the library prints it: display name -> letter.
fn shown(s: &Spmd, x: &STensor) -> BTreeMap<String, String> {
    x.ty.iter().map(|(a, t)| (s.mesh().shown(*a).to_string(), t.letter().to_string())).collect()
}

fn expected_type(v: &Value) -> BTreeMap<String, String> {
    v.as_object().unwrap().iter().map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string())).collect()
}

fn tensor_of(vals: &Value, shape: &Value) -> Tensor {
    let data: Vec<f32> = vals.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    Tensor::from_slice(&data).reshape(shape.as_slice())
}

fn per_rank(vals: &Value, shapes: &Value) -> Vec<Tensor> {
    vals.as_array().unwrap().iter().zip(shapes.as_array().unwrap()).map(|(v, s)| tensor_of(v, s)).collect()
}

fn close(a: &Tensor, vals: &Value, shape: &Value, what: &str) {
    let b = tensor_of(vals, shape);
    assert_eq!(a.size(), b.size(), "{what}: shape");
    let a = a.to_kind(Kind::Float);
    assert!(a.allclose(&b, 1e-5, 1e-5, false), "{what}: values\n{a}\nvs\n{b}");
}

// ------------------------------------------------------------------------------------------
// typing
// ------------------------------------------------------------------------------------------

/// The operand shapes and index ranges the recording script uses for each op.
fn op_shapes(op: &str) -> (Vec<Vec<i64>>, Vec<(usize, i64)>) {
    let s = |v: &[&[i64]]| v.iter().map(|x| x.to_vec()).collect::<Vec<_>>();
    match op {
        "matmul" | "mm" => (s(&[&[2, 3], &[3, 4]]), vec![]),
        "linear" => (s(&[&[2, 3], &[4, 3]]), vec![]),
        "gather" => (s(&[&[2, 4], &[2, 2]]), vec![(1, 4)]),
        "scatter_add" => (s(&[&[3, 2], &[4, 2], &[4, 2]]), vec![(1, 3)]),
        "index_rows" | "index_select" => (s(&[&[4, 3], &[5]]), vec![(1, 4)]),
        "masked_fill" => (s(&[&[2, 3], &[2, 3]]), vec![(1, 2)]),
        "topk" => (s(&[&[2, 4]]), vec![]),
        "add" | "sub" | "mul" | "div" | "maximum" | "cat" | "type_as" => (s(&[&[2, 3], &[2, 3]]), vec![]),
        _ => (s(&[&[2, 3]]), vec![]),
    }
}

fn run_op(s: &mut Spmd, op: &str, a: &[STensor]) -> spmd::Result<STensor> {
    Ok(match op {
        "add" => s.add(&a[0], &a[1])?,
        "sub" => s.sub(&a[0], &a[1])?,
        "mul" => s.mul(&a[0], &a[1])?,
        "div" => s.div(&a[0], &a[1])?,
        "matmul" => s.matmul(&a[0], &a[1])?,
        "mm" => s.mm(&a[0], &a[1])?,
        "linear" => s.linear(&a[0], &a[1])?,
        "maximum" => s.maximum(&a[0], &a[1])?,
        "cat" => s.cat(&[&a[0], &a[1]], 0)?,
        "gather" => s.gather(&a[0], -1, &a[1])?,
        "scatter_add" => s.scatter_add(&a[0], 0, &a[1], &a[2])?,
        "index_rows" => s.index_rows(&a[0], &a[1])?,
        "index_select" => s.index_select(&a[0], 0, &a[1])?,
        "masked_fill" => s.masked_fill(&a[0], &a[1], 0.0)?,
        "type_as" => s.type_as(&a[0], &a[1])?,
        "neg" => s.neg(&a[0])?,
        "clone" => s.local1(&spmd::OpSpec::linear("clone"), &[&a[0]], |x| x[0].copy())?,
        "sum" => s.sum(&a[0], &[0], false)?,
        "sum_all" => s.sum(&a[0], &[], false)?,
        "mean" => s.local1(&spmd::OpSpec::linear("mean"), &[&a[0]], |x| x[0].mean_dim(0, false, Kind::Float))?,
        "cumsum" => s.cumsum(&a[0], 0, Kind::Float)?,
        "view" => s.view(&a[0], &[3, 2])?,
        "reshape" => s.reshape(&a[0], &[-1])?,
        "transpose" => s.transpose(&a[0], 0, 1)?,
        "expand" => s.expand(&a[0], &[2, 2, 3])?,
        "sigmoid" => s.sigmoid(&a[0])?,
        "softmax" => s.softmax(&a[0], -1)?,
        "silu" => s.silu(&a[0])?,
        "exp" => s.exp(&a[0])?,
        "topk" => s.topk(&a[0], 2, -1)?.0,
        "argsort" => {
            let f = s.reshape(&a[0], &[-1]);
            match f {
                Ok(f) => s.argsort(&f, 0)?,
                Err(e) => return Err(e),
            }
        }
        "bfloat16" => s.to_kind(&a[0], Kind::BFloat16)?,
        "float" => s.to_kind(&a[0], Kind::Float)?,
        "zeros_like" => s.zeros_like(&a[0])?,
        "add_scalar" => s.add_scalar(&a[0], 1.0)?,
        "mul_scalar" => s.mul_scalar(&a[0], 2.0)?,
        "div_scalar" => s.div_scalar(&a[0], 2.0)?,
        "rdiv_scalar" => s.rdiv_scalar(2.0, &a[0])?,
        other => panic!("unknown op {other}"),
    })
}

#[test]
fn typing_rules_match_the_library() {
    let rows = lines("typing.jsonl");
    assert!(rows.len() > 400);
    for (n, row) in rows.iter().enumerate() {
        let mut s = mesh_of(row);
        let op = row["op"].as_str().unwrap();
        let (shapes, idx) = op_shapes(op);
        let types: Vec<Vec<(String, Arg)>> = row["types"].as_array().unwrap().iter().map(types_of).collect();
        let ranks = s.mesh().ranks();
        let args: Vec<STensor> = shapes
            .iter()
            .zip(&types)
            .enumerate()
            .map(|(k, (shape, t))| {
                let numel: i64 = shape.iter().product();
                let local = match idx.iter().find(|(i, _)| *i == k) {
                    Some((_, hi)) if op == "masked_fill" => (Tensor::arange(numel, (Kind::Int64, tch::Device::Cpu))
                        .remainder(*hi))
                    .to_kind(Kind::Bool)
                    .reshape(shape.as_slice()),
                    Some((_, hi)) => {
                        Tensor::arange(numel, (Kind::Int64, tch::Device::Cpu)).remainder(*hi).reshape(shape.as_slice())
                    }
                    None => {
                        (Tensor::arange(numel, (Kind::Float, tch::Device::Cpu)) * 0.3 + 0.5).reshape(shape.as_slice())
                    }
                };
                s.tensor((0..ranks).map(|_| local.copy()).collect(), &as_refs(t)).unwrap()
            })
            .collect();
        let got = run_op(&mut s, op, &args);
        let what = format!("typing.jsonl line {} ({op} {:?})", n + 1, row["types"]);
        match (&got, row.get("error")) {
            (Ok(y), None) => assert_eq!(shown(&s, y), expected_type(&row["out"]), "{what}"),
            (Err(SpmdError::Type(m)), Some(e)) => assert_eq!(m, e.as_str().unwrap(), "{what}"),
            _ => panic!("{what}: got {got:?}, recorded {:?}", row.get("error").or(row.get("out"))),
        }
    }
}

// ------------------------------------------------------------------------------------------
// collectives and conversions
// ------------------------------------------------------------------------------------------

fn call(s: &mut Spmd, row: &Value, x: &STensor) -> spmd::Result<STensor> {
    let f = row["fn"].as_str().unwrap();
    let axis = row["axis"].as_str().unwrap();
    let kw = &row["kwargs"];
    let src = Arg::parse(kw["src"].as_str().unwrap()).unwrap();
    let dst = Arg::parse(kw["dst"].as_str().unwrap()).unwrap();
    let expert = kw.get("expert_mode").and_then(|v| v.as_bool()).unwrap_or(false);
    let split = kw.get("split_sizes").and_then(|v| v.as_str());
    let a = s.mesh().axis(axis).unwrap();
    let n = s.mesh().size(a) as i64;
    let gather_sizes: Vec<i64> = (0..n).map(|i| (i % 3) + 1).collect();
    let rs_sizes: Vec<i64> = (0..n).map(|i| 5 / n + if i < 5 % n { 1 } else { 0 }).collect();
    match f {
        "all_reduce" => s.all_reduce(x, axis, src, dst),
        "all_gather" => s.all_gather(x, axis, src, dst, split.map(|_| gather_sizes.as_slice())),
        "reduce_scatter" => s.reduce_scatter(x, axis, src, dst, split.map(|_| rs_sizes.as_slice())),
        "all_to_all" => match row.get("send") {
            Some(send) => {
                let send: Vec<Vec<i64>> = send
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect())
                    .collect();
                s.all_to_all_uneven(x, axis, src, dst, &send)
            }
            None => s.all_to_all(x, axis, src, dst),
        },
        "convert" => s.convert(x, axis, src, dst, expert),
        "reinterpret" => s.reinterpret(x, axis, src, dst, expert),
        "redistribute" => s.redistribute(x, axis, src, dst),
        other => panic!("unknown fn {other}"),
    }
}

fn comms_match(s: &Spmd, backward: bool, recorded: &Value, what: &str) {
    let got: Vec<(String, String, usize)> = s
        .comms()
        .iter()
        .filter(|c| c.backward == backward)
        .map(|c| {
            let a = s.mesh().axis(&c.axis).unwrap();
            (c.op.to_string(), s.mesh().shown(a).to_string(), c.bytes)
        })
        .collect();
    let want: Vec<(String, String, usize)> = recorded
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["op"].as_str().unwrap().to_string(),
                c["axis"].as_str().unwrap().to_string(),
                c["bytes"].as_u64().unwrap() as usize,
            )
        })
        .collect();
    assert_eq!(got, want, "{what}: {} collectives", if backward { "backward" } else { "forward" });
}

#[test]
fn collectives_match_the_library() {
    let rows = lines("collectives.jsonl");
    let (mut replayed, mut skipped) = (0, 0);
    for (n, row) in rows.iter().enumerate() {
        let what = format!("collectives.jsonl line {} ({} {} {})", n + 1, row["fn"], row["axis"], row["kwargs"]);
        let mut s = mesh_of(row);
        let x = s.tensor(per_rank(&row["in"], &row["in_shapes"]), &as_refs(&types_of(&row["in_types"]))).unwrap();
        let x = s.leaf(x);
        let got = call(&mut s, row, &x);
        if let Some(u) = row.get("unsupported").and_then(|u| u.as_str()) {
            if u.starts_with("forward: IndexError") {
                let e = got.expect_err(&what);
                assert_eq!((e.kind(), e.message()), ("IndexError", "tuple index out of range"), "{what}: {e:?}");
            } else {
                skipped += 1;
            }
            continue;
        }
        if let Some(e) = row.get("error") {
            let got = got.expect_err(&what);
            assert_eq!(got.message(), e.as_str().unwrap(), "{what}");
            continue;
        }
        let y = got.unwrap_or_else(|e| panic!("{what}: {e:?}"));
        assert_eq!(shown(&s, &y), expected_type(&row["out_type"]), "{what}: output type");
        for (r, t) in y.locals.iter().enumerate() {
            close(t, &row["out"][r], &row["out_shapes"][r], &format!("{what}: output rank {r}"));
        }
        comms_match(&s, false, &row["fwd_comms"], &what);
        let g = per_rank(&row["grad_out"], &row["out_shapes"]);
        s.backward(&y, Some(g)).unwrap_or_else(|e| panic!("{what}: backward {e:?}"));
        let gx = s.grad(&x).unwrap_or_else(|| panic!("{what}: no gradient"));
        for (r, t) in gx.locals.iter().enumerate() {
            close(t, &row["grad_in"][r], &row["grad_in_shapes"][r], &format!("{what}: input gradient rank {r}"));
        }
        for (a, t) in &x.ty {
            assert_eq!(gx.ty[a], t.backward(), "{what}: gradient type");
        }
        comms_match(&s, true, &row["bwd_comms"], &what);
        replayed += 1;
    }
    assert!(replayed >= 80, "replayed {replayed}, skipped {skipped}");
}

// ------------------------------------------------------------------------------------------
// invalid calls
// ------------------------------------------------------------------------------------------

#[test]
fn error_texts_match_the_library() {
    let rows = lines("errors.jsonl");
    for (n, row) in rows.iter().enumerate() {
        let what = format!("errors.jsonl line {} ({} {} {})", n + 1, row["fn"], row["kwargs"], row["in_types"]);
        if row.get("unsupported").is_some() {
            continue;
        }
        let mut s = mesh_of(row);
        let types = types_of(&row["in_types"]);
        let f = row["fn"].as_str().unwrap();
        let got: spmd::Result<Option<STensor>> = match f {
            "backward" => {
                let x = s.same_on_all(&Tensor::from(1.5f32), &as_refs(&types)).unwrap();
                let x = s.leaf(x);
                let l = s.mul_scalar(&x, 1.0).unwrap();
                s.backward(&l, None).map(|_| None)
            }
            "mutate_type" => {
                let mut x =
                    s.same_on_all(&Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu)), &as_refs(&types)).unwrap();
                let kw = &row["kwargs"];
                let src = Arg::parse(kw["src"].as_str().unwrap()).unwrap();
                let dst = Arg::parse(kw["dst"].as_str().unwrap()).unwrap();
                s.mutate_type(&mut x, row["axis"].as_str().unwrap(), src, dst).map(|_| Some(x))
            }
            _ => {
                let x =
                    s.same_on_all(&Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu)), &as_refs(&types)).unwrap();
                call(&mut s, row, &x).map(Some)
            }
        };
        match (got, row.get("error")) {
            (Err(e), Some(m)) => {
                assert_eq!(e.message(), m.as_str().unwrap(), "{what}");
                assert_eq!(e.kind(), row["error_kind"].as_str().unwrap(), "{what}");
            }
            (Ok(Some(y)), None) if row.get("out_type").is_some() => {
                assert_eq!(shown(&s, &y), expected_type(&row["out_type"]), "{what}")
            }
            (Ok(None), None) => assert!(row.get("ok").is_some(), "{what}"),
            (got, rec) => panic!("{what}: got {got:?}, recorded {rec:?}"),
        }
    }
}
