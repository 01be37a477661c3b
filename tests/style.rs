//! Promises about the source itself: `src/placement` never touches libtorch (its module comment
//! says so, and the layout algebra stays testable and fuzzable without it), and no function in
//! `src/` is longer than a reader can hold (100 lines).

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

#[test]
fn placement_never_names_libtorch() {
    let files = rust_files(&crate::root().join("src/placement"));
    assert!(files.len() >= 5);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let words: Vec<&str> = code.split(|c: char| !c.is_alphanumeric() && c != '_').collect();
            let bad = ["tch", "torch_sys", "Tensor", "dtensor"].into_iter().find(|w| words.contains(w));
            assert!(bad.is_none(), "{}:{}: names {bad:?}: {line}", f.display(), i + 1);
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
