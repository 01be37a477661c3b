//! `comm`: collectives where the revision and rule set promise none. From torch 2.13 on,
//! DTensor scatters token-sharded operands locally (pytorch#186149, whose tests assert zero
//! communication, and the reason torchtitan#3515 dropped local_map); local_map sites never
//! communicate. torch 2.12 promises nothing: its replicate-only scatter gathers by design.

use super::{Class, Judgement, Verdict};
use crate::dtensor::RuleSet;
use crate::harness::case::Case;
use crate::harness::runner::Run;
use serde_json::json;

/// Labels of the two scatter sites (see `router::sharded`).
pub const SCATTER_SITES: [&str; 2] = ["group_mask", "routing_map"];

pub fn check(case: &Case, run: &Run, j: &mut Judgement) {
    if case.revision.rules == RuleSet::Torch212 {
        return;
    }
    for site in SCATTER_SITES {
        let found: Vec<_> = run.comms.iter().filter(|c| c.tensor == site).collect();
        if found.is_empty() {
            continue;
        }
        let mut ops: Vec<String> = found.iter().map(|c| c.op.clone()).collect();
        ops.dedup();
        j.verdicts.push(Verdict {
            class: Class::Comm,
            output: Some(site.into()),
            expected: json!([]),
            actual: json!(found),
            detail: format!(
                "{} collective(s) at the {site} scatter, where {} promises a local scatter",
                found.len(),
                case.revision.rules
            ),
            key: ops.join("+"),
            backward: false,
        });
    }
}
