//! A real PgBouncer for the tests and benchmarks: Debian's `pgbouncer` binary started as a child
//! process with its own ini and auth file in a temporary directory, listening on a free loopback
//! port in front of the test server, in transaction pooling mode. Killed when the guard drops.
//!
//! The system's own PgBouncer service (which Debian's package starts) plays no part.

use std::fs;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::db::admin_url;

/// Where Debian installs the binary.
const DEBIAN_BINARY: &str = "/usr/sbin/pgbouncer";

/// The settings of one PgBouncer instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// `default_pool_size`: server connections per database and user.
    pub pool_size: u32,
    /// `pool_mode`.
    pub pool_mode: &'static str,
    /// `server_round_robin`: hand servers out in turn instead of last-in first-out.
    pub round_robin: bool,
    /// Whether `options` is in `ignore_startup_parameters` (otherwise PgBouncer refuses a client
    /// that sends it).
    pub ignore_options: bool,
}

impl Config {
    /// Transaction pooling with `pool_size` server connections.
    pub fn transaction(pool_size: u32) -> Self {
        Self {
            pool_size,
            pool_mode: "transaction",
            round_robin: false,
            ignore_options: true,
        }
    }

    /// Statement pooling with `pool_size` server connections.
    pub fn statement(pool_size: u32) -> Self {
        Self {
            pool_mode: "statement",
            ..Self::transaction(pool_size)
        }
    }

    /// The same, with `server_round_robin` on.
    pub fn round_robin(self) -> Self {
        Self {
            round_robin: true,
            ..self
        }
    }

    /// The same, refusing clients that send the `options` startup parameter (PgBouncer's
    /// default).
    pub fn refusing_options(self) -> Self {
        Self {
            ignore_options: false,
            ..self
        }
    }
}

/// A running PgBouncer, killed on drop.
pub struct PgBouncer {
    child: Child,
    port: u16,
    user: String,
    dir: tempfile::TempDir,
}

/// The PgBouncer binary: `PGBOUNCER_BIN`, `pgbouncer` on the `PATH`, or Debian's path.
///
/// # Panics
/// With one line saying where it looked and how to install it (`cargo xtask test` does), or to
/// leave these tests out (`cargo xtask test --skip pgbouncer`), when none is found.
pub fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PGBOUNCER_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            panic!(
                "PGBOUNCER_BIN={} is not a file: point it at PgBouncer's binary",
                bin.display()
            );
        }
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("pgbouncer");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let debian = Path::new(DEBIAN_BINARY);
    if !debian.is_file() {
        panic!(
            "pgbouncer is not installed (no PGBOUNCER_BIN, no `pgbouncer` on the PATH, no {DEBIAN_BINARY}): \
             `cargo xtask test` installs it when run as root (`apt-get install pgbouncer`); \
             `cargo xtask test --skip pgbouncer` runs the other suites without these tests"
        );
    }
    debian.to_path_buf()
}

/// Host, port and user of the admin URL (`postgres://user@host:port/db`), with the local
/// server's values where the URL has none.
fn backend() -> (String, u16, String) {
    let url = admin_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (u, h),
        None => ("", authority),
    };
    let user = userinfo.split(':').next().unwrap_or("");
    let user = if user.is_empty() { "postgres" } else { user };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(5432)),
        None => (hostport, 5432),
    };
    let host = if host.is_empty() || host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    (host.to_owned(), port, user.to_owned())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl PgBouncer {
    /// Starts PgBouncer with `config` in front of the test server; every database of the server
    /// is reachable through it under its own name. Waits until it accepts connections.
    ///
    /// # Panics
    /// When the binary is missing or PgBouncer does not start within 10 seconds (its log is
    /// printed).
    pub fn start(config: Config) -> Self {
        let bin = binary();
        let (host, backend_port, user) = backend();
        for _attempt in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("dwx-pgbouncer-")
                .tempdir()
                .expect("a temporary directory");
            // PgBouncer refuses to run as root: it then runs as `postgres`, which must be able
            // to read the configuration and write the log.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777))
                .expect("open the temporary directory");
            let port = free_port();
            let auth = dir.path().join("users.txt");
            fs::write(&auth, format!("\"{user}\" \"\"\n")).expect("write the auth file");
            let log = dir.path().join("pgbouncer.log");
            let ini = dir.path().join("pgbouncer.ini");
            fs::write(
                &ini,
                format!(
                    "[databases]\n\
                     * = host={host} port={backend_port}\n\
                     [pgbouncer]\n\
                     listen_addr = 127.0.0.1\n\
                     listen_port = {port}\n\
                     unix_socket_dir =\n\
                     auth_type = trust\n\
                     auth_file = {auth}\n\
                     admin_users = {user}\n\
                     pool_mode = {mode}\n\
                     default_pool_size = {size}\n\
                     min_pool_size = 0\n\
                     reserve_pool_size = 0\n\
                     max_client_conn = 500\n\
                     max_db_connections = {size}\n\
                     server_lifetime = 3600\n\
                     server_idle_timeout = 600\n\
                     ignore_startup_parameters = extra_float_digits{options}\n\
                     server_round_robin = {round_robin}\n\
                     logfile = {log}\n\
                     pidfile =\n",
                    auth = auth.display(),
                    log = log.display(),
                    mode = config.pool_mode,
                    size = config.pool_size,
                    options = if config.ignore_options {
                        ",options"
                    } else {
                        ""
                    },
                    round_robin = u8::from(config.round_robin),
                ),
            )
            .expect("write pgbouncer.ini");
            for f in [&auth, &ini] {
                fs::set_permissions(f, fs::Permissions::from_mode(0o644)).expect("chmod");
            }
            let mut cmd = Command::new(&bin);
            if is_root() {
                cmd.arg("-u").arg("postgres");
            }
            let mut child = cmd
                .arg(&ini)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut started = false;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    started = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            if started {
                return Self {
                    child,
                    port,
                    user,
                    dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut stderr);
            }
            let logged = fs::read_to_string(&log).unwrap_or_default();
            // A port taken between the probe and PgBouncer's bind: try another one.
            if logged.contains("Address already in use")
                || stderr.contains("Address already in use")
            {
                continue;
            }
            panic!("pgbouncer did not start:\n{stderr}\n{logged}");
        }
        panic!("pgbouncer could not bind a free loopback port in 3 attempts");
    }

    /// The port PgBouncer listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` through PgBouncer.
    pub fn url_for(&self, db: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{db}?sslmode=disable",
            self.user, self.port
        )
    }

    /// The URL of the database of `direct_url` (a URL of the test server) through PgBouncer.
    pub fn url(&self, direct_url: &str) -> String {
        let db = direct_url
            .split('?')
            .next()
            .and_then(|base| base.rsplit('/').next())
            .unwrap_or("postgres");
        self.url_for(db)
    }

    /// PgBouncer's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    // The owner of /proc/self is the effective user.
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
