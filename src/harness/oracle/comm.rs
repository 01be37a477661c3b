//! `comm`: collectives at a site where the program promises none. The subject lists its
//! promises for the case's rule set in [`Run::promises`] (the router: from torch 2.13 on,
//! DTensor scatters token-sharded operands locally; local_map sites never communicate).

use super::{Class, Judgement, Verdict};
use crate::run::Run;
use serde_json::json;

pub fn check(run: &Run, j: &mut Judgement) {
    for p in &run.promises {
        let found: Vec<_> = run.comms.iter().filter(|c| c.tensor == p.site).collect();
        if found.is_empty() {
            continue;
        }
        let mut ops: Vec<String> = found.iter().map(|c| c.op.clone()).collect();
        ops.dedup();
        j.verdicts.push(Verdict {
            class: Class::Comm,
            output: Some(p.site.clone()),
            expected: json!([]),
            actual: json!(found),
            detail: format!("{} collective(s) at the {} {}", found.len(), p.site, p.why),
            key: ops.join("+"),
            backward: false,
        });
    }
}
