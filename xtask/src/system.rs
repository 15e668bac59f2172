//! The machine: who we are, which programs are on the `PATH`, Debian's package manager, ports.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether this process runs as root (`id -u` prints 0).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `name` on the `PATH`, or in one of `extra` directories (`/usr/sbin` is not on every user's
/// `PATH`).
pub fn which(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Runs `command`, its output captured; on failure, the command and the last lines it printed.
pub fn run(command: &mut Command) -> Result<String, String> {
    let shown = format!("{command:?}");
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not run {shown}: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{shown} exited with {}: {}",
        out.status,
        tail.join(" / ")
    ))
}

/// Debian's package manager, usable by this process (root, `apt-get` present), running
/// `apt-get update` once before the first install.
pub struct Apt {
    usable: bool,
    updated: bool,
}

impl Apt {
    /// Looks for `apt-get` and root.
    pub fn detect() -> Self {
        Self {
            usable: is_root() && which("apt-get", &[]).is_some(),
            updated: false,
        }
    }

    /// Why packages cannot be installed here, if they cannot.
    pub fn unusable(&self) -> Option<&'static str> {
        if self.usable {
            None
        } else if which("apt-get", &[]).is_none() {
            Some("this machine has no apt-get")
        } else {
            Some("installing it needs root")
        }
    }

    /// Installs Debian's `packages`.
    pub fn install(&mut self, packages: &[&str]) -> Result<(), String> {
        if let Some(why) = self.unusable() {
            return Err(format!("{why} (apt-get install {})", packages.join(" ")));
        }
        if !self.updated {
            run(Command::new("apt-get").args(["update", "-qq"]))?;
            self.updated = true;
        }
        println!("xtask: apt-get install {}", packages.join(" "));
        run(Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq"])
            .args(packages))
        .map(drop)
    }
}

/// Host and port of a `postgres://user@host:port/db?...` URL (127.0.0.1 and 5432 when absent).
pub fn host_port(url: &str) -> (String, u16) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => (h.to_owned(), p.parse().unwrap_or(5432)),
        _ => (hostport.to_owned(), 5432),
    };
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let host = if host.is_empty() || host == "localhost" {
        "127.0.0.1".to_owned()
    } else {
        host
    };
    (host, port)
}

/// Whether something accepts TCP connections at `host:port`.
pub fn answers(host: &str, port: u16) -> bool {
    (host, port)
        .to_socket_addrs()
        .ok()
        .into_iter()
        .flatten()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)).is_ok())
}

/// Waits up to `seconds` for `host:port` to answer.
pub fn wait_for(host: &str, port: u16, seconds: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    loop {
        if answers(host, port) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// PostgreSQL's server binaries: `PGBIN`, `pg_config --bindir`, the directory of `initdb` on the
/// `PATH`, or the newest `/usr/lib/postgresql/<version>/bin`.
pub fn server_bindir() -> Option<PathBuf> {
    let has_initdb = |d: &Path| d.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PGBIN").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    if let Ok(out) = run(Command::new("pg_config").arg("--bindir")) {
        let dir = PathBuf::from(out.trim());
        if has_initdb(&dir) {
            return Some(dir);
        }
    }
    if let Some(initdb) = which("initdb", &[]) {
        return initdb.parent().map(Path::to_path_buf);
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

#[cfg(test)]
mod tests {
    use super::host_port;

    #[test]
    fn host_and_port_of_a_url() {
        assert_eq!(
            host_port("postgres://postgres@127.0.0.1:9700/postgres"),
            ("127.0.0.1".to_owned(), 9700)
        );
        assert_eq!(
            host_port("postgres://u:p@localhost/db?sslmode=disable"),
            ("127.0.0.1".to_owned(), 5432)
        );
        assert_eq!(
            host_port("postgres://db.example:6543"),
            ("db.example".to_owned(), 6543)
        );
        assert_eq!(
            host_port("postgres://u@[::1]:5433/x"),
            ("::1".to_owned(), 5433)
        );
    }
}
