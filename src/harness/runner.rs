//! Runs one case: inputs, the reference, the sharded router, and the float64 shadow. Oracles
//! judge the result; nothing here decides what is a divergence.

use super::case::{Case, CaseError};
use super::data::{self, Inputs};
use crate::dtensor::{CommRecord, Ctx, DTensor, DTensorError};
use crate::placement::Mesh;
use crate::router::reference::{self, Margins};
use crate::router::{sharded, RouterOutputs};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Tensor};

/// Where one case's time went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timings {
    pub inputs: Duration,
    pub reference: Duration,
    pub sharded: Duration,
    pub shadow: Duration,
    pub oracles: Duration,
}

pub struct Run {
    pub mesh: Arc<Mesh>,
    pub reference: Result<RouterOutputs<Tensor>, DTensorError>,
    pub sharded: Result<RouterOutputs<DTensor>, DTensorError>,
    pub comms: Vec<CommRecord>,
    pub margins: Margins,
    pub timings: Timings,
}

/// Runs a validated case on `device`.
pub fn run(case: &Case, device: Device) -> Result<Run, CaseError> {
    let t0 = Instant::now();
    let inputs = data::inputs(case, device);
    let t_inputs = t0.elapsed();
    let mut r = run_inputs(case, &inputs)?;
    r.timings.inputs = t_inputs;
    Ok(r)
}

/// Runs a validated case on given inputs.
pub fn run_inputs(case: &Case, inputs: &Inputs) -> Result<Run, CaseError> {
    let cfg = case.router_config()?;
    let mesh = Arc::new(case.mesh()?);
    let mut timings = Timings::default();

    let t = Instant::now();
    let reference = reference::run(&cfg, &inputs.x, &inputs.gate, inputs.bias.as_ref());
    timings.reference = t.elapsed();

    let t = Instant::now();
    let mut ctx = Ctx::new(case.revision.rules);
    let sharded = (|| {
        let x = DTensor::distribute(&inputs.x, &mesh, &case.layout.x)?;
        let gate = DTensor::distribute(&inputs.gate, &mesh, &case.layout.gate)?;
        let bias = match (&inputs.bias, &case.layout.expert_bias) {
            (Some(b), Some(ps)) => Some(DTensor::distribute(b, &mesh, ps)?),
            _ => None,
        };
        sharded::run(&mut ctx, &cfg, case.revision.router, &x, &gate, bias.as_ref())
    })();
    timings.sharded = t.elapsed();

    let t = Instant::now();
    let margins = reference::margins(&cfg, &inputs.x, &inputs.gate, inputs.bias.as_ref());
    timings.shadow = t.elapsed();
    Ok(Run { mesh, reference, sharded, comms: ctx.comms, margins, timings })
}
