//! The seam between the harness and a program under test (a "subject"): the torchtitan router,
//! the whole MoE layer, later an attention block or a vocab-parallel loss.
//!
//! A subject is its spec type: what a case of it holds beyond the [`Common`] envelope (mesh,
//! rule set, dtype, device, data). The spec knows how to check itself, which inputs it needs
//! and how to draw them, how to run both sides (an unsharded reference and the sharded program
//! on the simulated runtime), what its outputs and gradients are called and promise, the
//! verdicts only it can give, its known upstream bugs, how to shrink a case of it, and how to
//! become a PyTorch script. Everything else (the shared oracles, checking, shrinking, campaigns,
//! reports) works on named outputs and never names a subject.
//!
//! The application registers the subjects in one enum that implements this trait by
//! delegation (as ripgrep's searcher is generic over a `Matcher` with several engines); the
//! generator is split like proptest's: [`Subject::generate`] draws a case from a
//! [`Source`] of choices, [`Subject::candidates`] proposes simpler ones.

use crate::case::{Case, CaseError, Common};
use crate::generate::{GenCommon, Source};
use crate::run::{Inputs, Named, Run};
use crate::signature::Signature;
use crate::tensor_data::Tensors;
use crate::verdict::{Judgement, Verdict};
use dtensor::DTensor;
use placement::Mesh;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Debug;
use tch::{Device, Tensor};

/// How big a case is, for picking a bucket's smallest case and for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Size {
    pub ranks: usize,
    pub tokens: usize,
    pub experts: usize,
    pub model: usize,
    pub mesh_dims: usize,
}

impl Size {
    /// The tuple that orders sizes (and the report's `smallest_size` field): ranks, tokens,
    /// experts times model dim (the weights a case carries, roughly), mesh dims.
    pub fn key(&self) -> (usize, usize, usize, usize) {
        (self.ranks, self.tokens, self.experts * self.model, self.mesh_dims)
    }
}

/// What the model says of a case, for an exported script to print beside real PyTorch's
/// verdict: its verdict classes (`class` or `class:output`, sorted) and signatures.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub classes: Vec<String>,
    pub signatures: Vec<String>,
}

/// A program a case runs, as the comparison table has it: one row per program x rule set.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Program {
    /// The signature's program field.
    pub name: String,
    /// What kind of program it is, for the report ("router", "boundary", ...).
    pub kind: &'static str,
    /// Which of a case's verdicts are about it: the backward ones (`Some(true)`), the forward
    /// ones (`Some(false)`), or all.
    pub backward: Option<bool>,
}

/// One input tensor a case needs: its name in `data.tensors`, shape and dtype.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSpec {
    pub name: &'static str,
    pub shape: Vec<usize>,
    pub dtype: dtensor::DType,
}

/// A program under test. See the module documentation.
pub trait Subject: Clone + Debug + PartialEq + Send + Sync + Sized + 'static {
    /// What a run keeps for this subject's own oracles (margins, typed outputs, ...).
    type Extra: Send;
    /// This subject's generator settings (revisions to draw, layout mixes, ...).
    type Gen: Clone + Debug + Default + PartialEq + Serialize + DeserializeOwned + Send + Sync;

    /// The `subject.kind` of its case files.
    fn kind(&self) -> &'static str;
    /// The spec as the `subject` object of a case file, `kind` first.
    fn to_json(&self) -> serde_json::Value;
    /// Reads the `subject` object of a case file (`kind` included).
    fn from_json(v: serde_json::Value) -> Result<Self, String>;

    /// Every check beyond the envelope's, before anything runs.
    fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError>;
    /// The input tensors a case needs, in file order.
    fn inputs(&self, c: &Common) -> Vec<InputSpec>;
    /// The input values drawn from `data.seed` (before rounding to their dtypes).
    fn draw(&self, c: &Common) -> Tensors;

    /// Runs both sides on `inputs`.
    fn run(&self, c: &Common, inputs: &Inputs, device: Device) -> Result<(Run, Self::Extra), CaseError>;
    /// Value verdicts of `other` against `base`: the reference for a case, or the CPU run for
    /// the device oracle.
    fn values(
        &self,
        c: &Common,
        run: &Run,
        extra: &Self::Extra,
        base: &Named<Tensor>,
        other: &Named<DTensor>,
        j: &mut Judgement,
    );
    /// The verdicts only this subject gives (called after the shared oracles).
    fn judge(&self, c: &Common, run: &Run, extra: &Self::Extra, j: &mut Judgement);
    /// The program a verdict is about: the signature's program field (unique across subjects).
    fn program(&self, v: &Verdict) -> String;
    /// The programs this case runs (its rows of the comparison table).
    fn programs(&self) -> Vec<Program>;
    /// Every program cases drawn with these settings can run (the table's rows before any case).
    fn all_programs(common: &GenCommon, own: &Self::Gen) -> Vec<Program>;

    /// Draws a case.
    fn generate<S: Source>(s: &mut S, common: &GenCommon, own: &Self::Gen) -> Case<Self>;
    /// Simpler cases than `case`, simplest first, each differing in one respect.
    fn candidates(case: &Case<Self>) -> Vec<Case<Self>>;
    /// How big the case is.
    fn size(&self, c: &Common) -> Size;
    /// One line naming what the case runs (revision, rule set, ...), for `replay`.
    fn describe(&self, c: &Common) -> String;
    /// The case's dims in one line (`B=1 L=3 ...`), for `shrink`.
    fn dims(&self) -> String;
    /// A short label of the case's layout, for the report's grid (mesh shape x layout).
    fn layout_label(&self) -> String;

    /// Names of this subject's known upstream bugs, in report order.
    fn known_bugs(&self) -> Vec<&'static str>;
    /// Names of the known upstream bugs a divergence with signature `sig` on this case is an
    /// instance of.
    fn known(&self, c: &Common, sig: &Signature) -> Vec<&'static str>;
    /// One line on what a bucket of this verdict's signature is, for reports.
    fn explain(&self, v: &Verdict) -> String;

    /// The case as a standalone PyTorch script that replays it on real DTensor and prints
    /// real PyTorch's verdict classes beside `model`'s (`shardfuzz export --pytorch`).
    fn export(&self, c: &Common, model: &Model) -> String;
    /// What the subject's real-PyTorch worker needs beside the case (the tables it must not
    /// keep a copy of: sites, releases, promises), sent in every `confirm` request.
    fn worker_tables(&self, c: &Common) -> serde_json::Value;
}

/// The three [`Subject`] methods of a spec whose case files hold it tagged with one fixed kind
/// (`kind`, `to_json` by [`tagged`], `from_json` by [`untagged`]), for use inside its
/// `impl Subject`: `harness::tagged_subject!(KIND);`.
#[macro_export]
macro_rules! tagged_subject {
    ($kind:expr) => {
        fn kind(&self) -> &'static str {
            $kind
        }

        fn to_json(&self) -> serde_json::Value {
            $crate::subject::tagged($kind, self)
        }

        fn from_json(v: serde_json::Value) -> Result<Self, String> {
            $crate::subject::untagged($kind, v)
        }
    };
}

/// The `subject` object of a case file: `{"kind": KIND, ...spec}`.
pub fn tagged<T: Serialize>(kind: &str, spec: &T) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), kind.into());
    match serde_json::to_value(spec).expect("a spec serializes") {
        serde_json::Value::Object(o) => m.extend(o),
        other => panic!("a subject spec must be a JSON object, found {other}"),
    }
    serde_json::Value::Object(m)
}

/// Reads a spec from a `subject` object whose `kind` must be `kind`.
pub fn untagged<T: DeserializeOwned>(kind: &str, v: serde_json::Value) -> Result<T, String> {
    let serde_json::Value::Object(mut m) = v else { return Err("subject: expected an object".into()) };
    match m.remove("kind") {
        Some(serde_json::Value::String(k)) if k == kind => {}
        Some(k) => return Err(format!("subject.kind: expected \"{kind}\", found {k}")),
        None => return Err("subject.kind: missing".into()),
    }
    serde_json::from_value(serde_json::Value::Object(m)).map_err(|e| format!("subject: {e}"))
}
