//! The MoE subject's shrink candidates: smaller mesh axes, EP and SP off, smaller dims, features
//! off (shared experts, coefficient, groups, backward), then the harness's value
//! simplifications. A candidate that changes a shape re-draws its inputs from the seed.

use crate::spec::MoeSpec;
use harness::case::Case;
use harness::shrink::{smaller, value_candidates};

type MCase = Case<MoeSpec>;

fn redrawn(mut c: MCase) -> MCase {
    c.data.tensors = None;
    c
}

fn tp_of(c: &MCase) -> usize {
    MoeSpec::axes(c).2
}

/// The largest ep above 1 and below the case's that divides `dense` and the expert count.
fn smaller_ep(s: &MoeSpec, dense: usize) -> Option<usize> {
    (2..s.parallel.ep).rev().find(|&e| dense.is_multiple_of(e) && s.dims.experts.is_multiple_of(e))
}

/// Candidates, simplest first, each differing from `c` in one respect.
pub fn candidates(c: &MCase) -> Vec<MCase> {
    let mut out = each_candidate(c);
    batch_follows_dp(c, &mut out);
    out
}

fn each_candidate(c: &MCase) -> Vec<MCase> {
    let mut out = Vec::new();
    let s = &c.subject;
    // Mesh axes toward 1 (dp_replicate and ep kept valid).
    for axis in 0..3 {
        for v in smaller(c.mesh.shape[axis], 1) {
            let mut n = c.clone();
            n.mesh.shape[axis] = v;
            if axis == 0 && v % n.subject.parallel.dp_replicate != 0 {
                n.subject.parallel.dp_replicate = 1;
            }
            let (dp, cp, tp) = MoeSpec::axes(&n);
            let dense = (dp / n.subject.parallel.dp_replicate) * cp * tp;
            if !dense.is_multiple_of(n.subject.parallel.ep) {
                // Keep EP on where the smaller mesh allows it (the EP bugs need it).
                n.subject.parallel.ep = smaller_ep(&n.subject, dense).unwrap_or(1);
            }
            if axis == 2 && v > 1 {
                // The same positions per tp rank on fewer ranks (an uneven length stays uneven).
                let seq = (s.dims.seq * v).div_ceil(tp_of(c));
                if seq != s.dims.seq {
                    let mut m = n.clone();
                    m.subject.dims.seq = seq;
                    out.push(redrawn(m));
                }
            }
            out.push(n);
        }
    }
    if s.parallel.ep > 1 {
        let mut n = c.clone();
        n.subject.parallel.ep = 1;
        out.push(n);
        let (dp, cp, tp) = MoeSpec::axes(c);
        if let Some(ep) = smaller_ep(s, (dp / s.parallel.dp_replicate) * cp * tp) {
            let mut n = c.clone();
            n.subject.parallel.ep = ep;
            out.push(n);
        }
    }
    if s.parallel.dp_replicate > 1 {
        let mut n = c.clone();
        n.subject.parallel.dp_replicate = 1;
        out.push(n);
    }
    if s.parallel.sp {
        let mut n = c.clone();
        n.subject.parallel.sp = false;
        out.push(n);
    }
    let d = s.dims;
    let dim = |f: &dyn Fn(&mut crate::spec::Dims)| {
        let mut n = c.clone();
        f(&mut n.subject.dims);
        redrawn(n)
    };
    for v in smaller(d.batch, 1) {
        out.push(dim(&|x| x.batch = v));
    }
    let mut seqs = smaller(d.seq, 1);
    // One tp round shorter: the same remainder modulo tp.
    seqs.extend(d.seq.checked_sub(tp_of(c)).filter(|&v| v > 0 && !seqs.contains(&v)));
    for v in seqs {
        out.push(dim(&|x| x.seq = v));
    }
    for v in smaller(d.experts, 1) {
        if v >= d.top_k {
            out.push(dim(&|x| x.experts = v));
        }
    }
    for v in smaller(d.top_k, 1) {
        out.push(dim(&|x| x.top_k = v));
    }
    if d.shared_hidden.is_some() {
        out.push(dim(&|x| x.shared_hidden = None));
    }
    if s.load_balance_coeff.is_some() {
        let mut n = c.clone();
        n.subject.load_balance_coeff = None;
        out.push(redrawn(n));
    }
    if s.router.groups.is_some() {
        let mut n = c.clone();
        n.subject.router.groups = None;
        out.push(n);
    }
    if s.backward {
        let mut n = c.clone();
        n.subject.backward = false;
        out.push(redrawn(n));
    }
    if s.router.route_norm || s.router.route_scale != 1.0 {
        let mut n = c.clone();
        n.subject.router.route_norm = false;
        n.subject.router.route_scale = 1.0;
        out.push(n);
    }
    value_candidates(c, &mut out);
    out
}

/// From `tt-head` on a dp rank holds seq tokens and the batch is dp: no candidate shrinks the
/// batch by itself, and one with a smaller dp gets batch = dp (its inputs re-drawn).
fn batch_follows_dp(c: &MCase, out: &mut Vec<MCase>) {
    if !c.subject.revision.folds_batch() {
        return;
    }
    out.retain(|n| n.subject.dims.batch == c.subject.dims.batch);
    for n in out.iter_mut() {
        let dp = n.mesh.shape[0];
        if n.subject.dims.batch != dp {
            n.subject.dims.batch = dp;
            n.data.tensors = None;
        }
    }
}
