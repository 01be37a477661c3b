//! Runs one case: inputs, the reference, the sharded router, and the float64 shadow. Oracles
//! judge the result; nothing here decides what is a divergence.

use super::case::{Case, CaseError};
use super::data::{self, Inputs};
use super::timing::{timed, Phases};
use crate::dtensor::{CommRecord, Ctx, DTensor, DTensorError};
use crate::placement::Mesh;
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
    /// Inputs, reference, sharded and shadow phases of this run.
    pub phases: Phases,
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
    let reference = timed(&mut p.reference_us, || reference::run(&cfg, &inputs.x, &inputs.gate, inputs.bias.as_ref()));
    let mut ctx = Ctx::new(case.revision.rules);
    let sharded = timed(&mut p.sharded_us, || sharded_run(&mut ctx, case, &cfg, &mesh, inputs));
    let margins = timed(&mut p.shadow_us, || reference::margins(&cfg, &inputs.x, &inputs.gate, inputs.bias.as_ref()));
    Ok(Run { mesh, reference, sharded, comms: ctx.comms, margins, phases: p })
}

/// Distributes the inputs with the case's layouts and runs the sharded router revision.
fn sharded_run(
    ctx: &mut Ctx,
    case: &Case,
    cfg: &crate::router::RouterConfig,
    mesh: &Arc<Mesh>,
    inputs: &Inputs,
) -> Result<RouterOutputs<DTensor>, DTensorError> {
    let x = DTensor::distribute(&inputs.x, mesh, &case.layout.x)?;
    let gate = DTensor::distribute(&inputs.gate, mesh, &case.layout.gate)?;
    let bias = match (&inputs.bias, &case.layout.expert_bias) {
        (Some(b), Some(ps)) => Some(DTensor::distribute(b, mesh, ps)?),
        _ => None,
    };
    sharded::run(ctx, cfg, case.revision.router, &x, &gate, bias.as_ref())
}
