//! `workspace-diesel`: the command-line tool of workspace-diesel.
//!
//! Parses the command line, loads `.env`, installs a tracing subscriber (`RUST_LOG`, to stderr),
//! runs the command, and on failure prints one line `error: ...` and exits with status 1 (3 when
//! a plan is over its lock budget; clap's usage errors exit with 2).

mod cli;
mod commands;
mod config;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    // A missing `.env` is the usual case; the variables it would set can come from the shell.
    let _ = dotenvy::dotenv();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: piped or captured output stays plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed stdout (`| head`) ends the command quietly.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            // A plan over its lock budget: a status of its own, apart from failures (1) and
            // usage errors (2).
            if e.downcast_ref::<commands::OverBudget>().is_some() {
                ExitCode::from(commands::OverBudget::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Joins a multi-line message (libpq's connection errors have several lines) into one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
