//! The harness core: cases and their data, running a case, the shared oracles and their
//! verdicts, signatures, outcomes, generation sources and shrinking; one entry point to check a
//! case ([`check()`]). Generic over the program under test ([`subject::Subject`]): nothing here
//! names a subject. Campaigns, reports and the command line are the application's.

pub mod case;
pub mod case_file;
pub mod check;
pub mod data;
pub mod error;
pub mod generate;
pub mod json;
pub mod limits;
pub mod oracle;
pub mod outcome;
pub mod pyfmt;
pub mod run;
pub mod runner;
pub mod shrink;
pub mod signature;
pub mod stream;
pub mod subject;
pub mod tensor_data;
pub mod timing;
pub mod verdict;

pub use case::{Case, CaseError, Common};
pub use check::{check, check_guarded, guard, Checked, Crashed, Options};
pub use error::{Error, Result};
pub use signature::Signature;
pub use subject::Subject;

/// FNV-1a, for fingerprints that must be stable across runs and machines.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
