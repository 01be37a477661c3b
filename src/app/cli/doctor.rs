//! `shardfuzz doctor`: is this machine usable, and with what.

use super::CliResult;
use crate::confirm::{venv, Release};
use dtensor::device;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_a: Args) -> CliResult {
    let version =
        device::loaded_libtorch_version().unwrap_or_else(|| "unknown (no version.py beside the library)".into());
    let dir = device::loaded_libtorch_dir().unwrap_or_else(|| "not found in /proc/self/maps".into());
    let built = env!("SHARDFUZZ_BUILD_LIBTORCH_LIB");
    let scripts_venv = std::env::var("SHARDFUZZ_VENV")
        .unwrap_or_else(|_| "(SHARDFUZZ_VENV unset; default $HOME/.cache/shardfuzz/venv-torch-2.11.0)".into());
    let n = device::cuda_count();
    println!("shardfuzz {}", env!("CARGO_PKG_VERSION"));
    println!("libtorch version   {version} (this build expects {}.x)", device::EXPECTED_LIBTORCH);
    println!("libtorch loaded    {dir}");
    println!("libtorch built     {}", if built.is_empty() { "(unknown)" } else { built });
    println!("venv               {scripts_venv}");
    println!("threads            intra-op {}, inter-op {}", tch::get_num_threads(), tch::get_num_interop_threads());
    println!("cpu cores          {}", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    if n == 0 {
        println!("cuda               not available (CPU only)");
    } else {
        println!("cuda               {n} device(s)");
        for (i, name) in device::gpu_names().iter().enumerate() {
            println!("  cuda:{i}           {name}");
        }
    }
    println!("default device     {}", device::resolve(device::DeviceArg::Auto).map_err(anyhow::Error::msg)?);
    // The real-PyTorch venvs of `confirm` (nothing is created here).
    println!("real pytorch       {} (override one with $SHARDFUZZ_TORCH_X_Y_Z)", venv::cache_dir().display());
    for r in Release::known() {
        let v = venv::locate(&r);
        println!("  torch {r:<11} {}", v.describe());
    }
    // A tiny op proves the library is callable, not only loadable.
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).sum(tch::Kind::Float).double_value(&[]);
    anyhow::ensure!(t == 6.0, "libtorch computed 1+2+3 = {t}");
    println!("status             ok");
    Ok(ExitCode::SUCCESS)
}
