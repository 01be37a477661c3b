//! `placement`: every output with a declared contract must have exactly the contract's
//! placements (the subject resolves the contract on the mesh the way its program does, e.g.
//! torchtitan's size-1 rule) and compares them as torchtitan does, shard dims normalised
//! (`check_dtensor_placements_match`: Partial(sum) != Replicate, Partial(sum) != Partial(avg)).
//! A mismatch on a size-1 mesh axis is marked `@1`.

use super::{Class, Judgement, Verdict};
use crate::run::{Named, Run};
use dtensor::DTensor;
use serde_json::json;

pub fn check(run: &Run, s: &Named<DTensor>, j: &mut Judgement) {
    for c in &run.contracts {
        let Some(d) = s.get(&c.output) else { continue };
        let actual = &d.placements;
        let norm = |ps: &[placement::Placement]| placement::normalize_all(ps, c.ndim).ok();
        if actual.len() == c.placements.len() && norm(actual).is_some() && norm(actual) == norm(&c.placements) {
            continue;
        }
        // Key: each mismatching mesh dim as expected->actual, marked @1 on size-1 axes.
        let mut parts: Vec<String> = c
            .placements
            .iter()
            .zip(actual)
            .enumerate()
            .filter(|(_, (e, a))| e != a)
            .map(|(md, (e, a))| format!("{e}->{a}{}", if run.mesh.dim_size(md) == 1 { "@1" } else { "" }))
            .collect();
        parts.sort();
        parts.dedup();
        j.verdicts.push(Verdict {
            class: Class::Placement,
            output: Some(c.output.clone()),
            expected: json!(c.placements),
            actual: json!(actual),
            detail: format!("{} placements differ from {}", c.output, c.source),
            key: parts.join(","),
            backward: false,
        });
    }
}
