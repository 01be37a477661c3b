//! `shardfuzz gen`: write generated cases to a directory without running them.

use super::common::GenArgs;
use super::CliResult;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seed of the case stream (case i of seed S is the same everywhere)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// How many cases to write
    #[arg(long = "cases", alias = "count", default_value_t = 100)]
    pub count: u64,
    /// Index of the first case (`run` prints the index of each case it reports)
    #[arg(long, default_value_t = 0)]
    pub start: u64,
    /// Directory to write case-<seed>-<index>.json files into (created if missing)
    #[arg(long)]
    pub out: PathBuf,
    /// Inline the input tensors (self-contained files) instead of only their seed
    #[arg(long)]
    pub inline: bool,
    /// Write fuzzer inputs instead of JSON: bytes that the fuzz targets decode to these cases
    /// (seed corpora for `router_diff`); uses the default generator settings
    #[arg(long, conflicts_with = "inline")]
    pub fuzz_bytes: bool,
    #[command(flatten)]
    pub gen: GenArgs,
}

pub fn run(a: Args) -> CliResult {
    let dev = a.gen.device()?;
    let cfg = a.gen.config(dev);
    std::fs::create_dir_all(&a.out).map_err(|e| anyhow::anyhow!("--out {}: {e}", a.out.display()))?;
    for i in a.start..a.start.saturating_add(a.count) {
        if a.fuzz_bytes {
            let path = a.out.join(format!("seed-{}-{i:06}", a.seed));
            std::fs::write(&path, cfg.seed_bytes(a.seed, i)).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            continue;
        }
        let mut case = cfg.nth(a.seed, i);
        if a.inline {
            case = harness::data::with_inline(&case);
        }
        let path = a.out.join(format!("case-{}-{i:06}.json", a.seed));
        std::fs::write(&path, case.to_json()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    eprintln!("shardfuzz: wrote {} case(s) to {}", a.count, a.out.display());
    Ok(ExitCode::SUCCESS)
}
