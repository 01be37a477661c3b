//! The root build script's run path, plus the C++ shim in vjp.cpp: libtorch's autograd engine
//! started from given output gradients, which tch does not expose (engine.rs), and the sweep
//! that stands in for the engine on plain CPU graphs (sweep.cpp).

#[path = "../../build.rs"]
mod run_path;
#[path = "../dtensor/shim_build.rs"]
mod shim;

fn main() {
    run_path::main();
    shim::compile(&["vjp.cpp", "sweep.cpp"], &["sweep.h"], "shardfuzz_vjp");
}
