//! The managed venvs the MoE subject's cases run in, one per torchtitan release that is a
//! package ([`Titan`]) and torch release: torchtitan 0.3.0 with spmd_types 0.2.3
//! (`venv-torchtitan-0.3.0-torch-X.Y.Z`, revision `tt-0.3.0`), torchtitan 0.2.2
//! (`venv-torchtitan-0.2.2-torch-X.Y.Z`, revision `tt-0.2.2`), from the package registry in the
//! cache directory, created on first use (torch's CPU wheel first, as `scripts/record-moe` does)
//! and reused after. torch may also reach the venv through a `.pth` file naming another venv's
//! site-packages (how a venv made with `venv-torch-X.Y.Z`'s python shares its torch).
//! `SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_X_Y_Z` (dots as underscores; `_0_2_2_` for 0.2.2) names
//! another interpreter (a `python` executable or a venv directory) for that pair.

use super::venv::{cache_dir, ensure_managed, is_release, new_venv, python_in, torch_version, Managed, Source};
use super::Release;
use moe::MoeRev;
use std::path::{Path, PathBuf};

/// The torchtitan release of revision `tt-0.3.0`.
pub const TORCHTITAN: &str = "0.3.0";
/// The torchtitan release of revision `tt-0.2.2`.
pub const TORCHTITAN_022: &str = "0.2.2";
/// The spmd_types release torchtitan 0.3.0 runs on.
pub const SPMD_TYPES: &str = "0.2.3";

/// A torchtitan release that `confirm` installs and runs (the revisions that are packages).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Titan {
    /// 0.3.0 with spmd_types 0.2.3 (`tt-0.3.0`; recorder `python/moe_recorder`).
    V030,
    /// 0.2.2 (`tt-0.2.2`; recorder `python/moe_recorder_022`).
    V022,
}

impl Titan {
    /// The release of a revision, if it is a package.
    pub fn of(rev: MoeRev) -> Option<Titan> {
        match rev {
            MoeRev::Tt030 => Some(Titan::V030),
            MoeRev::Tt022 => Some(Titan::V022),
            _ => None,
        }
    }

    /// `0.3.0`, `0.2.2`.
    pub fn version(self) -> &'static str {
        match self {
            Titan::V030 => TORCHTITAN,
            Titan::V022 => TORCHTITAN_022,
        }
    }

    /// The spmd_types release it needs beside it, if any.
    pub fn spmd_types(self) -> Option<&'static str> {
        (self == Titan::V030).then_some(SPMD_TYPES)
    }

    /// What pip installs after torch: `torchtitan==V` (and `spmd_types==W`).
    fn packages(self) -> Vec<String> {
        let mut v = vec![format!("torchtitan=={}", self.version())];
        v.extend(self.spmd_types().map(|s| format!("spmd_types=={s}")));
        v
    }
}

/// A torch release's torchtitan interpreter: where it is and what it holds.
#[derive(Clone, Debug)]
pub struct TitanVenv {
    pub titan: Titan,
    pub release: Release,
    pub python: PathBuf,
    pub source: Source,
    /// (torch, torchtitan, spmd_types) versions found in its site-packages.
    pub installed: (Option<String>, Option<String>, Option<String>),
}

/// The venv's name: `venv-torchtitan-0.3.0-torch-2.14.0`.
pub fn name(titan: Titan, release: &Release) -> String {
    format!("venv-torchtitan-{}-torch-{release}", titan.version())
}

/// The variable that overrides the interpreter: `SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_2_14_0`.
pub fn env_var(titan: Titan, release: &Release) -> String {
    let under = |s: &str| s.replace('.', "_");
    format!("SHARDFUZZ_TORCHTITAN_{}_TORCH_{}", under(titan.version()), under(release.as_str()))
}

/// The torch version the interpreter imports: its own site-packages, else a site-packages a
/// `.pth` file of it names (no interpreter started).
fn torch_via_pth(python: &Path) -> Option<String> {
    if let Some(v) = torch_version(python) {
        return Some(v);
    }
    let root = python.parent()?.parent()?;
    for lib in ["lib", "lib64"] {
        let Ok(entries) = std::fs::read_dir(root.join(lib)) else { continue };
        for e in entries.flatten() {
            let Ok(site) = std::fs::read_dir(e.path().join("site-packages")) else { continue };
            for f in site.flatten().filter(|f| f.path().extension().is_some_and(|x| x == "pth")) {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                for dir in text.lines().map(str::trim).filter(|l| !l.starts_with("import") && !l.is_empty()) {
                    // `torch_version` wants DIR/bin/python with DIR/lib/*/site-packages: read the file itself.
                    let file = Path::new(dir).join("torch/version.py");
                    let Ok(t) = std::fs::read_to_string(&file) else { continue };
                    let Some(line) = t.lines().find(|l| l.starts_with("__version__")) else { continue };
                    return line.split(['\'', '"']).nth(1).map(str::to_string);
                }
            }
        }
    }
    None
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

/// Where `release`'s interpreter of torchtitan `titan` is (without creating anything).
pub fn locate(titan: Titan, release: &Release) -> TitanVenv {
    let var = env_var(titan, release);
    let (python, source) = match std::env::var_os(&var).filter(|p| !p.is_empty()) {
        Some(p) => (python_in(Path::new(&p)), Source::Env(var)),
        None => (cache_dir().join(name(titan, release)).join("bin/python"), Source::Cache),
    };
    let installed = (torch_via_pth(&python), dist_version(&python, "torchtitan"), dist_version(&python, "spmd_types"));
    TitanVenv { titan, release: release.clone(), python, source, installed }
}

/// The interpreter, creating the managed venv when it is missing or incomplete. pip's output
/// goes to stderr; an override that does not hold the packages is an error, never replaced.
pub fn ensure(titan: Titan, release: &Release) -> anyhow::Result<TitanVenv> {
    match titan {
        Titan::V030 => ensure_managed(release),
        Titan::V022 => ensure_managed::<Titan022>(release).map(|v| v.0),
    }
}

/// The 0.2.2 venv, for [`ensure_managed`] (which locates by release alone).
struct Titan022(TitanVenv);

impl Managed for Titan022 {
    fn locate(release: &Release) -> Self {
        Titan022(locate(Titan::V022, release))
    }

    fn at(&self) -> (&Path, &Source) {
        self.0.at()
    }

    fn ready(&self) -> bool {
        self.0.ready()
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn create(release: &Release, python: &Path) -> anyhow::Result<()> {
        create(Titan::V022, release, python)
    }

    fn unready(&self) -> String {
        self.0.unready()
    }
}

impl Managed for TitanVenv {
    fn locate(release: &Release) -> Self {
        locate(Titan::V030, release)
    }

    fn at(&self) -> (&Path, &Source) {
        (&self.python, &self.source)
    }

    /// Holds the release, its torchtitan (and spmd_types 0.2.3 for 0.3.0).
    fn ready(&self) -> bool {
        let (t, tt, st) = &self.installed;
        is_release(t.as_deref(), &self.release)
            && tt.as_deref() == Some(self.titan.version())
            && self.titan.spmd_types().is_none_or(|want| st.as_deref() == Some(want))
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
            let spmd = self.titan.spmd_types().map(|_| format!(", {}", v("spmd_types", st))).unwrap_or_default();
            format!("{}, {}{spmd}", v("torch", t), v("torchtitan", tt))
        };
        format!("{} ({from}; {state})", self.python.display())
    }

    fn create(release: &Release, python: &Path) -> anyhow::Result<()> {
        create(Titan::V030, release, python)
    }

    fn unready(&self) -> String {
        format!("the new venv does not hold what it should: {}", self.describe())
    }
}

/// torch's CPU wheel first (unless the venv holds the release), then torchtitan (and spmd_types)
/// from the registry.
fn create(titan: Titan, release: &Release, python: &Path) -> anyhow::Result<()> {
    let dir = python.parent().and_then(Path::parent).expect("a venv's python is DIR/bin/python");
    let titan_pkgs = titan.packages();
    eprintln!(
        "shardfuzz: creating {} with torch=={release}, {} (once; a few minutes)",
        dir.display(),
        titan_pkgs.join(", ")
    );
    let pip = new_venv(dir)?;
    let torch = [format!("torch=={release}")];
    let has_torch = is_release(torch_via_pth(python).as_deref(), release);
    anyhow::ensure!(
        has_torch || pip(&torch, &["--index-url", "https://download.pytorch.org/whl/cpu"]) || pip(&torch, &[]),
        "pip install torch=={release} failed into {} (see pip's output above)",
        dir.display()
    );
    anyhow::ensure!(
        pip(&titan_pkgs, &[]),
        "pip install {} failed into {} (see pip's output above)",
        titan_pkgs.join(" "),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_and_its_override_are_named_after_the_contents() {
        let r: Release = "2.14.0".parse().unwrap();
        assert_eq!(name(Titan::V030, &r), "venv-torchtitan-0.3.0-torch-2.14.0");
        assert_eq!(env_var(Titan::V030, &r), "SHARDFUZZ_TORCHTITAN_0_3_0_TORCH_2_14_0");
        assert_eq!(name(Titan::V022, &r), "venv-torchtitan-0.2.2-torch-2.14.0");
        assert_eq!(env_var(Titan::V022, &r), "SHARDFUZZ_TORCHTITAN_0_2_2_TORCH_2_14_0");
        assert_eq!(Titan::of(MoeRev::Tt022), Some(Titan::V022));
        assert_eq!(Titan::of(MoeRev::Tt030), Some(Titan::V030));
        assert_eq!(Titan::of(MoeRev::TtHead), None);
        let v = TitanVenv {
            titan: Titan::V030,
            release: r,
            python: "/nonexistent/bin/python".into(),
            source: Source::Cache,
            installed: (None, None, None),
        };
        assert!(!v.ready() && v.describe().contains("created on first use"), "{}", v.describe());
        let full =
            TitanVenv { installed: (Some("2.14.0+cu130".into()), Some("0.3.0".into()), Some("0.2.3".into())), ..v };
        assert!(full.ready());
        // 0.2.2 needs no spmd_types; 0.3.0 does.
        let old =
            TitanVenv { titan: Titan::V022, installed: (Some("2.14.0".into()), Some("0.2.2".into()), None), ..full };
        assert!(old.ready(), "{}", old.describe());
        assert!(!TitanVenv { titan: Titan::V030, ..old.clone() }.ready());
    }

    #[test]
    fn torch_is_found_through_a_pth_file() {
        let root = std::env::temp_dir().join(format!("shardfuzz-pth-{}", std::process::id()));
        let (venv, other) = (root.join("venv"), root.join("other/site-packages"));
        let site = venv.join("lib/python3.11/site-packages");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::create_dir_all(other.join("torch")).unwrap();
        std::fs::write(other.join("torch/version.py"), "__version__ = '2.14.0+cpu'\n").unwrap();
        let python = venv.join("bin/python");
        assert_eq!(torch_via_pth(&python), None);
        std::fs::write(site.join("_torch.pth"), format!("{}\n", other.display())).unwrap();
        assert_eq!(torch_via_pth(&python).as_deref(), Some("2.14.0+cpu"));
        std::fs::remove_dir_all(&root).ok();
    }
}
