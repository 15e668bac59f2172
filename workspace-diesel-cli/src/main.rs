//! `workspace-diesel`: the command-line tool of workspace-diesel.
//!
//! Parses the command line, loads `.env`, installs a tracing subscriber (`RUST_LOG`, to stderr,
//! through the progress bar), runs the command, and on failure prints the error with its causes
//! on one line `error: ...` (with `--format json`: one JSON document on stderr) and exits with
//! the status the error calls for: 1, 2 for a usage error, 3 when a check the command was asked
//! for fails (a plan over its lock budget, `pending --exit-code` with tenants behind).

mod cli;
mod commands;
mod config;
mod exit;
mod output;
mod progress;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Format};

fn main() -> ExitCode {
    // A missing `.env` is the usual case; the variables it would set can come from the shell.
    let _ = dotenvy::dotenv();
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => return exit::clap_error(e, wants_json(&args)),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        // Each record is written while the progress bar is cleared, then the bar is drawn again.
        .with_writer(|| progress::LogWriter)
        // Colours on a terminal only, unless NO_COLOR / CLICOLOR / CLICOLOR_FORCE say otherwise.
        .with_ansi(exit::colour(std::io::stderr().is_terminal()))
        .without_time()
        .init();
    let json = cli.format == Format::Json;
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit::report(&e, json),
    }
}

/// Whether the raw command line asks for `--format json` (read before clap has parsed it, so
/// that a usage error can be reported as JSON too).
fn wants_json(args: &[OsString]) -> bool {
    let mut args = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = args.next() {
        match arg.as_ref() {
            "--" => return false,
            "--format=json" => return true,
            "--format" if args.next().is_some_and(|v| v == "json") => return true,
            _ => {}
        }
    }
    false
}
