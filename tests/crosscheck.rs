//! Router cases recorded on real PyTorch 2.12.1, 2.13.0 and 2.14.0 (one gloo process per rank, by
//! `docs/pytorch-checks/router_oracle.py`; see docs/crosscheck.md) replay the same here: ok or the
//! same error kind and first line, the same placements, per-rank global and local shapes per
//! output, the same values, and the same collectives counted per op. And every DTensor op call the rule research
//! traced on real DTensor (`tests/pytorch/probes/`), and every one the op-level fact checks traced
//! (`docs/pytorch-checks/out/`, docs/pytorch-facts.md), makes the same sharding decision here;
//! the fact checks' traced cases also replay whole (`facts`).

use serde_json::Value;
use shardfuzz::device::Dev;
use shardfuzz::harness::confirm::{compare, real::RealOutcome};
use shardfuzz::harness::{check, replay, Options};
use std::collections::BTreeMap;

/// The traced cases of the op-level fact checks (docs/pytorch-facts.md) replay whole.
mod facts;

#[test]
fn router_cases_agree_with_real_pytorch_2_13() {
    check_file("router-t2130.jsonl", 40);
}

#[test]
fn router_cases_agree_with_real_pytorch_2_12_and_2_14() {
    check_file("router-t2121-t2140.jsonl", 80);
}

/// The library's comparison (the one `shardfuzz confirm` uses): status and error text, every
/// output's placements and shapes, values with the value oracle's tolerances, collectives.
fn check_file(name: &str, at_least: usize) {
    let path = crate::root().join("tests/pytorch").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut checked, mut failures) = (0, Vec::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value = serde_json::from_str(line).unwrap();
        let real = RealOutcome::parse(&value).unwrap();
        let file = value["pytorch"]["case_file"].as_str().unwrap_or("?").to_string();
        let case = replay::parse(&value["case"].to_string()).unwrap();
        let diffs = compare::forward(&check(&case, Dev::Cpu, Options::default()).unwrap(), &real);
        if !diffs.is_empty() {
            let diffs: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
            failures.push(format!("{file}:\n  {}", diffs.join("\n  ")));
        }
        checked += 1;
    }
    assert!(checked >= at_least, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from real PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Every DTensor-level op call the research probes traced on real torch 2.12.1, 2.13.0 and
/// 2.14.0 (forward, backward, whole router, fake process group + LocalTensorMode and gloo;
/// `tests/pytorch/ops-t2121-t2130-t2140.jsonl`, made by `tests/pytorch/trace_to_ops.py` from the
/// traces of `tests/pytorch/probes/`) gets the same sharding decision here: the same output
/// placements (or the same error) and the same inputs redistributed, from and to the same
/// placements. (`aten.new_empty` is not an op of ours.)
#[test]
fn op_calls_agree_with_real_pytorch() {
    replay_ops("ops-t2121-t2130-t2140.jsonl", 1672, &["aten.new_empty.default"]);
}

/// The same for every other aten call the op-level fact checks traced on real torch 2.12.1 and
/// 2.13.0 (`docs/pytorch-checks/out/`, docs/pytorch-facts.md; converted by
/// `tests/pytorch/checks_to_ops.py` into `tests/pytorch/ops-checks-t2121-t2130.jsonl`). Where
/// DebugMode printed no output line (its C++ fast path records none) only the redistributions
/// are compared. `aten.masked_fill_.Scalar` (in-place masked_fill) is not an op of ours.
#[test]
fn fact_check_op_calls_agree_with_real_pytorch() {
    replay_ops("ops-checks-t2121-t2130.jsonl", 2639, &["aten.masked_fill_.Scalar"]);
}

/// Replays every call of an ops fixture; calls of `unmodelled` ops are counted, any other call
/// that does not parse fails the test.
fn replay_ops(name: &str, at_least: usize, unmodelled: &[&str]) {
    let text = std::fs::read_to_string(crate::root().join("tests/pytorch").join(name)).unwrap();
    let (mut checked, mut failures, mut skipped) = (0, Vec::new(), BTreeMap::<String, usize>::new());
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let rec: Value = serde_json::from_str(line).unwrap();
        let Some(call) = opcall::parse(&rec) else {
            *skipped.entry(rec["op"].as_str().unwrap_or("?").to_string()).or_default() += 1;
            continue;
        };
        if let Some(diff) = opcall::diff(&rec, &call) {
            failures.push(format!("{} {} [{}] {}: {diff}", rec["release"], rec["src"], rec["case"], rec["op"]));
        }
        checked += 1;
    }
    eprintln!("{name}: {checked} op calls replayed, not modelled: {skipped:?}");
    assert!(skipped.keys().all(|op| unmodelled.contains(&op.as_str())), "unparsed calls: {skipped:?}");
    assert!(checked >= at_least, "only {checked} op calls checked");
    assert!(failures.is_empty(), "{} of {checked} op calls differ:\n{}", failures.len(), failures.join("\n"));
}

/// Turning a traced aten call into the simulator's op and arguments.
pub mod opcall {
    use serde_json::Value;
    use shardfuzz::dtensor::rules::{self, Arg};
    use shardfuzz::dtensor::{DType, Meta, Op, RuleSet};
    use shardfuzz::placement::{Mesh, Placement};

    pub struct Call {
        pub op: Op,
        pub args: Vec<Arg>,
        pub mesh: Mesh,
        pub rules: RuleSet,
    }

    fn placement(s: &str) -> Placement {
        if s == "MaskP" {
            return Placement::MaskPartial { id: 1, dim: 0, size: 0 };
        }
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn short(p: &Placement) -> String {
        match p {
            Placement::MaskPartial { .. } => "MaskP".into(),
            p => p.to_string(),
        }
    }

    fn list(ps: &[Placement]) -> String {
        format!("[{}]", ps.iter().map(short).collect::<Vec<_>>().join(", "))
    }

    fn dtype(name: &str) -> DType {
        match name {
            "bfloat16" => DType::BF16,
            "float16" => DType::F16,
            "float64" => DType::F64,
            "bool" => DType::Bool,
            "int64" => DType::I64,
            "int32" => DType::I32,
            _ => DType::F32,
        }
    }

    fn kw<'a>(args: &'a [Value], name: &str) -> Option<&'a Value> {
        args.iter().find(|a| a["kw"] == name).map(|a| &a["v"])
    }

    /// The op and the dtype of each tensor argument (the traces name no dtypes: indices are
    /// int64, scatter's self with a bool value and masked_fill's mask are bool, the counts'
    /// routing map is bool, argsort and cumsum run on int64 counts and ids).
    fn op_of(name: &str, a: &[Value], tensors: &[&Value]) -> Option<(Op, Vec<DType>)> {
        let int = |i: usize| a[i]["v"].as_i64().unwrap();
        let ints =
            |i: usize| -> Vec<i64> { a[i]["v"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect() };
        let f = vec![DType::F32; tensors.len()];
        let scalar = || a.get(1).and_then(|v| v["v"].as_f64());
        Some(match name {
            "aten.t.default" => (Op::T, f),
            "aten.view.default" => (Op::View { shape: ints(1), unsafe_view: false }, f),
            "aten._unsafe_view.default" => (Op::View { shape: ints(1), unsafe_view: true }, f),
            "aten.unsqueeze.default" => (Op::Unsqueeze { dim: int(1) }, f),
            "aten.expand.default" => (Op::Expand { shape: ints(1).iter().map(|&d| d as usize).collect() }, f),
            "aten.mm.default" => (Op::Mm, f),
            "aten.addmm.default" => (Op::Addmm, f),
            "aten.sigmoid.default" => (Op::Sigmoid, f),
            "aten.sigmoid_backward.default" => (Op::SigmoidBackward, f),
            "aten.neg.default" => (Op::Neg, f),
            "aten.mul.Tensor" if tensors.len() == 1 => (Op::MulScalar(scalar()?), f),
            "aten.div.Tensor" if tensors.len() == 1 => (Op::DivScalar(scalar()?), f),
            "aten.add.Tensor" if tensors.len() == 1 => (Op::AddScalar(scalar()?), f),
            "aten.mul.Tensor" => (Op::Mul, f),
            "aten.div.Tensor" => (Op::Div, f),
            "aten.add.Tensor" if a.len() == 2 => (Op::Add, f),
            "aten._to_copy.default" => {
                let to = dtype(kw(a, "dtype")?["dtype"].as_str()?);
                (Op::ToDtype(to), vec![if to == DType::F32 { DType::BF16 } else { DType::F32 }])
            }
            "aten._softmax.default" => (Op::Softmax { dim: int(1) }, f),
            "aten._softmax_backward_data.default" => {
                (Op::SoftmaxBackward { dim: int(2), input_dtype: dtype(a[3]["dtype"].as_str()?) }, f)
            }
            "aten.sum.dim_IntList" => {
                let keepdim = a.get(2).and_then(|v| v["v"].as_bool()).unwrap_or(false);
                let dims = ints(1);
                let counts = dims == [0, 1] && !keepdim && tensors[0]["shape"].as_array()?.len() == 3;
                (Op::Sum { dims, keepdim }, vec![if counts { DType::Bool } else { DType::F32 }])
            }
            "aten.cumsum.default" => {
                let to = kw(a, "dtype").and_then(|v| v["dtype"].as_str()).map(dtype);
                (Op::Cumsum { dim: int(1), dtype: to }, vec![DType::I64])
            }
            "aten.topk.default" => {
                let b = |i: usize, d: bool| a.get(i).and_then(|v| v["v"].as_bool()).unwrap_or(d);
                let dim = a.get(2).and_then(|v| v["v"].as_i64()).unwrap_or(-1);
                (Op::Topk { k: int(1) as usize, dim, largest: b(3, true), sorted: b(4, true) }, f)
            }
            "aten.sort.stable" => {
                let dim = kw(a, "dim").and_then(|v| v["v"].as_i64()).unwrap_or(-1);
                let descending = kw(a, "descending").and_then(|v| v["v"].as_bool()).unwrap_or(false);
                (Op::Sort { dim, stable: true, descending }, vec![DType::I64])
            }
            "aten.gather.default" => (Op::Gather { dim: int(1) }, vec![DType::F32, DType::I64]),
            "aten.scatter_add.default" => (Op::ScatterAdd { dim: int(1) }, vec![DType::F32, DType::I64, DType::F32]),
            "aten.scatter.value" | "aten.scatter_.value" => {
                let v = &a[3]["v"];
                let value = v.as_f64().or_else(|| v.as_bool().map(|b| b as u8 as f64))?;
                let self_dt = if v.is_boolean() { DType::Bool } else { DType::F32 };
                (Op::ScatterValue { dim: int(1), value, inplace: name.contains("_.") }, vec![self_dt, DType::I64])
            }
            "aten.scatter.src" | "aten.scatter_.src" => {
                (Op::ScatterSrc { dim: int(1), inplace: name.contains("_.") }, vec![DType::F32, DType::I64, DType::F32])
            }
            "aten.zeros_like.default" | "aten.ones_like.default" => {
                let d = kw(a, "dtype").and_then(|v| v["dtype"].as_str()).map(dtype);
                (if name.contains("zeros") { Op::ZerosLike(d) } else { Op::OnesLike(d) }, f)
            }
            "aten.new_zeros.default" => (Op::NewZeros { shape: ints(1).iter().map(|&d| d as usize).collect() }, f),
            "aten.masked_fill.Scalar" => (Op::MaskedFill(scalar_at(a, 2)?), vec![DType::F32, DType::Bool]),
            _ => return None,
        })
    }

    fn scalar_at(a: &[Value], i: usize) -> Option<f64> {
        let v = &a.get(i)?["v"];
        v.as_f64().or_else(|| v.as_str()?.parse().ok())
    }

    pub fn parse(rec: &Value) -> Option<Call> {
        let a = rec["args"].as_array()?;
        let tensors: Vec<&Value> = a.iter().filter(|v| v.get("t").is_some()).collect();
        let (op, dtypes) = op_of(rec["op"].as_str()?, a, &tensors)?;
        let args = tensors
            .iter()
            .zip(dtypes)
            .map(|(t, guess)| {
                // The fact checks' traces name each tensor's dtype; the probes' do not.
                let dt = t.get("dtype").and_then(Value::as_str).map_or(guess, dtype);
                let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                let ps = t["t"].as_array().unwrap().iter().map(|p| placement(p.as_str().unwrap())).collect();
                Arg { meta: Meta::new(shape, dt), placements: ps }
            })
            .collect();
        let shape: Vec<usize> = rec["mesh"].as_array()?.iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let names = ["a", "b", "c"][..shape.len()].iter().map(|s| s.to_string()).collect();
        Some(Call { op, args, mesh: Mesh::new(shape, names).ok()?, rules: rec["release"].as_str()?.parse().ok()? })
    }

    /// What differs between the traced decision and ours, if anything.
    pub fn diff(rec: &Value, c: &Call) -> Option<String> {
        let chosen =
            rules::propose(&c.op, &c.args, &c.mesh, c.rules).and_then(|p| rules::select(&c.op, &p, &c.args, &c.mesh));
        let known = rec["out"].is_array() || !rec["error"].is_null();
        let s = match (chosen, rec["out"].as_array()) {
            // DebugMode printed no output: only the redistributions are known.
            (Err(e), None) if !known => return Some(format!("ours raised {e}")),
            (Ok(s), None) if !known => s,
            (Err(e), None) => {
                let want = rec["error"][1].as_str().unwrap_or("");
                return (e.to_string().lines().next().unwrap_or("") != want && !want.is_empty())
                    .then(|| format!("error: real {want:?} ours {e}"));
            }
            (Err(e), Some(_)) => return Some(format!("ours raised {e}")),
            // The second reduction of a `_MaskPartial` fails at run time, after the decision: the
            // decision must be to reduce one.
            (Ok(s), None) => {
                let reduces_mask = s.ins.iter().zip(&c.args).any(|(want, a)| {
                    a.placements.iter().zip(want).any(|(p, w)| matches!(p, Placement::MaskPartial { .. }) && p != w)
                });
                return (rec["error"][0] != "AssertionError" || !reduces_mask)
                    .then(|| format!("real raised {}, ours {:?}", rec["error"], s.outs));
            }
            (Ok(s), Some(_)) => s,
        };
        let outs: Vec<String> = rec["out"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("t"))
            .map(|t| {
                format!(
                    "[{}]",
                    t.as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_str().unwrap().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        let ours: Vec<String> = s.outs.iter().map(|o| list(o)).collect();
        let moved: Vec<(String, String)> = s
            .ins
            .iter()
            .zip(&c.args)
            .filter(|(want, a)| **want != a.placements)
            .map(|(want, a)| (list(&a.placements), list(want)))
            .collect();
        let real: Vec<(String, String)> = rec["redist"]
            .as_array()?
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string()))
            .collect();
        let outs_ok = outs.iter().zip(&ours).all(|(a, b)| a == b);
        (!outs_ok || moved != real)
            .then(|| format!("outs real {outs:?} ours {ours:?}; moves real {real:?} ours {moved:?}"))
    }
}
