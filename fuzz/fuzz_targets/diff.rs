//! What the differential fuzz targets share: bytes -> a case of one subject (through
//! `arbitrary`, valid by construction) -> both sides -> panic with the signature when an oracle
//! reports a divergence that is not already known: neither listed in known_signatures.txt nor an
//! instance of a known upstream bug family (the subject's `known`, which decides by mechanism and
//! site, so the many paths of one bug need no list). The panic message starts with the signature,
//! so libFuzzer's deduplication groups by it. Included by `router_diff` and `moe_diff`.

use dtensor::device::Dev;
use harness::subject::Subject;
use harness::{check, Options};
use shardfuzz::subjects::{GenConfig, Kind};
use std::sync::OnceLock;

/// `*` in a known-signature line matches any run of characters.
fn glob(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for p in parts {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Signatures already explained (docs/findings.md); override with SHARDFUZZ_KNOWN=<file>.
fn known() -> &'static Vec<String> {
    static K: OnceLock<Vec<String>> = OnceLock::new();
    K.get_or_init(|| {
        let text = match std::env::var("SHARDFUZZ_KNOWN") {
            Ok(p) => std::fs::read_to_string(p).expect("SHARDFUZZ_KNOWN names a readable file"),
            Err(_) => include_str!("../known_signatures.txt").to_string(),
        };
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
    })
}

/// One input of the target of `kind`.
pub fn run(kind: Kind, bytes: &[u8]) {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        dtensor::device::init();
        tch::set_num_threads(1);
    });
    // The subject's default generator's case for these bytes (`shardfuzz import --subject` gives
    // the same).
    let case = GenConfig::of_subject(kind).arbitrary(&mut arbitrary::Unstructured::new(bytes));
    let c = check(&case, Dev::Cpu, Options::default()).expect("generated cases are valid");
    for (v, sig) in c.judgement.verdicts.iter().zip(c.signatures()) {
        if !case.subject.known(&case, &sig).is_empty() {
            continue;
        }
        let text = sig.to_string();
        if !known().iter().any(|k| glob(k, &text)) {
            panic!("{text}: {}", v.detail);
        }
    }
}
