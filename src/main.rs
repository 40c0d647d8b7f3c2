//! `supportauth`: the daemon (`supportauth daemon`) and its command-line client.

use std::process::ExitCode;

fn main() -> ExitCode {
    supportauth::cli::main()
}
