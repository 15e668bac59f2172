//! Scratch databases for the tests and the benchmarks: the admin URL, swapping the database name
//! of a URL, and a guard that creates a database and drops it again.
//!
//! Every scratch database is named `dwx_<pid>_<run>_<label>`: the process id and a token of the
//! process's start time make the name unique per run, so two checkouts (or a test run and a
//! benchmark) on one server never touch each other's databases. A run first drops the leftovers
//! of runs whose process is gone (crashed, or kept after a panic), recognised by that prefix.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The server used when `DATABASE_URL` is unset: the local PostgreSQL, as the demo does.
pub const LOCAL_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The prefix of every scratch database.
pub const PREFIX: &str = "dwx_";

/// The admin connection URL: `DATABASE_URL` (also read from `.env`), else the local server.
///
/// # Panics
/// With a one-line hint, when no server answers at that URL.
pub fn admin_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let (url, from_env) = match dotenvy::var("DATABASE_URL") {
            Ok(url) => (url, true),
            Err(_) => (LOCAL_SERVER.to_owned(), false),
        };
        if let Err(e) = PgConnection::establish(&url) {
            let what = if from_env {
                "DATABASE_URL"
            } else {
                "the local server (DATABASE_URL is unset)"
            };
            panic!(
                "no PostgreSQL answers at {what} {url}: {e}. Start one (e.g. `pg_ctlcluster 15 main start`), or set DATABASE_URL to a database you can create databases from.",
                e = e.to_string().trim().replace('\n', " "),
            );
        }
        url
    })
    .clone()
}

/// This run's part of every scratch database name: `<pid>_<start-time token>`.
pub fn run_token() -> &'static str {
    static TOKEN: OnceLock<String> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "{}_{:x}",
            std::process::id(),
            (nanos as u64) & 0xff_ffff_ffff
        )
    })
}

/// The name of this run's scratch database for `label` (`[a-z0-9_]`, at most 30 bytes).
pub fn scratch_name(label: &str) -> String {
    format!("{PREFIX}{}_{label}", run_token())
}

/// Drops the scratch databases of runs on this machine whose process has ended.
fn drop_leftovers(conn: &mut PgConnection) {
    #[derive(QueryableByName)]
    struct Name {
        #[diesel(sql_type = diesel::sql_types::Text)]
        datname: String,
    }
    let Ok(names) = diesel::sql_query(format!(
        "SELECT datname::text AS datname FROM pg_catalog.pg_database \
         WHERE pg_catalog.starts_with(datname::text, '{PREFIX}')"
    ))
    .load::<Name>(conn) else {
        return;
    };
    let me = std::process::id().to_string();
    for Name { datname } in names {
        let pid = datname[PREFIX.len()..].split('_').next().unwrap_or("");
        if pid.is_empty() || pid == me || std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = conn.batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{datname}\" WITH (FORCE)"
        ));
    }
}

/// Swaps the database name of a `postgres://` URL.
pub fn replace_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match base[scheme_end..].rfind('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

/// A database of its own, created fresh and dropped (`WITH (FORCE)`) when the guard drops,
/// unless the thread is panicking, so that a failure can be inspected (the next run drops it).
pub struct ScratchDb {
    name: String,
    admin: String,
    url: String,
}

impl ScratchDb {
    /// Creates this run's scratch database for `label` (see [`scratch_name`]).
    pub fn create(label: &str) -> Self {
        static CLEANED: OnceLock<()> = OnceLock::new();
        let admin = admin_url();
        let name = scratch_name(label);
        let mut conn = PgConnection::establish(&admin).expect("connect to the admin database");
        CLEANED.get_or_init(|| drop_leftovers(&mut conn));
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap_or_else(|e| panic!("drop the database {name}: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create the database {name}: {e}"));
        let url = replace_db(&admin, &name);
        Self { name, admin, url }
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping database {} after a panic", self.name);
            return;
        }
        if let Ok(mut conn) = PgConnection::establish(&self.admin) {
            let _ = conn.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}
