//! A second PostgreSQL server of the tests' own, from the installed PostgreSQL 15 binaries, on a
//! free loopback port in a temporary directory (run as the `postgres` OS user when the tests run
//! as root, since `initdb` refuses root); stopped and removed on drop.

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
        let data = server.dir.join("data");
        server.run(server.command("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off",
            server.port,
            server.dir.display()
        );
        server.run(
            server
                .command("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(server.dir.join("log"))
                .args(["-w", "-o", &options]),
        );
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
