//! `placement`: the counts' placements against the declared contract, resolved on the mesh
//! with the case's size-1 rule and compared the way torchtitan compares them.

use super::{Class, Judgement, Verdict};
use crate::dtensor::DTensor;
use crate::harness::case::Case;
use crate::harness::runner::Run;
use crate::router::contract;
use crate::router::RouterOutputs;
use serde_json::json;

pub fn check(case: &Case, run: &Run, s: &RouterOutputs<DTensor>, j: &mut Judgement) {
    let resolved = contract::resolve(&case.layout.counts_contract, &run.mesh, case.revision.size1);
    let actual = &s.counts.placements;
    if contract::matches(actual, &resolved, 1).unwrap_or(false) {
        return;
    }
    // Key: each mismatching mesh dim as expected->actual, marked @1 on size-1 axes.
    let mut parts: Vec<String> = resolved
        .iter()
        .zip(actual)
        .enumerate()
        .filter(|(_, (e, a))| e != a)
        .map(|(md, (e, a))| format!("{e}->{a}{}", if run.mesh.dim_size(md) == 1 { "@1" } else { "" }))
        .collect();
    parts.sort();
    parts.dedup();
    let contract: Vec<String> = case.layout.counts_contract.iter().map(|p| format!("'{p}'")).collect();
    j.verdicts.push(Verdict {
        class: Class::Placement,
        output: Some("counts".into()),
        expected: json!(resolved),
        actual: json!(actual),
        detail: format!(
            "counts placements differ from layout.counts_contract [{}] (size1={})",
            contract.join(", "),
            case.revision.size1
        ),
        key: parts.join(","),
        backward: false,
    });
}
