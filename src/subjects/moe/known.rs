//! The MoE layer's known upstream bugs, each a family of signatures recognised by its mechanism
//! (revision, configuration, which output diverges and how), as the router subject does it, so
//! reports can say which were found. docs/moe-revisions.md describes each revision's code.

use crate::revision::Backend;
use crate::sharded::{chunk, drops_routed_x_grad};
use crate::spec::MoeSpec;
use crate::MoeRev;
use harness::case::Common;
use harness::oracle::Class;
use harness::Signature;

/// The recorded upstream problem the 0.3.0 model carries (docs/moe-subject.md).
pub const X_GRAD_ONE_ROW: &str = "moe-dtensor-x-grad-one-row";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Known {
    /// tt-pre3604: the EP combine offsets a rank's rows by its flat row count, ignoring the
    /// batch, so with two or more batch rows per rank routed rows land at other tokens.
    CombineOffset3604,
    /// tt-3604: the batch-aware offset with L not a multiple of tp and two or more batch rows
    /// writes past the token buffer (index out of bounds) or, where it stays inside, puts rows at
    /// other tokens. No upstream report.
    UnevenIndex3604,
    /// tt-3662 (per-row virtual padding): with L not a multiple of tp and two or more batch rows
    /// some tokens get no routed output. No upstream report.
    UnevenRows3662,
    /// tt-3654: EP off, the routed experts' local_map has no in_grad_placements, so the gradients
    /// of x and the scores stay per-rank shares labelled Replicate.
    NoInGrad4054,
    /// tt-0.3.0 (recorded): DTensor backend, EP off, SP on, one batch row per rank: x's gradient
    /// lacks the routed experts' part (local_map waits an async collective's input without
    /// autograd; docs/upstream/pt_local_map_async_input_grad.md).
    XGradOneRow,
    /// The force-load-balance debug override under tp > 1 on the DTensor backends: the override's
    /// plain index tensor meets the DTensor scores in a gather (docs/upstream/
    /// tt_force_load_balance_dtensor.md).
    ForceLoadBalanceTp,
    /// Up to 0.3.0 (before #4258): nothing checks that ep divides the number of experts, so the
    /// dispatcher's count exchange fails reshaping the E counts to (ep, -1) (confirmed on
    /// torchtitan 0.3.0; #4258 adds the check at configuration time). At 0.2.2 the exchange of
    /// the counts comes first and fails on its equal split.
    ExpertsNotDivisibleByEp,
    /// spmd_types, EP on, SP off, with shared experts and a sequence block tp does not divide:
    /// the routed output's zero-filled S(1) -> P is tp·ceil(L/tp) long, the shared experts'
    /// output L, and the add raises torch's size error. The trainer checks L only with SP on,
    /// so an odd training.seq_len reaches it (confirmed on torchtitan 0.3.0; no upstream report).
    SpmdUnevenEpExit,
    /// tt-pre4154: under spmd_types the load-balance hook reduces the counts over the loss mesh
    /// only, so with EP on and tp >= 2 each tp rank updates `expert_bias` from its own tokens
    /// (a replica or value verdict on `expert_bias`, and the comm oracle's missing tp all-reduce).
    BiasTp4154,
    /// tt-3386: EP splits the flattened tokens over tp and each rank's combine buffer has T_r·n
    /// rows; with tp not dividing a block's T = B·L the buffers differ from T and the MoE exit
    /// raises (a broadcast error against the shared experts' output, or the reshape). No
    /// upstream report (#3423 and #3619 replaced the split).
    UnevenFlat3386,
    /// tt-0.2.2 (torchtitan 0.2.2 on PyPI, dtensor_hooks): the replicated gate's output and
    /// the MoE input are `to_local()`-ed with the default Replicate label, so each tp rank's
    /// partial gradients of the scores (its flat token slice under EP, its hidden-dim share of
    /// the experts without EP) and of x are never summed: x.grad and the gate's gradient are
    /// wrong and the gate's differs across tp ranks (torchtitan#2387, fixed by #2416; the router
    /// subject's `tt-pre2416`). Recorded on the real package (tests/pytorch/moe-0.2.2).
    RouterGrad2387,
}

impl Known {
    pub const ALL: [Known; 11] = [
        Known::CombineOffset3604,
        Known::UnevenIndex3604,
        Known::UnevenRows3662,
        Known::NoInGrad4054,
        Known::XGradOneRow,
        Known::ForceLoadBalanceTp,
        Known::ExpertsNotDivisibleByEp,
        Known::SpmdUnevenEpExit,
        Known::BiasTp4154,
        Known::UnevenFlat3386,
        Known::RouterGrad2387,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Known::CombineOffset3604 => "EP combine offset ignores the batch (#3604, tt-pre3604)",
            Known::UnevenIndex3604 => {
                "batch-aware combine out of range or misplaced at uneven L (tt-3604; no upstream report)"
            }
            Known::UnevenRows3662 => "tokens without routed output at uneven L (tt-3662; no upstream report)",
            Known::NoInGrad4054 => "experts' input gradients unreduced without EP (#4054, tt-3654)",
            Known::XGradOneRow => X_GRAD_ONE_ROW,
            Known::ForceLoadBalanceTp => "force-load-balance override under TP: mixed Tensor and DTensor (torchtitan)",
            Known::ExpertsNotDivisibleByEp => {
                "experts not divisible by ep: the dispatcher's count view fails (unchecked before #4258)"
            }
            Known::SpmdUnevenEpExit => {
                "spmd_types, EP on, SP off, L not a multiple of tp: routed and shared outputs differ in length (no upstream report)"
            }
            Known::BiasTp4154 => "expert_bias differs across TP ranks under spmd_types with EP (#4154, tt-pre4154)",
            Known::UnevenFlat3386 => {
                "flat EP combine buffer of the wrong size at uneven T (tt-3386; no upstream report)"
            }
            Known::RouterGrad2387 => "router gradient never reduced, ranks diverge (#2387, tt-0.2.2)",
        }
    }

    /// The upstream pull request that fixed it, if any.
    pub fn upstream(self) -> Option<&'static str> {
        match self {
            Known::CombineOffset3604 => Some("https://github.com/pytorch/torchtitan/pull/3604"),
            Known::NoInGrad4054 => Some("https://github.com/pytorch/torchtitan/pull/4054"),
            Known::ExpertsNotDivisibleByEp => Some("https://github.com/pytorch/torchtitan/pull/4258"),
            Known::BiasTp4154 => Some("https://github.com/pytorch/torchtitan/pull/4154"),
            Known::RouterGrad2387 => Some("https://github.com/pytorch/torchtitan/pull/2416"),
            _ => None,
        }
    }

    /// True when a divergence with signature `p` on case (`c`, `s`) is an instance of this bug.
    pub fn matches(self, p: &Signature, c: &Common, s: &MoeSpec) -> bool {
        let (dp, cp, tp) = MoeSpec::axes(c);
        let rows = |n: usize| (0..dp).any(|d| chunk(s.dims.batch, dp, d).1 >= n);
        let uneven = (0..cp).any(|i| !chunk(s.dims.seq, cp, i).1.is_multiple_of(tp));
        let ep_on = s.parallel.ep > 1 && tp > 1 && s.backend == Backend::PartialDtensor;
        let at = |rev: MoeRev| p.program == rev.program(s.backend);
        let value = p.class == Class::Value;
        match self {
            Known::CombineOffset3604 => at(MoeRev::TtPre3604) && ep_on && rows(2) && value,
            Known::UnevenIndex3604 => {
                let oob = p.class == Class::Error && p.key.contains("out_of_bounds");
                at(MoeRev::Tt3604) && ep_on && uneven && rows(2) && (oob || value)
            }
            Known::UnevenRows3662 => at(MoeRev::Tt3662) && ep_on && uneven && rows(2) && value,
            Known::NoInGrad4054 => {
                at(MoeRev::Tt3654)
                    && s.parallel.ep == 1
                    && tp > 1
                    && s.backward
                    && value
                    && matches!(p.output.as_deref(), Some("x_grad" | "grad.gate"))
            }
            Known::XGradOneRow => {
                let one_row = (0..dp).any(|d| chunk(s.dims.batch, dp, d).1 == 1);
                drops_routed_x_grad(s, tp, 1) && one_row && value && p.output.as_deref() == Some("x_grad")
            }
            Known::ForceLoadBalanceTp => {
                let dtensor = s.backend != Backend::SpmdTypes;
                let mixed = p.class == Class::Error && p.key.contains("got_mixed");
                s.router.force_load_balance && tp > 1 && dtensor && mixed
            }
            Known::ExpertsNotDivisibleByEp => {
                // tt-0.2.2: the count exchange before the view refuses the uneven split.
                let split = p.key.contains("split_sizes") && s.revision == MoeRev::Tt022;
                let view = p.class == Class::Error && (p.key.contains("shape_is_invalid_for_input") || split);
                view && s.parallel.ep > 1 && !s.dims.experts.is_multiple_of(s.parallel.ep)
            }
            Known::SpmdUnevenEpExit => {
                let size = p.class == Class::Error && p.key.contains("the_size_of_tensor_a");
                let par = s.parallel;
                let spmd = s.backend == Backend::SpmdTypes;
                size && spmd && par.ep > 1 && !par.sp && tp > 1 && uneven && s.dims.shared_hidden.is_some()
            }
            Known::BiasTp4154 => {
                let spmd = s.backend == Backend::SpmdTypes;
                let bias =
                    p.output.as_deref() == Some("expert_bias") && matches!(p.class, Class::Replica | Class::Value);
                // The comm oracle sees the cause: the hook's tp all-reduce missing.
                let comm = p.class == Class::Comm && p.key == "hook:all_reduce@tp->-";
                at(MoeRev::TtPre4154) && spmd && s.parallel.ep > 1 && tp >= 2 && (bias || comm)
            }
            Known::UnevenFlat3386 => {
                let t_uneven = (0..dp).any(|d| {
                    let b = chunk(s.dims.batch, dp, d).1;
                    (0..cp).any(|i| !(b * chunk(s.dims.seq, cp, i).1).is_multiple_of(tp))
                });
                let exit = p.class == Class::Error
                    && (p.key.contains("broadcast") || p.key.contains("invalid_for_input"))
                    && s.dims.experts.is_multiple_of(s.parallel.ep);
                at(MoeRev::Tt3386) && ep_on && t_uneven && exit
            }
            Known::RouterGrad2387 => {
                let grads = matches!(p.output.as_deref(), Some("x_grad" | "grad.gate"));
                let diverge = matches!(p.class, Class::Value | Class::Replica);
                at(MoeRev::Tt022) && tp > 1 && s.backward && grads && diverge
            }
        }
    }

    /// The known bugs a divergence is an instance of.
    pub fn of(p: &Signature, c: &Common, s: &MoeSpec) -> Vec<Known> {
        Known::ALL.into_iter().filter(|k| k.matches(p, c, s)).collect()
    }
}
