//! A case (`shardfuzz.case/2`): everything one differential run needs, as a JSON file that can
//! be replayed. The envelope ([`Common`]: mesh, rule set, dtype, device, data) is the harness's;
//! the `subject` object is the program under test's (`Subject`; reading and writing a
//! case of one is `case_file`'s). Field names are fixed
//! (docs/formats.md); unknown fields are errors, and every invalid value is reported with the
//! path of its field.

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
        /// The MoE recorder's: tokens pushed toward one gate row, so that few experts get
        /// tokens. Its cases carry their tensors inline; drawn from a seed it is `normal`.
        Skewed = "skewed",
    }
}

/// How a case's inputs come about: drawn from `seed` in `style`, unless `tensors` holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// null only with inline `tensors` (the MoE recorder's hand-made cases have no seed).
    pub seed: Option<u64>,
    pub style: Style,
    /// The inputs inline (they win over the seed), named as the subject names its inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Tensors>,
    /// The MoE recorder's: global token indices whose top-k choice its generator could not
    /// separate by a margin (a hint for readers; nothing runs differently).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_tie_tokens: Option<Vec<usize>>,
    /// The MoE recorder's free-text hint of what a case was drawn for ("reject:ep", ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
}

impl Data {
    /// Inputs drawn from `seed` in `style`.
    pub fn drawn(seed: u64, style: Style) -> Data {
        Data { seed: Some(seed), style, tensors: None, near_tie_tokens: None, intent: None }
    }

    /// The seed inputs are drawn from (0 for a case without one: it holds its tensors inline).
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }
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

impl Common {
    pub fn mesh(&self) -> Result<Mesh, CaseError> {
        Mesh::new(self.mesh.shape.clone(), self.mesh.names.clone()).map_err(|e| CaseError(format!("mesh: {e}")))
    }

    pub fn ranks(&self) -> usize {
        self.mesh.shape.iter().product()
    }

    /// The envelope's checks: mesh size before the mesh is built, dtype.
    pub(crate) fn validate(&self) -> Result<Mesh, CaseError> {
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
        if self.data.seed.is_none() && self.data.tensors.is_none() {
            return err("data.seed: null needs the inputs inline in data.tensors");
        }
        if !matches!(self.dtype, DType::F32 | DType::BF16 | DType::F16) {
            return err(format!("dtype: expected f32, bf16 or f16, found {}", self.dtype));
        }
        Ok(mesh)
    }
}

impl<S> Case<S> {
    /// The same case with another subject type (the application's registration wraps and
    /// unwraps its subjects this way).
    pub fn map_subject<T>(self, f: impl FnOnce(S) -> T) -> Case<T> {
        Case { common: self.common, subject: f(self.subject) }
    }
}
