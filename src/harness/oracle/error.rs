//! `error`: exactly one side raised. Both raising counts as agreement (status parity).

use super::{Class, Judgement, Verdict};
use crate::run::Run;
use serde_json::json;

pub fn check(run: &Run, j: &mut Judgement) {
    match (&run.reference, &run.sharded) {
        (Ok(_), Err(e)) => j.verdicts.push(Verdict {
            class: Class::Error,
            output: None,
            expected: json!("ok"),
            actual: json!(e.kind()),
            detail: format!("only the sharded run raised: {e}"),
            key: e.key(),
            backward: false,
        }),
        (Err(e), Ok(_)) => j.verdicts.push(Verdict {
            class: Class::Error,
            output: None,
            expected: json!(e.kind()),
            actual: json!("ok"),
            detail: format!("only the reference raised: {e}"),
            key: format!("reference:{}", e.key()),
            backward: false,
        }),
        _ => {}
    }
}
