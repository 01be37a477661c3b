//! Random MoE cases: a dense mesh (dp, cp, tp) of at most 16 ranks (4 for the small class),
//! parallel settings, dims, router options, coefficient, backward, drawn per the case contract.
//! Only what the sharded side models is drawn: the partial_dtensor backend at every modelled
//! revision (`tt-0.2.2`: its dtensor_hooks, SP on, `score_before_experts` half the time), and the spmd_types backend (upstream's default, most cases where it is modelled) at
//! the revisions that model it. Configurations torchtitan rejects are drawn now and then on
//! purpose: their verdict is the error. Each revision's sequence check decides which lengths are
//! usual; the revisions before 565cb810c also get the unchecked uneven lengths of eval and direct
//! module use more often (their uneven-length combine bugs live there).

use crate::revision::{Backend, MoeRev, SeqCheck};
use crate::spec::{Dims, Groups, MoeSpec, Parallel, RouterOpts, MESH_NAMES};
use dtensor::DType;
use harness::case::{Case, Common, Data, MeshSpec, Style};
use harness::generate::{BackwardMix, GenCommon, Source};
use router::ScoreFunc;
use serde::{Deserialize, Serialize};

/// The MoE subject's generator settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MoeGen {
    /// Revisions to draw from (default: every modelled one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moe_revisions: Vec<MoeRev>,
}

impl MoeGen {
    pub fn revisions(&self) -> Vec<MoeRev> {
        let v: Vec<MoeRev> = self.moe_revisions.iter().copied().filter(|r| r.modelled()).collect();
        if v.is_empty() {
            MoeRev::ALL.iter().copied().filter(|r| r.modelled()).collect()
        } else {
            v
        }
    }
}

/// The backends the generator draws, with their weights: spmd_types (upstream's default)
/// most often.
const BACKENDS: [(u32, Backend); 2] = [(60, Backend::SpmdTypes), (40, Backend::PartialDtensor)];

/// The backends the generator draws (every one the sharded side models).
pub fn backends() -> Vec<Backend> {
    BACKENDS.iter().map(|(_, b)| *b).filter(|b| b.modelled()).collect()
}

fn divisors(n: usize) -> Vec<usize> {
    (1..=n).filter(|d| n.is_multiple_of(*d)).collect()
}

/// Draws a case.
pub fn generate<S: Source>(s: &mut S, cfg: &GenCommon, own: &MoeGen) -> Case<MoeSpec> {
    let max = match cfg.size {
        harness::generate::SizeClass::Small => cfg.max_ranks.min(4),
        _ => cfg.max_ranks.min(16),
    }
    .max(1);
    // Mesh: tp first (the axis the layer cares most about), then cp and dp within the budget.
    let tp = s.pick(&divisors(max).into_iter().filter(|&d| d <= 4).collect::<Vec<_>>());
    let cp = if s.chance(25) { s.pick(&divisors(max / tp)) } else { 1 };
    let dp = if s.chance(40) { s.pick(&divisors(max / (tp * cp))) } else { 1 };
    let dp_replicate = s.pick(&divisors(dp));
    let dense = (dp / dp_replicate) * cp * tp;
    let ep = if s.chance(5) {
        s.range(2, 4)
    } else if s.chance(50) {
        s.pick(&divisors(dense))
    } else {
        1
    };
    let sp = s.chance(60);
    let revision = s.pick(&own.revisions());
    // tt-0.2.2 has no SP switch (always on) and only its parallelize assertion on L.
    let sp = sp || revision == MoeRev::Tt022;
    let old = matches!(revision.seq_check(), SeqCheck::Old | SeqCheck::Assert);
    let trainer_checks = s.chance(if old { 50 } else { 90 });
    let parallel = Parallel { dp_replicate, ep, sp };
    // Dims: D and the local F multiples of 8 (bf16 grouped GEMM rows), now and then not.
    let model = if s.chance(5) { 12 } else { s.pick(&[8, 16]) };
    let f_mult = if ep == 1 { tp } else { 1 };
    let hidden = if s.chance(5) { 8 * f_mult + 4 } else { 8 * f_mult * s.range(1, 2) };
    let experts = if ep > 1 && s.chance(90) { ep * s.range(1, 8usize.div_ceil(ep).max(1)) } else { s.range(2, 8) };
    let top_k = if s.chance(3) { experts + 1 } else { s.range(1, experts.min(3)) };
    let seq_unit = match old {
        true => tp * cp * 2,
        false => (if sp { tp } else { 1 }) * (if cp > 1 { 2 * cp } else { 1 }),
    };
    let seq = if s.chance(if old && !trainer_checks { 40 } else { 85 }) {
        seq_unit * s.range(1, (16 / seq_unit).max(1))
    } else {
        s.range(1, 16)
    };
    // From tt-head on the batch is folded into the tokens: seq tokens per dp rank.
    let batch = if revision.folds_batch() { dp } else { dp * s.range(1, 2) };
    let shared_hidden = s.chance(50).then(|| 8 * tp);
    let dims = Dims { batch, seq, model, hidden, experts, top_k, shared_hidden };
    let groups = if s.chance(15) && experts >= 4 && experts % 2 == 0 {
        Some(Groups { num_groups: 2, num_limited: if s.chance(10) { None } else { Some(s.range(1, 2)) } })
    } else {
        None
    };
    let mut router = RouterOpts {
        score_func: s.pick(&[ScoreFunc::Softmax, ScoreFunc::Sigmoid]),
        route_norm: s.chance(35),
        route_scale: s.weighted(&[(60, 1.0), (20, 2.5), (20, 0.5)]),
        groups,
        force_load_balance: s.chance(3),
        score_before_experts: false,
    };
    let load_balance_coeff = if s.chance(70) { Some(if s.chance(3) { 0.0 } else { 1e-3 }) } else { None };
    let backward = match cfg.backward {
        BackwardMix::Off => false,
        BackwardMix::On => s.chance(70),
        BackwardMix::Only => true,
    };
    let rules = s.pick(cfg.rule_sets());
    let dtype = s.weighted(&[(70, DType::F32), (30, DType::BF16)]);
    let style = s.weighted(&[(85, Style::Normal), (15, Style::SmallInt)]);
    let backend = if revision == MoeRev::Tt022 {
        Backend::DtensorHooks
    } else if revision.models_backend(Backend::SpmdTypes) {
        s.weighted(&BACKENDS)
    } else {
        Backend::PartialDtensor
    };
    let typecheck = backend == Backend::SpmdTypes && s.chance(30);
    let data = Data::drawn(s.u64() >> 11, style);
    if revision == MoeRev::Tt022 {
        // Drawn last, so that the other revisions' cases draw what they always drew.
        router.score_before_experts = s.chance(50);
    }
    let mesh = MeshSpec { shape: vec![dp, cp, tp], names: MESH_NAMES.iter().map(|n| n.to_string()).collect() };
    let common = Common { mesh, rules, dtype, device: cfg.device, data };
    let subject =
        MoeSpec { revision, backend, parallel, dims, router, load_balance_coeff, backward, trainer_checks, typecheck };
    Case { common, subject }
}
