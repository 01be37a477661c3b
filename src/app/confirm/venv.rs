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

impl Source {
    /// `from $VAR` or `managed`, for descriptions.
    pub fn from(&self) -> String {
        match self {
            Source::Env(var) => format!("from ${var}"),
            Source::Cache => "managed".into(),
        }
    }
}

/// What [`ensure_managed`] needs of a managed interpreter (the torch venvs here, the torchtitan
/// ones in `moe_venv`).
pub(super) trait Managed: Sized {
    /// Where the release's interpreter is (without creating anything).
    fn locate(release: &Release) -> Self;
    /// Its interpreter and where that came from.
    fn at(&self) -> (&Path, &Source);
    /// Holds everything it should.
    fn ready(&self) -> bool;
    fn describe(&self) -> String;
    /// Whether an override that is not ready is used anyway (nothing in it to read a version
    /// from: the interpreter itself will say).
    fn unread_override(&self) -> bool {
        false
    }
    /// Creates the managed venv of `python` or installs what it lacks.
    fn create(release: &Release, python: &Path) -> anyhow::Result<()>;
    /// The error when the venv is still not ready after [`Managed::create`].
    fn unready(&self) -> String;
}

/// The interpreter of `release`, creating the managed venv when it is missing or incomplete;
/// an override that does not hold what it should is an error, never replaced.
pub(super) fn ensure_managed<V: Managed>(release: &Release) -> anyhow::Result<V> {
    let v = V::locate(release);
    if v.ready() {
        return Ok(v);
    }
    let (python, source) = v.at();
    if let Source::Env(var) = source {
        anyhow::ensure!(python.exists(), "${var} points at {}, which does not exist", python.display());
        if v.unread_override() {
            return Ok(v);
        }
        anyhow::bail!("${var}: {}", v.describe());
    }
    V::create(release, python)?;
    let v = V::locate(release);
    anyhow::ensure!(v.ready(), "{}", v.unready());
    Ok(v)
}

/// The venv directory `dir` (made with `$SHARDFUZZ_PYTHON -m venv`, default python3, unless it
/// exists), and a runner of its `pip install -q PKGS EXTRA` (true: pip succeeded).
pub(super) fn new_venv(dir: &Path) -> anyhow::Result<impl Fn(&[String], &[&str]) -> bool + '_> {
    let base = std::env::var("SHARDFUZZ_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    anyhow::ensure!(
        dir.join("bin/python").exists() || ok(Command::new(&base).arg("-m").arg("venv").arg(dir)),
        "could not create a venv at {} with {base} -m venv",
        dir.display()
    );
    Ok(move |pkgs: &[String], extra: &[&str]| {
        let mut c = Command::new(dir.join("bin/pip"));
        c.args(["install", "--disable-pip-version-check", "-q"]).args(pkgs).args(extra);
        ok(&mut c)
    })
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
        is_release(self.installed.as_deref(), &self.release)
    }

    /// One line for `doctor`.
    pub fn describe(&self) -> String {
        let from = self.source.from();
        let state = match &self.installed {
            Some(v) if self.ready() => format!("torch {v}"),
            Some(v) => format!("holds torch {v}, not {}", self.release),
            None if self.source == Source::Cache => "not installed (created on first use)".into(),
            None => "no torch there".into(),
        };
        format!("{} ({from}; {state})", self.python.display())
    }
}

/// Whether an installed torch `version` is `release` (a local suffix such as `+cpu` aside).
pub(super) fn is_release(version: Option<&str>, release: &Release) -> bool {
    version.is_some_and(|v| v.split('+').next() == Some(release.as_str()))
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
pub(super) fn python_in(p: &Path) -> PathBuf {
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
    ensure_managed(release)
}

impl Managed for Venv {
    fn locate(release: &Release) -> Self {
        locate(release)
    }

    fn at(&self) -> (&Path, &Source) {
        (&self.python, &self.source)
    }

    fn ready(&self) -> bool {
        Venv::ready(self)
    }

    fn describe(&self) -> String {
        Venv::describe(self)
    }

    /// No version.py found (an unusual layout): let the interpreter itself say.
    fn unread_override(&self) -> bool {
        self.installed.is_none()
    }

    /// `python3 -m venv DIR && DIR/bin/pip install torch==X.Y.Z` (the default index, then
    /// PyTorch's CPU wheel index).
    fn create(release: &Release, python: &Path) -> anyhow::Result<()> {
        let dir = python.parent().and_then(Path::parent).expect("a venv's python is DIR/bin/python");
        eprintln!("shardfuzz: creating {} with torch=={release} (once; a few minutes, several GB)", dir.display());
        let pip = new_venv(dir)?;
        let torch = [format!("torch=={release}")];
        if pip(&torch, &[]) || pip(&torch, &["--index-url", "https://download.pytorch.org/whl/cpu"]) {
            return Ok(());
        }
        anyhow::bail!("pip install torch=={release} failed into {} (see pip's output above)", dir.display())
    }

    fn unready(&self) -> String {
        format!("the new venv {} does not hold torch {}", self.python.display(), self.release)
    }
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
