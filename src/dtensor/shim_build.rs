//! Compiles one of the small C++ shims (against the headers of the libtorch that torch-sys
//! linked), for the build scripts of the crates that carry one.

/// Compiles `files` (and watches them and `headers`) into the static library `lib_name`.
pub fn compile(files: &[&str], headers: &[&str], lib_name: &str) {
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok();
    let mut build = cc::Build::new();
    build.cpp(true).pic(true).std("c++17").files(files).warnings(false);
    // The ABI the pip wheels are built with (torch-sys passes the same).
    build.define("_GLIBCXX_USE_CXX11_ABI", "1").define("GLOG_USE_GLOG_EXPORT", None);
    if let Some(lib) = &lib {
        // A pip wheel keeps its headers beside its libraries: torch/lib and torch/include.
        let root = std::path::Path::new(lib).parent().map(|p| p.to_path_buf()).unwrap_or_default();
        build.include(root.join("include")).include(root.join("include/torch/csrc/api/include"));
    }
    build.compile(lib_name);
    for f in files.iter().chain(headers) {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo:rerun-if-changed=../dtensor/shim_build.rs");
}
