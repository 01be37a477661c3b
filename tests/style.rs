//! Promises about the source itself: the layers only depend on the layers below them (placement
//! never touches libtorch, so the layout algebra stays testable and fuzzable without it), and no
//! function in `src/` is longer than a reader can hold (100 lines).

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The crates a layer's Cargo.toml depends on, among the workspace's own and libtorch's.
fn layer_deps(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let deps = text.split("[dependencies]").nth(1).unwrap_or("");
    let deps = deps.split("\n[").next().unwrap();
    deps.lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The layers only look down: placement is pure (no libtorch), the runtime knows no harness, the
/// harness knows no subject, a subject knows no application (docs/design.md, "Layers").
#[test]
fn each_layer_depends_only_on_the_layers_below() {
    let root = crate::root();
    let layers: [(&str, &[&str]); 7] = [
        ("src/names", &[]),
        ("src/placement", &["names"]),
        ("src/dtensor", &["names", "placement"]),
        ("src/spmd", &["names", "placement"]),
        ("src/harness", &["names", "placement", "dtensor"]),
        ("src/subjects/router", &["names", "placement", "dtensor", "harness"]),
        // The MoE layer reuses the router subject's routing math and config; its spmd_types
        // backend runs on the local-SPMD runtime.
        ("src/subjects/moe", &["names", "placement", "dtensor", "spmd", "harness", "router"]),
    ];
    let ours = ["names", "placement", "dtensor", "spmd", "harness", "router", "moe", "shardfuzz"];
    for (dir, allowed) in layers {
        let deps = layer_deps(&root.join(dir).join("Cargo.toml"));
        assert!(!deps.is_empty() || dir == "src/names", "{dir}: no dependencies read");
        for d in deps.iter().filter(|d| ours.contains(&d.as_str())) {
            assert!(allowed.contains(&d.as_str()), "{dir} depends on {d}, a layer at or above it");
        }
        if dir == "src/placement" || dir == "src/names" {
            assert!(!deps.iter().any(|d| d.starts_with("tch") || d.starts_with("torch")), "{dir} names libtorch");
        }
    }
}

/// (file, first line, length) of every `fn` body, found by indentation: rustfmt closes a body
/// with a `}` at the indentation of its `fn` line.
fn functions(text: &str) -> Vec<(usize, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = l.len() - t.len();
        let is_fn = ["fn ", "pub fn ", "pub(crate) fn ", "pub(super) fn ", "const fn ", "pub const fn "]
            .iter()
            .any(|p| t.starts_with(p));
        if !is_fn || t.ends_with(';') {
            continue;
        }
        let close = " ".repeat(indent) + "}";
        if let Some(j) = lines[i + 1..].iter().position(|x| *x == close || x.starts_with(&(close.clone() + " "))) {
            let name = t.split('(').next().unwrap_or(t).to_string();
            out.push((i + 1, j + 2, name));
        }
    }
    out
}

#[test]
fn no_function_is_longer_than_100_lines() {
    let mut long = Vec::new();
    for f in rust_files(&crate::root().join("src")) {
        let text = std::fs::read_to_string(&f).unwrap();
        for (line, len, name) in functions(&text) {
            if len > 100 {
                long.push(format!("{}:{line}: {name} is {len} lines", f.display()));
            }
        }
    }
    assert!(long.is_empty(), "split these by what they do:\n{}", long.join("\n"));
}

#[test]
fn the_length_check_measures_bodies() {
    let text = "fn a() {\n    x;\n}\n\n    pub fn b(\n        y: u8,\n    ) {\n        z;\n    }\n";
    assert_eq!(functions(text), vec![(1, 3, "fn a".into()), (5, 5, "pub fn b".into())]);
}

/// A file's module path inside its crate (`lib.rs` and `mod.rs` name their folder).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().to_string()).collect();
    if matches!(parts.last().map(String::as_str), Some("lib" | "mod")) {
        parts.pop();
    }
    parts
}

/// The files of its crate that `file` names by `crate::` or `super::` paths (comments and the
/// unit tests left out).
fn imports(root: &Path, file: &Path, modules: &[(Vec<String>, PathBuf)]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    let code: String = code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
    let me = module_of(root, file);
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", Vec::new()), ("super::", me[..me.len().saturating_sub(1)].to_vec())] {
        for piece in code.split(prefix).skip(1) {
            let path: Vec<String> = piece
                .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .next()
                .unwrap()
                .split("::")
                .map(String::from)
                .collect();
            let full: Vec<String> = base.iter().cloned().chain(path).collect();
            let target = (0..=full.len()).rev().find_map(|i| modules.iter().find(|(m, _)| m[..] == full[..i]));
            if let Some((_, f)) = target.filter(|(_, f)| f != file) {
                out.push(f.clone());
            }
        }
    }
    out
}

/// No two files of a crate import each other: each crate reads top-down (docs/design.md).
#[test]
fn no_two_files_of_a_crate_import_each_other() {
    let mut circles = Vec::new();
    let crates = [
        "src/names",
        "src/placement",
        "src/dtensor",
        "src/spmd",
        "src/harness",
        "src/subjects/router",
        "src/subjects/moe",
        "src/app",
    ];
    for dir in crates {
        let root = crate::root().join(dir);
        let modules: Vec<(Vec<String>, PathBuf)> =
            rust_files(&root).into_iter().map(|f| (module_of(&root, &f), f)).collect();
        let deps: Vec<(PathBuf, Vec<PathBuf>)> =
            modules.iter().map(|(_, f)| (f.clone(), imports(&root, f, &modules))).collect();
        for (a, da) in &deps {
            for (b, db) in &deps {
                if a < b && da.contains(b) && db.contains(a) {
                    circles.push(format!("{} <-> {}", a.display(), b.display()));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles:\n{}", circles.join("\n"));
}
