//! The Citus cluster the scale-out suites run against: a coordinator on 127.0.0.1:9700 (or the
//! port of `CITUS_COORDINATOR_URL`) and two workers on the next two ports (tests/src/citus.rs).
//! Started when it is down: with the Citus build and scripts of `../shared/citus` where they are
//! (CI, as root, default ports), else from an installed Citus (`citus.so` in
//! `pg_config --pkglibdir`, as Citus's own packages put it), with the same layout.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::system::{answers, host_port, is_root, run, server_bindir, wait_for, which};

/// The coordinator when `CITUS_COORDINATOR_URL` is unset (tests/src/citus.rs).
const COORDINATOR: &str = "postgres://postgres@127.0.0.1:9700/postgres";

/// The nodes: data directory suffix and port, the workers on the two ports after the
/// coordinator's.
fn nodes(coordinator: u16) -> [(&'static str, u16); 3] {
    [
        ("c", coordinator),
        ("w1", coordinator + 1),
        ("w2", coordinator + 2),
    ]
}

/// The coordinator's URL.
pub fn coordinator_url() -> String {
    std::env::var("CITUS_COORDINATOR_URL").unwrap_or_else(|_| COORDINATOR.to_owned())
}

/// The coordinator answers, or the cluster is started; otherwise why it cannot be.
pub fn cluster(repo: &Path) -> Result<(), String> {
    let url = coordinator_url();
    let (host, port) = host_port(&url);
    if answers(&host, port) {
        return Ok(());
    }
    if host != "127.0.0.1" {
        return Err(format!(
            "no Citus coordinator answers at CITUS_COORDINATOR_URL ({host}:{port}), and only a local one can be started"
        ));
    }
    let shared = std::env::var_os("CITUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("../shared/citus"));
    let scripts = shared.join("install.sh").is_file() && shared.join("cluster.sh").is_file();
    if scripts && is_root() && port == 9700 {
        with_scripts(&shared)?;
    } else if let Some(why) = installed_citus_missing() {
        return Err(format!(
            "no Citus coordinator answers at {host}:{port}, and {why}; install Citus 12 for PostgreSQL (its postgresql-<version>-citus package), or run as root beside ../shared/citus"
        ));
    } else {
        own_cluster(port)?;
    }
    for (_, port) in nodes(port) {
        if !wait_for("127.0.0.1", port, 60) {
            return Err(format!(
                "the Citus node on 127.0.0.1:{port} did not start within 60 s"
            ));
        }
    }
    Ok(())
}

/// `CITUS_BASE` (the data directories are `<base>-c`, `<base>-w1`, `<base>-w2`), as cluster.sh.
fn base() -> String {
    std::env::var("CITUS_BASE").unwrap_or_else(|_| "/tmp/citus".to_owned())
}

fn with_scripts(shared: &Path) -> Result<(), String> {
    println!("xtask: Citus from {}", shared.display());
    run(Command::new("bash").arg(shared.join("install.sh")))?;
    let verb = if Path::new(&format!("{}-c", base())).is_dir() {
        "start"
    } else {
        "setup"
    };
    run(Command::new("bash")
        .arg(shared.join("cluster.sh"))
        .arg(verb))
    .map(drop)
}

/// Why no installed Citus can be used, if none can.
fn installed_citus_missing() -> Option<String> {
    let Some(bin) = server_bindir() else {
        return Some("no PostgreSQL server binaries were found (pg_config --bindir, PATH)".into());
    };
    let pg_config = if bin.join("pg_config").is_file() {
        bin.join("pg_config")
    } else {
        PathBuf::from("pg_config")
    };
    let lib = run(Command::new(pg_config).arg("--pkglibdir"))
        .map(|s| PathBuf::from(s.trim()))
        .ok()?;
    if !lib.join("citus.so").is_file() {
        return Some(format!(
            "Citus is not installed ({} has no citus.so)",
            lib.display()
        ));
    }
    if is_root() && postgres_ids().is_none() {
        return Some("running as root and there is no `postgres` user to run the nodes".into());
    }
    None
}

/// The `postgres` user's uid and gid.
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| {
        run(Command::new("id").args([flag, "postgres"]))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A server program, run as the `postgres` user when this process is root (initdb and postgres
/// refuse root), as this user otherwise.
fn server_command(bin: &Path, program: &str) -> Command {
    let mut command = Command::new(bin.join(program));
    if is_root() {
        if let Some((uid, gid)) = postgres_ids() {
            // Without root's HOME, the nodes' own connections (libpq in Citus) look for their
            // files in the postgres user's home.
            command.uid(uid).gid(gid).env_remove("HOME");
        }
    }
    command
}

/// Sets up (first time) or starts the three nodes, as cluster.sh does.
fn own_cluster(coordinator: u16) -> Result<(), String> {
    let bin = server_bindir().ok_or("no PostgreSQL server binaries")?;
    println!(
        "xtask: Citus cluster from the installed Citus, data in {}-*",
        base()
    );
    let mut fresh = false;
    for (name, port) in nodes(coordinator) {
        let dir = PathBuf::from(format!("{}-{name}", base()));
        if !dir.join("PG_VERSION").is_file() {
            fresh = true;
            run(server_command(&bin, "initdb").arg("-D").arg(&dir).args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ]))?;
            let conf = format!(
                "\n# --- cargo xtask test ---\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\nshared_preload_libraries = 'citus'\nwal_level = logical\nmax_connections = 300\nmax_wal_senders = 20\nmax_replication_slots = 20\n",
                dir.display()
            );
            let path = dir.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&path)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            text.push_str(&conf);
            std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let running = server_command(&bin, "pg_ctl")
            .arg("-D")
            .arg(&dir)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success());
        if !running {
            run(server_command(&bin, "pg_ctl")
                .arg("-D")
                .arg(&dir)
                .arg("-l")
                .arg(dir.join("server.log"))
                .args(["-w", "-t", "60", "start"]))?;
        }
    }
    if fresh {
        let psql = if bin.join("psql").is_file() {
            bin.join("psql")
        } else {
            which("psql", &[]).ok_or("psql is not installed")?
        };
        let sql = |port: u16, statements: &str| {
            run(Command::new(&psql)
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U"])
                .args(["postgres", "-d", "postgres", "-p", &port.to_string(), "-c"])
                .arg(statements))
        };
        for (_, port) in nodes(coordinator) {
            sql(port, "CREATE EXTENSION IF NOT EXISTS citus")?;
        }
        for statement in [
            format!("SELECT citus_set_coordinator_host('127.0.0.1', {coordinator})"),
            format!("SELECT citus_add_node('127.0.0.1', {})", coordinator + 1),
            format!("SELECT citus_add_node('127.0.0.1', {})", coordinator + 2),
            "ALTER SYSTEM SET citus.enable_schema_based_sharding = on".to_owned(),
            "SELECT pg_reload_conf()".to_owned(),
        ] {
            sql(coordinator, &statement)?;
        }
    }
    Ok(())
}
