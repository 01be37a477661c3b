//! The outcome of a case (`shardfuzz.outcome/1`, what `replay --json` prints): both sides'
//! outputs, the sharded side's placements, shapes and communication, and the verdicts.

use super::case::Case;
use super::oracle::{Judgement, NearTies, Verdict};
use super::runner::{BackwardRun, Run};
use super::signature::Signature;
use super::tensor_data::{RawSeq, TensorData, Values, ValuesAs};
use crate::dtensor::autograd::{Site, Val};
use crate::dtensor::{CommRecord, DTensor, DTensorError, DType};
use crate::placement::Placement;
use crate::router::backward::loss::LossClass;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

pub const OUTCOME_FORMAT: &str = "shardfuzz.outcome/1";

/// A JSON object whose keys keep their order (outputs print in router order).
#[derive(Clone, Debug, PartialEq)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn get(&self, k: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
}

impl<T: Serialize> Serialize for Ordered<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered<T>, A::Error> {
                let mut v = Vec::new();
                while let Some((k, x)) = a.next_entry::<String, T>()? {
                    v.push((k, x));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

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
    pub loss_class: LossClass,
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

fn backward_side(case: &Case, bw: &BackwardRun) -> Option<BackwardSide> {
    let spec = case.backward.as_ref()?;
    let loss_class = crate::router::backward::loss::class(spec, case.ranks());
    let (reference, reference_error) = match &bw.reference {
        Ok(r) => (Ordered(r.grads.iter().map(|(n, t)| (n.to_string(), TensorData::from_tensor(t))).collect()), None),
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
    Some(side)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    pub format: String,
    pub case: Case,
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
    pub fn build(case: &Case, run: &Run, j: &Judgement) -> Outcome {
        let reference = match &run.reference {
            Ok(r) => ReferenceSide {
                ok: true,
                outputs: Ordered(
                    r.named().into_iter().map(|(n, t)| (n.to_string(), TensorData::from_tensor(t))).collect(),
                ),
                error: None,
            },
            Err(e) => ReferenceSide { ok: false, outputs: Ordered::default(), error: Some(e.into()) },
        };
        let sharded = match &run.sharded {
            Ok(s) => ShardedSide {
                ok: true,
                outputs: Ordered(s.named().into_iter().map(|(n, d)| (n.to_string(), sharded_output(d))).collect()),
                comms: run.comms.clone(),
                error: None,
            },
            Err(e) => {
                ShardedSide { ok: false, outputs: Ordered::default(), comms: run.comms.clone(), error: Some(e.into()) }
            }
        };
        Outcome {
            format: OUTCOME_FORMAT.into(),
            case: case.clone(),
            reference,
            sharded,
            signatures: j.verdicts.iter().map(|v| v.signature(case)).collect(),
            verdicts: j.verdicts.clone(),
            near_ties: Some(j.near_ties),
            backward: run.backward.as_ref().and_then(|bw| backward_side(case, bw)),
            pytorch: None,
        }
    }
}
