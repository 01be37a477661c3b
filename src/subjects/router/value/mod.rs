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

mod undecided;

use crate::reference::Margins;
use crate::spec::RouterSpec;
use crate::tolerance::Bounds;
use crate::RouterOutputs;
use dtensor::DTensor;
use harness::oracle::value::close;
use harness::oracle::{Class, Judgement, Verdict};
use harness::run::Run;
use harness::timing::oracle;
use placement::Placement;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).contiguous().view(-1)).expect("float values")
}
fn i64s(t: &Tensor) -> Vec<i64> {
    Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64).contiguous().view(-1)).expect("int values")
}
fn bools(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(t.to_device(Device::Cpu).contiguous().view(-1)).expect("bool values")
}

/// The comparison of one run: the case, both sides (the sharded one gathered), the bounds, and
/// which tokens' choices are decided.
struct Compare<'a> {
    spec: &'a RouterSpec,
    run: &'a Run,
    r: &'a RouterOutputs<Tensor>,
    s: &'a RouterOutputs<DTensor>,
    full: RouterOutputs<Tensor>,
    m: &'a Margins,
    bounds: Bounds,
    decided: Vec<bool>,
    j: &'a mut Judgement,
}

impl Compare<'_> {
    fn push(&mut self, output: &str, key: &str, expected: Value, actual: Value, detail: String) {
        // One verdict per output and key: the first offending element tells the story.
        let seen = |v: &Verdict| v.class == Class::Value && v.output.as_deref() == Some(output) && v.key == key;
        if !self.j.verdicts.iter().any(seen) {
            let output = Some(output.into());
            self.j.verdicts.push(Verdict {
                class: Class::Value,
                output,
                expected,
                actual,
                detail,
                key: key.into(),
                backward: false,
            });
        }
    }

    /// Values of different shapes cannot be compared element-wise: false when any differs.
    fn shapes(&mut self) -> bool {
        let pairs = [
            ("scores", &self.r.scores, &self.full.scores),
            ("topk_ids", &self.r.topk_ids, &self.full.topk_ids),
            ("topk_scores", &self.r.topk_scores, &self.full.topk_scores),
            ("routing_map", &self.r.routing_map, &self.full.routing_map),
            ("counts", &self.r.counts, &self.full.counts),
        ];
        let bad: Vec<(&str, Vec<i64>, Vec<i64>)> =
            pairs.iter().filter(|(_, a, b)| a.size() != b.size()).map(|(n, a, b)| (*n, a.size(), b.size())).collect();
        for (name, a, b) in &bad {
            let detail = format!("{name}: gathered shape {b:?} differs from the reference's {a:?}");
            self.push(name, "shape", json!(a), json!(b), detail);
        }
        bad.is_empty()
    }

    fn scores(&mut self) {
        let e = self.spec.dims.experts;
        let (rs, ss) = (f64s(&self.r.scores), f64s(&self.full.scores));
        for (i, (&a, &b)) in rs.iter().zip(&ss).enumerate() {
            let (t, bound) = (i / e, 2.0 * self.bounds.score[i / e]);
            if !close(a, b, bound) {
                let key = if b.is_nan() != a.is_nan() { "nan" } else { "values" };
                let detail = format!("scores[token {t}, expert {}]: {b} vs reference {a} (bound {bound:.3e})", i % e);
                self.push("scores", key, json!(a), json!(b), detail);
            }
        }
    }

    /// Counts near-ties and marks decided tokens: the choice was not a near-tie at the group or
    /// the expert level.
    fn decide(&mut self) {
        let (m, b) = (self.m, &self.bounds);
        let rows = m.topk.len();
        self.decided = (0..rows).map(|t| b.topk_decided(m, t) && b.group_decided(m, t)).collect();
        self.j.near_ties.rows += rows;
        self.j.near_ties.topk_rows += (0..rows).filter(|&t| !b.topk_decided(m, t)).count();
        self.j.near_ties.group_rows += (0..rows).filter(|&t| !b.group_decided(m, t)).count();
    }

    /// Per token: the chosen experts as a set, and the gate value each got.
    fn choices(&mut self) {
        let k = self.spec.dims.top_k;
        let (rids, sids) = (i64s(&self.r.topk_ids), i64s(&self.full.topk_ids));
        let (rts, sts) = (f64s(&self.r.topk_scores), f64s(&self.full.topk_scores));
        for t in 0..self.decided.len() {
            let pairs = |ids: &[i64], ts: &[f64]| {
                let mut v: Vec<(i64, f64)> = (0..k).map(|c| (ids[t * k + c], ts[t * k + c])).collect();
                v.sort_by_key(|p| p.0);
                v
            };
            let (pr, ps) = (pairs(&rids, &rts), pairs(&sids, &sts));
            let same = pr.iter().zip(&ps).all(|(a, b)| a.0 == b.0);
            if !self.decided[t] && !self.valid_choice(t, &sids) {
                continue;
            }
            if same {
                self.gate_values(t, &pr, &ps);
            } else if self.decided[t] {
                let a: Vec<i64> = pr.iter().map(|p| p.0).collect();
                let b: Vec<i64> = ps.iter().map(|p| p.0).collect();
                let (margin, bound) = (self.m.topk[t], 2.0 * self.bounds.choice[t]);
                let detail = format!(
                    "token {t} chose experts {b:?}, the reference {a:?} (margin {margin:.3e} > bound {bound:.3e})"
                );
                self.push("topk_ids", "ids", json!(a), json!(b), detail);
            } else {
                // A valid other choice: its gate values are the reference's scores there.
                self.j.near_ties.flipped_rows += 1;
                let at = self.reference_values_at(t, &ps);
                self.gate_values(t, &at, &ps);
            }
        }
    }

    /// The reference's gate values of token `t` had it chosen the experts of `ps`: its scores
    /// there, normalized over them with route_norm, times route_scale.
    fn reference_values_at(&self, t: usize, ps: &[(i64, f64)]) -> Vec<(i64, f64)> {
        let e = self.spec.dims.experts;
        let scores = f64s(&self.r.scores);
        let s: Vec<f64> = ps.iter().map(|p| scores[t * e + p.0 as usize]).collect();
        let den = if self.spec.router.route_norm { s.iter().sum::<f64>() + 1e-20 } else { 1.0 };
        let scale = self.spec.router.route_scale;
        ps.iter().zip(&s).map(|(p, v)| (p.0, v / den * scale)).collect()
    }

    /// The same experts: their gate values must agree (route_norm divides by a sum of K).
    fn gate_values(&mut self, t: usize, pr: &[(i64, f64)], ps: &[(i64, f64)]) {
        let k = self.spec.dims.top_k as f64;
        let sum: f64 = pr.iter().map(|p| p.1.abs()).sum::<f64>().max(1e-30);
        let scale = self.spec.router.route_scale.abs();
        let rel = (k + 4.0) * dtensor::DType::F32.eps();
        let norm = if self.spec.router.route_norm { 2.0 * k / (sum / scale.max(1e-30)) } else { 1.0 };
        let abs = 2.0 * self.bounds.score[t] * scale * norm;
        for ((id, a), (_, b)) in pr.iter().zip(ps) {
            let tol = abs + rel * a.abs().max(b.abs());
            if !close(*a, *b, tol) {
                let key = if a.is_nan() != b.is_nan() { "nan" } else { "values" };
                let detail = format!("token {t}, expert {id}: gate value {b} vs reference {a} (tolerance {tol:.3e})");
                self.push("topk_scores", key, json!(a), json!(b), detail);
            }
        }
    }

    /// The routing map on decided tokens; counts net of undecided tokens, and consistent with
    /// the sharded side's own map.
    fn map_and_counts(&mut self) {
        let e = self.spec.dims.experts;
        let (rmap, smap) = (bools(&self.r.routing_map), bools(&self.full.routing_map));
        let (rc, sc) = (i64s(&self.r.counts), i64s(&self.full.counts));
        let mut own = vec![0i64; e];
        let (mut rnet, mut snet) = (rc.clone(), sc.clone());
        for t in 0..self.decided.len() {
            for x in 0..e {
                let (a, b) = (rmap[t * e + x], smap[t * e + x]);
                own[x] += b as i64;
                if !self.decided[t] {
                    rnet[x] -= a as i64;
                    snet[x] -= b as i64;
                } else if a != b {
                    let detail = format!("routing_map[token {t}, expert {x}] is {b}, the reference has {a}");
                    self.push("routing_map", "map", json!(a), json!(b), detail);
                }
            }
        }
        if own != sc {
            let detail = "sharded counts differ from the sharded routing map summed over tokens".into();
            self.push("counts", "inconsistent", json!(own), json!(sc), detail);
        }
        self.map_matches_ids(&smap);
        if rnet != snet {
            let detail = "counts differ from the reference's on tokens whose choice was decided".into();
            self.push("counts", "values", json!(rc), json!(sc), detail);
        }
    }

    /// On every token, decided or not, the sharded routing map marks exactly the sharded ids.
    fn map_matches_ids(&mut self, smap: &[bool]) {
        let (k, e) = (self.spec.dims.top_k, self.spec.dims.experts);
        let sids = i64s(&self.full.topk_ids);
        for t in 0..self.decided.len() {
            let mut want = vec![false; e];
            sids[t * k..(t + 1) * k]
                .iter()
                .filter(|&&i| i >= 0 && (i as usize) < e)
                .for_each(|&i| want[i as usize] = true);
            if want[..] != smap[t * e..(t + 1) * e] {
                let detail = format!(
                    "routing_map of token {t} does not mark the token's own ids {:?}",
                    &sids[t * k..(t + 1) * k]
                );
                self.push("routing_map", "inconsistent", json!(want), json!(&smap[t * e..(t + 1) * e]), detail);
                return;
            }
        }
    }

    /// Each rank's counts must describe its own ids (GroupedExperts' offsets). Checked only
    /// where the counts satisfy their contract (otherwise torchtitan raises at the contract
    /// first) and come with ids laid out to match: tokens split where counts are partial; other
    /// pairings are stopped by their input contracts before any offsets exist.
    fn offsets(&mut self) {
        let (spec, s) = (self.spec, self.s);
        let contract = crate::contract::resolve(&spec.layout.counts_contract, &self.run.mesh, spec.revision.size1);
        let contract_ok = crate::contract::matches(&s.counts.placements, &contract, 1).unwrap_or(false);
        let paired = s.counts.placements.iter().zip(&s.topk_ids.placements).all(|(c, i)| match (c, i) {
            (Placement::Partial(_), i) => i.shard_dim().is_some_and(|d| d == 0 || d == 1),
            (Placement::Replicate, Placement::Replicate) => true,
            _ => false,
        });
        if !(contract_ok && paired) {
            return;
        }
        let (counts, ids) =
            (placement::short_list(&s.counts.placements), placement::short_list(&s.topk_ids.placements));
        for msg in crate::dispatch::local_consistency(&s.topk_ids, &s.counts) {
            let detail = format!("{msg} (counts {counts} next to ids {ids})");
            self.push("offsets", "inconsistent", json!("local counts matching local ids"), json!(msg), detail);
        }
    }

    /// The kept groups of decided tokens.
    fn group_mask(&mut self) {
        let (Some(rg), Some(sg)) = (&self.r.group_mask, &self.full.group_mask) else { return };
        if sg.size() != rg.size() {
            let detail = "group_mask: gathered shape differs".into();
            self.push("group_mask", "shape", json!(rg.size()), json!(sg.size()), detail);
            return;
        }
        let g = *rg.size().last().unwrap() as usize;
        let (a, b) = (bools(rg), bools(sg));
        for t in 0..self.decided.len() {
            let (ra, rb) = (&a[t * g..(t + 1) * g], &b[t * g..(t + 1) * g]);
            if self.bounds.group_decided(self.m, t) && ra != rb {
                let detail = format!("token {t} kept other groups than the reference");
                self.push("group_mask", "mask", json!(ra), json!(rb), detail);
            }
        }
    }
}

/// Gathers every sharded output to a full tensor. A group mask whose ranks disagree on its
/// global shape (a `shape` verdict already says so) cannot be gathered and is left out.
fn gather(s: &RouterOutputs<DTensor>, j: &Judgement) -> Option<RouterOutputs<Tensor>> {
    // The layout oracle gathered the sharded outputs already (the same redistribution).
    let full = |name: &str, d: &DTensor| j.gathered.get(name).or_else(|| d.full_tensor().ok());
    let explained = j.verdicts.iter().any(|v| v.class == Class::Shape && v.output.as_deref() == Some("group_mask"));
    let group_mask = match &s.group_mask {
        Some(d) if explained => full("group_mask", d),
        Some(d) => Some(full("group_mask", d)?),
        None => None,
    };
    Some(RouterOutputs {
        topk_scores: full("topk_scores", &s.topk_scores)?,
        topk_ids: full("topk_ids", &s.topk_ids)?,
        scores: full("scores", &s.scores)?,
        routing_map: full("routing_map", &s.routing_map)?,
        counts: full("counts", &s.counts)?,
        group_mask,
    })
}

pub fn check(
    spec: &RouterSpec,
    (run, m): (&Run, &Margins),
    r: &RouterOutputs<Tensor>,
    s: &RouterOutputs<DTensor>,
    j: &mut Judgement,
) {
    let Some(full) = oracle("values: gather", || gather(s, j)) else {
        j.verdicts.push(Verdict {
            class: Class::Value,
            output: None,
            expected: json!("gatherable outputs"),
            actual: json!("redistribute failed"),
            detail: "an output could not be gathered to Replicate".into(),
            key: "gather".into(),
            backward: false,
        });
        return;
    };
    let bounds = Bounds::new(m, spec.dims.model);
    let mut c = Compare { spec, run, r, s, full, m, bounds, decided: Vec::new(), j };
    if !c.shapes() {
        return;
    }
    oracle("values: scores", || c.scores());
    c.decide();
    oracle("values: choices", || c.choices());
    oracle("values: map and counts", || c.map_and_counts());
    oracle("values: offsets", || c.offsets());
    c.group_mask();
}
