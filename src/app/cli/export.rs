//! `shardfuzz export FILE --pytorch OUT.py`: a case as a standalone PyTorch script.

use super::CliResult;
use crate::{export, replay};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A case file (shardfuzz.case/1) or an outcome file (its `case` is used)
    pub file: PathBuf,
    /// Where to write the script (`-` for stdout). It imports only torch and runs as
    /// `torchrun --nproc-per-node N OUT.py` (CPU, gloo) or `python OUT.py` (LocalTensorMode)
    #[arg(long, value_name = "OUT.py")]
    pub pytorch: PathBuf,
}

pub fn run(a: Args) -> CliResult {
    let case = replay::load(&a.file)?;
    let script = export::script(&case);
    if a.pytorch.as_os_str() == "-" {
        print!("{script}");
    } else {
        std::fs::write(&a.pytorch, script).map_err(|e| anyhow::anyhow!("{}: {e}", a.pytorch.display()))?;
        let n: usize = case.mesh.shape.iter().product();
        let own_ranks = matches!(&case.subject, crate::subjects::AnySpec::Moe(m) if m.revision == moe::MoeRev::Tt022);
        if own_ranks {
            // The tt-0.2.2 script starts its ranks itself (torch.multiprocessing), not under torchrun.
            eprintln!("wrote {} (python {0}: it starts its {n} gloo ranks itself)", a.pytorch.display());
        } else {
            eprintln!("wrote {} (torchrun --nproc-per-node {n} {0}, or python {0})", a.pytorch.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
