//! The differential harness: cases and their data, the runner, oracles and outcomes; one entry
//! point to check a case ([`check()`]); generation, shrinking, campaigns and reports around it.

pub mod bench;
pub mod bucket;
pub mod campaign;
pub mod case;
pub mod check;
pub mod confirm;
pub mod data;
pub mod error;
pub mod export;
pub mod generate;
pub mod json;
pub mod known;
pub mod limits;
pub mod oracle;
pub mod outcome;
pub mod replay;
pub mod report;
pub mod runner;
pub mod shrink;
pub mod signature;
pub mod tensor_data;
pub mod timing;
pub mod worker;

pub use check::{check, check_guarded, guard, Checked, Crashed, Options};
pub use error::{Error, Result};
pub use signature::Signature;

/// FNV-1a, for fingerprints that must be stable across runs and machines.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}
