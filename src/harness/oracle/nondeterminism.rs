//! `nondeterminism`: the same case run twice must give bitwise the same sharded outputs,
//! placements and communication.

use super::{Class, Judgement, Verdict};
use crate::run::Run;
use serde_json::json;

/// A tensor's raw bytes (its values, bitwise).
fn bytes(t: &tch::Tensor) -> Vec<u8> {
    let t = t.to_device(tch::Device::Cpu).contiguous().view(-1);
    let n = t.numel() * t.kind().elt_size_in_bytes();
    let mut out = vec![0u8; n];
    t.copy_data_u8(&mut out, t.numel());
    out
}

fn fingerprint(run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    match &run.sharded {
        Err(e) => v.push(format!("error {e}")),
        Ok(s) => {
            for (name, d) in s.iter() {
                // Every rank's local bytes: the fingerprint needs no gather, so an output whose
                // ranks disagree on its shape is compared too.
                let locals: Vec<u64> = d.locals.iter().map(|t| crate::hash64(&bytes(t))).collect();
                v.push(format!("{name} {:?} {:?} {locals:?}", d.placements, d.rank_global_shapes()));
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
