//! `shardfuzz export --pytorch` of an MoE case: one standalone Python file. With torchtitan
//! 0.3.0 and spmd_types 0.2.3 importable, `python OUT.py` starts the case's ranks under torchrun
//! (gloo, CPU) and each builds torchtitan's real `MoE` module, sharded by torchtitan's own code
//! (the recorder's rank code, bundled in the file); rank 0 prints every output against the
//! plain-torch math of the layer. Without torchtitan it runs the plain-torch math alone
//! (`--reference-only` asks for that too). The case (tensors inline) and the model's verdict are
//! at the top of the file.
//!
//! A `tt-0.2.2` case gets its own script ([`script_022`]): with torchtitan 0.2.2 importable,
//! `python OUT.py` runs the case's tp ranks (gloo, CPU, torch.multiprocessing) on torchtitan 0.2.2's
//! `MoE` module sharded by the package's `apply_moe_ep_tp` (the 0.2.2 recorder's code, bundled)
//! and prints every output against the same module run on one rank; without it, or for a case the
//! 0.2.2 recorder does not run on ranks (an uneven sequence among others), the plain-torch math,
//! which honours `score_before_experts`.

use crate::spec::MoeSpec;
use crate::MoeRev;
use harness::case::{Case, Common};
use harness::subject::Model;

/// The script's own code (below the case).
const MAIN: &str = include_str!("../../../python/export/moe.py");

/// The recorder's modules the script bundles (what the reference and one rank need).
const RECORDER: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/moe_recorder/__init__.py")),
    ("assemble.py", include_str!("../../../python/moe_recorder/assemble.py")),
    ("commlog.py", include_str!("../../../python/moe_recorder/commlog.py")),
    ("driver.py", include_str!("../../../python/moe_recorder/driver.py")),
    ("rank.py", include_str!("../../../python/moe_recorder/rank.py")),
    ("reference.py", include_str!("../../../python/moe_recorder/reference.py")),
];

/// The 0.2.2 script's own code (below the case).
const MAIN_022: &str = include_str!("../../../python/export/moe_022.py");

/// What the 0.2.2 script bundles: the plain-torch math (and the tensor reader it uses) ...
const REFERENCE: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/moe_recorder/__init__.py")),
    ("assemble.py", include_str!("../../../python/moe_recorder/assemble.py")),
    ("rank.py", include_str!("../../../python/moe_recorder/rank.py")),
    ("reference.py", include_str!("../../../python/moe_recorder/reference.py")),
];

/// ... and the 0.2.2 recorder (build, one-rank run, gloo ranks).
const RECORDER_022: &[(&str, &str)] = &[
    ("__init__.py", include_str!("../../../python/moe_recorder_022/__init__.py")),
    ("confirm.py", include_str!("../../../python/moe_recorder_022/confirm.py")),
    ("core.py", include_str!("../../../python/moe_recorder_022/core.py")),
];

/// Seconds a rank waits for the others (the process group's timeout).
const TIMEOUT_S: u32 = 120;

fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `NAME = {"file": "source", ...}`, a bundled package.
fn bundle(out: &mut String, what: &str, name: &str, files: &[(&str, &str)]) {
    out.push_str(&format!("# {what}, file by file.\n{name} = {{\n"));
    for (file, text) in files {
        out.push_str(&format!("    {}: {},\n", py_str(file), py_str(text)));
    }
    out.push_str("}\n\n");
}

/// The model's verdict and the case (tensors inline), as the scripts carry them.
fn model_and_case(out: &mut String, case: &Case<MoeSpec>, model: &Model) {
    let inline = harness::data::with_inline(case);
    let m = serde_json::json!({"classes": model.classes, "signatures": model.signatures});
    out.push_str(&format!(
        "# What shardfuzz's model says of this case.\nMODEL = json.loads({})\n",
        py_str(&m.to_string())
    ));
    out.push_str(&format!("# The case (shardfuzz.case/2).\nCASE = json.loads(r'''{}''')\n\n", inline.to_value()));
}

/// The first line of the docstring: what the case is.
fn title(s: &MoeSpec, c: &Common) -> String {
    let (dp, cp, tp) = MoeSpec::axes(c);
    let p = s.parallel;
    format!(
        "\"\"\"An MoE-layer case exported by shardfuzz: torchtitan {} MoE, backend {}, mesh dp={dp} cp={cp} \
         tp={tp}\n(dp_replicate={} ep={} sp={}{}), {}, {}{}.\n\n",
        s.revision,
        s.backend,
        p.dp_replicate,
        p.ep,
        p.sp,
        if s.router.score_before_experts { ", score_before_experts" } else { "" },
        harness::subject::Subject::dims(s),
        c.dtype,
        if s.backward { ", forward and backward" } else { ", forward" }
    )
}

/// The script of a `tt-0.2.2` case: torchtitan 0.2.2's module on gloo ranks, else the plain math.
pub fn script_022(s: &MoeSpec, c: &Common, model: &Model) -> String {
    let case = Case { common: c.clone(), subject: s.clone() };
    let world = c.ranks();
    let mut out = String::from("#!/usr/bin/env python3\n");
    out.push_str(&title(s, c));
    out.push_str(&format!(
        "    python {{this file}}                 # with torchtitan 0.2.2: {world} gloo ranks (torch.multiprocessing) \
         run\n                                        # its MoE module sharded by apply_moe_ep_tp, against one \
         rank;\n                                        # else the plain-torch math\n    python {{this file}} \
         --reference-only # the plain-torch math only\n\"\"\"\n\n"
    ));
    out.push_str("import json\n\n");
    out.push_str(&format!("WORLD = {world}\nTIMEOUT = {TIMEOUT_S}\n"));
    model_and_case(&mut out, &case, model);
    bundle(&mut out, "shardfuzz's torchtitan 0.2.2 recorder (python/moe_recorder_022)", "RECORDER_022", RECORDER_022);
    bundle(&mut out, "shardfuzz's plain-torch math of the layer (python/moe_recorder)", "RECORDER", REFERENCE);
    out.push_str(MAIN_022);
    out
}

/// The whole script for a case.
pub fn script(s: &MoeSpec, c: &Common, model: &Model) -> String {
    if s.revision == MoeRev::Tt022 {
        return script_022(s, c, model);
    }
    let case = Case { common: c.clone(), subject: s.clone() };
    let world = c.ranks();
    let mut out = String::new();
    out.push_str("#!/usr/bin/env python3\n");
    out.push_str(&title(s, c));
    out.push_str(&format!(
        "    python {{this file}}                 # with torchtitan 0.3.0 + spmd_types 0.2.3: torchrun starts \
         {world} gloo\n                                        # ranks running torchtitan's MoE module; else the \
         plain-torch math\n    python {{this file}} --reference-only # the plain-torch math only\n    torchrun \
         --nproc-per-node {world} {{this file}}\n\"\"\"\n\n"
    ));
    out.push_str("import json\n\n");
    out.push_str(&format!("WORLD = {world}\nTIMEOUT = {TIMEOUT_S}\n"));
    model_and_case(&mut out, &case, model);
    bundle(&mut out, "shardfuzz's MoE recorder (python/moe_recorder)", "RECORDER", RECORDER);
    out.push_str(MAIN);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_holds_the_case_the_bundle_and_the_runner() {
        let c: Case<MoeSpec> = Case::from_json(crate::tests::CASE).unwrap();
        let model = Model { classes: vec!["value:y".into()], signatures: vec![] };
        let s = script(&c.subject, &c.common, &model);
        assert!(s.starts_with("#!/usr/bin/env python3\n"));
        assert!(s.contains("WORLD = 2\n"));
        assert!(s.contains("torchrun --nproc-per-node 2"));
        for (name, _) in RECORDER {
            assert!(s.contains(&format!("    \"{name}\": ")), "{name}");
        }
        // The case reads back from the script, with its tensors inline.
        let start = s.find("CASE = json.loads(r'''").unwrap() + "CASE = json.loads(r'''".len();
        let end = start + s[start..].find("''')").unwrap();
        let back: Case<MoeSpec> = Case::from_json(&s[start..end]).unwrap();
        assert!(back.data.tensors.is_some());
        assert_eq!(back.subject, c.subject);
        assert!(s.contains("MODEL = json.loads(\"{\\\"classes\\\":[\\\"value:y\\\"]"));
        assert!(s.contains("def rank_main():") && s.contains("sys.exit(main())"));
    }

    /// A tt-0.2.2 case with score_before_experts, EP on 2 tp ranks (also confirm's tests' case).
    const CASE_022: &str = include_str!("tests/case_022.json");

    #[test]
    fn a_022_case_gets_the_022_script() {
        let c: Case<MoeSpec> = Case::from_json(CASE_022).unwrap();
        let model = Model { classes: vec![], signatures: vec![] };
        let s = script(&c.subject, &c.common, &model);
        assert_eq!(s, script_022(&c.subject, &c.common, &model));
        assert!(s.starts_with("#!/usr/bin/env python3\n"));
        assert!(s.contains("torchtitan tt-0.2.2 MoE, backend dtensor_hooks") && s.contains("score_before_experts)"));
        assert!(s.contains("WORLD = 2\n") && s.contains("with torchtitan 0.2.2: 2 gloo ranks"));
        assert!(!s.contains("torchrun --nproc-per-node"), "the 0.2.2 script starts its ranks itself");
        for (name, _) in RECORDER_022.iter().chain(REFERENCE) {
            assert!(s.contains(&format!("    \"{name}\": ")), "{name}");
        }
        assert!(s.contains("RECORDER_022 = {\n") && s.contains("RECORDER = {\n"));
        // The plain-torch math it falls back to honours score_before_experts.
        assert!(s.contains("score_before_experts"));
        assert!(s.contains("metadata.version(\"torchtitan\") == \"0.2.2\""));
        assert!(s.contains("from moe_recorder_022.confirm import assemble, run_world"));
        assert!(s.contains("def main():") && s.contains("sys.exit(main())"));
        let start = s.find("CASE = json.loads(r'''").unwrap() + "CASE = json.loads(r'''".len();
        let end = start + s[start..].find("''')").unwrap();
        let back: Case<MoeSpec> = Case::from_json(&s[start..end]).unwrap();
        assert!(back.data.tensors.is_some());
        assert_eq!(back.subject, c.subject);
        // A 0.3.0 case's script is not the 0.2.2 one.
        let old: Case<MoeSpec> = Case::from_json(crate::tests::CASE).unwrap();
        let t = script(&old.subject, &old.common, &model);
        assert!(!t.contains("RECORDER_022") && t.contains("torchrun --nproc-per-node"));
    }
}
