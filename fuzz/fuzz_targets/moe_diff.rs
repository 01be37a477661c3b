//! The MoE-layer subject, differentially: see diff.rs. Its bytes map to the cases of
//! `GenConfig::of_subject(Kind::Moe)` (`gen --subject moe --fuzz-bytes` writes seeds).
#![no_main]

#[path = "diff.rs"]
mod diff;

use libfuzzer_sys::fuzz_target;
use shardfuzz::subjects::Kind;

fuzz_target!(|bytes: &[u8]| diff::run(Kind::Moe, bytes));
