//! The outcome of a case (`shardfuzz.outcome/1`, what `replay --json` prints): both sides'
//! outputs, the sharded side's placements, shapes and communication, and the verdicts.

use super::case::Case;
use super::oracle::{Judgement, NearTies, Verdict};
use super::run::{BackwardRun, Named, Run};
use super::signature::Signature;
use super::subject::Subject;
use super::tensor_data::{Ordered, RawSeq, TensorData, Values, ValuesAs};
use dtensor::autograd::{Site, Val};
use dtensor::{CommRecord, DTensor, DTensorError, DType};
use placement::Placement;
use serde::de::Deserializer;
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use tch::Tensor;

pub const OUTCOME_FORMAT: &str = "shardfuzz.outcome/1";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorInfo {
    pub kind: String,
    pub message: String,
}

impl From<&DTensorError> for ErrorInfo {
    fn from(e: &DTensorError) -> Self {
        ErrorInfo { kind: e.kind().into(), message: e.to_string() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSide {
    pub ok: bool,
    pub outputs: Ordered<TensorData>,
    #[serde(default)]
    pub error: Option<ErrorInfo>,
}

/// One sharded output: its spec as every rank sees it, and its gathered values.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardedOutput {
    pub placements: Vec<Placement>,
    pub global_shape: Vec<usize>,
    pub rank_global_shapes: Vec<Vec<usize>>,
    pub local_shapes: Vec<Vec<usize>>,
    pub dtype: DType,
    pub values: Values,
    /// Why `values` is empty: the output could not be gathered (its ranks disagree on its shape).
    pub gather_error: Option<String>,
}

impl Serialize for ShardedOutput {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("ShardedOutput", 7)?;
        st.serialize_field("placements", &self.placements)?;
        st.serialize_field("global_shape", &self.global_shape)?;
        st.serialize_field("rank_global_shapes", &self.rank_global_shapes)?;
        st.serialize_field("local_shapes", &self.local_shapes)?;
        st.serialize_field("dtype", &self.dtype)?;
        st.serialize_field("values", &ValuesAs(&self.values, self.dtype))?;
        if let Some(e) = &self.gather_error {
            st.serialize_field("gather_error", e)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for ShardedOutput {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            placements: Vec<Placement>,
            global_shape: Vec<usize>,
            rank_global_shapes: Vec<Vec<usize>>,
            local_shapes: Vec<Vec<usize>>,
            dtype: DType,
            values: RawSeq,
            #[serde(default)]
            gather_error: Option<String>,
        }
        let w = Wire::deserialize(d)?;
        let values = w.values.into_values(w.dtype).map_err(serde::de::Error::custom)?;
        Ok(ShardedOutput {
            placements: w.placements,
            global_shape: w.global_shape,
            rank_global_shapes: w.rank_global_shapes,
            local_shapes: w.local_shapes,
            dtype: w.dtype,
            values,
            gather_error: w.gather_error,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardedSide {
    pub ok: bool,
    pub outputs: Ordered<ShardedOutput>,
    pub comms: Vec<CommRecord>,
    pub error: Option<ErrorInfo>,
}

/// The backward pass of a backward case (docs/backward.md): the boundary program's gradients
/// with their placements, per-rank locals, reduced values and the sites they crossed; the
/// reference gradients; the backward's collectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackwardSide {
    pub ok: bool,
    pub error: Option<ErrorInfo>,
    /// The subject's name for the loss (the router: `tokensplit`, `local`, `replicated`, `partial`).
    pub loss_class: Option<String>,
    pub grads: Ordered<GradOutput>,
    pub reference: Ordered<TensorData>,
    /// The reference gradients' error, when libtorch's autograd failed on the unsharded router.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_error: Option<ErrorInfo>,
    pub comms: Vec<CommRecord>,
}

/// One gradient of the boundary program.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradOutput {
    pub placements: Vec<Placement>,
    pub locals: Vec<TensorData>,
    /// Absent when the gradient could not be reduced (`gather_error` says why).
    pub reduced: Option<TensorData>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gather_error: Option<String>,
    pub sites: Vec<Site>,
}

fn datas(named: &Named<Tensor>) -> Ordered<TensorData> {
    Ordered(named.iter().map(|(n, t)| (n.to_string(), TensorData::from_tensor(t))).collect())
}

fn backward_side(bw: &BackwardRun) -> BackwardSide {
    let loss_class = bw.loss.clone();
    let (reference, reference_error) = match &bw.reference {
        Ok(r) => (datas(r), None),
        Err(e) => (Ordered::default(), Some(e.into())),
    };
    let side = match &bw.program {
        Ok(p) => {
            let grads = p.grads.iter().filter_map(|(n, g)| {
                let Val::D(d) = &g.val else { return None };
                let (reduced, gather_error) = match d.full_tensor() {
                    Ok(t) => (Some(TensorData::from_tensor(&t)), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                let out = GradOutput {
                    placements: d.placements.clone(),
                    locals: d.locals.iter().map(TensorData::from_tensor).collect(),
                    reduced,
                    gather_error,
                    sites: g.sites.clone(),
                };
                Some((n.to_string(), out))
            });
            BackwardSide {
                ok: true,
                error: None,
                loss_class,
                grads: Ordered(grads.collect()),
                reference,
                reference_error,
                comms: p.comms.clone(),
            }
        }
        Err(e) => BackwardSide {
            ok: false,
            error: Some(e.into()),
            loss_class,
            grads: Ordered::default(),
            reference,
            reference_error,
            comms: vec![],
        },
    };
    side
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub format: String,
    /// The case (a case file's object: any format and subject the application reads).
    pub case: serde_json::Value,
    pub reference: ReferenceSide,
    pub sharded: ShardedSide,
    pub verdicts: Vec<Verdict>,
    /// One signature per verdict, in order (an addition to the base format).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signatures: Vec<Signature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_ties: Option<NearTies>,
    /// The backward pass; absent for a forward-only case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backward: Option<BackwardSide>,
    /// Provenance of outcomes recorded on real PyTorch (golden files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytorch: Option<serde_json::Value>,
}

fn sharded_output(d: &DTensor) -> ShardedOutput {
    let (values, gather_error) = match d.full_tensor() {
        Ok(t) => (TensorData::from_tensor(&t).values, None),
        Err(e) => (Values::Float(Vec::new()), Some(e.to_string())),
    };
    ShardedOutput {
        placements: d.placements.clone(),
        global_shape: d.shape.clone(),
        rank_global_shapes: d.rank_global_shapes(),
        local_shapes: d.local_shapes(),
        dtype: d.dtype,
        values,
        gather_error,
    }
}

impl Outcome {
    /// Assembles the outcome of `run` for `case` (which should carry its tensors inline).
    pub fn build<S: Subject>(case: &Case<S>, run: &Run, j: &Judgement) -> Outcome {
        let reference = match &run.reference {
            Ok(r) => ReferenceSide { ok: true, outputs: datas(r), error: None },
            Err(e) => ReferenceSide { ok: false, outputs: Ordered::default(), error: Some(e.into()) },
        };
        let sharded = match &run.sharded {
            Ok(s) => ShardedSide {
                ok: true,
                outputs: Ordered(s.iter().map(|(n, d)| (n.to_string(), sharded_output(d))).collect()),
                comms: run.comms.clone(),
                error: None,
            },
            Err(e) => {
                ShardedSide { ok: false, outputs: Ordered::default(), comms: run.comms.clone(), error: Some(e.into()) }
            }
        };
        Outcome {
            format: OUTCOME_FORMAT.into(),
            case: case.to_value(),
            reference,
            sharded,
            signatures: j.verdicts.iter().map(|v| v.signature(case)).collect(),
            verdicts: j.verdicts.clone(),
            near_ties: Some(j.near_ties),
            backward: run.backward.as_ref().map(backward_side),
            pytorch: None,
        }
    }
}
