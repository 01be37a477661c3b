//! Runs one router case: the reference, the sharded router, the float64 shadow, and for a
//! backward case the boundary program and the reference gradients. Oracles judge the result;
//! nothing here decides what is a divergence.

use crate::backward::program::{self, ProgramRun};
use crate::backward::reference::RefGrads;
use crate::backward::{self, loss};
use crate::contract;
use crate::inputs::{self, RouterInputs};
use crate::reference::{self, Margins};
use crate::spec::RouterSpec;
use crate::{sharded, RouterConfig, RouterOutputs};
use dtensor::{Ctx, DTensor, DTensorError};
use harness::case::{CaseError, Common};
use harness::run::Inputs;
use harness::run::{BackwardRun, Contract, GradExpect, GradRun, Named, Promise, Run};
use harness::timing::{timed, Phases};
use placement::Mesh;
use std::sync::Arc;
use tch::Tensor;

/// The two routing sites that scatter, as the communication log labels them.
pub(crate) const SCATTER_SITES: [&str; 2] = ["group_mask", "routing_map"];

/// What the router's own oracles need beside the shared run.
pub struct Extra {
    pub margins: Margins,
    pub backward: Option<BackwardExtra>,
}

/// A backward case's reference choice and rounding sizes.
pub struct BackwardExtra {
    /// The experts the reference chose, when its gradients ran.
    pub ref_ids: Option<Tensor>,
    /// Per gradient: the size of the terms each element sums, and how far the float32 rounding
    /// of the logits can move it (`backward::reference`).
    pub terms: Named<Tensor>,
    pub logits: Named<Tensor>,
}

fn named<T>(v: Vec<(&'static str, T)>) -> Named<T> {
    Named(v.into_iter().map(|(n, t)| (n.to_string(), t)).collect())
}

fn outputs<T>(o: RouterOutputs<T>) -> Named<T> {
    let mut v = vec![
        ("topk_scores", o.topk_scores),
        ("topk_ids", o.topk_ids),
        ("scores", o.scores),
        ("routing_map", o.routing_map),
        ("counts", o.counts),
    ];
    v.extend(o.group_mask.map(|g| ("group_mask", g)));
    named(v)
}

/// Runs a validated case on its inputs.
pub fn run(s: &RouterSpec, c: &Common, inputs: &Inputs) -> Result<(Run, Extra), CaseError> {
    let cfg = s.router_config()?;
    let mesh = Arc::new(c.mesh()?);
    let mut p = Phases::default();
    let inputs = RouterInputs::of(inputs);
    // A Partial input stands for the reduction of its partitioned pieces (inputs::logical).
    let logical = inputs::logical(s, c, &inputs);
    let (rx, rw) = match &logical {
        Some(l) => (&l.x, l.weights()),
        None => (&inputs.x, inputs.weights()),
    };
    let reference = timed(&mut p.reference_us, || reference::run(&cfg, rx, &rw));
    let mut ctx = Ctx::new(c.rules);
    let sharded = timed(&mut p.sharded_us, || sharded_run(&mut ctx, s, &cfg, &mesh, &inputs));
    let margins = timed(&mut p.shadow_us, || reference::margins(&cfg, rx, &rw));
    let bw =
        s.backward.as_ref().map(|_| timed(&mut p.backward_us, || backward_run(s, c, &cfg, &mesh, &inputs, &reference)));
    let (backward, bextra) = match bw {
        Some((b, x)) => (Some(b), Some(x)),
        None => (None, None),
    };
    let run = Run {
        contracts: vec![counts_contract(s, &mesh)],
        promises: promises(c),
        mesh,
        reference: reference.map(outputs),
        sharded: sharded.map(outputs),
        comms: ctx.comms,
        backward,
        phases: p,
    };
    Ok((run, Extra { margins, backward: bextra }))
}

/// torchtitan's contract on the counts, resolved on the mesh with the case's size-1 rule.
fn counts_contract(s: &RouterSpec, mesh: &Mesh) -> Contract {
    let declared: Vec<String> = s.layout.counts_contract.iter().map(|p| format!("'{p}'")).collect();
    Contract {
        output: "counts".into(),
        placements: contract::resolve(&s.layout.counts_contract, mesh, s.revision.size1),
        ndim: 1,
        source: format!("layout.counts_contract [{}] (size1={})", declared.join(", "), s.revision.size1),
    }
}

/// From torch 2.13 on, DTensor scatters token-sharded operands locally; local_map sites never
/// communicate (a collective there is found either way). 2.12 promises nothing.
fn promises(c: &Common) -> Vec<Promise> {
    if !c.rules.scatter_is_local() {
        return Vec::new();
    }
    let why = format!("scatter, where {} promises a local scatter", c.rules);
    SCATTER_SITES.iter().map(|site| Promise { site: site.to_string(), why: why.clone() }).collect()
}

/// The boundary program and the reference gradients at the reference's choice.
fn backward_run(
    s: &RouterSpec,
    c: &Common,
    cfg: &RouterConfig,
    mesh: &Arc<Mesh>,
    inputs: &RouterInputs,
    reference: &Result<RouterOutputs<Tensor>, DTensorError>,
) -> (BackwardRun, BackwardExtra) {
    let spec = s.backward.as_ref().expect("a backward case");
    let w = inputs.weights();
    let pw = program::Weights { x: &inputs.x, gate: &inputs.gate, gate_bias: w.gate_bias, expert_bias: w.expert_bias };
    let site = sharded::sites(s.revision.router).0;
    let (n, d) = (mesh.size(), s.dims);
    let class = loss::class(spec, n);
    let abs = loss::abs_weights(spec.loss_seed, d.batch * d.seq, d.experts, n, class, inputs.x.device());
    let prog = program::run(cfg, spec, site, c.rules, mesh, &pw);
    let refs = match reference {
        Ok(r) => backward::reference::grads(cfg, &inputs.x, &w, &r.topk_ids, spec.loss_seed, &abs),
        Err(e) => Err(e.clone()),
    };
    let program = prog.map(|p: ProgramRun| {
        let expected = p.expected.map(|(ps, comms)| GradExpect {
            placements: ps.into_iter().map(|(n, p)| (n.to_string(), p)).collect(),
            comms,
            source: format!("DTensor's autograd rules ({}, {})", spec.boundary, c.rules),
        });
        GradRun { grads: named(p.grads), comms: p.comms, choice: Some(p.ids), expected }
    });
    let (reference, ref_ids, terms, logits) = match refs {
        Ok(RefGrads { grads, terms, logits, ids }) => (Ok(named(grads)), Some(ids), named(terms), named(logits)),
        Err(e) => (Err(e), None, Named::default(), Named::default()),
    };
    let run = BackwardRun { program, reference, loss: Some(class.name().to_string()) };
    (run, BackwardExtra { ref_ids, terms, logits })
}

/// Distributes the inputs with the case's layouts and runs the sharded router revision.
fn sharded_run(
    ctx: &mut Ctx,
    s: &RouterSpec,
    cfg: &RouterConfig,
    mesh: &Arc<Mesh>,
    inputs: &RouterInputs,
) -> Result<RouterOutputs<DTensor>, DTensorError> {
    let dist = |t: &Option<Tensor>, ps: &Option<Vec<placement::Placement>>| match (t, ps) {
        (Some(t), Some(ps)) => DTensor::distribute(t, mesh, ps).map(Some),
        _ => Ok(None),
    };
    let x = DTensor::distribute(&inputs.x, mesh, &s.layout.x)?;
    let gate = DTensor::distribute(&inputs.gate, mesh, &s.layout.gate)?;
    let gate_bias = dist(&inputs.gate_bias, &s.layout.gate_bias)?;
    let expert_bias = dist(&inputs.expert_bias, &s.layout.expert_bias)?;
    let params = sharded::Params { gate: &gate, gate_bias: gate_bias.as_ref(), expert_bias: expert_bias.as_ref() };
    sharded::run(ctx, cfg, s.revision.router, &x, &params)
}
