//! A second PostgreSQL server of the tests' own, from the installed PostgreSQL 15 binaries, on a
//! free loopback port in a temporary directory (run as the `postgres` OS user when the tests run
//! as root, since `initdb` refuses root); it can be stopped and resumed (an outage), and is
//! stopped and removed on drop.

use std::path::PathBuf;
use std::process::Command;

/// A throwaway PostgreSQL server.
pub struct Throwaway {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    as_postgres: bool,
}

impl Throwaway {
    /// Initialises and starts a server, waiting until it accepts connections.
    pub fn start(label: &str) -> Self {
        let bin = PathBuf::from("/usr/lib/postgresql/15/bin");
        assert!(
            bin.join("initdb").exists(),
            "no PostgreSQL 15 server binaries"
        );
        let dir = std::env::temp_dir().join(format!("wd-tests-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let as_postgres = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        if as_postgres {
            let chown = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(chown.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let server = Self {
            bin,
            dir,
            port,
            as_postgres,
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
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(program));
            c
        } else {
            Command::new(self.bin.join(program))
        };
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
