//! The managed venv the MoE subject's cases run in: torchtitan 0.3.0 and spmd_types 0.2.3 from
//! the package registry beside a torch release, `venv-torchtitan-0.3.0-torch-X.Y.Z` in the cache
//! directory, created on first use (torch's CPU wheel first, as `scripts/record-moe` does) and
//! reused after. `SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_X_Y_Z` (dots as underscores) names another
//! interpreter (a `python` executable or a venv directory) for that release.

use super::venv::{cache_dir, ensure_managed, is_release, new_venv, python_in, torch_version, Managed, Source};
use super::Release;
use std::path::{Path, PathBuf};

/// The torchtitan release the MoE subject's real runs use (the one revision that is a package).
pub const TORCHTITAN: &str = "0.3.0";
/// The spmd_types release torchtitan 0.3.0 runs on.
pub const SPMD_TYPES: &str = "0.2.3";

/// A torch release's torchtitan interpreter: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct TitanVenv {
    pub release: Release,
    pub python: PathBuf,
    pub source: Source,
    /// (torch, torchtitan, spmd_types) versions found in its site-packages.
    pub installed: (Option<String>, Option<String>, Option<String>),
}

/// The venv's name: `venv-torchtitan-0.3.0-torch-2.14.0`.
pub fn name(release: &Release) -> String {
    format!("venv-torchtitan-{TORCHTITAN}-torch-{release}")
}

/// The variable that overrides the interpreter: `SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_2_14_0`.
pub fn env_var(release: &Release) -> String {
    format!("SHARDFUZZ_TORCHTITAN_{}_TORCH_{}", TORCHTITAN.replace('.', "_"), release.as_str().replace('.', "_"))
}

/// A package's version from its `*.dist-info` folder in the venv's site-packages.
fn dist_version(python: &Path, package: &str) -> Option<String> {
    let root = python.parent()?.parent()?;
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(root.join(lib)) else { continue };
        for e in entries.flatten() {
            let Ok(site) = std::fs::read_dir(e.path().join("site-packages")) else { continue };
            for d in site.flatten() {
                let n = d.file_name().to_string_lossy().to_string();
                if let Some(rest) = n.strip_prefix(&format!("{package}-")) {
                    if let Some(v) = rest.strip_suffix(".dist-info") {
                        return Some(v.to_string());
                    }
                }
            }
        }
    }
    None
}

/// Where `release`'s torchtitan interpreter is (without creating anything).
pub fn locate(release: &Release) -> TitanVenv {
    let var = env_var(release);
    let (python, source) = match std::env::var_os(&var).filter(|p| !p.is_empty()) {
        Some(p) => (python_in(Path::new(&p)), Source::Env(var)),
        None => (cache_dir().join(name(release)).join("bin/python"), Source::Cache),
    };
    let installed = (torch_version(&python), dist_version(&python, "torchtitan"), dist_version(&python, "spmd_types"));
    TitanVenv { release: release.clone(), python, source, installed }
}

/// The interpreter, creating the managed venv when it is missing or incomplete. pip's output
/// goes to stderr; an override that does not hold the packages is an error, never replaced.
pub fn ensure(release: &Release) -> anyhow::Result<TitanVenv> {
    ensure_managed(release)
}

impl Managed for TitanVenv {
    fn locate(release: &Release) -> Self {
        locate(release)
    }

    fn at(&self) -> (&Path, &Source) {
        (&self.python, &self.source)
    }

    /// Holds the release, torchtitan 0.3.0 and spmd_types 0.2.3.
    fn ready(&self) -> bool {
        let (t, tt, st) = &self.installed;
        is_release(t.as_deref(), &self.release)
            && tt.as_deref() == Some(TORCHTITAN)
            && st.as_deref() == Some(SPMD_TYPES)
    }

    /// One line for `doctor` and error messages.
    fn describe(&self) -> String {
        let from = self.source.from();
        let (t, tt, st) = &self.installed;
        let v = |n: &str, x: &Option<String>| format!("{n} {}", x.as_deref().unwrap_or("missing"));
        let state = if self.ready() {
            "ready".to_string()
        } else if self.source == Source::Cache && t.is_none() {
            "not installed (created on first use)".to_string()
        } else {
            format!("{}, {}, {}", v("torch", t), v("torchtitan", tt), v("spmd_types", st))
        };
        format!("{} ({from}; {state})", self.python.display())
    }

    /// torch's CPU wheel first (unless the venv holds the release), then torchtitan and
    /// spmd_types from the registry.
    fn create(release: &Release, python: &Path) -> anyhow::Result<()> {
        let dir = python.parent().and_then(Path::parent).expect("a venv's python is DIR/bin/python");
        eprintln!(
            "shardfuzz: creating {} with torch=={release}, torchtitan=={TORCHTITAN}, spmd_types=={SPMD_TYPES} \
             (once; a few minutes)",
            dir.display()
        );
        let pip = new_venv(dir)?;
        let torch = [format!("torch=={release}")];
        let has_torch = is_release(torch_version(python).as_deref(), release);
        anyhow::ensure!(
            has_torch || pip(&torch, &["--index-url", "https://download.pytorch.org/whl/cpu"]) || pip(&torch, &[]),
            "pip install torch=={release} failed into {} (see pip's output above)",
            dir.display()
        );
        let titan = [format!("torchtitan=={TORCHTITAN}"), format!("spmd_types=={SPMD_TYPES}")];
        anyhow::ensure!(
            pip(&titan, &[]),
            "pip install torchtitan=={TORCHTITAN} spmd_types=={SPMD_TYPES} failed into {} (see pip's output above)",
            dir.display()
        );
        Ok(())
    }

    fn unready(&self) -> String {
        format!("the new venv does not hold what it should: {}", self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_and_its_override_are_named_after_the_contents() {
        let r: Release = "2.14.0".parse().unwrap();
        assert_eq!(name(&r), "venv-torchtitan-0.3.0-torch-2.14.0");
        assert_eq!(env_var(&r), "SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_2_14_0");
        let v = TitanVenv {
            release: r,
            python: "/nonexistent/bin/python".into(),
            source: Source::Cache,
            installed: (None, None, None),
        };
        assert!(!v.ready() && v.describe().contains("created on first use"), "{}", v.describe());
        let full =
            TitanVenv { installed: (Some("2.14.0+cu130".into()), Some("0.3.0".into()), Some("0.2.3".into())), ..v };
        assert!(full.ready());
    }
}
