//! The router's shrink candidates: fewer or smaller mesh dims, smaller dims (tensors cut to
//! match), the backward's config axes toward the plainest, router features off, placements
//! toward Replicate, then the harness's value simplifications.

use crate::backward::BackwardSpec;
use crate::spec::RouterSpec;
use crate::Groups;
use harness::case::Case;
use harness::shrink::{cut, smaller, value_candidates};
use harness::tensor_data::Tensors;
use placement::Placement;

type RCase = Case<RouterSpec>;

fn with_dims(c: &RCase, batch: usize, seq: usize, model: usize, experts: usize) -> RCase {
    let mut n = c.clone();
    let d = &mut n.subject.dims;
    (d.batch, d.seq, d.model, d.experts) = (batch, seq, model, experts);
    if let Some(t) = &mut n.data.tensors {
        for (name, td) in t.0.iter_mut() {
            let shape: Vec<usize> = match name.as_str() {
                "x" => vec![batch, seq, model],
                "gate" => vec![experts, model],
                _ => vec![experts],
            };
            *td = cut(td, &shape);
        }
    }
    n
}

/// Candidates, simplest first, each differing from `c` in one respect.
pub fn candidates(c: &RCase) -> Vec<RCase> {
    let mut out = Vec::new();
    mesh_candidates(c, &mut out);
    dim_candidates(c, &mut out);
    backward_candidates(c, &mut out);
    feature_candidates(c, &mut out);
    if c.subject.backward.is_none() {
        placement_candidates(c, &mut out);
    }
    value_candidates(c, &mut out);
    out.iter_mut().for_each(fit_backward);
    out
}

/// A backward case's layouts follow from its boundary and config, and `etp` is 1 or the TP
/// degree: after a change elsewhere, both are brought back in line.
fn fit_backward(c: &mut RCase) {
    let tp = c.mesh.shape.iter().product::<usize>();
    let s = &mut c.subject;
    let Some(b) = &mut s.backward else { return };
    if b.etp != 1 {
        b.etp = tp;
    }
    s.layout = crate::generate::backward_layout(b, &s.router);
}

/// A backward case without its backward (for a forward signature), then each config axis
/// toward the plainest: no EP (and no ETP), no SP, scores after the experts.
fn backward_candidates(c: &RCase, out: &mut Vec<RCase>) {
    let Some(b) = &c.subject.backward else { return };
    let with = |f: &dyn Fn(&mut BackwardSpec)| {
        let mut n = c.clone();
        if let Some(nb) = &mut n.subject.backward {
            f(nb);
        }
        n
    };
    let mut n = c.clone();
    n.subject.backward = None;
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
fn mesh_candidates(c: &RCase, out: &mut Vec<RCase>) {
    let nd = c.mesh.shape.len();
    if nd > 1 {
        for d in (0..nd).rev() {
            let mut n = c.clone();
            n.mesh.shape.remove(d);
            n.mesh.names.remove(d);
            let l = &mut n.subject.layout;
            l.x.remove(d);
            l.gate.remove(d);
            l.counts_contract.remove(d);
            for b in [&mut l.expert_bias, &mut l.gate_bias].into_iter().flatten() {
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
fn dim_candidates(c: &RCase, out: &mut Vec<RCase>) {
    let dm = c.subject.dims;
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
        n.subject.dims.top_k = k;
        out.push(n);
    }
    // Fewer experts (groups off first when they would not divide).
    for e in smaller(dm.experts, dm.top_k.max(2)) {
        let mut n = with_dims(c, dm.batch, dm.seq, dm.model, e);
        if let Some(g) = n.subject.router.groups {
            if e % g.num_groups != 0 || e / g.num_groups < 2 {
                n.subject.router.groups = None;
            }
        }
        out.push(n);
    }
}

/// Router features off: groups (or fewer of them), the expert bias, force-balance, route_norm,
/// a route scale other than 1.
fn feature_candidates(c: &RCase, out: &mut Vec<RCase>) {
    let with = |f: &dyn Fn(&mut RCase)| {
        let mut n = c.clone();
        f(&mut n);
        n
    };
    let r = &c.subject.router;
    if let Some(g) = r.groups {
        out.push(with(&|n| n.subject.router.groups = None));
        let e = c.subject.dims.experts;
        for gn in smaller(g.num_groups, 1).into_iter().filter(|&gn| e.is_multiple_of(gn) && e / gn >= 2) {
            out.push(with(&|n| {
                n.subject.router.groups = Some(Groups { num_groups: gn, num_limited: g.num_limited.min(gn) })
            }));
        }
        for gk in smaller(g.num_limited, 1) {
            out.push(with(&|n| n.subject.router.groups = Some(Groups { num_groups: g.num_groups, num_limited: gk })));
        }
    }
    if r.expert_bias {
        out.push(with(&|n| {
            n.subject.router.expert_bias = false;
            n.subject.layout.expert_bias = None;
            drop_tensor(&mut n.data.tensors, "expert_bias");
        }));
    }
    if r.force_load_balance {
        out.push(with(&|n| n.subject.router.force_load_balance = false));
    }
    if r.route_norm {
        out.push(with(&|n| n.subject.router.route_norm = false));
    }
    if r.route_scale != 1.0 {
        out.push(with(&|n| n.subject.router.route_scale = 1.0));
    }
    if r.gate_bias {
        out.push(with(&|n| {
            n.subject.router.gate_bias = false;
            n.subject.layout.gate_bias = None;
            drop_tensor(&mut n.data.tensors, "gate_bias");
        }));
    }
}

/// Placements toward Replicate (a Partial input too: its value is then whole on every rank),
/// then shard dims spelled positively (reads better; same layout).
fn placement_candidates(c: &RCase, out: &mut Vec<RCase>) {
    for d in 0..c.mesh.shape.len() {
        for which in 0..4 {
            let mut n = c.clone();
            let l = &mut n.subject.layout;
            let slot = match which {
                0 => &mut l.x[d],
                1 => &mut l.gate[d],
                2 => match &mut l.expert_bias {
                    Some(b) => &mut b[d],
                    None => continue,
                },
                _ => match &mut l.gate_bias {
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
    let l = &mut n.subject.layout;
    norm(&mut l.x, 3);
    norm(&mut l.gate, 2);
    norm(&mut l.counts_contract, 1);
    if let Some(b) = &mut l.expert_bias {
        norm(b, 1);
    }
    if n.subject.layout != c.subject.layout {
        out.push(n);
    }
}

/// Removes an input that a feature turned off no longer needs.
fn drop_tensor(t: &mut Option<Tensors>, name: &str) {
    if let Some(t) = t {
        t.0.retain(|(n, _)| n != name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::RouterGen;
    use dtensor::DType;
    use harness::case::MeshSpec;
    use harness::generate::GenCommon;
    use harness::shrink::{shrink, Budget};
    use harness::stream::nth;

    #[test]
    fn shrinking_reaches_a_fixpoint_that_keeps_the_property() {
        // Property: at least 2 ranks and a sequence of at least 3 tokens.
        let prop = |c: &RCase| c.ranks() >= 2 && c.subject.dims.seq >= 3;
        let mut start: RCase = nth(3, 0, &GenCommon::default(), &RouterGen::default());
        let s = &mut start.subject;
        s.backward = None;
        s.layout.x = vec![Placement::Shard(0), Placement::Shard(1)];
        s.layout.gate = vec![Placement::Replicate; 2];
        s.layout.counts_contract = vec![Placement::Replicate; 2];
        s.layout.expert_bias = s.router.expert_bias.then(|| vec![Placement::Replicate; 2]);
        s.layout.gate_bias = s.router.gate_bias.then(|| vec![Placement::Replicate; 2]);
        s.dims.seq = 9;
        start.mesh = MeshSpec { shape: vec![2, 2], names: vec!["dp_shard".into(), "tp".into()] };
        start.validate().unwrap();
        let s = shrink(&start, Budget::default(), prop);
        assert!(prop(&s.case));
        assert_eq!(s.case.ranks(), 2);
        let d = s.case.subject.dims;
        assert_eq!((d.seq, d.batch, d.model), (3, 1, 1));
        assert_eq!(s.case.dtype, DType::F32);
        assert!(!s.truncated);
        s.case.validate().unwrap();
        // Deterministic.
        assert_eq!(shrink(&start, Budget::default(), prop).case, s.case);
    }
}
