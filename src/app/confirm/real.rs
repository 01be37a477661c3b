//! An outcome recorded on real PyTorch, read leniently: the worker's (`python/shardfuzz_worker`,
//! with every rank's local tensors and labelled collectives) and the older recordings of
//! `docs/pytorch-checks/` (`tests/pytorch/*.jsonl`: full values and per-op collective counts only).
//! Unknown fields are ignored here, unlike in case files: PyTorch's side may say more.

use dtensor::{CommRecord, DType};
use harness::outcome::ErrorInfo;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// A tensor as recorded: `{shape, values}`, with a `dtype` when the recorder wrote one.
#[derive(Clone, Debug, Deserialize)]
pub struct RealTensor {
    pub shape: Vec<usize>,
    #[serde(default)]
    pub dtype: Option<String>,
    pub values: Vec<Value>,
}

impl RealTensor {
    pub fn floats(&self) -> Vec<f64> {
        floats(&self.values)
    }
}

/// JSON numbers, booleans and the strings `NaN`, `Infinity`, `-Infinity` as f64.
pub fn floats(values: &[Value]) -> Vec<f64> {
    values
        .iter()
        .map(|x| match x {
            Value::String(s) if s == "Infinity" => f64::INFINITY,
            Value::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
            Value::Bool(b) => f64::from(u8::from(*b)),
            x => x.as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

/// One collective: labelled (the worker) or only counted (older recordings).
#[derive(Clone, Debug, Deserialize)]
pub struct RealComm {
    pub op: String,
    #[serde(default)]
    pub mesh_dim: Option<usize>,
    #[serde(default)]
    pub tensor: Option<String>,
    /// Bytes one rank receives (the largest over ranks), where the recorder measured them.
    #[serde(default)]
    pub bytes: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct RealOutput {
    pub placements: Vec<String>,
    pub global_shape: Vec<usize>,
    pub rank_global_shapes: Vec<Vec<usize>>,
    pub local_shapes: Vec<Vec<usize>>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub values: Option<Vec<Value>>,
    /// Every rank's local tensor (the worker's outcomes).
    #[serde(default)]
    pub locals: Option<Vec<RealTensor>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct RealSharded {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<RealError>,
    #[serde(default)]
    pub outputs: serde_json::Map<String, Value>,
    #[serde(default)]
    pub comms: Vec<RealComm>,
    /// Per-op counts (older recordings, whose `comms` is empty).
    #[serde(default)]
    pub comm_counts: Option<BTreeMap<String, u64>>,
}

/// An error as recorded (extra fields such as `message_full` ignored).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct RealError {
    pub kind: String,
    #[serde(default)]
    pub message: String,
}

impl From<&RealError> for ErrorInfo {
    fn from(e: &RealError) -> Self {
        ErrorInfo { kind: e.kind.clone(), message: e.message.clone() }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RealGrad {
    pub placements: Vec<String>,
    /// The global shape (rank 0's).
    #[serde(default)]
    pub shape: Option<Vec<usize>>,
    pub locals: Vec<RealTensor>,
    /// The reduced gradient: a tensor (the worker) or a bare list of values (older recordings).
    #[serde(default)]
    pub reduced: Option<Value>,
}

impl RealGrad {
    pub fn reduced_values(&self) -> Option<Vec<f64>> {
        match self.reduced.as_ref()? {
            Value::Array(v) => Some(floats(v)),
            Value::Object(o) => o.get("values")?.as_array().map(|v| floats(v)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct RealBackward {
    pub ok: bool,
    #[serde(default)]
    pub error: Option<RealError>,
    #[serde(default)]
    pub grads: BTreeMap<String, Option<RealGrad>>,
    /// The reference gradients PyTorch's autograd gives on the unsharded router.
    #[serde(default)]
    pub reference: serde_json::Map<String, Value>,
    #[serde(default)]
    pub comms: Vec<RealComm>,
    #[serde(default)]
    pub comm_counts: Option<BTreeMap<String, u64>>,
    /// The ids the program chose (full, the worker's outcomes).
    #[serde(default)]
    pub ids: Option<RealTensor>,
}

/// A real outcome.
#[derive(Clone, Debug, Deserialize)]
pub struct RealOutcome {
    pub case: Value,
    #[serde(default)]
    pub sharded: Option<RealSharded>,
    #[serde(default)]
    pub backward: Option<RealBackward>,
    #[serde(default)]
    pub pytorch: Value,
}

impl RealOutcome {
    pub fn parse(v: &Value) -> Result<RealOutcome, String> {
        RealOutcome::deserialize(v).map_err(|e| format!("an unreadable real outcome: {e}"))
    }

    pub fn output(&self, name: &str) -> Option<RealOutput> {
        let v = self.sharded.as_ref()?.outputs.get(name)?;
        RealOutput::deserialize(v).ok()
    }

    /// The engine that ran it (`local`, `gloo`) as the recorder says.
    pub fn engine(&self) -> String {
        let p = &self.pytorch;
        p["engine"].as_str().or_else(|| p["ranks"].as_str()).unwrap_or("?").to_string()
    }

    pub fn notes(&self) -> Vec<String> {
        self.pytorch["notes"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(str::to_string)).collect()
    }
}

/// shardfuzz's name for a collective PyTorch names (`all_gather_into_tensor` -> `all_gather`).
pub fn comm_name(op: &str) -> String {
    match op.rsplit('.').next().unwrap_or(op) {
        "all_gather_into_tensor" | "allgather_" | "_allgather_base_" => "all_gather",
        "reduce_scatter_tensor" | "_reduce_scatter_base_" => "reduce_scatter",
        "allreduce_" => "all_reduce",
        "shard_dim_alltoall" | "all_to_all_single" | "alltoall_base_" => "all_to_all",
        other => other,
    }
    .to_string()
}

/// A recorded collective as ours are recorded (`bytes` 0 where unknown).
pub fn comm_record(c: &RealComm, default_tensor: &str) -> CommRecord {
    CommRecord {
        op: comm_name(&c.op),
        mesh_dim: c.mesh_dim.unwrap_or(0),
        tensor: c.tensor.clone().unwrap_or_else(|| default_tensor.to_string()),
        bytes: c.bytes.unwrap_or(0),
        axis: None,
    }
}

/// A dtype name as the recorders write it (`f32`, `float32`, `i64`, `bool`, ...).
pub fn dtype(name: Option<&str>, fallback: DType) -> DType {
    match name {
        Some("f32" | "float32") => DType::F32,
        Some("bf16" | "bfloat16") => DType::BF16,
        Some("f16" | "float16") => DType::F16,
        Some("f64" | "float64") => DType::F64,
        Some("i64" | "int64") => DType::I64,
        Some("bool") => DType::Bool,
        _ => fallback,
    }
}
