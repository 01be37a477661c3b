//! The case stream: case `index` of a run seeded `seed`, drawn by the subject from its own
//! ChaCha8 stream, and the fuzzer bytes that decode to the same case.

use crate::case::Case;
use crate::generate::{case_seed, GenCommon, Recorder};
use crate::subject::Subject;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Case `index` of a run seeded `seed`.
pub fn nth<S: Subject>(seed: u64, index: u64, common: &GenCommon, gen: &S::Gen) -> Case<S> {
    let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index));
    S::generate(&mut rng, common, gen)
}

/// The fuzzer input bytes that decode (through `Arbitrary`, with [`Bytes`]) to case `index` of
/// seed `seed` under `gen`.
pub fn seed_bytes<S: Subject>(seed: u64, index: u64, common: &GenCommon, gen: &S::Gen) -> Vec<u8> {
    let mut r = Recorder { rng: ChaCha8Rng::seed_from_u64(case_seed(seed, index)), bytes: Vec::new() };
    S::generate(&mut r, common, gen);
    r.bytes
}
