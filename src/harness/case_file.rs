//! Reading, writing and validating case files of a subject (`impl Case<S: Subject>`): the
//! envelope's fields, then the subject's object. Apart from [`crate::case`], which is plain data
//! the subject trait itself names.

use crate::case::{err, Case, CaseError, Common, Data, MeshSpec, CASE_FORMAT};
use crate::subject::Subject;
use crate::tensor_data::Tensors;
use dtensor::device::Dev;
use dtensor::{DType, RuleSet};
use serde::{Deserialize, Serialize};

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
