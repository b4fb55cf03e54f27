//! The `clawrelay` command: parse the command line and run it (see
//! `clawrelay::cli`).

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    clawrelay::cli::main(clawrelay::cli::Cli::parse())
}
