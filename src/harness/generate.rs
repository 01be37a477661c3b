//! Random cases, valid by construction. A subject draws its own cases ([`Subject::generate`])
//! from a [`Source`] of choices; the harness supplies the sources and the settings every
//! subject shares ([`GenCommon`]).
//!
//! One generator serves two sources of choices: a seeded ChaCha8 stream for campaigns
//! (portable: the same seed gives the same cases everywhere) and libFuzzer's bytes through
//! `arbitrary` for coverage-guided fuzzing.

use dtensor::device::Dev;
use dtensor::RuleSet;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Where choices come from.
pub trait Source {
    /// Uniform in `0..n` (n >= 1).
    fn below(&mut self, n: u32) -> u32;
    fn u64(&mut self) -> u64;

    fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u32) as usize]
    }
    /// Picks by weight: `items` are (weight, value).
    fn weighted<T: Copy>(&mut self, items: &[(u32, T)]) -> T {
        let total: u32 = items.iter().map(|i| i.0).sum();
        let mut x = self.below(total);
        for &(w, v) in items {
            if x < w {
                return v;
            }
            x -= w;
        }
        items[items.len() - 1].1
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below((hi - lo + 1) as u32) as usize
    }
}

impl Source for ChaCha8Rng {
    fn below(&mut self, n: u32) -> u32 {
        self.random_range(0..n.max(1))
    }
    fn u64(&mut self) -> u64 {
        self.random()
    }
}

/// libFuzzer bytes as choices; when the bytes run out every choice is the first one, so short
/// inputs still map to valid (small) cases.
pub struct Bytes<'a, 'b>(pub &'b mut arbitrary::Unstructured<'a>);

impl Source for Bytes<'_, '_> {
    fn below(&mut self, n: u32) -> u32 {
        self.0.int_in_range(0..=n.max(1) - 1).unwrap_or(0)
    }
    fn u64(&mut self) -> u64 {
        self.0.arbitrary().unwrap_or(0)
    }
}

/// Draws from a seeded stream and records, for each choice, the bytes that make
/// `arbitrary::Unstructured` decode the same choice: fuzzing seeds that map to generator cases.
pub(crate) struct Recorder {
    pub rng: ChaCha8Rng,
    pub bytes: Vec<u8>,
}

impl Source for Recorder {
    fn below(&mut self, n: u32) -> u32 {
        let n = n.max(1);
        let v = self.rng.random_range(0..n);
        // `int_in_range(0..=n-1)` reads big-endian bytes while the range needs them.
        let delta = n - 1;
        let mut width = 0;
        while width < 4 && (delta >> (width * 8)) > 0 {
            width += 1;
        }
        for i in (0..width).rev() {
            self.bytes.push((v >> (i * 8)) as u8);
        }
        v
    }
    fn u64(&mut self) -> u64 {
        let v: u64 = self.rng.random();
        self.bytes.extend_from_slice(&v.to_le_bytes());
        v
    }
}

names::named_enum! {
    /// How big generated cases get.
    pub enum SizeClass("size class") {
        /// At most 4 ranks and a few dozen tokens: the fast default.
        Small = "small",
        /// Up to 16 ranks and a few hundred tokens.
        Medium = "medium",
        /// Real model presets at real sizes (DeepSeek-V3 671B: 4096 tokens x 7168); GPU only.
        Large = "large",
    }
}

/// What to generate, whatever the subject.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenCommon {
    pub size: SizeClass,
    /// Rule sets to draw from; all when empty.
    pub rules: Vec<RuleSet>,
    pub device: Dev,
    pub max_ranks: usize,
    pub shapes: ShapeMix,
    /// Whether cases carry a backward pass.
    pub backward: BackwardMix,
}

impl Default for GenCommon {
    fn default() -> Self {
        GenCommon {
            size: SizeClass::Small,
            rules: RuleSet::ALL.to_vec(),
            device: Dev::Cpu,
            max_ranks: 16,
            shapes: ShapeMix::Any,
            backward: BackwardMix::On,
        }
    }
}

impl GenCommon {
    /// The rule sets drawn from (every one when none is named).
    pub fn rule_sets(&self) -> &[RuleSet] {
        if self.rules.is_empty() {
            RuleSet::ALL
        } else {
            &self.rules
        }
    }
}

names::named_enum! {
    /// Whether generated cases check the backward pass.
    pub enum BackwardMix("backward mix") {
        /// Forward only.
        Off = "off",
        /// Half the cases also check the gradients.
        On = "on",
        /// Every case checks the gradients.
        Only = "only",
    }
}

names::named_enum! {
    /// Which shapes to draw relative to the shard counts.
    pub enum ShapeMix("shape mix") {
        /// Short, uneven and empty shards included: where sharding bugs live.
        Any = "any",
        /// Shapes the sharded program accepts for the layout (each subject says which); uneven
        /// sequences stay.
        Valid = "valid",
    }
}

/// The seed of case `index` of a run seeded `seed` (splitmix64: independent streams per case).
pub(crate) fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E3779B97F4A7C15)).wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}
