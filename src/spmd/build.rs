//! The root build script's run path, plus the C++ shim in vjp.cpp: libtorch's autograd engine
//! started from given output gradients, which tch does not expose (engine.rs).

#[path = "../../build.rs"]
mod run_path;
#[path = "../dtensor/shim_build.rs"]
mod shim;

fn main() {
    run_path::main();
    shim::compile("vjp.cpp", "shardfuzz_vjp");
}
