//! `nondeterminism`: the same case run twice must give bitwise the same sharded outputs,
//! placements and communication.

use super::{Class, Judgement, Verdict};
use crate::harness::runner::Run;
use serde_json::json;

fn fingerprint(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    match &run.sharded {
        Err(e) => v.push(format!("error {e}")),
        Ok(s) => {
            for (name, d) in s.named() {
                let vals = d.full_tensor().map(|t| {
                    let t = t.to_device(tch::Device::Cpu).contiguous();
                    let bytes: Vec<u8> =
                        Vec::<u8>::try_from(t.view_dtype(tch::Kind::Uint8).view(-1)).unwrap_or_default();
                    bytes
                });
                v.push(format!(
                    "{name} {:?} {:?} {:?}",
                    d.placements,
                    d.rank_global_shapes(),
                    vals.map(|b| crate::harness::hash64(&b))
                ));
            }
        }
    }
    v.push(format!("{:?}", run.comms));
    v
}

/// Compares two runs of the same case.
pub fn check(first: &Run, second: &Run, j: &mut Judgement) {
    let (a, b) = (fingerprint(first), fingerprint(second));
    if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
        j.verdicts.push(Verdict {
            class: Class::Nondeterminism,
            output: None,
            expected: json!(a.get(i)),
            actual: json!(b.get(i)),
            detail: "a second run of the same case gave a different result".into(),
            key: a.get(i).and_then(|s| s.split(' ').next()).unwrap_or("-").to_string(),
            backward: false,
        });
    }
}
