//! Real PyTorch, managed: one Python venv per torch release, `venv-torch-X.Y.Z` in the cache
//! directory (`$XDG_CACHE_HOME/shardfuzz` or `~/.cache/shardfuzz`), created on first use with
//! `pip install torch==X.Y.Z` and reused after. `SHARDFUZZ_TORCH_X_Y_Z` (dots as underscores)
//! names another interpreter (a `python` executable or a venv directory) for that release; for the
//! libtorch release of this build, `SHARDFUZZ_VENV` (the scripts' venv) is honoured too.

use super::Release;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where a release's interpreter comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `SHARDFUZZ_TORCH_X_Y_Z` (or `SHARDFUZZ_VENV`): the variable's name.
    Env(String),
    /// The managed venv in the cache directory.
    Cache,
}

/// A release's interpreter: where it is, where that came from, and what it holds.
#[derive(Clone, Debug)]
pub struct Venv {
    pub release: Release,
    pub python: PathBuf,
    pub source: Source,
    /// The torch version installed there (read from `torch/version.py`), if any.
    pub installed: Option<String>,
}

impl Venv {
    /// Holds the release (the local version suffix such as `+cpu` aside).
    pub fn ready(&self) -> bool {
        self.installed.as_deref().is_some_and(|v| v.split('+').next() == Some(self.release.as_str()))
    }

    /// One line for `doctor`.
    pub fn describe(&self) -> String {
        let from = match &self.source {
            Source::Env(var) => format!("from ${var}"),
            Source::Cache => "managed".into(),
        };
        let state = match &self.installed {
            Some(v) if self.ready() => format!("torch {v}"),
            Some(v) => format!("holds torch {v}, not {}", self.release),
            None if self.source == Source::Cache => "not installed (created on first use)".into(),
            None => "no torch there".into(),
        };
        format!("{} ({from}; {state})", self.python.display())
    }
}

/// The cache directory of the managed venvs.
pub fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("shardfuzz")
}

/// The variable that overrides a release's interpreter: `SHARDFUZZ_TORCH_2_13_0`.
pub fn env_var(release: &Release) -> String {
    format!("SHARDFUZZ_TORCH_{}", release.as_str().replace('.', "_"))
}

/// A `python` executable, given it or the venv directory holding it.
fn python_in(p: &Path) -> PathBuf {
    if p.is_dir() {
        p.join("bin").join("python")
    } else {
        p.to_path_buf()
    }
}

/// Where `release`'s interpreter is (without creating anything).
pub fn locate(release: &Release) -> Venv {
    let var = env_var(release);
    let (python, source) = if let Some(p) = std::env::var_os(&var).filter(|p| !p.is_empty()) {
        (python_in(Path::new(&p)), Source::Env(var))
    } else if let Some(p) = std::env::var_os("SHARDFUZZ_VENV")
        .filter(|p| !p.is_empty() && release.as_str().starts_with(&format!("{}.", dtensor::device::EXPECTED_LIBTORCH)))
    {
        (python_in(Path::new(&p)), Source::Env("SHARDFUZZ_VENV".into()))
    } else {
        (cache_dir().join(format!("venv-torch-{release}")).join("bin").join("python"), Source::Cache)
    };
    let installed = torch_version(&python);
    Venv { release: release.clone(), python, source, installed }
}

/// The torch version a venv's interpreter would import, read from `torch/version.py` next to
/// it (no interpreter started).
pub fn torch_version(python: &Path) -> Option<String> {
    let root = python.parent()?.parent()?;
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(root.join(lib)) else { continue };
        for e in entries.flatten() {
            let file = e.path().join("site-packages/torch/version.py");
            if let Ok(text) = std::fs::read_to_string(&file) {
                let line = text.lines().find(|l| l.starts_with("__version__"))?;
                return line.split(['\'', '"']).nth(1).map(str::to_string);
            }
        }
    }
    None
}

/// The interpreter of `release`, creating the managed venv when it is missing. Progress and pip's
/// output go to stderr; an override that does not hold the release is an error, never replaced.
pub fn ensure(release: &Release) -> anyhow::Result<Venv> {
    let v = locate(release);
    if v.ready() {
        return Ok(v);
    }
    if let Source::Env(var) = &v.source {
        anyhow::ensure!(v.python.exists(), "${var} points at {}, which does not exist", v.python.display());
        if v.installed.is_some() {
            anyhow::bail!("${var}: {}", v.describe());
        }
        // No version.py found (an unusual layout): let the interpreter itself say.
        return Ok(v);
    }
    create(release, &v.python)?;
    let v = locate(release);
    anyhow::ensure!(v.ready(), "the new venv {} does not hold torch {release}", v.python.display());
    Ok(v)
}

/// `python3 -m venv DIR && DIR/bin/pip install torch==X.Y.Z` (the default index, then PyTorch's
/// CPU wheel index).
fn create(release: &Release, python: &Path) -> anyhow::Result<()> {
    let dir = python.parent().and_then(Path::parent).expect("a venv's python is DIR/bin/python");
    eprintln!("shardfuzz: creating {} with torch=={release} (once; a few minutes, several GB)", dir.display());
    let base = std::env::var("SHARDFUZZ_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    anyhow::ensure!(
        dir.join("bin/python").exists() || ok(Command::new(&base).arg("-m").arg("venv").arg(dir)),
        "could not create a venv at {} with {base} -m venv",
        dir.display()
    );
    let pip = |extra: &[&str]| {
        let mut c = Command::new(dir.join("bin/pip"));
        c.args(["install", "--disable-pip-version-check", "-q", &format!("torch=={release}")]).args(extra);
        ok(&mut c)
    };
    if pip(&[]) || pip(&["--index-url", "https://download.pytorch.org/whl/cpu"]) {
        return Ok(());
    }
    anyhow::bail!("pip install torch=={release} failed into {} (see pip's output above)", dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_override_variable_names_the_release() {
        assert_eq!(env_var(&"2.13.0".parse().unwrap()), "SHARDFUZZ_TORCH_2_13_0");
    }

    #[test]
    fn a_missing_venv_is_described_as_created_on_first_use() {
        let v = Venv {
            release: "2.13.0".parse().unwrap(),
            python: "/nonexistent/bin/python".into(),
            source: Source::Cache,
            installed: None,
        };
        assert!(!v.ready());
        assert!(v.describe().contains("created on first use"), "{}", v.describe());
        let other = Venv { installed: Some("2.12.1+cpu".into()), ..v.clone() };
        assert!(other.describe().contains("not 2.13.0"));
        assert!(Venv { installed: Some("2.13.0+cu130".into()), ..v }.ready());
    }
}
