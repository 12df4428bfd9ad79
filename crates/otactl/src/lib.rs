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
mod esp;
pub mod failure;
mod output;
mod upload;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

pub use failure::Failure;

/// Parses the command line, runs the command, and returns the exit code.
pub fn run() -> i32 {
    restore_default_sigpipe();
    let parsed = cli::Cli::command()
        .try_get_matches()
        .and_then(|matches| Ok((cli::Cli::from_arg_matches(&matches)?, matches)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(error) => {
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            return error.exit_code();
        }
    };
    cli.global.admin_token_from_env = matches.value_source("admin_token") == Some(ValueSource::EnvVariable);
    let json = cli.global.json;
    match commands::dispatch(cli) {
        Ok(()) => 0,
        Err(failure) => {
            if json {
                output::print_json(&failure.to_json());
            }
            eprintln!("{failure}");
            failure.exit_code()
        }
    }
}

/// Rust ignores SIGPIPE, so `otactl logs | head` would fail on its next
/// write; a command-line tool should end quietly instead, as cat does.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists;
    // SIG_DFL is a valid disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
