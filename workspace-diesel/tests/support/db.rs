//! Scratch databases for the tests and the benchmarks: the admin URL, swapping the database name
//! of a URL, and a guard that creates a database and drops it again.
//!
//! Shared by `tests/support/mod.rs` and `benches/support/mod.rs` (included there with
//! `#[path]`), so it uses no `crate::` paths and only diesel and dotenvy.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

/// The admin connection URL (`DATABASE_URL`, also read from `.env`).
pub fn admin_url() -> String {
    dotenvy::var("DATABASE_URL")
        .expect("DATABASE_URL must be set in order to run the tests and benchmarks")
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
/// unless the thread is panicking, so that a failure can be inspected.
pub struct ScratchDb {
    name: String,
    admin: String,
    url: String,
}

impl ScratchDb {
    /// Drops a leftover database `name` and creates it anew.
    pub fn create(name: &str) -> Self {
        let admin = admin_url();
        let mut conn = PgConnection::establish(&admin).expect("connect to the admin database");
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap_or_else(|e| panic!("drop the leftover database {name}: {e}"));
        conn.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("create the database {name}: {e}"));
        let url = replace_db(&admin, name);
        Self {
            name: name.to_owned(),
            admin,
            url,
        }
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
