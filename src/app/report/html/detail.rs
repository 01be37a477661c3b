//! What the detail panel shows of each bucket, as one JSON block the page parses on the first
//! click: the error text, the minimized dims, the case (its reproducer, else its first case),
//! and its real-PyTorch status when the report has one. What the page already shows or the
//! script can derive (the replay command, the file linked) is not repeated.

use crate::report::Report;
use serde_json::{json, Value};
use std::path::Path;

/// Longest case text embedded per bucket; a longer one is cut (its file has it all).
const CASE_CHARS: usize = 12_000;

fn case_text(dir: &Path, rel: &str) -> String {
    match std::fs::read_to_string(dir.join(rel)) {
        Ok(t) if t.chars().count() > CASE_CHARS => {
            let cut: String = t.chars().take(CASE_CHARS).collect();
            format!("{cut}\n... ({} characters; the file has the rest)", t.chars().count())
        }
        Ok(t) => t,
        Err(_) => format!("({rel} is not next to this report)"),
    }
}

pub(super) fn data(r: &Report, dir: &Path) -> String {
    let list: Vec<Value> = r
        .buckets
        .iter()
        .map(|b| {
            let file = b.repro.as_deref().unwrap_or(&b.first_case);
            let confirm = serde_json::to_value(b).ok().and_then(|v| v.get("confirm").cloned()).unwrap_or(Value::Null);
            json!({
                "signature": b.signature.to_string(),
                "class": b.class.name(),
                "explanation": b.explanation,
                "detail": b.detail,
                "count": b.count,
                "first": b.first_index,
                "smallest": b.smallest_index,
                "known": b.known,
                "shrink": b.shrink,
                "repro": b.repro,
                "first_case": b.first_case,
                "confirm": confirm,
                "case": case_text(dir, file),
            })
        })
        .collect();
    // JSON never holds `<` outside strings, and inside them `\u003c` reads the same: the
    // block cannot close its script element early.
    let text = serde_json::to_string(&list).expect("buckets serialize").replace('<', "\\u003c");
    format!("<script type=\"application/json\" id=\"bucket-data\">{text}</script>\n")
}
