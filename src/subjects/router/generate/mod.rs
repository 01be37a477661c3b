//! Random cases, valid by construction, weighted toward where sharding bugs live: uneven
//! lengths, sequences shorter than their shard count, size-1 mesh axes, empty shards, 2-D and
//! 3-D meshes, expert groups, near-tie and saturated scores.
//!
//! The choices come from a [`Source`]: a seeded stream for campaigns, libFuzzer's bytes for
//! coverage-guided fuzzing (the harness's generation sources).

use crate::backward::Boundary;
use crate::spec::{Dims, Layout, Revision, RouterSpec};
use crate::{Groups, RouterOptions, RouterRev, ScoreFunc, Size1};
use dtensor::DType;
use harness::case::{Case, Common, Data, MeshSpec, Style};
use harness::generate::{BackwardMix, GenCommon, ShapeMix, SizeClass, Source};
use placement::{Placement, ReduceOp};

mod backward;

pub use backward::layout as backward_layout;

/// The router's generator settings (campaign.json's `gen` keeps these field names).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RouterGen {
    /// Router revisions to draw from; all when empty.
    pub routers: Vec<RouterRev>,
    /// Boundary revisions to draw backward cases from; all when empty.
    pub boundaries: Vec<Boundary>,
    pub layouts: LayoutMix,
}

impl Default for RouterGen {
    fn default() -> Self {
        RouterGen { routers: RouterRev::ALL.to_vec(), boundaries: Boundary::ALL.to_vec(), layouts: LayoutMix::Any }
    }
}

impl RouterGen {
    /// The router revisions drawn from (every one when none is named).
    pub(crate) fn router_revisions(&self) -> &[RouterRev] {
        if self.routers.is_empty() {
            RouterRev::ALL
        } else {
            &self.routers
        }
    }

    /// The boundary revisions drawn from (every one when none is named).
    pub(crate) fn boundary_revisions(&self) -> &[Boundary] {
        if self.boundaries.is_empty() {
            Boundary::ALL
        } else {
            &self.boundaries
        }
    }
}

names::named_enum! {
    /// Which router-tensor layouts to draw.
    pub enum LayoutMix("layout mix") {
        /// torchtitan's layouts most of the time, what-if layouts (30%) otherwise.
        Any = "any",
        /// Only the layouts torchtitan itself produces (the MoE sharding plan).
        Torchtitan = "torchtitan",
    }
}

const AXES: [&str; 5] = ["dp_replicate", "dp_shard", "cp", "tp", "ep"];

fn mesh<S: Source>(s: &mut S, cfg: &GenCommon) -> MeshSpec {
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

fn dims<S: Source>(s: &mut S, cfg: &GenCommon, shards: usize) -> Dims {
    match cfg.size {
        SizeClass::Large => {
            let p = s.pick(crate::Preset::ALL);
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
    use placement::layout::shard_counts_on;
    let x = shard_counts_on(&mesh.shape, &layout.x, 3);
    dims.batch = dims.batch.max(x[0]).div_ceil(x[0]) * x[0];
    dims.seq = dims.seq.max(x[1]);
    // Expert counts are left alone: growing them would break the expert groups.
    dims.model = dims.model.max(x[2]).max(shard_counts_on(&mesh.shape, &layout.gate, 2)[1]);
}

/// One random case. Always valid (`Case::validate` passes).
pub fn generate<S: Source>(s: &mut S, cfg: &GenCommon, own: &RouterGen) -> Case<RouterSpec> {
    let large = cfg.size == SizeClass::Large;
    let wants_backward = match cfg.backward {
        BackwardMix::Off => false,
        BackwardMix::On => !large && s.chance(50),
        BackwardMix::Only => !large,
    };
    if wants_backward {
        return backward::generate(s, cfg, own);
    }
    let mesh = mesh(s, cfg);
    let shards = mesh.shape.iter().copied().max().unwrap_or(1);
    let dims = dims(s, cfg, shards);
    let router = if large {
        let p = crate::Preset::ALL
            .iter()
            .find(|p| p.config().experts == dims.experts)
            .unwrap_or(&crate::Preset::DeepSeekV3Debug);
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
    let mut layout = layout(s, &mesh, router.expert_bias, own.layouts);
    layout.gate_bias = router.gate_bias.then(|| vec![Placement::Replicate; mesh.shape.len()]);
    let mut dims = dims;
    if cfg.shapes == ShapeMix::Valid {
        make_valid(&mut dims, &mesh, &layout);
    }
    let (revision, rules) = revision(s, cfg, own);
    let dtype = s.weighted(&[(60, DType::F32), (25, DType::BF16), (15, DType::F16)]);
    let style = s.weighted(&[
        (58, Style::Normal),
        (12, Style::Ties),
        (10, Style::Saturated),
        (6, Style::Large),
        (14, Style::SmallInt),
    ]);
    let data = Data::drawn(s.u64() >> 11, style);
    let common = Common { mesh, rules, dtype, device: cfg.device, data };
    Case { common, subject: RouterSpec { dims, router, layout, revision, backward: None } }
}

/// The router revision, rule set and size-1 rule, drawn in the order case/1 drew them.
fn revision<S: Source>(s: &mut S, cfg: &GenCommon, own: &RouterGen) -> (Revision, dtensor::RuleSet) {
    let router = s.pick(own.router_revisions());
    let rules = s.pick(cfg.rule_sets());
    let size1 = s.pick(&[Size1::Keep, Size1::Normalize]);
    (Revision { router, size1 }, rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use harness::generate::Bytes;
    use harness::stream::{nth, seed_bytes};

    fn case(seed: u64, i: u64) -> Case<RouterSpec> {
        nth(seed, i, &GenCommon::default(), &RouterGen::default())
    }

    #[test]
    fn generated_cases_are_valid_and_deterministic() {
        for i in 0..2000 {
            let c = case(7, i);
            c.validate().unwrap_or_else(|e| panic!("case {i}: {e}\n{}", c.to_json()));
            assert!(c.ranks() <= 4);
            assert_eq!(c, case(7, i));
        }
    }

    #[test]
    fn the_generator_reaches_the_bug_habitats() {
        let cases: Vec<Case<RouterSpec>> = (0..2000).map(|i| case(1, i)).collect();
        let sharded_seq = |c: &Case<RouterSpec>, f: &dyn Fn(usize, usize) -> bool| {
            c.subject
                .layout
                .x
                .iter()
                .zip(&c.mesh.shape)
                .any(|(p, &n)| *p == Placement::Shard(1) && f(n, c.subject.dims.seq))
        };
        let short = cases.iter().filter(|c| sharded_seq(c, &|n, seq| n > seq)).count();
        let uneven = cases.iter().filter(|c| sharded_seq(c, &|n, seq| n > 1 && seq % n != 0)).count();
        let size1 = cases.iter().filter(|c| c.mesh.shape.len() > 1 && c.mesh.shape.contains(&1)).count();
        let groups = cases.iter().filter(|c| c.subject.router.groups.is_some()).count();
        let three_d = cases.iter().filter(|c| c.mesh.shape.len() == 3).count();
        for (what, n) in
            [("short", short), ("uneven", uneven), ("size-1 axes", size1), ("groups", groups), ("3-D", three_d)]
        {
            assert!(n > 100, "{what}: only {n} of 2000 cases");
        }
    }

    #[test]
    fn recorded_bytes_decode_to_the_same_case() {
        let (common, own) = (GenCommon::default(), RouterGen::default());
        for i in 0..300 {
            let bytes = seed_bytes::<RouterSpec>(5, i, &common, &own);
            let mut u = arbitrary::Unstructured::new(&bytes);
            let c = generate(&mut Bytes(&mut u), &common, &own);
            assert_eq!(c, case(5, i), "case {i}");
        }
    }

    #[test]
    fn arbitrary_bytes_map_to_valid_cases() {
        let (common, own) = (GenCommon::default(), RouterGen::default());
        for seed in 0..300u64 {
            let bytes: Vec<u8> = (0..seed as usize * 3).map(|i| (i as u64 * 31 + seed * 7) as u8).collect();
            let mut u = arbitrary::Unstructured::new(&bytes);
            let c = generate(&mut Bytes(&mut u), &common, &own);
            c.validate().unwrap_or_else(|e| panic!("bytes {seed}: {e}"));
        }
    }
}
