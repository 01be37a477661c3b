//! `value`: the sharded outputs, gathered, against the reference.
//!
//! - `scores` and `topk_scores` within the per-token bound of [`Bounds`];
//! - `topk_ids` compared per token as sets, only where the float64 margin at the K-th choice
//!   (and the Gk-th group) exceeds the bound: closer calls are near-ties, counted, not reported;
//! - `routing_map` and `group_mask` exact on decided tokens; `counts` exact after removing the
//!   contribution of undecided tokens on both sides, and always equal to the sharded side's own
//!   routing map summed (a count/map inconsistency is a bug whatever the ties);
//! - `offsets`: on every rank, the local counts must describe the local ids, as the experts'
//!   token reorder needs (`router::dispatch`); checked where the counts pass their contract (else
//!   torchtitan stops at the contract, reported by the placement oracle).

use super::tolerance::Bounds;
use super::{Class, Judgement, Verdict};
use crate::dtensor::DTensor;
use crate::harness::case::Case;
use crate::harness::runner::Run;
use crate::placement::Placement;
use crate::router::RouterOutputs;
use serde_json::json;
use tch::{Device, Kind, Tensor};

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).expect("float values")
}
fn i64s(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous().view(-1)).expect("int values")
}

struct Ctx<'a> {
    j: &'a mut Judgement,
}

impl Ctx<'_> {
    fn push(
        &mut self,
        output: &str,
        key: &str,
        expected: serde_json::Value,
        actual: serde_json::Value,
        detail: String,
    ) {
        // One verdict per output and key: the first offending element tells the story.
        if self
            .j
            .verdicts
            .iter()
            .any(|v| v.class == Class::Value && v.output.as_deref() == Some(output) && v.key == key)
        {
            return;
        }
        self.j.verdicts.push(Verdict {
            class: Class::Value,
            output: Some(output.into()),
            expected,
            actual,
            detail,
            key: key.into(),
        });
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= tol
}

pub fn check(case: &Case, run: &Run, r: &RouterOutputs<Tensor>, s: &RouterOutputs<DTensor>, j: &mut Judgement) {
    let full = |d: &DTensor| d.full_tensor();
    let (Ok(s_scores), Ok(s_ids), Ok(s_ts), Ok(s_map), Ok(s_counts)) =
        (full(&s.scores), full(&s.topk_ids), full(&s.topk_scores), full(&s.routing_map), full(&s.counts))
    else {
        j.verdicts.push(Verdict {
            class: Class::Value,
            output: None,
            expected: json!("gatherable outputs"),
            actual: json!("redistribute failed"),
            detail: "an output could not be gathered to Replicate".into(),
            key: "gather".into(),
        });
        return;
    };
    let mut cx = Ctx { j };
    let e = case.dims.experts;
    let k = case.dims.top_k;
    let m = &run.margins;
    let bounds = Bounds::new(m, case.dims.model);

    // Shapes first: values of different shapes cannot be compared element-wise.
    for (name, rt, st) in [
        ("scores", &r.scores, &s_scores),
        ("topk_ids", &r.topk_ids, &s_ids),
        ("topk_scores", &r.topk_scores, &s_ts),
        ("routing_map", &r.routing_map, &s_map),
        ("counts", &r.counts, &s_counts),
    ] {
        if rt.size() != st.size() {
            cx.push(
                name,
                "shape",
                json!(rt.size()),
                json!(st.size()),
                format!("{name}: gathered shape {:?} differs from the reference's {:?}", st.size(), rt.size()),
            );
        }
    }
    if cx.j.verdicts.iter().any(|v| v.class == Class::Value) {
        return;
    }

    // scores
    let (rs, ss) = (f64s(&r.scores), f64s(&s_scores));
    for (i, (&a, &b)) in rs.iter().zip(&ss).enumerate() {
        let t = i / e;
        if !close(a, b, 2.0 * bounds.score[t]) {
            let key = if b.is_nan() != a.is_nan() { "nan" } else { "values" };
            cx.push(
                "scores",
                key,
                json!(a),
                json!(b),
                format!(
                    "scores[token {t}, expert {}]: {b} vs reference {a} (bound {:.3e})",
                    i % e,
                    2.0 * bounds.score[t]
                ),
            );
        }
    }

    // Decided tokens: the choice was not a near-tie at the group or the expert level.
    let rows = m.topk.len();
    let decided: Vec<bool> = (0..rows).map(|t| bounds.topk_decided(m, t) && bounds.group_decided(m, t)).collect();
    cx.j.near_ties.rows += rows;
    cx.j.near_ties.topk_rows += (0..rows).filter(|&t| !bounds.topk_decided(m, t)).count();
    cx.j.near_ties.group_rows += (0..rows).filter(|&t| !bounds.group_decided(m, t)).count();

    let (rids, sids) = (i64s(&r.topk_ids), i64s(&s_ids));
    let (rts, sts) = (f64s(&r.topk_scores), f64s(&s_ts));
    for t in 0..rows {
        let pairs = |ids: &[i64], ts: &[f64]| {
            let mut v: Vec<(i64, f64)> = (0..k).map(|c| (ids[t * k + c], ts[t * k + c])).collect();
            v.sort_by_key(|p| p.0);
            v
        };
        let (pr, ps) = (pairs(&rids, &rts), pairs(&sids, &sts));
        let same_set = pr.iter().zip(&ps).all(|(a, b)| a.0 == b.0);
        if !same_set {
            if decided[t] {
                let a: Vec<i64> = pr.iter().map(|p| p.0).collect();
                let b: Vec<i64> = ps.iter().map(|p| p.0).collect();
                cx.push(
                    "topk_ids",
                    "ids",
                    json!(a),
                    json!(b),
                    format!(
                        "token {t} chose experts {b:?}, the reference {a:?} (margin {:.3e} > bound {:.3e})",
                        m.topk[t],
                        2.0 * bounds.choice[t]
                    ),
                );
            } else {
                cx.j.near_ties.flipped_rows += 1;
            }
            continue;
        }
        // Same experts: their gate values must agree (route_norm divides by a sum of K).
        let sum: f64 = pr.iter().map(|p| p.1.abs()).sum::<f64>().max(1e-30);
        let scale = case.router.route_scale.abs();
        let rel = (k as f64 + 4.0) * crate::dtensor::DType::F32.eps();
        for ((id, a), (_, b)) in pr.iter().zip(&ps) {
            let abs = 2.0
                * bounds.score[t]
                * scale
                * if case.router.route_norm { 2.0 * (k as f64) / (sum / scale.max(1e-30)) } else { 1.0 };
            let tol = abs + rel * a.abs().max(b.abs());
            if !close(*a, *b, tol) {
                let key = if a.is_nan() != b.is_nan() { "nan" } else { "values" };
                cx.push(
                    "topk_scores",
                    key,
                    json!(a),
                    json!(b),
                    format!("token {t}, expert {id}: gate value {b} vs reference {a} (tolerance {tol:.3e})"),
                );
            }
        }
    }

    // routing_map on decided tokens, counts net of undecided tokens.
    let to_bool =
        |t: &Tensor| Vec::<bool>::try_from(t.to_device(Device::Cpu).contiguous().view(-1)).expect("bool values");
    let (rmap, smap) = (to_bool(&r.routing_map), to_bool(&s_map));
    let (rc, sc) = (i64s(&r.counts), i64s(&s_counts));
    let mut own = vec![0i64; e];
    let (mut rnet, mut snet) = (rc.clone(), sc.clone());
    for t in 0..rows {
        for x in 0..e {
            let (a, b) = (rmap[t * e + x], smap[t * e + x]);
            own[x] += b as i64;
            if !decided[t] {
                rnet[x] -= a as i64;
                snet[x] -= b as i64;
            } else if a != b {
                cx.push(
                    "routing_map",
                    "map",
                    json!(a),
                    json!(b),
                    format!("routing_map[token {t}, expert {x}] is {b}, the reference has {a}"),
                );
            }
        }
    }
    if own != sc {
        cx.push(
            "counts",
            "inconsistent",
            json!(own),
            json!(sc),
            "sharded counts differ from the sharded routing map summed over tokens".into(),
        );
    }
    if rnet != snet {
        cx.push(
            "counts",
            "values",
            json!(rc),
            json!(sc),
            "counts differ from the reference's on tokens whose choice was decided".into(),
        );
    }

    // Each rank's counts must describe its own ids (GroupedExperts' offsets). Checked only where
    // the counts satisfy their contract: otherwise torchtitan raises at the contract first.
    let contract = crate::router::contract::resolve(&case.layout.counts_contract, &run.mesh, case.revision.size1);
    let contract_ok = crate::router::contract::matches(&s.counts.placements, &contract, 1).unwrap_or(false);
    // The experts receive ids and counts laid out to match (tokens split where counts are
    // partial); other pairings are stopped by their input contracts before any offsets exist.
    let paired = s.counts.placements.iter().zip(&s.topk_ids.placements).all(|(c, i)| match (c, i) {
        (Placement::Partial(_), i) => i.shard_dim().is_some_and(|d| d == 0 || d == 1),
        (Placement::Replicate, Placement::Replicate) => true,
        _ => false,
    });
    let problems = if contract_ok && paired {
        crate::router::dispatch::local_consistency(&s.topk_ids, &s.counts)
    } else {
        Vec::new()
    };
    for msg in problems {
        cx.push(
            "offsets",
            "inconsistent",
            json!("local counts matching local ids"),
            json!(msg.clone()),
            format!(
                "{msg} (counts {} next to ids {})",
                crate::placement::short_list(&s.counts.placements),
                crate::placement::short_list(&s.topk_ids.placements)
            ),
        );
    }

    if let (Some(rg), Some(sg)) = (&r.group_mask, &s.group_mask) {
        if let Ok(sgf) = sg.full_tensor() {
            if sgf.size() != rg.size() {
                cx.push(
                    "group_mask",
                    "shape",
                    json!(rg.size()),
                    json!(sgf.size()),
                    "group_mask: gathered shape differs".into(),
                );
            } else {
                let g = *rg.size().last().unwrap() as usize;
                let (a, b) = (to_bool(rg), to_bool(&sgf));
                for t in 0..rows {
                    if bounds.group_decided(m, t) && a[t * g..(t + 1) * g] != b[t * g..(t + 1) * g] {
                        cx.push(
                            "group_mask",
                            "mask",
                            json!(a[t * g..(t + 1) * g]),
                            json!(b[t * g..(t + 1) * g]),
                            format!("token {t} kept other groups than the reference"),
                        );
                    }
                }
            }
        }
    }
}
