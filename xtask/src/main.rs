//! The repository's own tasks, run with `cargo xtask <task>` (the alias in `.cargo/config.toml`).
//!
//! `cargo xtask test` installs or starts what the suites need (PgBouncer, Chromium, the Citus
//! cluster) and runs every suite with nothing left to pass vacuously; see CONTRIBUTING.md.

mod citus;
mod services;
mod system;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use system::Apt;

const USAGE: &str = "\
usage: cargo xtask test [--skip SERVICE]... [-- CARGO-TEST-ARGS...]
       cargo xtask setup [--skip SERVICE]...

test:  installs or starts what the suites need, then runs `cargo test --workspace
       --all-features` with the Citus suites required (WORKSPACE_DIESEL_REQUIRE_CITUS=1).
setup: only installs or starts them (libpq, PostgreSQL, PgBouncer, Chromium, Citus).

SERVICE (also XTASK_SKIP=a,b): pgbouncer, chromium, citus. A skipped service's suites are
left out; one that cannot be set up and is not skipped makes the run fail.";

/// A service some suites need, and how they are left out when it is skipped.
struct Service {
    name: &'static str,
    suites: &'static str,
    /// libtest `--skip` filters, applied to the tests crate and the demo only.
    filters: &'static [&'static str],
}

const SERVICES: [Service; 3] = [
    Service {
        name: "pgbouncer",
        suites: "the PgBouncer suites (tests crate: pooler, busy_pooler, leftovers through PgBouncer; CLI: pooler)",
        filters: &["pooler::", "through_pgbouncer"],
    },
    Service {
        name: "chromium",
        suites: "the demo's browser test (headless_chromium_signs_up_adds_notes_signs_out_and_in)",
        filters: &["headless_chromium"],
    },
    Service {
        name: "citus",
        suites: "the Citus suites (tests crate: citus::, CLI: citus::)",
        filters: &["citus::"],
    },
];

/// The crates whose tests the filters apply to.
const FILTERED: [&str; 2] = ["workspace-diesel-tests", "workspace-diesel-demo"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some(task @ ("test" | "setup")) => match parse(&args[1..]) {
            Ok((skip, _)) if task == "setup" => match prepare(&skip) {
                Ok(ready) if ready.cannot_run.is_empty() => ExitCode::SUCCESS,
                Ok(ready) => ready.fail(),
                Err(code) => code,
            },
            Ok((skip, passthrough)) => test(&skip, &passthrough),
            Err(e) => {
                eprintln!("xtask: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The services to skip and the arguments for `cargo test`.
fn parse(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut skip: Vec<String> = std::env::var("XTASK_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let mut it = args.iter();
    let mut passthrough = Vec::new();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--skip" => skip.push(it.next().ok_or("--skip needs a service name")?.clone()),
            "--" => {
                passthrough.extend(it.by_ref().cloned());
            }
            other => match other.strip_prefix("--skip=") {
                Some(name) => skip.push(name.to_owned()),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    for name in &skip {
        if !SERVICES.iter().any(|s| s.name == name) {
            return Err(format!(
                "unknown service {name:?} (pgbouncer, chromium or citus)"
            ));
        }
    }
    Ok((skip, passthrough))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// What [`prepare`] found: the services left out and the lines of those that could not be set up.
struct Ready {
    url: String,
    left_out: Vec<&'static Service>,
    cannot_run: Vec<String>,
}

impl Ready {
    /// Repeats the lines of the services that could not be set up, and fails.
    fn fail(&self) -> ExitCode {
        for line in &self.cannot_run {
            eprintln!("{line}");
        }
        ExitCode::FAILURE
    }
}

/// Installs or starts what the suites need, leaving out the `skip`ped services.
fn prepare(skip: &[String]) -> Result<Ready, ExitCode> {
    let repo = repo_root();
    if let Err(e) = std::env::set_current_dir(&repo) {
        eprintln!("xtask: cannot enter {}: {e}", repo.display());
        return Err(ExitCode::FAILURE);
    }
    let mut apt = Apt::detect();
    let url = services::database_url();
    for (what, result) in [
        ("libpq", services::libpq(&mut apt)),
        ("postgres", services::postgres(&url)),
    ] {
        if let Err(why) = result {
            eprintln!("xtask: {what}: no suite can run: {why}");
            return Err(ExitCode::FAILURE);
        }
    }
    let mut left_out: Vec<&'static Service> = Vec::new();
    let mut cannot_run: Vec<String> = Vec::new();
    for service in &SERVICES {
        if skip.iter().any(|s| s == service.name) {
            println!(
                "xtask: {}: skipped by request: {}",
                service.name, service.suites
            );
            left_out.push(service);
            continue;
        }
        let ready = match service.name {
            "pgbouncer" => services::pgbouncer(&mut apt),
            "chromium" => services::chromium(&mut apt),
            _ => citus::cluster(&repo),
        };
        match ready {
            Ok(()) => println!("xtask: {}: ready", service.name),
            Err(why) => {
                let line = format!(
                    "xtask: {}: {} cannot run: {why}. `cargo xtask test --skip {}` runs the rest without failing.",
                    service.name, service.suites, service.name
                );
                eprintln!("{line}");
                cannot_run.push(line);
                left_out.push(service);
            }
        }
    }
    Ok(Ready {
        url,
        left_out,
        cannot_run,
    })
}

fn test(skip: &[String], passthrough: &[String]) -> ExitCode {
    let ready = match prepare(skip) {
        Ok(ready) => ready,
        Err(code) => return code,
    };
    let Ready {
        url,
        left_out,
        cannot_run,
    } = &ready;
    let citus_ready = !left_out.iter().any(|s| s.name == "citus");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let (cargo_args, test_args) = match passthrough.iter().position(|a| a == "--") {
        Some(i) => (&passthrough[..i], &passthrough[i + 1..]),
        None => (passthrough, &[][..]),
    };
    let filters: Vec<&str> = left_out
        .iter()
        .flat_map(|s| s.filters.iter().copied())
        .collect();
    let mut runs: Vec<Vec<String>> = Vec::new();
    let base = |selection: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["test", "--all-features"].map(String::from).to_vec();
        a.extend(selection.iter().map(|s| s.to_string()));
        a.extend(cargo_args.iter().cloned());
        a
    };
    if filters.is_empty() {
        let mut a = base(&["--workspace"]);
        if !test_args.is_empty() {
            a.push("--".into());
            a.extend(test_args.iter().cloned());
        }
        runs.push(a);
    } else {
        // The filters are substrings of test names: applied to the crates whose suites need
        // the services only, so no other crate's test of the same name is left out.
        let mut rest = vec!["--workspace"];
        for krate in FILTERED {
            rest.extend(["--exclude", krate]);
        }
        let mut a = base(&rest);
        if !test_args.is_empty() {
            a.push("--".into());
            a.extend(test_args.iter().cloned());
        }
        runs.push(a);
        let mut filtered = Vec::new();
        for krate in FILTERED {
            filtered.extend(["-p", krate]);
        }
        let mut a = base(&filtered);
        a.push("--".into());
        a.extend(test_args.iter().cloned());
        for f in &filters {
            a.extend(["--skip".to_owned(), f.to_string()]);
        }
        runs.push(a);
    }
    for args in runs {
        println!("xtask: cargo {}", args.join(" "));
        let mut command = Command::new(&cargo);
        command.args(&args).env("DATABASE_URL", url);
        if citus_ready {
            command.env("WORKSPACE_DIESEL_REQUIRE_CITUS", "1");
        } else {
            command.env_remove("WORKSPACE_DIESEL_REQUIRE_CITUS");
        }
        match command.status() {
            Ok(status) if status.success() => {}
            Ok(status) => {
                ready.fail();
                return ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8);
            }
            Err(e) => {
                eprintln!("xtask: could not run cargo: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if cannot_run.is_empty() {
        ExitCode::SUCCESS
    } else {
        ready.fail()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn skips_are_named_and_checked() {
        let (skip, rest) = parse(&strings(&["--skip", "citus", "--skip=chromium"])).unwrap();
        assert_eq!(skip, ["citus", "chromium"]);
        assert!(rest.is_empty());
        assert!(parse(&strings(&["--skip", "postgres"]))
            .unwrap_err()
            .contains("unknown service \"postgres\""));
        assert!(parse(&strings(&["--skip"])).is_err());
        assert!(parse(&strings(&["--release"])).is_err());
    }

    #[test]
    fn arguments_after_the_separator_go_to_cargo_test() {
        let (skip, rest) = parse(&strings(&["--", "--release", "--", "--nocapture"])).unwrap();
        assert!(skip.is_empty());
        assert_eq!(rest, ["--release", "--", "--nocapture"]);
    }

    #[test]
    fn every_service_leaves_out_some_tests() {
        for service in &SERVICES {
            assert!(!service.filters.is_empty(), "{}", service.name);
        }
    }
}
