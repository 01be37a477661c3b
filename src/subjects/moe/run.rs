//! Runs one MoE case: the reference and the sharded layer; the value oracle's bounds. Oracles
//! judge the result; nothing here decides what is a divergence.

use crate::error::Fail;
use crate::spec::MoeSpec;
use crate::{head, reference, sharded};
use dtensor::{DTensor, DTensorError, DType};
use harness::case::{CaseError, Common};
use harness::oracle::value::{compare, Bound, Compare};
use harness::oracle::{Class, Judgement, Verdict};
use harness::run::Inputs;
use harness::run::{Contract, Named, Run};
use harness::tensor_data::Ordered;
use harness::timing::{timed, Phases};
use placement::{Placement, ReduceOp};
use std::cell::OnceCell;
use std::sync::Arc;
use tch::Tensor;

/// What the MoE subject's oracles keep beside the shared run: what the value oracle needs to
/// run the reference's exact shadow (the inputs and the reference's expert ids), and the
/// shadow once run. It runs only when a value verdict is about to be given, so a clean case
/// never pays for it.
pub struct Extra {
    routed: Option<(Inputs, Tensor)>,
    shadow: OnceCell<Option<Named<Tensor>>>,
}

impl Extra {
    /// The exact shadow's outputs (folded as the reference's are), run on first use.
    fn shadow(&self, s: &MoeSpec) -> Option<&Named<Tensor>> {
        let run = || {
            let (inputs, ids) = self.routed.as_ref()?;
            let out = tch::with_grad(|| reference::exact(s, inputs, ids)).ok()?;
            Some(head::fold_reference(s, out))
        };
        self.shadow.get_or_init(run).as_ref()
    }
}

fn err(f: Fail) -> DTensorError {
    f.into_dtensor()
}

/// Runs a validated case on its inputs.
pub fn run(s: &MoeSpec, c: &Common, inputs: &Inputs) -> Result<(Run, Extra), CaseError> {
    let mesh = Arc::new(c.mesh()?);
    let mut p = Phases::default();
    let mut ids = None;
    let reference = timed(&mut p.reference_us, || {
        let (out, chosen) = reference::routed(s, inputs).map_err(err)?;
        ids = Some(chosen);
        Ok(head::fold_reference(s, out))
    });
    let mut comms = Vec::new();
    let sharded = timed(&mut p.sharded_us, || {
        match s.backend {
            // The spmd_types backend runs on the simulated local-SPMD runtime, whose log is the
            // run's comm log (the DTensor backends log none).
            crate::Backend::SpmdTypes => crate::spmd_layer::run(s, c, inputs).map(|(out, ran)| {
                comms = crate::comms::records(&ran);
                out
            }),
            _ => sharded::run(s, c, inputs),
        }
        .and_then(|o| head::fold_sharded(s, o))
        .map_err(err)
    });
    // A case the sharded side does not model is a skip, not a one-sided error.
    let reference = match &sharded {
        Err(e) if not_modelled(e) => Err(e.clone()),
        _ => reference,
    };
    let run = Run {
        contracts: contracts(s),
        promises: Vec::new(),
        mesh,
        reference,
        sharded,
        comms,
        backward: None,
        phases: p,
    };
    let copy = || Inputs(Ordered(inputs.0 .0.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect()));
    Ok((run, Extra { routed: ids.map(|ids| (copy(), ids)), shadow: OnceCell::new() }))
}

/// The layer's declared output layouts on the dense mesh (dp, cp, tp), as DTensor placements:
/// y leaves as x came in (SP: the sequence sharded over tp; from `tt-head` on the (T, D)
/// tokens sharded by dp, cp and, with SP, tp); the token counts are partial over dp and cp, and
/// over tp when EP is on (not at `tt-0.2.2`, whose router counts every token of the block on
/// every tp rank).
pub fn contracts(s: &MoeSpec) -> Vec<Contract> {
    let (sh, r, p) = (Placement::Shard, Placement::Replicate, Placement::Partial(ReduceOp::Sum));
    let seq = if s.revision.folds_batch() { 0 } else { 1 };
    let y = if s.parallel.sp { vec![sh(0), sh(seq), sh(seq)] } else { vec![sh(0), sh(seq), r] };
    let tokens = if s.parallel.ep > 1 && !s.revision.routes_whole_block() { vec![p, p, p] } else { vec![p, p, r] };
    let mode = if s.parallel.sp { "SP" } else { "I" };
    vec![
        Contract {
            output: "y".into(),
            placements: y,
            ndim: 3 - seq as usize,
            source: format!("MoE out_dst ({mode} layout)"),
        },
        Contract {
            output: "tokens_per_expert".into(),
            placements: tokens,
            ndim: 1,
            source: "MoE tokens_per_expert_E layout".into(),
        },
    ]
}

/// The bound an output's elements are compared within: relative to the output's largest
/// magnitude, at bf16's scale whatever the case dtype (the grouped GEMMs round every product to
/// bf16, and a sharded run rounds partial sums over F where the reference rounds one), looser
/// for bf16 cases; counts exactly; the expert bias to float32 rounding. The gate's gradient gets
/// the bf16 bound in every case: it sums bf16-rounded expert outputs over every token, and those
/// terms cancel, so its largest element can be several times smaller than the rounding of its
/// terms (2000-case runs showed float32 cases 1.1 to 2.3 times past the float32 bound on both
/// backends). Both grow with tp: with tp > 1 the experts' hidden dim is split, each rank
/// rounds its partial product to bf16 and the partials are summed, so a value carries tp
/// roundings where the reference's carries one, and at worst they add up (3,000-case runs at
/// 0.3.0 showed x_grad at tp = 2 and grad.gate at tp = 4 1.005 to 1.05 times past the tp-free
/// bound; a growth of sqrt(tp) still left tp = 2 cases 1.26 and 1.47 times past it, each with the
/// real layer agreeing with the model, i.e. the real layer as far from the unsharded one).
pub fn bound(c: &Common, name: &str, reference: &Tensor) -> Bound {
    let scale = reference.abs().max().double_value(&[]);
    let (_, _, tp) = MoeSpec::axes(c);
    let grow = tp as f64;
    match name {
        "tokens_per_expert" => Bound::Exact,
        "expert_bias" => Bound::Abs(1e-7),
        _ if c.dtype == DType::BF16 || name == "grad.gate" => Bound::Abs(4e-2 * grow * scale + 1e-4),
        _ => Bound::Abs(1e-2 * grow * scale + 1e-5),
    }
}

/// Whether an output is rounding noise only, so no two runs need agree on it: with route_norm
/// and K = 1 every top-k score is s / (s + 1e-20) = 1, so the gate's true gradient is zero and
/// what a run computes for it is the rounding of cancelling terms (recorded: bf16 values of
/// 1e-3 in one run, 1e-4 of the other sign in another).
pub fn noise_only(s: &MoeSpec, name: &str) -> bool {
    name == "grad.gate" && s.router.route_norm && s.dims.top_k == 1
}

/// The value oracle: every sharded output, gathered, against the reference within [`bound`],
/// and, where that fails, within `rounding_bound` before it is a verdict. Not with the
/// force-load-balance debug override: it hands each rank's own tokens to the experts round robin,
/// so a sharded run routes differently from the one-rank reference by design (an expected
/// limitation; its errors and shapes are still compared).
pub fn values(s: &MoeSpec, c: &Common, x: &Extra, base: &Named<Tensor>, other: &Named<DTensor>, j: &mut Judgement) {
    if s.router.force_load_balance {
        return;
    }
    for (name, d) in other.iter() {
        let Some(r) = base.get(name) else { continue };
        if noise_only(s, name) {
            continue;
        }
        let b = bound(c, name, r);
        if !name.contains("grad") {
            replicas(name, d, &b, j);
        }
        // The layout oracle may have gathered it already (the same value as full_tensor()).
        let Some(full) = j.gathered.get(name).or_else(|| d.full_tensor().ok()) else { continue };
        let before = j.verdicts.len();
        compare(&Compare { name, bound: b, skip_rows: &[] }, r, &full, j);
        if j.verdicts.len() > before {
            if let Some(b) = rounding_bound(s, c, x, name, r) {
                j.verdicts.truncate(before);
                compare(&Compare { name, bound: b, skip_rows: &[] }, r, &full, j);
            }
        }
    }
}

/// How many times the reference's own rounding error (its distance from the exact shadow) a
/// sharded run may differ from the reference, per tp rank. The sharded run rounds the same
/// terms in another order and grouping, so its error is of the same size, not the same value;
/// both add in the difference, and with tp > 1 each rank's partial rounds on its own.
const ROUNDING_FACTOR: f64 = 4.0;

/// A second bound for a floating output that failed the magnitude bound: from how far
/// upstream's rounding moved this case's reference (its largest distance from the exact
/// shadow), when that is the larger one. Where an output sums large terms that cancel (the
/// gate's and x's gradients of small-integer data), its own magnitude says nothing of the
/// rounding its terms carry; the shadow measures it. `None`: no shadow, or not a float output.
pub(crate) fn rounding_bound(s: &MoeSpec, c: &Common, x: &Extra, name: &str, r: &Tensor) -> Option<Bound> {
    if matches!(name, "tokens_per_expert" | "expert_bias") {
        return None;
    }
    let exact = x.shadow(s)?.get(name)?;
    if exact.size() != r.size() || r.numel() == 0 {
        return None;
    }
    let moved = (r.to_kind(tch::Kind::Double) - exact).abs().max().double_value(&[]);
    let (_, _, tp) = MoeSpec::axes(c);
    let Bound::Abs(base) = bound(c, name, r) else { return None };
    Some(Bound::Abs(base.max(ROUNDING_FACTOR * tp as f64 * moved)))
}

/// Replica consistency of a forward or hook output: where `d` is labelled Replicate on a mesh
/// dim, every rank of that dim must hold the same local (within the output's bound), else an
/// optimizer step moves the ranks apart (torchtitan #4154's `expert_bias`). One verdict per
/// output, keyed by the first mesh dim that differs. The gradients have their own oracle.
fn replicas(name: &str, d: &DTensor, b: &Bound, j: &mut Judgement) {
    for (md, p) in d.placements.iter().enumerate() {
        if !p.is_replicate() {
            continue;
        }
        for fiber in d.mesh.fibers(md) {
            let first = &d.locals[fiber[0]];
            let differs = |t: &Tensor| {
                let tol = match b {
                    Bound::Abs(t) => *t,
                    _ => 0.0,
                };
                t.size() != first.size() || (t.numel() > 0 && (t - first).abs().max().double_value(&[]) > tol)
            };
            if let Some(&other) = fiber[1..].iter().find(|&&r| differs(&d.locals[r])) {
                let axis = d.mesh.names()[md].clone();
                let detail = format!(
                    "{name} is labelled Replicate on {axis} but rank {other}'s local differs from rank {}'s",
                    fiber[0]
                );
                j.verdicts.push(Verdict {
                    class: Class::Replica,
                    output: Some(name.into()),
                    expected: serde_json::json!("equal locals"),
                    actual: serde_json::json!(format!("rank {other} differs")),
                    detail,
                    key: format!("R@{axis}"),
                    backward: false,
                });
                return;
            }
        }
    }
}

/// Whether a failure is the simulator's "not modelled yet" (a skip, not a verdict).
pub fn not_modelled(e: &DTensorError) -> bool {
    matches!(e, DTensorError::Local { kind, .. } if kind.ends_with(":NotModelled"))
}
