//! The MoE layer as a [`Subject`]: its spec, inputs, run, oracles, generator and shrink
//! candidates, wired to the harness. Known upstream bugs and worker tables come with the revisions
//! that carry them (later steps of issue 21); the PyTorch export is [`crate::export`].

use crate::generate::MoeGen;
use crate::run::Extra;
use crate::spec::MoeSpec;
use crate::{Backend, MoeRev};
use dtensor::DTensor;
use harness::case::{Case, CaseError, Common};
use harness::generate::{GenCommon, Source};
use harness::oracle::{Judgement, Verdict};
use harness::run::Inputs;
use harness::run::{Named, Run};
use harness::subject::{InputSpec, Model, Program, Size, Subject};
use harness::tensor_data::Tensors;
use harness::Signature;
use placement::Mesh;
use tch::{Device, Tensor};

/// The recorded upstream problem the model carries: under the DTensor backends with EP off, SP
/// on, tp > 1 and one batch row per rank, x's gradient lacks the routed experts' part.
pub const X_GRAD_ONE_ROW: &str = crate::known::X_GRAD_ONE_ROW;

/// The `subject.kind` of MoE cases.
pub const KIND: &str = "moe";

/// The program name of a revision on a backend (unique across subjects: `moe/` first; no `:`,
/// which separates a signature's fields).
pub fn program_name(rev: MoeRev, backend: crate::Backend) -> String {
    rev.program(backend)
}

fn row(rev: MoeRev, backend: crate::Backend) -> Program {
    Program { name: program_name(rev, backend), kind: "moe", backward: None }
}

impl Subject for MoeSpec {
    type Extra = Extra;
    type Gen = MoeGen;

    harness::tagged_subject!(KIND);

    fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        MoeSpec::validate(self, c, mesh)
    }

    fn inputs(&self, c: &Common) -> Vec<InputSpec> {
        MoeSpec::inputs(self, c)
    }

    fn draw(&self, c: &Common) -> Tensors {
        crate::inputs::draw_inputs(self, c)
    }

    fn run(&self, c: &Common, inputs: &Inputs, _device: Device) -> Result<(Run, Extra), CaseError> {
        crate::run::run(self, c, inputs)
    }

    fn values(
        &self,
        c: &Common,
        _run: &Run,
        x: &Extra,
        base: &Named<Tensor>,
        other: &Named<DTensor>,
        j: &mut Judgement,
    ) {
        crate::run::values(self, c, x, base, other, j);
    }

    fn judge(&self, c: &Common, run: &Run, _x: &Extra, j: &mut Judgement) {
        crate::comms::judge(self, c, run, j);
    }

    fn program(&self, _v: &Verdict) -> String {
        program_name(self.revision, self.backend)
    }

    fn programs(&self) -> Vec<Program> {
        vec![row(self.revision, self.backend)]
    }

    fn all_programs(_common: &GenCommon, own: &MoeGen) -> Vec<Program> {
        let backends = crate::generate::backends();
        own.revisions()
            .into_iter()
            .flat_map(|r| {
                // tt-0.2.2 runs on its own backend only.
                let bs = if r == MoeRev::Tt022 { vec![Backend::DtensorHooks] } else { backends.clone() };
                bs.into_iter().map(move |b| row(r, b))
            })
            .collect()
    }

    fn generate<S: Source>(s: &mut S, common: &GenCommon, own: &MoeGen) -> Case<Self> {
        crate::generate::generate(s, common, own)
    }

    fn candidates(case: &Case<Self>) -> Vec<Case<Self>> {
        crate::shrink::candidates(case)
    }

    fn size(&self, c: &Common) -> Size {
        let d = self.dims;
        Size { ranks: c.ranks(), tokens: d.batch * d.seq, experts: d.experts, model: d.model, mesh_dims: 3 }
    }

    fn describe(&self, c: &Common) -> String {
        let p = self.parallel;
        format!(
            "{} / {} / {} / dp_replicate={} ep={} sp={}{}",
            self.revision,
            self.backend,
            c.rules,
            p.dp_replicate,
            p.ep,
            p.sp,
            if self.backward { "; backward" } else { "" }
        )
    }

    fn dims(&self) -> String {
        let d = self.dims;
        let fs = d.shared_hidden.map(|f| f.to_string()).unwrap_or_else(|| "-".into());
        format!("B={} L={} D={} F={} E={} K={} Fs={fs}", d.batch, d.seq, d.model, d.hidden, d.experts, d.top_k)
    }

    fn layout_label(&self) -> String {
        let p = self.parallel;
        format!("ep={}{}", p.ep, if p.sp { ",sp" } else { "" })
    }

    fn known_bugs(&self) -> Vec<&'static str> {
        crate::known::Known::ALL.iter().map(|k| k.name()).collect()
    }

    fn known(&self, c: &Common, sig: &Signature) -> Vec<&'static str> {
        crate::known::Known::of(sig, c, self).into_iter().map(crate::known::Known::name).collect()
    }

    fn explain(&self, v: &Verdict) -> String {
        format!(
            "the MoE layer's {} ({}) differs from the unsharded layer",
            v.output.as_deref().unwrap_or("run"),
            v.class
        )
    }

    fn export(&self, c: &Common, model: &Model) -> String {
        crate::export::script(self, c, model)
    }

    fn worker_tables(&self, _c: &Common) -> serde_json::Value {
        serde_json::json!({})
    }
}
