//! `shardfuzz` binary: parse, run, map the result to an exit code.
//! 0 = ran clean, 1 = a divergence was found, 2 = bad input or an error.

use std::process::ExitCode;

// jemalloc as the process's malloc, libtorch's included (the crate exports the unprefixed
// `malloc` family, which the executable's dynamic symbols give precedence over glibc's): a
// case allocates and frees thousands of small tensors, and glibc's allocator was a tenth of a
// MoE case's time (docs/guide.md, Speed).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    shardfuzz::cli::main()
}
