//! The MoE subject's shrink candidates: smaller mesh axes, EP and SP off, smaller dims, features
//! off (shared experts, coefficient, groups, backward), then the harness's value
//! simplifications. A candidate that changes a shape re-draws its inputs from the seed.
//!
//! Shorter sequences include the multiples of the unit the case's sequence checks want (tp·2·cp
//! before 565cb810c), so a refused-length step does not stop a trainer-checked case at 12 tokens.
//! One floor is the mechanism's, not the shrinker's: a *value* verdict of `tt-3604`'s
//! batch-aware combine needs two batch rows on a rank, a block length L at least tp (shorter
//! chunks are not modelled) and not a multiple of it, and every row inside the m·tp-row buffer
//! (m = ceil(B·L/tp)); the smallest such case is B = 2, L = 5 on tp = 2 (10 tokens). At B = 2,
//! L = 3 rank 0's last row lands at index 6 of a 6-row buffer: the same bug's index error, which
//! shrinks to 6 tokens.

use crate::revision::SeqCheck;
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

/// The unit of lengths the case's sequence checks let through (1 without `trainer_checks`):
/// tp·2·cp before 565cb810c, else the spec's sequence divisor.
fn seq_unit(c: &MCase) -> usize {
    let s = &c.subject;
    if !s.trainer_checks {
        return 1;
    }
    let (_, cp, tp) = MoeSpec::axes(c);
    match s.revision.seq_check() {
        SeqCheck::Old | SeqCheck::Assert => tp * cp * 2,
        SeqCheck::Current | SeqCheck::Tokens => s.seq_divisor(c),
    }
}

/// Shorter lengths, shortest first: the usual halving steps, one tp round shorter (the same
/// remainder modulo tp, so an uneven length stays uneven), and the multiples of the sequence
/// checks' unit (one unit, one unit shorter, half in whole units), which the halving steps miss
/// when the unit is above 2 (12 -> 6 fails a unit of 4; 12 -> 4 passes).
fn seq_candidates(c: &MCase) -> Vec<usize> {
    let seq = c.subject.dims.seq;
    let unit = seq_unit(c);
    let mut out = smaller(seq, 1);
    let more = [seq.checked_sub(tp_of(c)), Some(unit), seq.checked_sub(unit), Some(seq / unit / 2 * unit)];
    out.extend(more.into_iter().flatten().filter(|&v| v > 0 && v < seq));
    out.sort_unstable();
    out.dedup();
    out
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
    for v in seq_candidates(c) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MoeRev;

    fn case(rev: MoeRev, mesh: [usize; 3], seq: usize, sp: bool) -> MCase {
        let mut c: MCase = Case::from_json(crate::tests::CASE).unwrap();
        c.mesh.shape = mesh.to_vec();
        c.subject.revision = rev;
        c.subject.parallel.sp = sp;
        c.subject.dims.seq = seq;
        c
    }

    #[test]
    fn seq_candidates_keep_the_sequence_checks_unit() {
        // Before 565cb810c L must be a multiple of tp·2·cp = 4: 12 -> 6 fails, 12 -> 4 passes.
        let c = case(MoeRev::Tt3604, [1, 1, 2], 12, false);
        assert_eq!(seq_unit(&c), 4);
        assert_eq!(seq_candidates(&c), [1, 2, 4, 6, 8, 10, 11]);
        // From 565cb810c on with cp = 2 and SP off: a multiple of 2·cp = 4.
        let c = case(MoeRev::Tt3996, [1, 2, 1], 12, false);
        assert!(seq_candidates(&c).contains(&4));
        // Without the trainer's checks any length: one tp round shorter keeps L odd over tp.
        let mut c = case(MoeRev::Tt3604, [1, 1, 2], 5, false);
        c.subject.trainer_checks = false;
        assert_eq!(seq_unit(&c), 1);
        assert_eq!(seq_candidates(&c), [1, 2, 3, 4]);
    }

    /// The floor the module documentation gives: within 8 tokens no modelled `tt-3604` geometry
    /// (B >= 2, tp <= L, L not a multiple of tp) keeps every row in the buffer and misplaces
    /// one, so its value verdicts need 10 tokens (B = 2, L = 5, tp = 2), which does.
    #[test]
    fn batch_aware_value_verdicts_need_ten_tokens() {
        use crate::combine::{buffer, Geometry};
        use crate::revision::Combine;
        use crate::sharded::chunk;
        // (any row out of range, any row misplaced) over the tp ranks of one (B, L) block.
        let outcome = |b: usize, l: usize, n: usize| {
            let (mut oob, mut wrong) = (false, false);
            for r in 0..n {
                let (start, c_r) = chunk(l, n, r);
                let buf = buffer(Combine::BatchAware, Geometry { batch: b, seq: l, n, r, c_r }).unwrap();
                for (i, &at) in buf.at.iter().enumerate() {
                    let want = (i / c_r) * l + start + i % c_r;
                    oob |= at as usize >= buf.rows;
                    wrong |= at as usize != want;
                }
            }
            (oob, wrong)
        };
        for n in 2..=4 {
            for b in 2..=4 {
                for l in (n..=8 / b).filter(|l| l % n != 0) {
                    let (oob, wrong) = outcome(b, l, n);
                    assert!(oob || !wrong, "B={b} L={l} tp={n} misplaces rows inside the buffer");
                }
            }
        }
        assert_eq!(outcome(2, 5, 2), (false, true));
        assert_eq!(outcome(2, 3, 2), (true, true));
    }
}
