//! Router cases recorded on real PyTorch 2.12.1, 2.13.0, 2.14.0 and 2.15.0 (one gloo process per rank, by
//! `docs/pytorch-checks/router_oracle.py`; see docs/crosscheck.md) replay the same here: ok or the
//! same error kind and first line, the same placements, per-rank global and local shapes per
//! output, the same collectives counted per op, and the same values within the value oracle's
//! tolerance; the comparison `shardfuzz confirm` uses must find no difference either. And every DTensor op call the rule research traced on real DTensor
//! (`tests/pytorch/probes/`), and every one the op-level fact checks traced
//! (`docs/pytorch-checks/out/`, docs/pytorch-facts.md), makes the same sharding decision here;
//! the fact checks' traced cases also replay whole (`facts`).

use dtensor::device::Dev;
use harness::{check, Options};
use serde_json::Value;
use shardfuzz::confirm::{compare, real::RealOutcome};
use shardfuzz::replay;
use shardfuzz::subjects::AnyChecked as Checked;
use std::collections::BTreeMap;

/// The traced cases of the op-level fact checks (docs/pytorch-facts.md) replay whole.
mod facts;

fn real_comms(sharded: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (op, n) in sharded["comm_counts"].as_object().into_iter().flatten() {
        let name = shardfuzz::confirm::real::comm_name(op);
        *m.entry(name).or_default() += n.as_u64().unwrap_or(0);
    }
    m
}

fn our_comms(sharded: &Value) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for c in sharded["comms"].as_array().into_iter().flatten() {
        *m.entry(c["op"].as_str().unwrap_or("?").to_string()).or_default() += 1;
    }
    m
}

#[test]
fn router_cases_agree_with_real_pytorch_2_13() {
    check_file("router-t2130.jsonl", 40, &[]);
}

#[test]
fn router_cases_agree_with_real_pytorch_2_12_and_2_14() {
    check_file("router-t2121-t2140.jsonl", 80, &[]);
}

/// Random cases (`shardfuzz gen --backward off`, every router revision, Partial inputs, 1-3-D
/// meshes), 115 per release: docs/crosscheck.md.
#[test]
fn random_cases_agree_with_real_pytorch_2_12() {
    check_file("router-random-t2121.jsonl", 115, &[]);
}

#[test]
fn random_cases_agree_with_real_pytorch_2_13() {
    check_file("router-random-t2130.jsonl", 115, &[]);
}

#[test]
fn random_cases_agree_with_real_pytorch_2_14() {
    check_file("router-random-t2140.jsonl", 115, &[]);
}

/// 2.15.0, replayed with `torch-2.15`: cases 0-99 of `gen --seed 1415 --rules torch-2.15
/// --backward off`, plus every 3-D-mesh case and every case with a Partial input on a mesh dim of
/// more than one rank among cases 100-249 (docs/crosscheck.md).
#[test]
fn random_cases_agree_with_real_pytorch_2_15() {
    check_file("router-random-t2150.jsonl", 115, &[]);
}

/// Cases with a Partial input on a mesh dim of more than one rank (x, gate or expert bias;
/// sum, avg, max, min), 25 per release: docs/crosscheck.md.
#[test]
fn partial_input_cases_agree_with_real_pytorch() {
    check_file("router-partial-t2121-t2130-t2140.jsonl", 75, &[]);
}

/// The comparison sees what it compares: a recorded agreeing case, edited, differs.
#[test]
fn the_comparison_sees_changed_values_shapes_and_comms() {
    let text = std::fs::read_to_string(crate::root().join("tests/pytorch/router-random-t2130.jsonl")).unwrap();
    let (mut edited, mut ok_cases, mut near_ties) = (0, 0, 0);
    for line in text.lines() {
        let real: Value = serde_json::from_str(line).unwrap();
        if real["sharded"]["ok"] != true {
            continue;
        }
        ok_cases += 1;
        let case = replay::parse(&real["case"].to_string()).unwrap();
        let ours = check(&case, Dev::Cpu, Options::default()).unwrap();
        assert!(differences(&real, &ours).is_empty());
        let edit = |f: &dyn Fn(&mut Value)| {
            let mut r = real.clone();
            f(&mut r["sharded"]);
            differences(&r, &ours)
        };
        let first = |d: Vec<String>| d.first().cloned().unwrap_or_default();
        let bump = |v: &mut Value| *v = serde_json::json!(v.as_f64().unwrap_or(0.0) + 0.25);
        assert!(first(edit(&|s| bump(&mut s["outputs"]["scores"]["values"][0]))).starts_with("scores[0]"));
        assert!(first(edit(&|s| s["outputs"]["counts"]["local_shapes"][0] = serde_json::json!([0])))
            .contains("local_shapes"));
        assert!(first(edit(&|s| s["comm_counts"]["c10d_functional.all_reduce"] = serde_json::json!(9)))
            .starts_with("comms"));
        if values::decided(&values::R::of(&ours)).first() == Some(&true)
            && crate::spec(&case).dims.top_k < crate::spec(&case).dims.experts
        {
            // Token 0 picks an expert it did not choose.
            let k = crate::spec(&case).dims.top_k;
            let ids: Vec<i64> =
                (0..k).map(|j| real["sharded"]["outputs"]["topk_ids"]["values"][j].as_i64().unwrap()).collect();
            let other = (0..crate::spec(&case).dims.experts as i64).find(|e| !ids.contains(e)).unwrap();
            let d = edit(&|s| s["outputs"]["topk_ids"]["values"][0] = serde_json::json!(other));
            assert!(first(d).starts_with("topk_ids: token 0"), "{}", case.to_json());
            edited += 1;
        }
        if let Some(d) = worst_pick_on_a_near_tie(&real, &ours) {
            assert!(first(edit(&|s| s["outputs"]["topk_ids"]["values"][d.0] = serde_json::json!(d.1)))
                .starts_with("topk_ids: near-tie token"));
            near_ties += 1;
        }
    }
    assert!(ok_cases >= 80 && edited >= 40, "{ok_cases} ok cases, {edited} with a decided token 0");
    assert!(near_ties >= 5, "only {near_ties} cases with a near-tie to edit");
}

/// On the first near-tie token that can be judged: (index into topk_ids' values, an expert
/// scoring far below every chosen one) to put in place of the token's first choice.
fn worst_pick_on_a_near_tie(real: &Value, ours: &Checked) -> Option<(usize, i64)> {
    let r = values::R::of(ours);
    let (e, k) = (r.spec.dims.experts, r.spec.dims.top_k);
    let t = values::decided(&r).iter().position(|d| !d).filter(|_| values::near_ties_checkable(&r))?;
    let scores = &r.margins.choice[t * e..(t + 1) * e];
    let ids: Vec<i64> =
        (0..k).map(|j| real["sharded"]["outputs"]["topk_ids"]["values"][t * k + j].as_i64().unwrap()).collect();
    let weakest = ids.iter().map(|&i| scores[i as usize]).fold(f64::INFINITY, f64::min);
    let bound = 2.0 * router::tolerance::Bounds::new(r.margins, r.spec.dims.model).choice[t];
    // Below the weakest chosen by more than the bound, so it leaves a better expert out.
    let worst = (0..e).filter(|&j| !ids.contains(&(j as i64))).find(|&j| weakest - scores[j] > 2.0 * bound)?;
    Some((t * k, worst as i64))
}

/// What differs between a real outcome and ours, one line each.
fn differences(real: &Value, checked: &Checked) -> Vec<String> {
    let ours = serde_json::to_value(checked.outcome()).unwrap();
    let (r, o) = (&real["sharded"], &ours["sharded"]);
    let mut diffs = Vec::new();
    if r["ok"] != o["ok"] {
        diffs.push(format!("ok: real {} ours {} (real: {}; ours: {})", r["ok"], o["ok"], r["error"], o["error"]));
    } else if r["ok"] == false {
        for f in ["kind", "message"] {
            if r["error"][f] != o["error"][f] {
                diffs.push(format!("error {f}: real {} ours {}", r["error"][f], o["error"][f]));
            }
        }
    } else {
        for (name, ro) in r["outputs"].as_object().into_iter().flatten() {
            for f in ["placements", "rank_global_shapes", "local_shapes"] {
                if ro[f] != o["outputs"][name][f] {
                    diffs.push(format!("{name}.{f}: real {} ours {}", ro[f], o["outputs"][name][f]));
                }
            }
        }
        diffs.extend(values::differences(&values::R::of(checked), &r["outputs"], &o["outputs"]));
    }
    // gloo has no all_to_all: real ranks run S->S as all_gather + chunk (pytorch-facts.md §0).
    let (rc, mut oc) = (real_comms(r), our_comms(o));
    if let Some(n) = oc.remove("all_to_all") {
        *oc.entry("all_gather".into()).or_default() += n;
    }
    if rc != oc {
        diffs.push(format!("comms: real {rc:?} ours {oc:?}"));
    }
    diffs
}

/// Replays every case of a recorded file. `exceptions` names the cases (by case file) known to
/// differ, each with its reason (docs/crosscheck.md); they must still differ, so the list
/// cannot go stale.
fn check_file(name: &str, at_least: usize, exceptions: &[(&str, &str)]) {
    let path = crate::root().join("tests/pytorch").join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    let (mut checked, mut failures, mut stale) = (0, Vec::new(), Vec::new());
    // ok cases, error cases, tokens whose values were compared, near-ties, near-ties judged.
    let mut tally = [0usize; 5];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let real: Value = serde_json::from_str(line).unwrap();
        let file = real["pytorch"]["case_file"].as_str().unwrap_or("?").to_string();
        let case = replay::parse(&real["case"].to_string()).unwrap();
        let ours = check(&case, Dev::Cpu, Options::default()).unwrap();
        let mut diffs = differences(&real, &ours);
        // `shardfuzz confirm` compares with the library's comparison: it must agree as well.
        let lib = compare::forward(&ours, &RealOutcome::parse(&real).unwrap());
        diffs.extend(lib.iter().map(|d| format!("confirm's comparison: {d}")));
        if real["sharded"]["ok"] == true {
            let decided = values::decided(&values::R::of(&ours));
            let undecided = decided.iter().filter(|d| !**d).count();
            tally[0] += 1;
            tally[2] += decided.len();
            tally[3] += undecided;
            tally[4] += if values::near_ties_checkable(&values::R::of(&ours)) { undecided } else { 0 };
        } else {
            tally[1] += 1;
        }
        let excepted = exceptions.iter().any(|(f, _)| *f == file);
        match (diffs.is_empty(), excepted) {
            (false, false) => failures.push(format!("{file}:\n  {}", diffs.join("\n  "))),
            (true, true) => stale.push(file),
            _ => {}
        }
        checked += 1;
    }
    let [ok, errors, tokens, undecided, judged] = tally;
    eprintln!(
        "{name}: {checked} cases ({ok} ok, {errors} errors), values compared on {tokens} tokens \
         ({undecided} near-ties, {judged} of them judged a valid top-k), {} differ, {} listed",
        failures.len(),
        exceptions.len()
    );
    assert!(checked >= at_least, "only {checked} cases checked");
    assert!(stale.is_empty(), "listed as exceptions but agree now (remove them): {stale:?}");
    assert!(
        failures.is_empty(),
        "{} of {checked} cases differ from real PyTorch:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Values, real against ours, with the value oracle's tolerance (docs/oracles.md): both sides
/// are sharded runs of the same program, each within the per-token bound of the exact result,
/// so they may differ by twice it. Top-k choices are compared where the float64 margin decides
/// them (near-ties may flip on either side), maps and masks on those tokens, counts net of the
/// others.
mod values {
    use router::reference::Margins;
    use router::tolerance::Bounds;
    use router::RouterSpec;
    use serde_json::Value;
    use shardfuzz::subjects::{AnyChecked, AnyExtra};

    /// What the value comparison reads of a checked router case.
    pub struct R<'a> {
        pub spec: &'a RouterSpec,
        pub margins: &'a Margins,
    }

    impl<'a> R<'a> {
        pub fn of(c: &'a AnyChecked) -> R<'a> {
            let AnyExtra::Router(x) = &c.extra else { panic!("the router crosscheck runs router cases") };
            R { spec: crate::spec(&c.case), margins: &x.margins }
        }
    }

    fn nums(v: &Value) -> Vec<f64> {
        let one = |x: &Value| match x {
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::Bool(b) => *b as u8 as f64,
            Value::String(s) if s == "Infinity" => f64::INFINITY,
            Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
            _ => f64::NAN,
        };
        v.as_array().map(|a| a.iter().map(one).collect()).unwrap_or_default()
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol
    }

    struct Sides<'a> {
        real: &'a Value,
        ours: &'a Value,
    }

    impl Sides<'_> {
        fn get(&self, name: &str) -> Option<(Vec<f64>, Vec<f64>)> {
            let (r, o) = (&self.real[name]["values"], &self.ours[name]["values"]);
            (!r.is_null() || !o.is_null()).then(|| (nums(r), nums(o)))
        }
    }

    /// Per token, whether the float64 margins decide its top-k (and group) choice beyond what
    /// both sides' rounding can close.
    pub fn decided(c: &R) -> Vec<bool> {
        let m = &c.margins;
        let bounds = Bounds::new(m, c.spec.dims.model);
        (0..m.topk.len()).map(|t| bounds.topk_decided(m, t) && bounds.group_decided(m, t)).collect()
    }

    pub fn differences(c: &R, real: &Value, ours: &Value) -> Vec<String> {
        let s = Sides { real, ours };
        let (d, m) = (c.spec.dims, &c.margins);
        let bounds = Bounds::new(m, d.model);
        let tokens = m.topk.len();
        let decided = decided(c);
        let mut out = Vec::new();
        for name in ["scores", "topk_ids", "topk_scores", "routing_map", "counts", "group_mask"] {
            let Some((r, o)) = s.get(name) else { continue };
            if r.len() != o.len() {
                out.push(format!("{name}: real has {} values, ours {}", r.len(), o.len()));
            }
        }
        if !out.is_empty() {
            return out;
        }
        if let Some((r, o)) = s.get("scores") {
            let e = d.experts;
            if let Some(i) = (0..r.len()).find(|&i| !close(r[i], o[i], 2.0 * bounds.score[i / e])) {
                out.push(format!("scores[{i}]: real {} ours {} (bound {:.3e})", r[i], o[i], 2.0 * bounds.score[i / e]));
            }
        }
        out.extend(choices(c, &s, &bounds, &decided));
        for (name, width) in
            [("routing_map", d.experts), ("group_mask", c.spec.router.groups.map_or(0, |g| g.num_groups))]
        {
            let Some((r, o)) = s.get(name) else { continue };
            if let Some(t) =
                (0..tokens).find(|&t| decided[t] && r[t * width..(t + 1) * width] != o[t * width..(t + 1) * width])
            {
                out.push(format!("{name}: token {t} differs on a decided token"));
            }
        }
        out.extend(counts(&s, &decided, d.experts));
        out
    }

    /// Per decided token, the chosen experts as a set and their gate values.
    fn choices(c: &R, s: &Sides, bounds: &Bounds, decided: &[bool]) -> Vec<String> {
        let (Some((ri, oi)), Some((rs, os))) = (s.get("topk_ids"), s.get("topk_scores")) else { return vec![] };
        let k = c.spec.dims.top_k;
        let scale = c.spec.router.route_scale.abs();
        let rel = (k as f64 + 4.0) * f32::EPSILON as f64 / 2.0;
        for t in 0..decided.len() {
            let pairs = |ids: &[f64], ts: &[f64]| {
                let mut v: Vec<(i64, f64)> = (0..k).map(|j| (ids[t * k + j] as i64, ts[t * k + j])).collect();
                v.sort_by_key(|p| p.0);
                v
            };
            let (pr, po) = (pairs(&ri, &rs), pairs(&oi, &os));
            if pr.iter().map(|p| p.0).ne(po.iter().map(|p| p.0)) {
                if decided[t] {
                    return vec![format!("topk_ids: token {t} chose {pr:?} on real, {po:?} here")];
                }
                for (side, p) in [("real", &pr), ("ours", &po)] {
                    let ids: Vec<i64> = p.iter().map(|p| p.0).collect();
                    if let Some(why) = not_a_top_k(c, bounds, t, &ids) {
                        return vec![format!("topk_ids: near-tie token {t}: {side} {why}")];
                    }
                }
                continue;
            }
            let sum: f64 = po.iter().map(|p| p.1.abs()).sum::<f64>().max(1e-30);
            let norm = if c.spec.router.route_norm { 2.0 * k as f64 / (sum / scale.max(1e-30)) } else { 1.0 };
            let abs = 2.0 * bounds.score[t] * scale * norm;
            for ((id, a), (_, b)) in pr.iter().zip(&po) {
                let tol = abs + rel * a.abs().max(b.abs());
                if !close(*a, *b, tol) {
                    return vec![format!(
                        "topk_scores: token {t} expert {id}: real {a} ours {b} (tolerance {tol:.3e})"
                    )];
                }
            }
        }
        vec![]
    }

    /// Whether near-ties can be judged at all: without expert groups (whose kept set is a
    /// near-tie of its own) and without the force-balance override (which ignores the scores).
    pub fn near_ties_checkable(c: &R) -> bool {
        c.spec.router.groups.is_none() && !c.spec.router.force_load_balance
    }

    /// On a near-tie either side may pick differently, but each pick must be a top-k a correct
    /// router could make: distinct ids in range, and no expert left out beating a chosen one by
    /// more than twice the choice bound (float64 choice scores of the reference).
    fn not_a_top_k(c: &R, bounds: &Bounds, t: usize, ids: &[i64]) -> Option<String> {
        let e = c.spec.dims.experts;
        let scores = &c.margins.choice[t * e..(t + 1) * e];
        if !near_ties_checkable(c) || scores.iter().any(|x| x.is_nan()) {
            return None;
        }
        let mut chosen = vec![false; e];
        if ids.iter().any(|&i| i < 0 || i as usize >= e || std::mem::replace(&mut chosen[i as usize], true)) {
            return Some(format!("chose {ids:?}: not distinct experts of {e}"));
        }
        let weakest = ids.iter().map(|&i| scores[i as usize]).fold(f64::INFINITY, f64::min);
        let best_left = (0..e).filter(|&j| !chosen[j]).map(|j| scores[j]).fold(f64::NEG_INFINITY, f64::max);
        let bound = 2.0 * bounds.choice[t];
        (best_left - weakest > bound).then(|| {
            format!("chose {ids:?}, leaving out a score {best_left:.6e} above {weakest:.6e} (bound {bound:.3e})")
        })
    }

    /// Counts net of the undecided tokens' rows of each side's own routing map.
    fn counts(s: &Sides, decided: &[bool], e: usize) -> Vec<String> {
        let (Some((rc, oc)), Some((rm, om))) = (s.get("counts"), s.get("routing_map")) else { return vec![] };
        let net = |c: &[f64], map: &[f64]| -> Vec<f64> {
            (0..e)
                .map(|x| c[x] - (0..decided.len()).filter(|&t| !decided[t]).map(|t| map[t * e + x]).sum::<f64>())
                .collect()
        };
        let (a, b) = (net(&rc, &rm), net(&oc, &om));
        if a != b {
            return vec![format!("counts (net of undecided tokens): real {a:?} ours {b:?}")];
        }
        vec![]
    }
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
    use dtensor::rules::{self, Arg};
    use dtensor::{DType, Meta, Op, RuleSet};
    use placement::{Mesh, Placement};
    use serde_json::Value;

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
