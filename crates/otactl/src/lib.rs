//! `otactl`, the operator's command line for the OTA server. It speaks only
//! the public REST API (`shared/API.md`): everything it does, a script can
//! do with curl.
//!
//! Exit codes: 0 done; 1 the server refused (its problem title and detail
//! are printed) or a result did not check out; 2 a usage error; 3 the server
//! cannot be reached.

pub mod api;
pub mod cli;
mod commands;
pub mod config;
pub mod failure;
mod output;
mod upload;

use clap::Parser;

pub use failure::Failure;

/// Parses the command line, runs the command, and returns the exit code.
pub fn run() -> i32 {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    match commands::dispatch(cli) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{failure}");
            failure.exit_code()
        }
    }
}
