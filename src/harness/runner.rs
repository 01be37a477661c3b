//! Runs one case: inputs, the reference, the sharded router, and the float64 shadow. Oracles
//! judge the result; nothing here decides what is a divergence.

use super::case::{Case, CaseError};
use super::data::{self, Inputs};
use super::timing::{timed, Phases};
use crate::dtensor::{CommRecord, Ctx, DTensor, DTensorError};
use crate::placement::Mesh;
use crate::router::backward::program::{self, ProgramRun};
use crate::router::backward::{self, reference::RefGrads};
use crate::router::reference::{self, Margins};
use crate::router::{sharded, RouterOutputs};
use std::sync::Arc;
use tch::{Device, Tensor};

pub struct Run {
    pub mesh: Arc<Mesh>,
    pub reference: Result<RouterOutputs<Tensor>, DTensorError>,
    pub sharded: Result<RouterOutputs<DTensor>, DTensorError>,
    pub comms: Vec<CommRecord>,
    pub margins: Margins,
    /// The boundary program and the reference gradients, for a backward case.
    pub backward: Option<BackwardRun>,
    /// Inputs, reference, sharded, shadow and backward phases of this run.
    pub phases: Phases,
}

/// Both sides of a backward case.
pub struct BackwardRun {
    pub program: Result<ProgramRun, DTensorError>,
    pub reference: Result<RefGrads, DTensorError>,
}

/// Runs a validated case on `device`.
pub fn run(case: &Case, device: Device) -> Result<Run, CaseError> {
    let mut inputs_us = 0;
    let inputs = timed(&mut inputs_us, || data::inputs(case, device));
    let mut r = run_inputs(case, &inputs)?;
    r.phases.inputs_us = inputs_us;
    Ok(r)
}

/// Runs a validated case on given inputs.
pub fn run_inputs(case: &Case, inputs: &Inputs) -> Result<Run, CaseError> {
    let cfg = case.router_config()?;
    let mesh = Arc::new(case.mesh()?);
    let mut p = Phases::default();
    let w = inputs.weights();
    // A Partial input stands for the reduction of its partitioned pieces (data::logical).
    let logical = data::logical(case, inputs);
    let (rx, rw) = match &logical {
        Some(l) => (&l.x, l.weights()),
        None => (&inputs.x, w),
    };
    let reference = timed(&mut p.reference_us, || reference::run(&cfg, rx, &rw));
    let mut ctx = Ctx::new(case.revision.rules);
    let sharded = timed(&mut p.sharded_us, || sharded_run(&mut ctx, case, &cfg, &mesh, inputs));
    let margins = timed(&mut p.shadow_us, || reference::margins(&cfg, rx, &rw));
    let backward = case.backward.as_ref().map(|spec| {
        timed(&mut p.backward_us, || {
            let pw = program::Weights {
                x: &inputs.x,
                gate: &inputs.gate,
                gate_bias: w.gate_bias,
                expert_bias: w.expert_bias,
            };
            let site = sharded::sites(case.revision.router).0;
            let (n, d) = (mesh.size(), case.dims);
            let class = backward::loss::class(spec, n);
            let abs =
                backward::loss::abs_weights(spec.loss_seed, d.batch * d.seq, d.experts, n, class, inputs.x.device());
            BackwardRun {
                program: program::run(&cfg, spec, site, case.revision.rules, &mesh, &pw),
                reference: match &reference {
                    Ok(r) => backward::reference::grads(&cfg, &inputs.x, &w, &r.topk_ids, spec.loss_seed, &abs),
                    Err(e) => Err(e.clone()),
                },
            }
        })
    });
    Ok(Run { mesh, reference, sharded, comms: ctx.comms, margins, backward, phases: p })
}

/// Distributes the inputs with the case's layouts and runs the sharded router revision.
fn sharded_run(
    ctx: &mut Ctx,
    case: &Case,
    cfg: &crate::router::RouterConfig,
    mesh: &Arc<Mesh>,
    inputs: &Inputs,
) -> Result<RouterOutputs<DTensor>, DTensorError> {
    let dist = |t: &Option<Tensor>, ps: &Option<Vec<crate::placement::Placement>>| match (t, ps) {
        (Some(t), Some(ps)) => DTensor::distribute(t, mesh, ps).map(Some),
        _ => Ok(None),
    };
    let x = DTensor::distribute(&inputs.x, mesh, &case.layout.x)?;
    let gate = DTensor::distribute(&inputs.gate, mesh, &case.layout.gate)?;
    let gate_bias = dist(&inputs.gate_bias, &case.layout.gate_bias)?;
    let expert_bias = dist(&inputs.expert_bias, &case.layout.expert_bias)?;
    let params = sharded::Params { gate: &gate, gate_bias: gate_bias.as_ref(), expert_bias: expert_bias.as_ref() };
    sharded::run(ctx, cfg, case.revision.router, &x, &params)
}
