//! The router subject, differentially: see diff.rs. Its bytes map to the cases of
//! `GenConfig::of_subject(Kind::Router)`, the default generator's.
#![no_main]

#[path = "diff.rs"]
mod diff;

use libfuzzer_sys::fuzz_target;
use shardfuzz::subjects::Kind;

fuzz_target!(|bytes: &[u8]| diff::run(Kind::Router, bytes));
