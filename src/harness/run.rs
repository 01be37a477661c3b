//! What running a case produced, as the shared oracles see it: named outputs on both sides, the
//! communication log, and for a backward case the gradients. A subject builds a [`Run`] (and
//! keeps whatever else its own oracles need beside it); nothing here decides what diverged.

use crate::tensor_data::Ordered;
use crate::timing::Phases;
use dtensor::autograd::Grad;
use dtensor::{CommRecord, DTensor, DTensorError};
use placement::{Mesh, Placement};
use std::sync::Arc;
use tch::Tensor;

/// Values by name, in the subject's order.
#[derive(Debug)]
pub struct Named<T>(pub Vec<(String, T)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T> Named<T> {
    pub fn get(&self, name: &str) -> Option<&T> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn push(&mut self, name: &str, value: T) {
        self.0.push((name.to_string(), value));
    }

    /// Every value through `f`; `None` when `f` fails on any.
    pub fn try_map<U>(&self, mut f: impl FnMut(&T) -> Option<U>) -> Option<Named<U>> {
        let mut out = Vec::with_capacity(self.0.len());
        for (n, v) in &self.0 {
            out.push((n.clone(), f(v)?));
        }
        Some(Named(out))
    }
}

/// What an output promises about its placements: the resolved placements it must have, and
/// the sentence that says where the promise comes from (for the verdict's detail).
#[derive(Clone, Debug, PartialEq)]
pub struct Contract {
    pub output: String,
    /// As declared and resolved (shard dims as written; compared normalised for `ndim`).
    pub placements: Vec<Placement>,
    pub ndim: usize,
    pub source: String,
}

/// A site where the program promises no collective (a local scatter, a local region): any
/// collective the log labels with `site` is a `comm` verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct Promise {
    pub site: String,
    /// Why nothing is expected there, ending the verdict's detail ("where torch-2.13 promises a
    /// local scatter").
    pub why: String,
}

/// The backward side of a case: the sharded program's gradients (with the boundary sites each
/// crossed) and the float64 reference gradients.
pub struct BackwardRun {
    pub program: Result<GradRun, DTensorError>,
    pub reference: Result<Named<Tensor>, DTensorError>,
    /// The subject's name for the loss it differentiated (reported, never judged).
    pub loss: Option<String>,
}

/// The sharded program's gradients and the collectives its backward issued.
pub struct GradRun {
    pub grads: Named<Grad>,
    pub comms: Vec<CommRecord>,
    /// The discrete choice the program's forward made (a router's expert ids), for subjects
    /// whose gradients are comparable only where both sides chose alike.
    pub choice: Option<Tensor>,
    /// What the backward must give, derived apart from the autograd that ran it (`None`: the
    /// subject derives nothing, and the gradient oracles fall back on its allowed placements).
    pub expected: Option<GradExpect>,
}

/// A subject's derivation of its backward: the placements each compared gradient must have and
/// the collectives the backward must issue (kind, mesh axis, bytes one rank receives; bytes 0
/// where unknown). The gradient and comm oracles hold the program to it exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GradExpect {
    pub placements: Vec<(String, Vec<Placement>)>,
    pub comms: Vec<CommRecord>,
    /// Where the derivation comes from, for verdict details.
    pub source: String,
}

impl GradExpect {
    pub fn placements_of(&self, name: &str) -> Option<&[Placement]> {
        self.placements.iter().find(|(n, _)| n == name).map(|(_, p)| p.as_slice())
    }
}

/// One run of a case.
pub struct Run {
    pub mesh: Arc<Mesh>,
    pub reference: Result<Named<Tensor>, DTensorError>,
    pub sharded: Result<Named<DTensor>, DTensorError>,
    pub comms: Vec<CommRecord>,
    /// Placement promises of the sharded outputs (checked where the sharded side ran).
    pub contracts: Vec<Contract>,
    /// Sites that must not communicate.
    pub promises: Vec<Promise>,
    pub backward: Option<BackwardRun>,
    /// Inputs, reference, sharded, shadow and backward phases of this run.
    pub phases: Phases,
}

/// A case's input tensors on a device, by name, in the subject's order.
pub struct Inputs(pub Ordered<Tensor>);

impl Inputs {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }

    /// An input the subject always has (its `inputs` list names it).
    pub fn req(&self, name: &str) -> &Tensor {
        self.get(name).unwrap_or_else(|| panic!("input {name} is missing"))
    }
}
