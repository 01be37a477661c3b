//! Random cases, valid by construction, weighted toward where sharding bugs live: uneven
//! lengths, sequences shorter than their shard count, size-1 mesh axes, empty shards, 2-D and
//! 3-D meshes, expert groups, near-tie and saturated scores.
//!
//! One generator serves two sources of choices ([`Source`]): a seeded ChaCha8 stream for
//! campaigns (portable: the same seed gives the same cases everywhere) and libFuzzer's bytes
//! through `arbitrary` for coverage-guided fuzzing.

use super::case::{Case, Data, Dims, Layout, MeshSpec, Style, CASE_FORMAT};
use crate::device::Dev;
use crate::dtensor::{DType, RuleSet};
use crate::placement::{Placement, ReduceOp};
use crate::router::backward::Boundary;
use crate::router::{Groups, Revision, RouterOptions, RouterRev, ScoreFunc, Size1};

mod backward;

pub use backward::layout as backward_layout;
use rand::{Rng, SeedableRng};
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
pub struct Recorder {
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

/// The fuzzer input bytes that decode (through `Arbitrary`) to case `index` of seed `seed`.
pub fn seed_bytes(seed: u64, index: u64) -> Vec<u8> {
    let mut r = Recorder { rng: ChaCha8Rng::seed_from_u64(case_seed(seed, index)), bytes: Vec::new() };
    generate(&mut r, &GenConfig::default());
    r.bytes
}

crate::named_enum! {
    /// How big generated cases get.
    pub enum SizeClass("size class") {
        /// At most 4 ranks, 64 tokens, model dim 64, 16 experts: the fast default.
        Small = "small",
        /// Up to 16 ranks and a few hundred tokens.
        Medium = "medium",
        /// Real router presets at real sizes (DeepSeek-V3 671B: 4096 tokens x 7168); GPU only.
        Large = "large",
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenConfig {
    pub size: SizeClass,
    /// Revisions to draw from (router x rules); all when empty.
    pub routers: Vec<RouterRev>,
    pub rules: Vec<RuleSet>,
    pub device: Dev,
    pub max_ranks: usize,
    pub layouts: LayoutMix,
    pub shapes: ShapeMix,
    /// Whether cases carry a backward pass.
    pub backward: BackwardMix,
    /// Boundary revisions to draw from; all when empty.
    pub boundaries: Vec<Boundary>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            size: SizeClass::Small,
            routers: RouterRev::ALL.to_vec(),
            rules: RuleSet::ALL.to_vec(),
            device: Dev::Cpu,
            max_ranks: 16,
            layouts: LayoutMix::Any,
            shapes: ShapeMix::Any,
            backward: BackwardMix::On,
            boundaries: Boundary::ALL.to_vec(),
        }
    }
}

impl GenConfig {
    /// The router revisions drawn from (every one when none is named).
    pub fn router_revisions(&self) -> &[RouterRev] {
        if self.routers.is_empty() {
            RouterRev::ALL
        } else {
            &self.routers
        }
    }

    /// The boundary revisions drawn from (every one when none is named).
    pub fn boundary_revisions(&self) -> &[Boundary] {
        if self.boundaries.is_empty() {
            Boundary::ALL
        } else {
            &self.boundaries
        }
    }

    /// The rule sets drawn from (every one when none is named).
    pub fn rule_sets(&self) -> &[RuleSet] {
        if self.rules.is_empty() {
            RuleSet::ALL
        } else {
            &self.rules
        }
    }
}

crate::named_enum! {
    /// Whether generated cases check the backward pass.
    pub enum BackwardMix("backward mix") {
        /// Forward only.
        Off = "off",
        /// Half the cases also check the gradients at a torchtitan MoE boundary.
        On = "on",
        /// Every case checks the gradients.
        Only = "only",
    }
}

crate::named_enum! {
    /// Which router-tensor layouts to draw.
    pub enum LayoutMix("layout mix") {
        /// torchtitan's layouts most of the time, what-if layouts (30%) otherwise.
        Any = "any",
        /// Only the layouts torchtitan itself produces (the MoE sharding plan).
        Torchtitan = "torchtitan",
    }
}

crate::named_enum! {
    /// Which shapes to draw relative to the shard counts.
    pub enum ShapeMix("shape mix") {
        /// Short, uneven and empty shards included: where sharding bugs live.
        Any = "any",
        /// Shapes DTensor accepts for the layout: every sharded x dim at least as long as its
        /// shard count, the flattened batch dim even (docs/design.md); uneven sequences stay.
        Valid = "valid",
    }
}

const AXES: [&str; 5] = ["dp_replicate", "dp_shard", "cp", "tp", "ep"];

fn mesh<S: Source>(s: &mut S, cfg: &GenConfig) -> MeshSpec {
    let max = match cfg.size {
        SizeClass::Small => 4,
        _ => cfg.max_ranks,
    };
    let ndim = s.weighted(&[(40, 1), (45, 2), (15, 3)]);
    loop {
        let shape: Vec<usize> = (0..ndim)
            .map(|_| if ndim > 1 && s.chance(25) { 1 } else { s.weighted(&[(50, 2), (20, 3), (20, 4), (10, 1)]) })
            .collect();
        if shape.iter().product::<usize>() > max {
            continue;
        }
        // Names in torchtitan's outer-to-inner order, tp innermost.
        let mut names: Vec<String> = Vec::new();
        let mut pool: Vec<&str> = AXES.iter().copied().filter(|a| *a != "tp").collect();
        for _ in 0..ndim - 1 {
            let i = s.below(pool.len() as u32) as usize;
            names.push(pool.remove(i).to_string());
        }
        names.sort_by_key(|n| AXES.iter().position(|a| a == n));
        names.push("tp".into());
        return MeshSpec { shape, names };
    }
}

fn dims<S: Source>(s: &mut S, cfg: &GenConfig, shards: usize) -> Dims {
    match cfg.size {
        SizeClass::Large => {
            let p = s.pick(crate::router::Preset::ALL);
            let c = p.config();
            Dims {
                batch: s.pick(&[1, 2, 4]),
                seq: s.pick(&[1024, 2048, 4096]) / 2,
                model: p.model_dim(),
                experts: c.experts,
                top_k: c.top_k,
            }
        }
        _ => {
            let big = cfg.size == SizeClass::Medium;
            let batch = s.weighted(&[(30, 1), (35, 2), (20, 3), (15, 4)]);
            // Short, uneven and exactly-divisible lengths around the shard count.
            let free = s.range(1, if big { 256 } else { 16 });
            let seq = s.weighted(&[
                (15, 1),
                (10, shards.saturating_sub(1).max(1)),
                (15, shards.max(1)),
                (20, shards + 1),
                (15, 2 * shards + 1),
                (25, free),
            ]);
            let model = s.pick(&[4, 8, 16, 32, 64]);
            let experts = s.weighted(&[(10, 2), (15, 4), (10, 6), (30, 8), (15, 12), (20, 16)]);
            let top_k = s.range(1, experts.min(8));
            Dims { batch, seq, model, experts, top_k }
        }
    }
}

fn groups<S: Source>(s: &mut S, experts: usize, top_k: usize) -> Option<Groups> {
    if !s.chance(35) {
        return None;
    }
    let options: Vec<usize> = (1..=experts / 2).filter(|g| experts.is_multiple_of(*g) && experts / g >= 2).collect();
    let g = s.pick(&options);
    let mut gk = s.range(1, g);
    // Usually enough kept experts for top_k; sometimes not, so topk must pick -inf entries.
    if s.chance(85) {
        while gk * (experts / g) < top_k && gk < g {
            gk += 1;
        }
    }
    Some(Groups { num_groups: g, num_limited: gk })
}

/// A placement for one mesh dim of a tensor of rank `ndim`, biased toward `likely`.
fn placement<S: Source>(s: &mut S, ndim: i64, likely: Placement) -> Placement {
    if s.chance(70) {
        return likely;
    }
    let d = s.below(ndim as u32) as i64;
    match s.below(4) {
        0 => Placement::Replicate,
        1 => Placement::Shard(d),
        2 => Placement::Shard(d - ndim),
        _ => partial(s),
    }
}

/// A Partial input placement: `distribute_tensor` partitions the value (docs/pytorch-facts.md §12,
/// docs/crosscheck.md); mostly sum, the others keep the value on every rank.
fn partial<S: Source>(s: &mut S) -> Placement {
    Placement::Partial(s.weighted(&[
        (70, ReduceOp::Sum),
        (10, ReduceOp::Avg),
        (10, ReduceOp::Max),
        (10, ReduceOp::Min),
    ]))
}

/// One reduce op per placement list (`distribute_tensor` refuses others than sum with avg):
/// every Partial takes the first one's op.
fn one_reduce_op(ps: &mut [Placement]) {
    let Some(first) = ps.iter().find_map(|p| p.reduce_op()) else { return };
    for p in ps.iter_mut() {
        if let Placement::Partial(op) = p {
            if !(first.is_linear() && op.is_linear()) {
                *op = first;
            }
        }
    }
}

/// Shards tokens: batch or sequence dim (also spelled negatively).
fn token_shard(p: Placement) -> bool {
    matches!(p, Placement::Shard(0 | 1 | -2 | -3))
}

fn layout<S: Source>(s: &mut S, mesh: &MeshSpec, bias: bool, mix: LayoutMix) -> Layout {
    let ep_on = s.chance(60);
    let what_if = s.chance(30) && mix == LayoutMix::Any;
    let mut x: Vec<Placement> = mesh
        .names
        .iter()
        .zip(&mesh.shape)
        .map(|(n, &size)| {
            // torchtitan's token layout, resolved on the mesh: Shard(0) on
            // DP, Shard(1) on CP and (with EP on) on TP; a shard on a size-1 axis resolves to R.
            let titan = match n.as_str() {
                "dp_shard" | "dp_replicate" => Placement::Shard(0),
                "cp" => Placement::Shard(1),
                "tp" if ep_on => Placement::Shard(1),
                _ => Placement::Replicate,
            };
            let titan = if size == 1 { Placement::Replicate } else { titan };
            if what_if {
                placement(s, 3, titan)
            } else {
                titan
            }
        })
        .collect();
    one_reduce_op(&mut x);
    let mut gate: Vec<Placement> = mesh
        .names
        .iter()
        .map(|_| {
            if !what_if || s.chance(75) {
                Placement::Replicate
            } else {
                match s.below(4) {
                    0 => Placement::Shard(0),
                    1 => Placement::Shard(1),
                    2 => Placement::Shard(-1),
                    _ => partial(s),
                }
            }
        })
        .collect();
    one_reduce_op(&mut gate);
    let expert_bias = bias.then(|| {
        let mut b: Vec<Placement> = mesh
            .names
            .iter()
            .map(|_| match what_if && !s.chance(85) {
                false => Placement::Replicate,
                true if s.chance(50) => Placement::Shard(0),
                true => partial(s),
            })
            .collect();
        one_reduce_op(&mut b);
        b
    });
    let counts_contract = mesh
        .names
        .iter()
        .zip(&x)
        .map(|(n, &p)| {
            let partial = if what_if {
                // A layout torchtitan does not use: counts are partial where tokens are split.
                token_shard(p)
            } else {
                // `_tokens_per_expert_placement`: P on DP and CP, on TP only with EP on.
                matches!(n.as_str(), "dp_shard" | "dp_replicate" | "cp") || (n == "tp" && ep_on)
            };
            if partial {
                Placement::Partial(ReduceOp::Sum)
            } else {
                Placement::Replicate
            }
        })
        .collect();
    Layout { x, gate, expert_bias, counts_contract, gate_bias: None }
}

/// Grows dims until DTensor accepts them for this layout (see `ShapeMix::Valid`).
fn make_valid(dims: &mut Dims, mesh: &MeshSpec, layout: &Layout) {
    use crate::placement::layout::shard_counts_on;
    let x = shard_counts_on(&mesh.shape, &layout.x, 3);
    dims.batch = dims.batch.max(x[0]).div_ceil(x[0]) * x[0];
    dims.seq = dims.seq.max(x[1]);
    // Expert counts are left alone: growing them would break the expert groups.
    dims.model = dims.model.max(x[2]).max(shard_counts_on(&mesh.shape, &layout.gate, 2)[1]);
}

/// One random case. Always valid (`Case::validate` passes).
pub fn generate<S: Source>(s: &mut S, cfg: &GenConfig) -> Case {
    let large = cfg.size == SizeClass::Large;
    let wants_backward = match cfg.backward {
        BackwardMix::Off => false,
        BackwardMix::On => !large && s.chance(50),
        BackwardMix::Only => !large,
    };
    if wants_backward {
        return backward::generate(s, cfg);
    }
    let mesh = mesh(s, cfg);
    let shards = mesh.shape.iter().copied().max().unwrap_or(1);
    let dims = dims(s, cfg, shards);
    let router = if large {
        let p = crate::router::Preset::ALL
            .iter()
            .find(|p| p.config().experts == dims.experts)
            .unwrap_or(&crate::router::Preset::DeepSeekV3Debug);
        p.config().options
    } else {
        RouterOptions {
            score_func: s.pick(&[ScoreFunc::Softmax, ScoreFunc::Sigmoid]),
            route_norm: s.chance(35),
            route_scale: s.weighted(&[(50, 1.0), (20, 2.5), (15, 16.0), (15, 0.5)]),
            groups: groups(s, dims.experts, dims.top_k),
            expert_bias: s.chance(70),
            force_load_balance: s.chance(3),
            gate_bias: s.chance(25),
        }
    };
    let mut layout = layout(s, &mesh, router.expert_bias, cfg.layouts);
    layout.gate_bias = router.gate_bias.then(|| vec![Placement::Replicate; mesh.shape.len()]);
    let mut dims = dims;
    if cfg.shapes == ShapeMix::Valid {
        make_valid(&mut dims, &mesh, &layout);
    }
    let revision = revision(s, cfg);
    let dtype = s.weighted(&[(60, DType::F32), (25, DType::BF16), (15, DType::F16)]);
    let style = s.weighted(&[
        (58, Style::Normal),
        (12, Style::Ties),
        (10, Style::Saturated),
        (6, Style::Large),
        (14, Style::SmallInt),
    ]);
    Case {
        format: CASE_FORMAT.into(),
        mesh,
        dims,
        router,
        layout,
        revision,
        dtype,
        device: cfg.device,
        data: Data { seed: s.u64() >> 11, style },
        tensors: None,
        backward: None,
    }
}

fn revision<S: Source>(s: &mut S, cfg: &GenConfig) -> Revision {
    Revision {
        router: s.pick(cfg.router_revisions()),
        rules: s.pick(cfg.rule_sets()),
        size1: s.pick(&[Size1::Keep, Size1::Normalize]),
    }
}

/// The seed of case `index` of a run seeded `seed` (splitmix64: independent streams per case).
pub fn case_seed(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E3779B97F4A7C15)).wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// Case `index` of a run seeded `seed`.
pub fn nth(seed: u64, index: u64, cfg: &GenConfig) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(case_seed(seed, index));
    generate(&mut rng, cfg)
}

impl<'a> arbitrary::Arbitrary<'a> for Case {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(generate(&mut Bytes(u), &GenConfig::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_cases_are_valid_and_deterministic() {
        let cfg = GenConfig::default();
        for i in 0..2000 {
            let c = nth(7, i, &cfg);
            c.validate().unwrap_or_else(|e| panic!("case {i}: {e}\n{}", c.to_json()));
            assert!(c.ranks() <= 4);
            assert_eq!(c, nth(7, i, &cfg));
        }
    }

    #[test]
    fn the_generator_reaches_the_bug_habitats() {
        let cfg = GenConfig::default();
        let cases: Vec<Case> = (0..2000).map(|i| nth(1, i, &cfg)).collect();
        let short = cases
            .iter()
            .filter(|c| c.layout.x.iter().zip(&c.mesh.shape).any(|(p, &n)| *p == Placement::Shard(1) && n > c.dims.seq))
            .count();
        let uneven = cases
            .iter()
            .filter(|c| {
                c.layout
                    .x
                    .iter()
                    .zip(&c.mesh.shape)
                    .any(|(p, &n)| *p == Placement::Shard(1) && n > 1 && c.dims.seq % n != 0)
            })
            .count();
        let size1 = cases.iter().filter(|c| c.mesh.shape.len() > 1 && c.mesh.shape.contains(&1)).count();
        let groups = cases.iter().filter(|c| c.router.groups.is_some()).count();
        let three_d = cases.iter().filter(|c| c.mesh.shape.len() == 3).count();
        for (what, n) in
            [("short", short), ("uneven", uneven), ("size-1 axes", size1), ("groups", groups), ("3-D", three_d)]
        {
            assert!(n > 100, "{what}: only {n} of 2000 cases");
        }
    }

    #[test]
    fn recorded_bytes_decode_to_the_same_case() {
        for i in 0..300 {
            let bytes = seed_bytes(5, i);
            let mut u = arbitrary::Unstructured::new(&bytes);
            let c = <Case as arbitrary::Arbitrary>::arbitrary(&mut u).unwrap();
            assert_eq!(c, nth(5, i, &GenConfig::default()), "case {i}");
        }
    }

    #[test]
    fn arbitrary_bytes_map_to_valid_cases() {
        for seed in 0..300u64 {
            let bytes: Vec<u8> = (0..seed as usize * 3).map(|i| (i as u64 * 31 + seed * 7) as u8).collect();
            let mut u = arbitrary::Unstructured::new(&bytes);
            let c = <Case as arbitrary::Arbitrary>::arbitrary(&mut u).unwrap();
            c.validate().unwrap_or_else(|e| panic!("bytes {seed}: {e}"));
        }
    }
}
