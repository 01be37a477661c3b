//! Structure-aware, deterministic shrinking. Every candidate is a valid case that is smaller in
//! one respect (fewer or smaller mesh dims, smaller dims, fewer features, placements nearer R,
//! f32, simpler values); a candidate is kept when it still shows the same signature. Passes
//! repeat until none makes progress (a fixpoint) or the budget runs out.
//!
//! Tensors are cut, not redrawn, when dims shrink (`x[:B', :L', :D']`, `gate[:E', :D']`), so a
//! value bug keeps the values that exposed it.

use super::case::{Case, Style, Tensors};
use super::data;
use super::tensor_data::{TensorData, Values};
use crate::dtensor::DType;
use crate::placement::Placement;
use crate::router::Groups;
use std::time::{Duration, Instant};

/// What a shrink did.
#[derive(Clone, Debug, PartialEq)]
pub struct Shrunk {
    pub case: Case,
    /// Candidates tried.
    pub tried: usize,
    /// Candidates kept.
    pub kept: usize,
    pub elapsed: Duration,
    /// True when the budget ended the search before a fixpoint.
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub max_tries: usize,
    pub max_time: Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_tries: 2000, max_time: Duration::from_secs(30) }
    }
}

/// Cuts a row-major tensor to the leading `new` block of each dim.
fn cut(t: &TensorData, new: &[usize]) -> TensorData {
    let old = &t.shape;
    let n: usize = new.iter().product();
    let mut idx = vec![0usize; new.len()];
    let mut src = Vec::with_capacity(n);
    for _ in 0..n {
        let mut off = 0;
        for d in 0..old.len() {
            off = off * old[d] + idx[d];
        }
        src.push(off);
        for d in (0..new.len()).rev() {
            idx[d] += 1;
            if idx[d] < new[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    let values = match &t.values {
        Values::Float(v) => Values::Float(src.iter().map(|&i| v[i]).collect()),
        Values::Int(v) => Values::Int(src.iter().map(|&i| v[i]).collect()),
        Values::Bool(v) => Values::Bool(src.iter().map(|&i| v[i]).collect()),
    };
    TensorData { shape: new.to_vec(), dtype: t.dtype, values }
}

fn with_dims(c: &Case, batch: usize, seq: usize, model: usize, experts: usize) -> Case {
    let mut n = c.clone();
    n.dims.batch = batch;
    n.dims.seq = seq;
    n.dims.model = model;
    n.dims.experts = experts;
    if let Some(t) = &c.tensors {
        n.tensors = Some(Tensors {
            x: cut(&t.x, &[batch, seq, model]),
            gate: cut(&t.gate, &[experts, model]),
            expert_bias: t.expert_bias.as_ref().map(|b| cut(b, &[experts])),
            gate_bias: t.gate_bias.as_ref().map(|b| cut(b, &[experts])),
        });
    }
    n
}

/// Smaller values to try for a dim currently `v` (at least `lo`).
fn smaller(v: usize, lo: usize) -> Vec<usize> {
    let mut out = vec![lo, 2, v / 2, v.saturating_sub(1)];
    out.retain(|&x| x >= lo && x < v);
    out.sort_unstable();
    out.dedup();
    out
}

fn map_values(t: &TensorData, f: impl Fn(f64) -> f64) -> TensorData {
    let values = match &t.values {
        Values::Float(v) => Values::Float(v.iter().map(|&x| f(x)).collect()),
        other => other.clone(),
    };
    TensorData { values, ..t.clone() }
}

/// Candidates, simplest first, each differing from `c` in one respect.
fn candidates(c: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    mesh_candidates(c, &mut out);
    dim_candidates(c, &mut out);
    backward_candidates(c, &mut out);
    feature_candidates(c, &mut out);
    if c.backward.is_none() {
        placement_candidates(c, &mut out);
    }
    value_candidates(c, &mut out);
    out.iter_mut().for_each(fit_backward);
    out
}

/// A backward case's layouts follow from its boundary and config, and `etp` is 1 or the TP
/// degree: after a change elsewhere, both are brought back in line.
fn fit_backward(c: &mut Case) {
    let Some(b) = &mut c.backward else { return };
    let tp = c.mesh.shape.iter().product::<usize>();
    if b.etp != 1 {
        b.etp = tp;
    }
    c.layout = super::generate::backward_layout(b, &c.router);
}

/// A backward case without its backward (for a forward signature), then each config axis
/// toward the plainest: no EP (and no ETP), no SP, scores after the experts.
fn backward_candidates(c: &Case, out: &mut Vec<Case>) {
    let Some(b) = &c.backward else { return };
    let with = |f: &dyn Fn(&mut crate::router::backward::BackwardSpec)| {
        let mut n = c.clone();
        if let Some(nb) = &mut n.backward {
            f(nb);
        }
        n
    };
    let mut n = c.clone();
    n.backward = None;
    out.push(n);
    if b.ep {
        out.push(with(&|nb| {
            nb.ep = false;
            nb.etp = 1;
        }));
    }
    if b.etp != 1 {
        out.push(with(&|nb| nb.etp = 1));
    }
    if b.sp {
        out.push(with(&|nb| nb.sp = false));
    }
    if b.score_before_experts {
        out.push(with(&|nb| nb.score_before_experts = false));
    }
}

/// Fewer mesh dims (each placement list loses that dim), then smaller mesh dims.
fn mesh_candidates(c: &Case, out: &mut Vec<Case>) {
    let nd = c.mesh.shape.len();
    if nd > 1 {
        for d in (0..nd).rev() {
            let mut n = c.clone();
            n.mesh.shape.remove(d);
            n.mesh.names.remove(d);
            n.layout.x.remove(d);
            n.layout.gate.remove(d);
            n.layout.counts_contract.remove(d);
            for b in [&mut n.layout.expert_bias, &mut n.layout.gate_bias].into_iter().flatten() {
                b.remove(d);
            }
            out.push(n);
        }
    }
    for d in 0..nd {
        for s in smaller(c.mesh.shape[d], 1) {
            let mut n = c.clone();
            n.mesh.shape[d] = s;
            out.push(n);
        }
    }
}

/// Smaller batch, sequence, model dim, top-k and expert count (tensors cut to match).
fn dim_candidates(c: &Case, out: &mut Vec<Case>) {
    let dm = c.dims;
    for b in smaller(dm.batch, 1) {
        out.push(with_dims(c, b, dm.seq, dm.model, dm.experts));
    }
    for l in smaller(dm.seq, 1) {
        out.push(with_dims(c, dm.batch, l, dm.model, dm.experts));
    }
    for m in smaller(dm.model, 1) {
        out.push(with_dims(c, dm.batch, dm.seq, m, dm.experts));
    }
    for k in smaller(dm.top_k, 1) {
        let mut n = c.clone();
        n.dims.top_k = k;
        out.push(n);
    }
    // Fewer experts (groups off first when they would not divide).
    for e in smaller(dm.experts, dm.top_k.max(2)) {
        let mut n = with_dims(c, dm.batch, dm.seq, dm.model, e);
        if let Some(g) = n.router.groups {
            if e % g.num_groups != 0 || e / g.num_groups < 2 {
                n.router.groups = None;
            }
        }
        out.push(n);
    }
}

/// Router features off: groups (or fewer of them), the expert bias, force-balance, route_norm,
/// a route scale other than 1.
fn feature_candidates(c: &Case, out: &mut Vec<Case>) {
    let with = |f: &dyn Fn(&mut Case)| {
        let mut n = c.clone();
        f(&mut n);
        n
    };
    if let Some(g) = c.router.groups {
        out.push(with(&|n| n.router.groups = None));
        let e = c.dims.experts;
        for gn in smaller(g.num_groups, 1).into_iter().filter(|&gn| e.is_multiple_of(gn) && e / gn >= 2) {
            out.push(with(&|n| n.router.groups = Some(Groups { num_groups: gn, num_limited: g.num_limited.min(gn) })));
        }
        for gk in smaller(g.num_limited, 1) {
            out.push(with(&|n| n.router.groups = Some(Groups { num_groups: g.num_groups, num_limited: gk })));
        }
    }
    if c.router.expert_bias {
        out.push(with(&|n| {
            n.router.expert_bias = false;
            n.layout.expert_bias = None;
            if let Some(t) = &mut n.tensors {
                t.expert_bias = None;
            }
        }));
    }
    if c.router.force_load_balance {
        out.push(with(&|n| n.router.force_load_balance = false));
    }
    if c.router.route_norm {
        out.push(with(&|n| n.router.route_norm = false));
    }
    if c.router.route_scale != 1.0 {
        out.push(with(&|n| n.router.route_scale = 1.0));
    }
    if c.router.gate_bias {
        out.push(with(&|n| {
            n.router.gate_bias = false;
            n.layout.gate_bias = None;
            if let Some(t) = &mut n.tensors {
                t.gate_bias = None;
            }
        }));
    }
}

/// Placements toward Replicate (a Partial input too: its value is then whole on every rank),
/// then shard dims spelled positively (reads better; same layout).
fn placement_candidates(c: &Case, out: &mut Vec<Case>) {
    for d in 0..c.mesh.shape.len() {
        for which in 0..4 {
            let mut n = c.clone();
            let slot = match which {
                0 => &mut n.layout.x[d],
                1 => &mut n.layout.gate[d],
                2 => match &mut n.layout.expert_bias {
                    Some(b) => &mut b[d],
                    None => continue,
                },
                _ => match &mut n.layout.gate_bias {
                    Some(b) => &mut b[d],
                    None => continue,
                },
            };
            if *slot != Placement::Replicate {
                *slot = Placement::Replicate;
                out.push(n);
            }
        }
    }
    let mut n = c.clone();
    let norm = |ps: &mut Vec<Placement>, ndim: usize| {
        for p in ps.iter_mut() {
            if let Ok(q) = p.normalized(ndim) {
                *p = q;
            }
        }
    };
    norm(&mut n.layout.x, 3);
    norm(&mut n.layout.gate, 2);
    norm(&mut n.layout.counts_contract, 1);
    if let Some(b) = &mut n.layout.expert_bias {
        norm(b, 1);
    }
    if n.layout != c.layout {
        out.push(n);
    }
}

/// A simplification of the input values.
type Simplify = fn(f64) -> f64;

/// f32, then simpler values: zeros, signs, integers, tenths, one tensor at a time.
fn value_candidates(c: &Case, out: &mut Vec<Case>) {
    if c.dtype != DType::F32 {
        let mut n = c.clone();
        n.dtype = DType::F32;
        if let Some(t) = &mut n.tensors {
            t.x.dtype = DType::F32;
            t.gate.dtype = DType::F32;
        }
        out.push(n);
    }
    if c.tensors.is_none() {
        return;
    }
    let simplify: [Simplify; 4] =
        [|_| 0.0, |x| if x == 0.0 { 0.0 } else { x.signum() }, f64::round, |x| (x * 10.0).round() / 10.0];
    for f in simplify {
        for which in 0..3 {
            let mut n = c.clone();
            let nt = n.tensors.as_mut().expect("tensors");
            let slot = match which {
                0 => &mut nt.x,
                1 => &mut nt.gate,
                _ => match &mut nt.expert_bias {
                    Some(b) => b,
                    None => continue,
                },
            };
            let new = map_values(slot, f);
            if new != *slot {
                *slot = new;
                n.data.style = Style::Normal;
                out.push(n);
            }
        }
    }
}

/// Shrinks `case` while `interesting` holds. The input must be interesting.
pub fn shrink(case: &Case, budget: Budget, mut interesting: impl FnMut(&Case) -> bool) -> Shrunk {
    let start = Instant::now();
    let mut cur = case.clone();
    if cur.tensors.is_none() {
        cur.tensors = Some(data::inline(&cur));
    }
    let (mut tried, mut kept) = (0, 0);
    let mut truncated = false;
    'outer: loop {
        for cand in candidates(&cur) {
            if tried >= budget.max_tries || start.elapsed() >= budget.max_time {
                truncated = true;
                break 'outer;
            }
            if cand.validate().is_err() {
                continue;
            }
            tried += 1;
            if interesting(&cand) {
                cur = cand;
                kept += 1;
                continue 'outer;
            }
        }
        break;
    }
    Shrunk { case: cur, tried, kept, elapsed: start.elapsed(), truncated }
}

/// How big a case is, for picking the smallest of a bucket: ranks, then tokens, then elements.
pub fn size_key(c: &Case) -> (usize, usize, usize, usize) {
    let d = c.dims;
    (c.ranks(), d.batch * d.seq, d.experts * d.model, c.mesh.shape.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::generate::{nth, GenConfig};

    #[test]
    fn cut_takes_the_leading_block() {
        let t =
            TensorData { shape: vec![2, 3], dtype: DType::F32, values: Values::Float(vec![0., 1., 2., 3., 4., 5.]) };
        assert_eq!(cut(&t, &[1, 2]).values, Values::Float(vec![0., 1.]));
        assert_eq!(cut(&t, &[2, 1]).values, Values::Float(vec![0., 3.]));
    }

    #[test]
    fn shrinking_reaches_a_fixpoint_that_keeps_the_property() {
        // Property: at least 2 ranks and a sequence of at least 3 tokens.
        let prop = |c: &Case| c.ranks() >= 2 && c.dims.seq >= 3;
        let mut start = nth(3, 0, &GenConfig::default());
        start.backward = None;
        start.mesh = crate::harness::case::MeshSpec { shape: vec![2, 2], names: vec!["dp_shard".into(), "tp".into()] };
        start.layout.x = vec![Placement::Shard(0), Placement::Shard(1)];
        start.layout.gate = vec![Placement::Replicate; 2];
        start.layout.counts_contract = vec![Placement::Replicate; 2];
        start.layout.expert_bias = start.router.expert_bias.then(|| vec![Placement::Replicate; 2]);
        start.dims.seq = 9;
        start.validate().unwrap();
        let s = shrink(&start, Budget::default(), prop);
        assert!(prop(&s.case));
        assert_eq!(s.case.ranks(), 2);
        assert_eq!(s.case.dims.seq, 3);
        assert_eq!(s.case.dims.batch, 1);
        assert_eq!(s.case.dims.model, 1);
        assert_eq!(s.case.dtype, DType::F32);
        assert!(!s.truncated);
        s.case.validate().unwrap();
        // Deterministic.
        assert_eq!(shrink(&start, Budget::default(), prop).case, s.case);
    }
}
