//! Backward cases: a boundary revision and its config axes (EP, ETP, score_before_experts, SP)
//! on a 1-D TP mesh of 1 to 4 ranks, the router options as for forward cases, the layouts the
//! boundary gives the router (so the case's forward check is the router that boundary runs).

use super::{groups, revision, RouterGen};
use crate::backward::{loss, BackwardSpec};
use crate::spec::{Dims, Layout, RouterSpec};
use crate::{RouterOptions, ScoreFunc};
use dtensor::DType;
use harness::case::{Case, Common, Data, MeshSpec, Style};
use harness::generate::{GenCommon, ShapeMix, Source};
use placement::Placement;

pub(super) fn generate<S: Source>(s: &mut S, cfg: &GenCommon, own: &RouterGen) -> Case<RouterSpec> {
    let tp = s.weighted(&[(10, 1), (45, 2), (25, 3), (20, 4)]);
    let mesh = MeshSpec { shape: vec![tp], names: vec!["tp".into()] };
    let free = s.range(1, 9);
    let seq = s.weighted(&[(10, 1), (15, tp.saturating_sub(1).max(1)), (25, tp), (25, tp + 1), (25, free)]);
    let batch = s.weighted(&[(35, 1), (35, 2), (20, 3), (10, 4)]);
    let experts = s.weighted(&[(15, 2), (25, 4), (15, 6), (45, 8)]);
    let mut dims = Dims { batch, seq, model: s.pick(&[4, 8, 16]), experts, top_k: s.range(1, experts.min(4)) };
    let router = RouterOptions {
        score_func: s.pick(&[ScoreFunc::Softmax, ScoreFunc::Sigmoid]),
        route_norm: s.chance(35),
        route_scale: s.weighted(&[(60, 1.0), (20, 2.5), (20, 16.0)]),
        groups: groups(s, dims.experts, dims.top_k),
        expert_bias: s.chance(60),
        force_load_balance: false,
        gate_bias: s.chance(30),
    };
    let spec = spec(s, own, tp);
    if cfg.shapes == ShapeMix::Valid {
        make_valid(&mut dims, &spec, tp);
    }
    let layout = layout(&spec, &router);
    let (revision, rules) = revision(s, cfg, own);
    let dtype = s.weighted(&[(80, DType::F32), (20, DType::BF16)]);
    let style = s.weighted(&[(85, Style::Normal), (10, Style::Saturated), (5, Style::SmallInt)]);
    let data = Data::drawn(s.u64() >> 11, style);
    let common = Common { mesh, rules, dtype, device: cfg.device, data };
    Case { common, subject: RouterSpec { dims, router, layout, revision, backward: Some(spec) } }
}

fn spec<S: Source>(s: &mut S, own: &RouterGen, tp: usize) -> BackwardSpec {
    let boundary = s.pick(own.boundary_revisions());
    // EP borrows the TP axis: with one rank there is nothing to borrow.
    let ep = tp > 1 && s.chance(50);
    let etp = if ep && tp > 1 && boundary.has_etp() && s.chance(35) { tp } else { 1 };
    BackwardSpec { boundary, ep, etp, score_before_experts: s.chance(50), sp: s.chance(60), loss_seed: s.u64() >> 11 }
}

/// What the boundary gives the router: its input layout, replicated weights, the counts
/// contract torchtitan declares.
pub fn layout(spec: &BackwardSpec, router: &RouterOptions) -> Layout {
    let r = || vec![Placement::Replicate];
    Layout {
        x: vec![spec.router_input()],
        gate: r(),
        expert_bias: router.expert_bias.then(r),
        counts_contract: vec![spec.counts_contract()],
        gate_bias: router.gate_bias.then(r),
    }
}

/// Shapes the program accepts: a sharded sequence at least as long as the TP degree, and a
/// token count the reorderer can split evenly.
fn make_valid(dims: &mut Dims, spec: &BackwardSpec, tp: usize) {
    if spec.sp || spec.token_sharded_router() {
        dims.seq = dims.seq.max(tp);
    }
    if loss::class(spec, tp) == loss::LossClass::Tokensplit {
        while !(dims.batch * dims.seq).is_multiple_of(tp) {
            dims.seq += 1;
        }
    }
}
