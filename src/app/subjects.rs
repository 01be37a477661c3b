//! The subjects this build knows, registered in one place: the only file of the application
//! that names a subject's types. [`AnySpec`] is every subject as one [`Subject`] (each method
//! delegates to the case's own subject), so campaigns, reports and the command line handle a
//! mix of subjects without knowing any of them. Adding a subject: a variant in each enum here
//! and one arm in each `match` (docs/design.md, "Adding a subject").

use dtensor::DTensor;
use harness::case::{Case, CaseError, Common, CASE_FORMAT};
use harness::generate::{GenCommon, Source};
use harness::oracle::{Judgement, Verdict};
use harness::run::Inputs;
use harness::run::{Named, Run};
use harness::subject::{InputSpec, Model, Program, Size, Subject};
use harness::tensor_data::Tensors;
use harness::Signature;
use placement::Mesh;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

names::named_enum! {
    /// A kind of subject (`subject.kind` in case files, `--subject` on the command line).
    pub enum Kind("subject") {
        /// torchtitan's MoE router and its backward at the MoE boundaries.
        Router = "router",
        /// torchtitan's whole MoE layer (router, experts, combine, shared experts, hook).
        Moe = "moe",
    }
}

impl Kind {
    /// The names of this subject's known upstream bugs, in report order.
    pub fn known_bugs(self) -> Vec<&'static str> {
        match self {
            Kind::Router => router::known::Known::ALL.iter().map(|k| k.name()).collect(),
            Kind::Moe => moe::known::Known::ALL.iter().map(|k| k.name()).collect(),
        }
    }
}

/// Every registered subject's known upstream bugs (a report written before reports listed their
/// campaign's).
pub fn all_known_bugs() -> Vec<String> {
    Kind::ALL.iter().flat_map(|k| k.known_bugs()).map(String::from).collect()
}

/// A case of any registered subject, checked, or crashed while checked.
pub type AnyCase = Case<AnySpec>;
pub type AnyChecked = harness::Checked<AnySpec>;
pub type AnyCrashed = harness::Crashed<AnySpec>;

/// Every subject's spec.
#[derive(Clone, Debug, PartialEq)]
pub enum AnySpec {
    Router(router::RouterSpec),
    Moe(moe::MoeSpec),
}

impl AnySpec {
    /// The router's spec, when this is a router case.
    pub fn as_router(&self) -> Option<&router::RouterSpec> {
        match self {
            AnySpec::Router(s) => Some(s),
            AnySpec::Moe(_) => None,
        }
    }
}

/// What each subject's run keeps beside the shared run (one per run: the variants' sizes do not
/// matter).
#[allow(clippy::large_enum_variant)]
pub enum AnyExtra {
    Router(router::run::Extra),
    Moe(moe::run::Extra),
}

/// The generator settings: which subjects to draw, and each subject's own settings (their
/// fields flattened, so campaign.json's `gen` keeps the names it always had).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnyGen {
    /// The subjects drawn from, in turn by the case stream (one subject: all of its cases).
    #[serde(default = "default_subjects")]
    pub subjects: Vec<Kind>,
    #[serde(flatten)]
    pub router: router::generate::RouterGen,
    #[serde(flatten)]
    pub moe: moe::generate::MoeGen,
}

fn default_subjects() -> Vec<Kind> {
    vec![Kind::Router]
}

impl Default for AnyGen {
    fn default() -> Self {
        AnyGen { subjects: default_subjects(), router: Default::default(), moe: Default::default() }
    }
}

/// One arm per subject: `$body` with `$s` bound to the subject's spec.
macro_rules! each {
    ($spec:expr, $s:ident => $body:expr) => {
        match $spec {
            AnySpec::Router($s) => $body,
            AnySpec::Moe($s) => $body,
        }
    };
}

/// The extra of a subject's run, unwrapped.
macro_rules! extra {
    ($x:expr, $v:ident) => {
        match $x {
            AnyExtra::$v(x) => x,
            _ => unreachable!("a run's extra is its own subject's"),
        }
    };
}

impl Subject for AnySpec {
    type Extra = AnyExtra;
    type Gen = AnyGen;

    fn kind(&self) -> &'static str {
        each!(self, s => s.kind())
    }

    fn to_json(&self) -> serde_json::Value {
        each!(self, s => s.to_json())
    }

    fn from_json(v: serde_json::Value) -> Result<Self, String> {
        let kind = v.get("kind").and_then(|k| k.as_str()).ok_or("subject.kind: missing")?;
        match kind.parse::<Kind>().map_err(|e| format!("subject.kind: {e}"))? {
            Kind::Router => router::RouterSpec::from_json(v).map(AnySpec::Router),
            Kind::Moe => moe::MoeSpec::from_json(v).map(AnySpec::Moe),
        }
    }

    fn validate(&self, c: &Common, mesh: &Mesh) -> Result<(), CaseError> {
        each!(self, s => s.validate(c, mesh))
    }

    fn inputs(&self, c: &Common) -> Vec<InputSpec> {
        each!(self, s => s.inputs(c))
    }

    fn draw(&self, c: &Common) -> Tensors {
        each!(self, s => s.draw(c))
    }

    fn run(&self, c: &Common, inputs: &Inputs, device: Device) -> Result<(Run, AnyExtra), CaseError> {
        match self {
            AnySpec::Router(s) => s.run(c, inputs, device).map(|(r, x)| (r, AnyExtra::Router(x))),
            AnySpec::Moe(s) => s.run(c, inputs, device).map(|(r, x)| (r, AnyExtra::Moe(x))),
        }
    }

    fn values(
        &self,
        c: &Common,
        run: &Run,
        x: &AnyExtra,
        base: &Named<Tensor>,
        other: &Named<DTensor>,
        j: &mut Judgement,
    ) {
        match self {
            AnySpec::Router(s) => s.values(c, run, extra!(x, Router), base, other, j),
            AnySpec::Moe(s) => s.values(c, run, extra!(x, Moe), base, other, j),
        }
    }

    fn judge(&self, c: &Common, run: &Run, x: &AnyExtra, j: &mut Judgement) {
        match self {
            AnySpec::Router(s) => s.judge(c, run, extra!(x, Router), j),
            AnySpec::Moe(s) => s.judge(c, run, extra!(x, Moe), j),
        }
    }

    fn program(&self, v: &Verdict) -> String {
        each!(self, s => s.program(v))
    }

    fn programs(&self) -> Vec<Program> {
        each!(self, s => s.programs())
    }

    fn all_programs(common: &GenCommon, own: &AnyGen) -> Vec<Program> {
        let mut v = Vec::new();
        for k in &own.subjects {
            match k {
                Kind::Router => v.extend(router::RouterSpec::all_programs(common, &own.router)),
                Kind::Moe => v.extend(moe::MoeSpec::all_programs(common, &own.moe)),
            }
        }
        v
    }

    fn generate<S: Source>(src: &mut S, common: &GenCommon, own: &AnyGen) -> Case<Self> {
        // One subject draws nothing for the choice, so its stream is the subject's own.
        let kind = if own.subjects.len() > 1 { src.pick(&own.subjects) } else { own.subjects[0] };
        match kind {
            Kind::Router => router::RouterSpec::generate(src, common, &own.router).map_subject(AnySpec::Router),
            Kind::Moe => moe::MoeSpec::generate(src, common, &own.moe).map_subject(AnySpec::Moe),
        }
    }

    fn candidates(case: &Case<Self>) -> Vec<Case<Self>> {
        match &case.subject {
            AnySpec::Router(s) => {
                let c = Case { common: case.common.clone(), subject: s.clone() };
                router::RouterSpec::candidates(&c).into_iter().map(|c| c.map_subject(AnySpec::Router)).collect()
            }
            AnySpec::Moe(s) => {
                let c = Case { common: case.common.clone(), subject: s.clone() };
                moe::MoeSpec::candidates(&c).into_iter().map(|c| c.map_subject(AnySpec::Moe)).collect()
            }
        }
    }

    fn size(&self, c: &Common) -> Size {
        each!(self, s => s.size(c))
    }

    fn describe(&self, c: &Common) -> String {
        each!(self, s => s.describe(c))
    }

    fn dims(&self) -> String {
        each!(self, s => s.dims())
    }

    fn layout_label(&self) -> String {
        each!(self, s => s.layout_label())
    }

    fn known_bugs(&self) -> Vec<&'static str> {
        each!(self, s => s.known_bugs())
    }

    fn known(&self, c: &Common, sig: &Signature) -> Vec<&'static str> {
        each!(self, s => s.known(c, sig))
    }

    fn explain(&self, v: &Verdict) -> String {
        each!(self, s => s.explain(v))
    }

    fn export(&self, c: &Common, model: &Model) -> String {
        each!(self, s => s.export(c, model))
    }

    fn worker_tables(&self, c: &Common) -> serde_json::Value {
        each!(self, s => s.worker_tables(c))
    }
}

/// Reads a case file of any format the tool has written: `shardfuzz.case/2` of any registered
/// subject, or the router's `shardfuzz.case/1`.
pub fn read_case(text: &str) -> Result<AnyCase, CaseError> {
    let format = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v.get("format").and_then(|f| f.as_str()).map(String::from));
    match format.as_deref() {
        Some(router::v1::FORMAT) => router::v1::from_json(text).map(|c| c.map_subject(AnySpec::Router)),
        Some(CASE_FORMAT) | None => Case::from_json(text),
        Some(other) => Err(CaseError(format!(
            "format: expected \"{CASE_FORMAT}\" (or the router's \"{}\"), found \"{other}\"",
            router::v1::FORMAT
        ))),
    }
}

/// What to generate: the settings every subject shares and each subject's own (flattened:
/// campaign.json's `gen` is one object).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GenConfig {
    #[serde(flatten)]
    pub common: GenCommon,
    #[serde(flatten)]
    pub subjects: AnyGen,
}

impl GenConfig {
    /// The default settings drawing one subject only: the mapping from bytes to cases of that
    /// subject's fuzz target (`router_diff`, `moe_diff`) and of `import --subject`.
    pub fn of_subject(kind: Kind) -> Self {
        let mut c = GenConfig::default();
        c.subjects.subjects = vec![kind];
        c
    }

    /// Case `index` of a run seeded `seed`.
    pub fn nth(&self, seed: u64, index: u64) -> AnyCase {
        harness::stream::nth::<AnySpec>(seed, index, &self.common, &self.subjects)
    }

    /// The fuzzer input bytes that decode to case `index` of seed `seed`.
    pub fn seed_bytes(&self, seed: u64, index: u64) -> Vec<u8> {
        harness::stream::seed_bytes::<AnySpec>(seed, index, &self.common, &self.subjects)
    }

    /// The case libFuzzer's bytes decode to.
    pub fn arbitrary(&self, u: &mut arbitrary::Unstructured) -> AnyCase {
        AnySpec::generate(&mut harness::generate::Bytes(u), &self.common, &self.subjects)
    }
}

/// A `--subject` value: one subject's name, or `all` of them.
#[derive(Clone, Debug, PartialEq)]
pub struct SubjectSel(pub Vec<Kind>);

impl std::str::FromStr for SubjectSel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(SubjectSel(Kind::ALL.to_vec()));
        }
        s.parse::<Kind>().map(|k| SubjectSel(vec![k])).map_err(|_| {
            let names: Vec<String> = Kind::ALL.iter().map(|k| k.to_string()).collect();
            format!("unknown subject `{s}` (expected {} or all)", names.join(", "))
        })
    }
}

/// The command-line flags that choose subjects and each subject's generator settings
/// (flattened into every command that draws cases).
#[derive(clap::Args, Debug, Clone)]
pub struct SubjectArgs {
    /// Subjects to draw cases of, in turn (comma-separated: router, moe, all). Default: router;
    /// nightly: all
    #[arg(long, value_delimiter = ',')]
    pub subject: Vec<SubjectSel>,
    /// Router revisions to draw from (comma-separated; default all)
    #[arg(long, value_delimiter = ',')]
    pub router: Vec<router::RouterRev>,
    /// Router-tensor layouts: any (torchtitan's plus 30% what-if layouts) or torchtitan (only
    /// the layouts torchtitan produces)
    #[arg(long, default_value = "any")]
    pub layouts: router::generate::LayoutMix,
    /// Boundary revisions to draw router backward cases from (comma-separated; default all)
    #[arg(long, value_delimiter = ',')]
    pub boundary: Vec<router::backward::Boundary>,
    /// MoE-layer revisions to draw from (comma-separated; default every modelled one)
    #[arg(long = "moe-revision", value_delimiter = ',')]
    pub moe_revision: Vec<moe::MoeRev>,
}

impl SubjectArgs {
    /// The generator settings; `default` are the subjects drawn when `--subject` is not given.
    pub fn gen(&self, default: &[Kind]) -> AnyGen {
        let mut subjects: Vec<Kind> = Vec::new();
        for k in self.subject.iter().flat_map(|s| s.0.iter()) {
            if !subjects.contains(k) {
                subjects.push(*k);
            }
        }
        if subjects.is_empty() {
            subjects = default.to_vec();
        }
        let router = router::generate::RouterGen {
            routers: self.router.clone(),
            boundaries: self.boundary.clone(),
            layouts: self.layouts,
        };
        let moe = moe::generate::MoeGen { moe_revisions: self.moe_revision.clone() };
        AnyGen { subjects, router, moe }
    }
}
