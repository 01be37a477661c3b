//! `shardfuzz export --pytorch` of an MoE case: one standalone Python file. With torchtitan
//! 0.3.0 and spmd_types 0.2.3 importable, `python OUT.py` starts the case's ranks under torchrun
//! (gloo, CPU) and each builds torchtitan's real `MoE` module, sharded by torchtitan's own code
//! (the recorder's rank code, bundled in the file); rank 0 prints every output against the
//! plain-torch math of the layer. Without torchtitan it runs the plain-torch math alone
//! (`--reference-only` asks for that too). The case (tensors inline) and the model's verdict are
//! at the top of the file.

use crate::spec::MoeSpec;
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

/// Seconds a rank waits for the others (the process group's timeout).
const TIMEOUT_S: u32 = 120;

fn py_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// The whole script for a case.
pub fn script(s: &MoeSpec, c: &Common, model: &Model) -> String {
    let case = Case { common: c.clone(), subject: s.clone() };
    let inline = harness::data::with_inline(&case);
    let world = c.ranks();
    let (dp, cp, tp) = MoeSpec::axes(c);
    let p = s.parallel;
    let mut out = String::new();
    out.push_str("#!/usr/bin/env python3\n");
    out.push_str(&format!(
        "\"\"\"An MoE-layer case exported by shardfuzz: torchtitan {} MoE, backend {}, mesh dp={dp} cp={cp} \
         tp={tp}\n(dp_replicate={} ep={} sp={}), {}, {}{}.\n\n",
        s.revision,
        s.backend,
        p.dp_replicate,
        p.ep,
        p.sp,
        harness::subject::Subject::dims(s),
        c.dtype,
        if s.backward { ", forward and backward" } else { ", forward" }
    ));
    out.push_str(&format!(
        "    python {{this file}}                 # with torchtitan 0.3.0 + spmd_types 0.2.3: torchrun starts \
         {world} gloo\n                                        # ranks running torchtitan's MoE module; else the \
         plain-torch math\n    python {{this file}} --reference-only # the plain-torch math only\n    torchrun \
         --nproc-per-node {world} {{this file}}\n\"\"\"\n\n"
    ));
    out.push_str("import json\n\n");
    out.push_str(&format!("WORLD = {world}\nTIMEOUT = {TIMEOUT_S}\n"));
    let m = serde_json::json!({"classes": model.classes, "signatures": model.signatures});
    out.push_str(&format!(
        "# What shardfuzz's model says of this case.\nMODEL = json.loads({})\n",
        py_str(&m.to_string())
    ));
    out.push_str(&format!("# The case (shardfuzz.case/2).\nCASE = json.loads(r'''{}''')\n\n", inline.to_value()));
    out.push_str("# shardfuzz's MoE recorder (python/moe_recorder), file by file.\nRECORDER = {\n");
    for (name, text) in RECORDER {
        out.push_str(&format!("    {}: {},\n", py_str(name), py_str(text)));
    }
    out.push_str("}\n\n");
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
}
