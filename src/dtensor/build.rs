//! The root build script's run path (so test binaries find libtorch without
//! `LD_LIBRARY_PATH`), plus the small C++ shim in backtrace.cpp that turns off libtorch's
//! per-error C++ backtraces (src/dtensor/local.rs, `skip_cpp_backtraces`).

fn main() {
    // torch-sys (links = "tch") publishes the directory it linked against.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    if let Some(lib) = &lib {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=SHARDFUZZ_BUILD_LIBTORCH_LIB={lib}");
    } else {
        println!("cargo:rustc-env=SHARDFUZZ_BUILD_LIBTORCH_LIB=");
    }
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).std("c++17").file("backtrace.cpp").warnings(false);
    // The ABI the pip wheels are built with (torch-sys passes the same).
    build.define("_GLIBCXX_USE_CXX11_ABI", "1").define("GLOG_USE_GLOG_EXPORT", None);
    if let Some(lib) = &lib {
        // A pip wheel keeps its headers beside its libraries: torch/lib and torch/include.
        let root = std::path::Path::new(lib).parent().map(|p| p.to_path_buf()).unwrap_or_default();
        build.include(root.join("include")).include(root.join("include/torch/csrc/api/include"));
    }
    build.compile("shardfuzz_backtrace");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=backtrace.cpp");
}
