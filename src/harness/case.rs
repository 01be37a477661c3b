//! A case (`shardfuzz.case/2`): everything one differential run needs, as a JSON file that can
//! be replayed. The envelope ([`Common`]: mesh, rule set, dtype, device, data) is the harness's;
//! the `subject` object is the program under test's ([`Subject`]). Field names are fixed
//! (docs/formats.md); unknown fields are errors, and every invalid value is reported with the
//! path of its field.

use crate::subject::Subject;
use crate::tensor_data::Tensors;
use dtensor::device::Dev;
use dtensor::{DType, RuleSet};
use placement::Mesh;
use serde::{Deserialize, Serialize};
use std::ops::{Deref, DerefMut};

pub const CASE_FORMAT: &str = "shardfuzz.case/2";
/// Most simulated ranks a case may ask for (the generator stays at 16).
pub use super::limits::MAX_RANKS;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshSpec {
    pub shape: Vec<usize>,
    pub names: Vec<String>,
}

names::named_enum! {
    /// How input values are drawn from `data.seed` (each subject says what it draws in each).
    pub enum Style("data style") {
        /// Values ~ N(0,1), weights scaled to keep activations of order one.
        Normal = "normal",
        /// Exact ties between experts (pairs of identical gate rows, a zero bias).
        Ties = "ties",
        /// Logits in the hundreds: sigmoid saturates to 1.0 and softmax to one-hot.
        Saturated = "saturated",
        /// Activations scaled by 1e3: large but finite logits.
        Large = "large",
        /// Small integers (-2..=2) everywhere: exact arithmetic, many ties.
        SmallInt = "small_int",
    }
}

/// How a case's inputs come about: drawn from `seed` in `style`, unless `tensors` holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    pub seed: u64,
    pub style: Style,
    /// The inputs inline (they win over the seed), named as the subject names its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Tensors>,
}

/// What every case holds, whatever its subject.
#[derive(Clone, Debug, PartialEq)]
pub struct Common {
    pub mesh: MeshSpec,
    /// The DTensor rule set (a PyTorch release) the sharded side follows.
    pub rules: RuleSet,
    pub dtype: DType,
    pub device: Dev,
    pub data: Data,
}

/// A case of subject `S`.
#[derive(Clone, Debug, PartialEq)]
pub struct Case<S> {
    pub common: Common,
    pub subject: S,
}

impl<S> Deref for Case<S> {
    type Target = Common;
    fn deref(&self) -> &Common {
        &self.common
    }
}

impl<S> DerefMut for Case<S> {
    fn deref_mut(&mut self) -> &mut Common {
        &mut self.common
    }
}

/// An invalid case, with the path of the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CaseError(pub String);

pub fn err<T>(msg: impl Into<String>) -> Result<T, CaseError> {
    Err(CaseError(msg.into()))
}

/// The file form: the envelope's fields, then the subject's object.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: String,
    mesh: MeshSpec,
    rules: RuleSet,
    dtype: DType,
    device: Dev,
    data: Data,
    subject: serde_json::Value,
}

/// [`Wire`] for writing: borrows, so writing a case never copies its inline tensors.
#[derive(Serialize)]
struct WireOut<'a> {
    format: &'static str,
    mesh: &'a MeshSpec,
    rules: RuleSet,
    dtype: DType,
    device: Dev,
    data: &'a Data,
}

impl Common {
    pub fn mesh(&self) -> Result<Mesh, CaseError> {
        Mesh::new(self.mesh.shape.clone(), self.mesh.names.clone()).map_err(|e| CaseError(format!("mesh: {e}")))
    }

    pub fn ranks(&self) -> usize {
        self.mesh.shape.iter().product()
    }

    /// The envelope's checks: mesh size before the mesh is built, dtype.
    fn validate(&self) -> Result<Mesh, CaseError> {
        if self.mesh.shape.is_empty() || self.mesh.shape.len() > 3 {
            return err(format!("mesh.shape: 1 to 3 mesh dims, found {}", self.mesh.shape.len()));
        }
        // Before the mesh is built: its rank tables are as large as the product.
        let mesh = match super::limits::product(&self.mesh.shape) {
            Some(n) if n <= MAX_RANKS as u64 => self.mesh()?,
            Some(n) => {
                return err(format!("mesh.shape: {n} ranks is more than the {MAX_RANKS} simulated ranks allowed"))
            }
            None => {
                return err(format!(
                    "mesh.shape: {:?} is more than the {MAX_RANKS} simulated ranks allowed",
                    self.mesh.shape
                ))
            }
        };
        if !matches!(self.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return err(format!("dtype: expected f32, bf16 or f16, found {}", self.dtype));
        }
        Ok(mesh)
    }
}

impl<S: Subject> Case<S> {
    /// Parses and validates a case from JSON text.
    pub fn from_json(text: &str) -> Result<Case<S>, CaseError> {
        let w: Wire = serde_json::from_str(text).map_err(|e| CaseError(format!("invalid case JSON: {e}")))?;
        Self::from_wire(w)
    }

    /// Parses and validates a case from a JSON value.
    pub fn from_value(v: serde_json::Value) -> Result<Case<S>, CaseError> {
        let w: Wire = serde_json::from_value(v).map_err(|e| CaseError(format!("invalid case JSON: {e}")))?;
        Self::from_wire(w)
    }

    fn from_wire(w: Wire) -> Result<Case<S>, CaseError> {
        if w.format != CASE_FORMAT {
            return err(format!("format: expected \"{CASE_FORMAT}\", found \"{}\"", w.format));
        }
        let subject = S::from_json(w.subject).map_err(|e| CaseError(format!("invalid case JSON: {e}")))?;
        let common = Common { mesh: w.mesh, rules: w.rules, dtype: w.dtype, device: w.device, data: w.data };
        let c = Case { common, subject };
        c.validate()?;
        Ok(c)
    }

    /// The case as a JSON value, in file order.
    pub fn to_value(&self) -> serde_json::Value {
        let c = &self.common;
        let w = WireOut {
            format: CASE_FORMAT,
            mesh: &c.mesh,
            rules: c.rules,
            dtype: c.dtype,
            device: c.device,
            data: &c.data,
        };
        let mut v = serde_json::to_value(w).expect("a case serializes");
        // Moved in last, not serialized a second time.
        v["subject"] = self.subject.to_json();
        v
    }

    /// The case as JSON that reads well by hand (compact arrays); values round-trip exactly.
    pub fn to_json(&self) -> String {
        super::json::pretty(&self.to_value())
    }

    /// Every check a case must pass before anything runs.
    pub fn validate(&self) -> Result<(), CaseError> {
        let mesh = self.common.validate()?;
        self.subject.validate(&self.common, &mesh)?;
        if let Some(t) = &self.data.tensors {
            self.validate_tensors(t)?;
        }
        Ok(())
    }

    /// Inline tensors: exactly the subject's inputs, each of its shape and dtype.
    fn validate_tensors(&self, t: &Tensors) -> Result<(), CaseError> {
        let want = self.subject.inputs(&self.common);
        for (name, _) in &t.0 {
            if !want.iter().any(|w| w.name == name) {
                let names: Vec<&str> = want.iter().map(|w| w.name).collect();
                return err(format!("data.tensors.{name}: not an input of this case (inputs: {})", names.join(", ")));
            }
        }
        for w in &want {
            let Some(td) = t.get(w.name) else { return err(format!("data.tensors.{}: missing", w.name)) };
            if td.shape != w.shape {
                return err(format!("data.tensors.{}.shape: expected {:?}, found {:?}", w.name, w.shape, td.shape));
            }
            if td.dtype != w.dtype {
                return err(format!("data.tensors.{}.dtype: expected {}, found {}", w.name, w.dtype, td.dtype));
            }
            td.validate(&format!("data.tensors.{}", w.name)).map_err(CaseError)?;
        }
        Ok(())
    }
}

impl<S> Case<S> {
    /// The same case with another subject type (the application's registration wraps and
    /// unwraps its subjects this way).
    pub fn map_subject<T>(self, f: impl FnOnce(S) -> T) -> Case<T> {
        Case { common: self.common, subject: f(self.subject) }
    }
}

impl<S: Subject> Serialize for Case<S> {
    fn serialize<Se: serde::Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        self.to_value().serialize(s)
    }
}

/// Reading a case validates it: an invalid one is a deserialization error naming its field.
impl<'de, S: Subject> Deserialize<'de> for Case<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Case::from_value(serde_json::Value::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}
