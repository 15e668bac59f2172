//! A second PostgreSQL server of the tests' own, from the installed server binaries (`PGBIN`,
//! `pg_config --bindir`, `initdb` on the `PATH`, or Debian's `/usr/lib/postgresql/<version>/bin`),
//! on a free loopback port in a temporary directory (run as the `postgres` OS user when the tests
//! run as root, since `initdb` refuses root); it can be stopped and resumed (an outage), and is
//! stopped and removed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A throwaway PostgreSQL server.
pub struct Throwaway {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// The `postgres` user's uid and gid when the tests run as root.
    owner: Option<(u32, u32)>,
}

impl Throwaway {
    /// Initialises and starts a server, waiting until it accepts connections.
    pub fn start(label: &str) -> Self {
        let bin = server_binaries().expect(
            "no PostgreSQL server binaries (PGBIN, pg_config --bindir, initdb on the PATH, /usr/lib/postgresql/*/bin)",
        );
        let dir = std::env::temp_dir().join(format!("wd-tests-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let owner = if id(&["-u"]) == Some(0) {
            let ids = (
                id(&["-u", "postgres"]).expect("a `postgres` user to run the server as"),
                id(&["-g", "postgres"]).expect("a `postgres` group"),
            );
            std::os::unix::fs::chown(&dir, Some(ids.0), Some(ids.1)).expect("chown");
            Some(ids)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            dir,
            port,
            owner,
        };
        server.run(
            server
                .command("initdb")
                .arg("-D")
                .arg(server.dir.join("data"))
                .args(["-U", "postgres", "-A", "trust", "--no-sync"]),
        );
        server.resume();
        server
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c.stdin(std::process::Stdio::null());
        c
    }

    fn run(&self, command: &mut Command) {
        let out = command.output().expect("a PostgreSQL server binary");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The `postgres` database's URL.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again), waiting until it accepts connections.
    pub fn resume(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            self.port,
            self.dir.display()
        );
        self.run(
            self.command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-o", &options]),
        );
    }

    /// Stops the server (fast shutdown: sessions are ended); [`resume`](Self::resume) starts it
    /// again.
    pub fn stop(&self) {
        self.run(
            self.command("pg_ctl")
                .arg("stop")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w"]),
        );
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `id ARGS` as a number.
fn id(args: &[&str]) -> Option<u32> {
    let out = Command::new("id").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// PostgreSQL's server binaries: `PGBIN`, `pg_config --bindir`, the directory of `initdb` on the
/// `PATH`, or the newest `/usr/lib/postgresql/<version>/bin`.
fn server_binaries() -> Option<PathBuf> {
    let has_initdb = |dir: &Path| dir.join("initdb").is_file();
    if let Some(dir) = std::env::var_os("PGBIN").map(PathBuf::from) {
        return has_initdb(&dir).then_some(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
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
