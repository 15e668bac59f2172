//! Exit statuses and how an error is shown: one line `error: ...` with every cause for people,
//! one JSON document on stderr with `--format json`.
//!
//! | status | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | failure: the database, a migration, a refusal |
//! | 2 | usage error: the command line is wrong; nothing was done |
//! | 3 | a check the command was asked for failed: `pending --exit-code` with tenants behind, a plan over its lock budget (`--max-lock-table-size`) |

use std::process::ExitCode;

use serde::Serialize;

/// Status 1: the command failed.
const FAILURE: u8 = 1;

/// Status 2: the command line is wrong (clap's own status for its usage errors).
pub(crate) const USAGE: u8 = 2;

/// Status 3: a check the command was asked for failed (`pending --exit-code` found tenants
/// behind; a plan is over its lock budget).
pub(crate) const CHECK: u8 = 3;

/// An error in how the command was called (a value out of range, an option the command does not
/// take with the others given); nothing was done. Exits with status 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Not an error: the command has printed its result and exits with this status (`pending
/// --exit-code` with tenants behind).
#[derive(Debug)]
pub(crate) struct Status(pub(crate) u8);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Status {}

/// Fails with a [`Usage`] error.
macro_rules! usage {
    ($($arg:tt)*) => {
        return Err(anyhow::Error::new($crate::exit::Usage(format!($($arg)*))))
    };
}
pub(crate) use usage;

/// The JSON document of a failed run (on stderr).
#[derive(Serialize)]
struct ErrorDoc<'a> {
    ok: bool,
    /// `usage` (status 2), `check` (status 3) or `failure` (status 1).
    kind: &'static str,
    exit_code: u8,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    /// The whole chain on one line, as people see it.
    message: &'a str,
    /// The error and each cause, outermost first.
    causes: Vec<String>,
}

/// Shows `e` (on stderr) and returns its status; a closed stdout (`| head`) ends quietly.
pub(crate) fn report(e: &anyhow::Error, json: bool) -> ExitCode {
    if is_broken_pipe(e) {
        return ExitCode::SUCCESS;
    }
    if let Some(Status(code)) = e.downcast_ref::<Status>() {
        return ExitCode::from(*code);
    }
    let (message, causes, code) = describe(e);
    print_error(&message, causes, code, json);
    ExitCode::from(code)
}

/// The line people read (every cause, joined by `: `), the causes one by one, and the status.
fn describe(e: &anyhow::Error) -> (String, Vec<String>, u8) {
    let code = if e.downcast_ref::<Usage>().is_some() {
        USAGE
    } else if e.downcast_ref::<crate::commands::OverBudget>().is_some() {
        CHECK
    } else {
        FAILURE
    };
    let causes: Vec<String> = e.chain().map(|c| one_line(&c.to_string())).collect();
    (one_line(&format!("{e:#}")), causes, code)
}

/// A clap error: help and `--version` print as clap prints them (status 0); a usage error as
/// clap prints it, or as a JSON document with `--format json` (status 2).
pub(crate) fn clap_error(e: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    let is_usage = !matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !(json && is_usage) {
        e.exit();
    }
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    print_error(&first, vec![first.clone()], USAGE, true);
    ExitCode::from(USAGE)
}

fn print_error(message: &str, causes: Vec<String>, code: u8, json: bool) {
    if !json {
        eprintln!("error: {message}");
        return;
    }
    let doc = ErrorDoc {
        ok: false,
        kind: match code {
            USAGE => "usage",
            CHECK => "check",
            _ => "failure",
        },
        exit_code: code,
        error: ErrorBody { message, causes },
    };
    match crate::output::to_line(&doc) {
        Ok(line) => eprintln!("{line}"),
        Err(_) => eprintln!("error: {message}"),
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

/// Whether to colour a stream, as clap decides for its help (anstream): `NO_COLOR` (not empty)
/// turns colours off, then `CLICOLOR_FORCE` (not empty) on, then `CLICOLOR=0` off; else colours
/// on a terminal only.
pub(crate) fn colour(is_terminal: bool) -> bool {
    if anstyle_query::no_color() {
        return false;
    }
    if anstyle_query::clicolor_force() {
        return true;
    }
    anstyle_query::clicolor() != Some(false) && is_terminal
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn the_whole_chain_is_shown() {
        let failed: anyhow::Result<()> = Err(diesel_workspace::Error::Query(
            diesel::result::Error::NotFound,
        ))
        .context("could not read the registry");
        let (message, causes, code) = describe(&failed.unwrap_err());
        assert_eq!(
            message,
            "could not read the registry: database query failed: Record not found"
        );
        assert_eq!(causes.len(), 3);
        assert_eq!(code, FAILURE);
    }

    #[test]
    fn an_outer_transaction_is_named() {
        let e = anyhow::Error::new(diesel_workspace::Error::OuterTransaction);
        let (message, _, code) = describe(&e);
        assert!(
            message.starts_with(
                "this call commits its own transactions and cannot run inside an outer transaction"
            ),
            "{message}"
        );
        assert_eq!(code, FAILURE);
    }

    #[test]
    fn usage_errors_exit_2_and_several_lines_become_one() {
        let e = anyhow::Error::new(Usage("invalid spare count `x`".into()));
        assert_eq!(describe(&e).2, USAGE);
        let e = anyhow::anyhow!("could not connect\n  server closed\n\n");
        assert_eq!(describe(&e).0, "could not connect server closed");
    }
}
