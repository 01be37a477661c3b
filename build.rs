//! Bakes the libtorch library directory into the binaries' run path, so that a built
//! `shardfuzz` runs in a fresh shell without `LD_LIBRARY_PATH`, and records it for `doctor`.

pub fn main() {
    // torch-sys (links = "tch") publishes the directory it linked against.
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        println!("cargo:rustc-env=SHARDFUZZ_BUILD_LIBTORCH_LIB={lib}");
    } else {
        println!("cargo:rustc-env=SHARDFUZZ_BUILD_LIBTORCH_LIB=");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
