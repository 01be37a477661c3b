//! `shardfuzz import FILE`: turn a libFuzzer input (a crash artifact of the `router_diff` or
//! `moe_diff` target, say) into the case JSON it maps to, with its tensors inline.

use super::CliResult;
use crate::subjects::{AnyCase, GenConfig, Kind};
use harness::data;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A raw fuzzer input (e.g. fuzz/artifacts/router_diff/crash-...)
    pub file: PathBuf,
    /// Write the case here instead of stdout
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The subject of the target the input comes from (router_diff: router, moe_diff: moe)
    #[arg(long, default_value = "router")]
    pub subject: Kind,
}

/// The case libFuzzer's bytes stand for under the default generator settings of one subject
/// (the mapping its fuzz target uses).
pub fn case_from_bytes(kind: Kind, bytes: &[u8]) -> AnyCase {
    GenConfig::of_subject(kind).arbitrary(&mut arbitrary::Unstructured::new(bytes))
}

pub fn run(a: Args) -> CliResult {
    let bytes = std::fs::read(&a.file).map_err(|e| anyhow::anyhow!("{}: {e}", a.file.display()))?;
    let case = data::with_inline(&case_from_bytes(a.subject, &bytes));
    let text = case.to_json() + "\n";
    match &a.out {
        Some(p) => {
            std::fs::write(p, text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            eprintln!("shardfuzz: wrote {}", p.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
