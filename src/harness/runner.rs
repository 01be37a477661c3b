//! Running a case of a subject: its inputs (inline or drawn), then both sides. Apart from
//! [`crate::run`], whose plain data the subject trait itself names.

use crate::case::{Case, CaseError};
use crate::data;
use crate::run::{Inputs, Run};
use crate::subject::Subject;
use crate::timing::timed;
use tch::Device;

/// Runs a validated case on `device`: its inputs, then both sides.
pub fn run<S: Subject>(case: &Case<S>, device: Device) -> Result<(Run, S::Extra), CaseError> {
    let mut inputs_us = 0;
    let inputs = timed(&mut inputs_us, || data::inputs(case, device));
    let (mut r, x) = run_inputs(case, &inputs, device)?;
    r.phases.inputs_us = inputs_us;
    Ok((r, x))
}

/// Runs a validated case on given inputs.
pub(crate) fn run_inputs<S: Subject>(
    case: &Case<S>,
    inputs: &Inputs,
    device: Device,
) -> Result<(Run, S::Extra), CaseError> {
    // Every subject's errors are read as Python shows them (their first line); a program that
    // never builds a DTensor context (the MoE layer on spmd_types) must not pay for libtorch
    // symbolizing a C++ backtrace per error either.
    dtensor::local::skip_cpp_backtraces();
    case.subject.run(case, inputs, device)
}
