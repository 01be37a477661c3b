//! `shape`: every rank must infer the true global shape of every output. A `from_local`
//! re-wrap without `shape=` on uneven shards makes ranks disagree (docs/design.md). And every
//! rank's local must be its torch.chunk piece of the global tensor ([`super::layout`], key
//! `local_layout`).

use super::{Class, Judgement, Verdict};
use crate::run::Named;
use dtensor::{local, DTensor};
use serde_json::json;
use tch::Tensor;

pub fn check(r: &Named<Tensor>, s: &Named<DTensor>, j: &mut Judgement) {
    crate::timing::oracle("shape and layout: layout", || super::layout::check(s, j));
    for (name, d) in s.iter() {
        let Some(rt) = r.get(name) else { continue };
        let truth = local::shape(rt);
        let shapes = d.rank_global_shapes();
        let bad: Vec<usize> = (0..shapes.len()).filter(|&r| shapes[r] != truth).collect();
        if bad.is_empty() {
            continue;
        }
        let agree = shapes.iter().all(|s| *s == shapes[0]);
        j.verdicts.push(Verdict {
            class: Class::Shape,
            output: Some(name.into()),
            expected: json!(truth),
            actual: if agree { json!(shapes[0]) } else { json!(shapes) },
            detail: format!("rank(s) {bad:?} infer a global shape other than the reference's"),
            key: if agree { "wrong_global".into() } else { "rank_dependent".into() },
            backward: false,
        });
    }
}
