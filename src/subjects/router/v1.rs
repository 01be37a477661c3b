//! `shardfuzz.case/1`, the router's first case format (before subjects): the same fields as a
//! case/2 router case, laid out flat (`dims`, `router`, `layout`, `revision` with its `rules`,
//! `tensors` at the top level). Every case/1 file (goldens, reproducers, fixtures) still reads:
//! it becomes the case/2 case it means, and its errors name its own fields.

use crate::backward::BackwardSpec;
use crate::spec::{Dims, Layout, Revision, RouterSpec};
use crate::{RouterOptions, RouterRev, Size1};
use dtensor::device::Dev;
use dtensor::{DType, RuleSet};
use harness::case::{Case, CaseError, Common, Data, MeshSpec, Style};
use harness::tensor_data::{Ordered, TensorData};
use serde::Deserialize;

pub const FORMAT: &str = "shardfuzz.case/1";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevisionV1 {
    router: RouterRev,
    rules: RuleSet,
    size1: Size1,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataV1 {
    seed: u64,
    style: Style,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TensorsV1 {
    x: TensorData,
    gate: TensorData,
    #[serde(default)]
    expert_bias: Option<TensorData>,
    #[serde(default)]
    gate_bias: Option<TensorData>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseV1 {
    format: String,
    mesh: MeshSpec,
    dims: Dims,
    router: RouterOptions,
    layout: Layout,
    revision: RevisionV1,
    dtype: DType,
    device: Dev,
    data: DataV1,
    #[serde(default)]
    tensors: Option<TensorsV1>,
    #[serde(default)]
    backward: Option<BackwardSpec>,
}

/// A case/1 error's field paths as the file writes them.
fn v1_paths(e: CaseError) -> CaseError {
    CaseError(e.0.replace("subject.", "").replace("data.tensors.", "tensors."))
}

/// Reads and validates a case/1 file as the case/2 router case it means.
pub fn from_json(text: &str) -> Result<Case<RouterSpec>, CaseError> {
    let c: CaseV1 = serde_json::from_str(text).map_err(|e| CaseError(format!("invalid case JSON: {e}")))?;
    if c.format != FORMAT {
        return Err(CaseError(format!("format: expected \"{FORMAT}\", found \"{}\"", c.format)));
    }
    let tensors = c.tensors.map(|t| {
        let mut v = vec![("x".to_string(), t.x), ("gate".to_string(), t.gate)];
        v.extend(t.expert_bias.map(|b| ("expert_bias".to_string(), b)));
        v.extend(t.gate_bias.map(|b| ("gate_bias".to_string(), b)));
        Ordered(v)
    });
    let common = Common {
        mesh: c.mesh,
        rules: c.revision.rules,
        dtype: c.dtype,
        device: c.device,
        data: Data { tensors, ..Data::drawn(c.data.seed, c.data.style) },
    };
    let revision = Revision { router: c.revision.router, size1: c.revision.size1 };
    let subject = RouterSpec { dims: c.dims, router: c.router, layout: c.layout, revision, backward: c.backward };
    let case = Case { common, subject };
    case.validate().map_err(v1_paths)?;
    Ok(case)
}
