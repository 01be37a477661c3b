//! What can still be checked on a token whose choice is a near-tie (its float64 margin at the
//! K-th expert, or the Gk-th group, is within what rounding can close): not which experts the
//! reference picked, but that the sharded run's pick is one a correct router could have made.
//!
//! - Every group holding a chosen expert is a valid top-Gk group: its float64 score is at least
//!   the Gk-th best minus twice the group bound.
//! - Within the groups that are certainly kept (those holding a chosen expert), no expert left
//!   out beats a chosen one by more than twice the choice bound, and the ids are distinct and in
//!   range.
//! - The chosen experts' gate values are the reference's scores at those experts (normalized
//!   over the chosen set with route_norm, times route_scale).
//!
//! A token none of this can judge (NaN scores, the force-balance override, more experts to pick
//! than the kept groups hold) is counted as unchecked.

use super::Compare;
use serde_json::json;

impl Compare<'_> {
    /// The sharded choice of undecided token `t` (ids `sids`, K per token) is a valid top-k.
    pub(super) fn valid_choice(&mut self, t: usize, sids: &[i64]) -> bool {
        let (k, e) = (self.spec.dims.top_k, self.spec.dims.experts);
        let chosen: Vec<i64> = sids[t * k..(t + 1) * k].to_vec();
        let c = &self.m.choice[t * e..(t + 1) * e];
        // With more experts to pick than the kept groups hold, the rest come from masked (-inf)
        // scores in any order: nothing to check against.
        let overfull = self
            .spec
            .router_config()
            .ok()
            .and_then(|cfg| Some(cfg.options.groups?.num_limited * cfg.experts_per_group()?))
            .is_some_and(|kept| k > kept);
        if self.spec.router.force_load_balance || overfull || c.iter().any(|x| x.is_nan()) {
            self.j.near_ties.unchecked_rows += 1;
            return true;
        }
        let mut seen = vec![false; e];
        for &i in &chosen {
            if i < 0 || i as usize >= e || std::mem::replace(&mut seen[i as usize], true) {
                let detail = format!("token {t} chose experts {chosen:?}: not {k} distinct experts of {e}");
                self.push("topk_ids", "invalid", json!(format!("{k} distinct ids < {e}")), json!(chosen), detail);
                return false;
            }
        }
        let kept = match self.kept_groups(t, &chosen) {
            Some(kept) => kept,
            None => return false,
        };
        let bound = 2.0 * self.bounds.choice[t];
        let weakest =
            chosen.iter().map(|&i| (c[i as usize], i)).fold((f64::INFINITY, -1), |a, b| if b.0 < a.0 { b } else { a });
        let passed_over =
            (0..e).filter(|&j| kept[j] && !seen[j]).map(|j| (c[j], j as i64)).fold((f64::NEG_INFINITY, -1), |a, b| {
                if b.0 > a.0 {
                    b
                } else {
                    a
                }
            });
        if passed_over.0 - weakest.0 > bound {
            let detail = format!(
                "token {t} chose expert {} (choice score {:.6e}) over expert {} ({:.6e}): {:.3e} apart, more than the bound {bound:.3e}",
                weakest.1, weakest.0, passed_over.1, passed_over.0, passed_over.0 - weakest.0
            );
            self.push("topk_ids", "not_top_k", json!(passed_over.1), json!(weakest.1), detail);
            return false;
        }
        true
    }

    /// The experts of the groups holding a chosen expert (all experts without groups), after
    /// checking each such group is a valid top-Gk group; None after reporting one that is not.
    fn kept_groups(&mut self, t: usize, chosen: &[i64]) -> Option<Vec<bool>> {
        let e = self.spec.dims.experts;
        let (Some(g), Some(p)) =
            (self.spec.router.groups, self.spec.router_config().ok().and_then(|c| c.experts_per_group()))
        else {
            return Some(vec![true; e]);
        };
        let n = g.num_groups;
        let gs = &self.m.group_scores[t * n..(t + 1) * n];
        let mut sorted = gs.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let gk_th = sorted[g.num_limited - 1];
        let bound = 2.0 * self.bounds.group[t];
        let mut kept = vec![false; e];
        for &i in chosen {
            let grp = i as usize / p;
            if gk_th - gs[grp] > bound {
                let detail = format!(
                    "token {t} chose expert {i} of group {grp} (group score {:.6e}), not among the top {} groups (the {}-th scores {gk_th:.6e}; bound {bound:.3e})",
                    gs[grp], g.num_limited, g.num_limited
                );
                self.push(
                    "group_mask",
                    "not_top_groups",
                    json!(format!("a top-{} group", g.num_limited)),
                    json!(grp),
                    detail,
                );
                return None;
            }
            kept[grp * p..(grp + 1) * p].iter_mut().for_each(|k| *k = true);
        }
        Some(kept)
    }
}
