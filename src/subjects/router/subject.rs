//! The router as a [`Subject`]: its spec, inputs, run, oracles, generator, shrink candidates,
//! known bugs and explanations, wired to the harness.

use crate::backward::Boundary;
use crate::generate::RouterGen;
use crate::known::Known;
use crate::run::Extra;
use crate::spec::RouterSpec;
use crate::RouterOutputs;
use crate::RouterRev;
use dtensor::DTensor;
use harness::case::{Case, CaseError, Common};
use harness::generate::{BackwardMix, GenCommon, Source};
use harness::oracle::{Judgement, Verdict};
use harness::run::Inputs;
use harness::run::{Named, Run};
use harness::subject::{InputSpec, Model, Program, Size, Subject};
use harness::tensor_data::Tensors;
use harness::Signature;
use placement::Mesh;
use tch::{Device, Tensor};

/// The `subject.kind` of router cases.
pub const KIND: &str = "router";

/// A router revision's row: its forward verdicts.
fn router_row(r: RouterRev) -> Program {
    Program { name: r.name().into(), kind: "router", backward: Some(false) }
}

/// A boundary revision's row: the backward verdicts.
fn boundary_row(b: Boundary) -> Program {
    Program { name: b.name().into(), kind: "boundary", backward: Some(true) }
}

impl Subject for RouterSpec {
    type Extra = Extra;
    type Gen = RouterGen;

    harness::tagged_subject!(KIND);

    fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        RouterSpec::validate(self, c, mesh)
    }

    fn inputs(&self, c: &Common) -> Vec<InputSpec> {
        RouterSpec::inputs(self, c)
    }

    fn draw(&self, c: &Common) -> Tensors {
        crate::inputs::draw(self, c)
    }

    fn run(&self, c: &Common, inputs: &Inputs, _device: Device) -> Result<(Run, Extra), CaseError> {
        crate::run::run(self, c, inputs)
    }

    fn values(
        &self,
        _c: &Common,
        run: &Run,
        x: &Extra,
        base: &Named<Tensor>,
        other: &Named<DTensor>,
        j: &mut Judgement,
    ) {
        let r = RouterOutputs::from_named(base, Tensor::shallow_clone);
        let s = RouterOutputs::from_named(other, DTensor::clone);
        if let (Some(r), Some(s)) = (r, s) {
            crate::value::check(self, (run, &x.margins), &r, &s, j);
        }
    }

    fn judge(&self, _c: &Common, run: &Run, x: &Extra, j: &mut Judgement) {
        crate::judge::grads(self, run, x, j);
    }

    fn program(&self, v: &Verdict) -> String {
        match (&self.backward, v.backward) {
            (Some(b), true) => b.boundary.name().to_string(),
            _ => self.revision.router.name().to_string(),
        }
    }

    fn programs(&self) -> Vec<Program> {
        let mut v = vec![router_row(self.revision.router)];
        v.extend(self.backward.as_ref().map(|b| boundary_row(b.boundary)));
        v
    }

    fn all_programs(common: &GenCommon, own: &RouterGen) -> Vec<Program> {
        let mut v: Vec<Program> = own.router_revisions().iter().map(|&r| router_row(r)).collect();
        if common.backward != BackwardMix::Off {
            v.extend(own.boundary_revisions().iter().map(|&b| boundary_row(b)));
        }
        v
    }

    fn generate<S: Source>(s: &mut S, common: &GenCommon, own: &RouterGen) -> Case<Self> {
        crate::generate::generate(s, common, own)
    }

    fn candidates(case: &Case<Self>) -> Vec<Case<Self>> {
        crate::shrink::candidates(case)
    }

    fn size(&self, c: &Common) -> Size {
        let d = self.dims;
        let (ranks, mesh_dims) = (c.ranks(), c.mesh.shape.len());
        Size { ranks, tokens: d.batch * d.seq, experts: d.experts, model: d.model, mesh_dims }
    }

    fn describe(&self, c: &Common) -> String {
        let rev = format!("{} / {} / size1={}", self.revision.router, c.rules, self.revision.size1);
        match &self.backward {
            None => rev,
            Some(b) => format!("{rev}; backward {b}"),
        }
    }

    fn dims(&self) -> String {
        let d = self.dims;
        format!("B={} L={} D={} E={} K={}", d.batch, d.seq, d.model, d.experts, d.top_k)
    }

    fn layout_label(&self) -> String {
        let v: Vec<String> = self.layout.x.iter().map(|p| p.to_string()).collect();
        v.join(",")
    }

    fn known_bugs(&self) -> Vec<&'static str> {
        Known::ALL.iter().map(|k| k.name()).collect()
    }

    fn known(&self, c: &Common, sig: &Signature) -> Vec<&'static str> {
        Known::of(sig, c, self).into_iter().map(Known::name).collect()
    }

    fn explain(&self, v: &Verdict) -> String {
        crate::explain::explain(v)
    }

    fn export(&self, c: &Common, model: &Model) -> String {
        crate::export::script(c, self, model)
    }

    fn worker_tables(&self, c: &Common) -> serde_json::Value {
        crate::export::tables(c, self)
    }
}
