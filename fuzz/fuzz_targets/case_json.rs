//! The front door: arbitrary bytes as a case file. Parsing and validation must turn every input
//! into a case or a clear error (never a panic, an abort or an allocation the size of the
//! input's numbers); a valid case must then run to an outcome or an error, without panicking.
#![no_main]

use dtensor::device::Dev;
use harness::{check, Options};
use libfuzzer_sys::fuzz_target;
use shardfuzz::subjects::read_case;
use std::sync::OnceLock;

fuzz_target!(|bytes: &[u8]| {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        tch::set_num_threads(1);
        // Small limits keep every valid case quick; the checks are the same at any limit.
        harness::limits::set(harness::limits::Limits::per_tensor(1 << 16));
    });
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let Ok(mut case) = read_case(text) else { return };
    case.device = Dev::Cpu;
    let _ = check(&case, Dev::Cpu, Options::default());
});
