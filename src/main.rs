//! `shardfuzz` binary: parse, run, map the result to an exit code.
//! 0 = ran clean, 1 = a divergence was found, 2 = bad input or an error.

use std::process::ExitCode;

fn main() -> ExitCode {
    shardfuzz::cli::main()
}
