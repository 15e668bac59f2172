//! Where the demo's data lives: `DATABASE_URL`, else a database of its own on the local server,
//! else a throwaway PostgreSQL started from the installed server binaries (also chosen with
//! `DEMO_DATABASE=throwaway`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The local server tried when `DATABASE_URL` is unset.
const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres?connect_timeout=2";

/// What to install when nothing answers, in one line.
const INSTALL_HINT: &str = "no PostgreSQL found: set DATABASE_URL, start a server on 127.0.0.1:5432, or install the server binaries (Debian/Ubuntu: `apt-get install postgresql`) so the demo can start a throwaway one";

/// The database the demo runs on, and what to clean up on exit.
pub enum Database {
    /// `DATABASE_URL`, used as it is and left in place.
    Given { url: String },
    /// A database made for this run on the local server, dropped on exit.
    Local {
        admin: String,
        name: String,
        url: String,
    },
    /// A throwaway cluster in a temporary directory, stopped and removed on exit.
    Throwaway {
        url: String,
        dir: PathBuf,
        bin: PathBuf,
        server: Child,
        /// The `postgres` user's uid and gid when the demo runs as root (initdb refuses root).
        owner: Option<(u32, u32)>,
    },
}

impl Database {
    /// Picks the database (see the module docs).
    pub fn open() -> anyhow::Result<Self> {
        if std::env::var("DEMO_DATABASE").as_deref() == Ok("throwaway") {
            return match server_binaries() {
                Some(bin) => Self::throwaway(bin),
                None => bail!("{INSTALL_HINT}"),
            };
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            if let Err(e) = PgConnection::establish(&url) {
                bail!(
                    "no PostgreSQL answers at DATABASE_URL ({}): {}. Start that server, or unset DATABASE_URL to use the local server on 127.0.0.1:5432 or a throwaway one",
                    redact(&url),
                    one_line(&e.to_string()),
                );
            }
            return Ok(Self::Given { url });
        }
        if let Ok(mut conn) = PgConnection::establish(LOCAL_SERVER) {
            let name = format!("workspace_diesel_demo_{}", std::process::id());
            conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .and_then(|()| conn.batch_execute(&format!("CREATE DATABASE \"{name}\"")))
                .with_context(|| format!("create the database {name} on the local server"))?;
            let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
            return Ok(Self::Local {
                admin: LOCAL_SERVER.to_owned(),
                name,
                url,
            });
        }
        match server_binaries() {
            Some(bin) => Self::throwaway(bin),
            None => bail!("{INSTALL_HINT}"),
        }
    }

    /// The connection URL.
    pub fn url(&self) -> &str {
        match self {
            Self::Given { url } | Self::Local { url, .. } | Self::Throwaway { url, .. } => url,
        }
    }

    /// One line for the start-up banner.
    pub fn describe(&self) -> String {
        match self {
            Self::Given { url } => format!("{} (DATABASE_URL)", redact(url)),
            Self::Local { name, .. } => {
                format!("database {name} on the local server 127.0.0.1:5432 (dropped on exit)")
            }
            Self::Throwaway { dir, url, .. } => format!(
                "throwaway PostgreSQL at {} in {} (removed on exit)",
                redact(url),
                dir.display()
            ),
        }
    }

    fn throwaway(bin: PathBuf) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("workspace-diesel-demo-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // initdb refuses to run as root: run the server as the `postgres` user then.
        let owner = if is_root() {
            let Some(ids) = postgres_ids() else {
                let _ = std::fs::remove_dir_all(&dir);
                bail!("running as root and there is no `postgres` user to run the throwaway PostgreSQL as (initdb refuses root)");
            };
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).with_context(|| {
                format!(
                    "running as root and could not hand {} to the postgres user",
                    dir.display()
                )
            })?;
            Some(ids)
        } else {
            None
        };
        let data = dir.join("data");
        let out = run_as(owner, &bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let port = free_port()?;
        let server = run_as(owner, &bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args(["-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start postgres")?;
        let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
        let db = Self::Throwaway {
            url,
            dir,
            bin,
            server,
            owner,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if PgConnection::establish(db.url()).is_ok() {
                return Ok(db);
            }
            if Instant::now() > deadline {
                bail!("the throwaway PostgreSQL did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        match self {
            Self::Given { .. } => {}
            Self::Local { admin, name, .. } => {
                if let Ok(mut conn) = PgConnection::establish(admin) {
                    let _ = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"));
                }
            }
            Self::Throwaway {
                dir,
                bin,
                server,
                owner,
                ..
            } => {
                let stopped = run_as(*owner, &bin.join("pg_ctl"))
                    .arg("stop")
                    .arg("-D")
                    .arg(dir.join("data"))
                    .args(["-m", "fast", "-w"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false);
                if !stopped {
                    let _ = server.kill();
                }
                let _ = server.wait();
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// PostgreSQL's server binaries, found the portable way: `PGBIN`, the directory `pg_config
/// --bindir` names, the directory of `initdb` on the `PATH`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout, which keeps them off the `PATH`).
fn server_binaries() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PGBIN").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    if let Ok(out) = Command::new("pg_config")
        .arg("--bindir")
        .stderr(Stdio::null())
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&dir) {
            return Some(dir);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|d| has_initdb(d)) {
        return Some(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            has_initdb(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// `program`, run as `owner` (uid, gid) when given: the process drops to that user itself, so
/// no `runuser`, `su` or `sudo` is needed.
fn run_as(owner: Option<(u32, u32)>, program: &Path) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if let Some((uid, gid)) = owner {
        c.uid(uid).gid(gid);
    }
    c
}

/// The `postgres` user's uid and gid (`id -u postgres`, `id -g postgres`).
fn postgres_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, "postgres"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr()?.port())
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The URL without its password.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
