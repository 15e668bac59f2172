//! What the suites need besides the Rust toolchain: PostgreSQL (and libpq to build against it),
//! PgBouncer and Chromium. Each is found, else installed or started where this process may, else
//! reported with the reason.

use std::process::Command;

use crate::system::{answers, host_port, run, wait_for, which, Apt};

/// The server the tests use when `DATABASE_URL` is unset (tests/src/db.rs).
pub const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// `DATABASE_URL` from the environment or `.env`, else the local server.
pub fn database_url() -> String {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return url;
    }
    std::fs::read_to_string(".env")
        .ok()
        .and_then(|env| {
            env.lines().find_map(|l| {
                let value = l.trim().strip_prefix("DATABASE_URL=")?;
                Some(value.trim_matches(['"', '\'']).to_owned())
            })
        })
        .unwrap_or_else(|| LOCAL_SERVER.to_owned())
}

/// libpq's development files, which Diesel's `pq-sys` links against.
pub fn libpq(apt: &mut Apt) -> Result<(), String> {
    let present = which("pkg-config", &[]).is_some()
        && Command::new("pkg-config")
            .args(["--exists", "libpq"])
            .status()
            .is_ok_and(|s| s.success());
    if present || which("pg_config", &[]).is_some() {
        return Ok(());
    }
    apt.install(&["libpq-dev", "pkg-config"])
        .map_err(|e| format!("libpq's development files are missing and {e}"))
}

/// The PostgreSQL server at `url` answers, or is started (Debian's cluster of the local server,
/// as root).
pub fn postgres(url: &str) -> Result<(), String> {
    let (host, port) = host_port(url);
    if answers(&host, port) {
        return Ok(());
    }
    let local = host == "127.0.0.1" && port == 5432;
    if local && crate::system::is_root() && which("pg_ctlcluster", &[]).is_some() {
        let versions: Vec<String> = std::fs::read_dir("/etc/postgresql")
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(version) = versions.iter().max() {
            println!("xtask: starting PostgreSQL {version} (pg_ctlcluster)");
            run(Command::new("pg_ctlcluster").args([
                "--skip-systemctl-redirect",
                version,
                "main",
                "start",
            ]))?;
            if wait_for(&host, port, 30) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "no PostgreSQL answers at {host}:{port} (DATABASE_URL or the local server): start one, or set DATABASE_URL"
    ))
}

/// PgBouncer's binary, as the pooler harness looks for it (tests/src/pgbouncer.rs), installed
/// from Debian's package when missing.
pub fn pgbouncer(apt: &mut Apt) -> Result<(), String> {
    if std::env::var_os("PGBOUNCER_BIN").is_some() || which("pgbouncer", &["/usr/sbin"]).is_some() {
        return Ok(());
    }
    apt.install(&["pgbouncer"])
        .map_err(|e| format!("pgbouncer is not installed and {e}"))
}

/// Chromium for the demo's browser test (workspace-diesel-demo/tests/cdp), installed from
/// Debian's package when missing.
pub fn chromium(apt: &mut Apt) -> Result<(), String> {
    if std::env::var_os("CHROMIUM_BIN").is_some() || which("chromium", &[]).is_some() {
        return Ok(());
    }
    apt.install(&["chromium"])
        .map_err(|e| format!("chromium is not installed and {e}"))
}
