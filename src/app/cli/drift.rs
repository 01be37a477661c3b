//! `shardfuzz drift --torch X.Y.Z`: does the model still hold on a PyTorch release it was not
//! read from? The steps (fact checks on both releases, recorded cases and fresh cases through
//! `confirm`, the table) live in `scripts/drift`, because they drive Python fact-check scripts
//! and the checkout's recorded cases; this command finds that checkout, checks the arguments
//! and runs the script with this binary as the model, so the answer is one command.

use super::CliResult;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::{Command, ExitCode};

#[derive(clap::Args, Debug)]
#[command(after_help = "Exit status: 0 everything agrees, 1 something differs, 2 a step cannot run.\n\
The checkout holding scripts/drift is the one this binary was built from, or $SHARDFUZZ_ROOT.")]
pub struct Args {
    /// The release to ask about (X.Y.Z); installed in a managed venv on first use
    #[arg(long, value_parser = parse_version)]
    pub torch: String,
    /// Rule set to compare against (default: the newest one whose release is older)
    #[arg(long)]
    pub rules: Option<String>,
    /// Fresh random cases (half with a backward check)
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u64).range(1..))]
    pub cases: u64,
    /// Seed of the fresh cases
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory (default reports/drift-VERSION in the checkout); an earlier drift run there is
    /// replaced, a directory holding other files refused
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Fact-check scripts run at once
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub jobs: u64,
    /// Subjects of the fresh cases (router, moe, all). MoE cases confirm on the real torchtitan
    /// module, 15-40 s each
    #[arg(long, default_value = "router")]
    pub subject: crate::subjects::SubjectSel,
}

fn parse_version(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('.').collect();
    let ok = parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| s.to_string()).ok_or_else(|| format!("`{s}` is not a release: expected X.Y.Z, e.g. 2.15.0"))
}

/// The checkout: $SHARDFUZZ_ROOT, else the directory this binary was built from.
fn checkout() -> anyhow::Result<PathBuf> {
    let root = std::env::var_os("SHARDFUZZ_ROOT").map(PathBuf::from);
    let root = root.unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    if !root.join("scripts/drift").is_file() || !root.join("docs/pytorch-checks").is_dir() {
        bail!(
            "drift needs the shardfuzz checkout (scripts/drift, docs/pytorch-checks, tests/golden); \
             none at {}: set SHARDFUZZ_ROOT",
            root.display()
        );
    }
    Ok(root)
}

pub fn run(a: Args) -> CliResult {
    let root = checkout()?;
    let me = std::env::current_exe().context("cannot find this binary's path")?;
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/drift")).env("SHARDFUZZ_BIN", &me);
    cmd.args(["--torch", &a.torch, "--cases", &a.cases.to_string(), "--seed", &a.seed.to_string()]);
    cmd.args(["--jobs", &a.jobs.to_string()]);
    let subjects: Vec<String> = a.subject.0.iter().map(|k| k.to_string()).collect();
    cmd.args(["--subject", &subjects.join(",")]);
    if let Some(r) = &a.rules {
        cmd.args(["--rules", r]);
    }
    if let Some(o) = &a.out {
        // The script runs in the checkout: make a relative --out relative to where we are.
        let o = if o.is_absolute() { o.clone() } else { std::env::current_dir()?.join(o) };
        cmd.arg("--out").arg(o);
    }
    let status = cmd.status().context("cannot run bash")?;
    Ok(match status.code() {
        Some(c @ 0..=2) => ExitCode::from(c as u8),
        _ => ExitCode::from(2),
    })
}
