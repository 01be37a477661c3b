//! The root build script's run path (so test binaries find libtorch without
//! `LD_LIBRARY_PATH`), plus the small C++ shim in backtrace.cpp that turns off libtorch's
//! per-error C++ backtraces (src/dtensor/local.rs, `skip_cpp_backtraces`).

#[path = "../../build.rs"]
mod run_path;
#[path = "shim_build.rs"]
mod shim;

fn main() {
    run_path::main();
    shim::compile(&["backtrace.cpp"], &[], "shardfuzz_backtrace");
}
