//! The migration sets, read once when the [`Migrator`](crate::Migrator) is built: Diesel's
//! migrations run against a stand-in connection that records their SQL, so the library reuses
//! Diesel's migrations as they are instead of parsing `up.sql`, and no later call reads a source.

use diesel::connection::{BoxableConnection, SimpleConnection};
use diesel::migration::{MigrationSource, CREATE_MIGRATIONS_TABLE};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, MigrationError};

use crate::error::{Error, Result};
use crate::statements::split_statements;

/// The registry's own migrations (`workspace-diesel/migrations/`), run before the application's
/// shared migrations.
pub const REGISTRY_MIGRATIONS: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations");

/// One tenant migration, read from the source: its SQL and whether it runs in a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) version: String,
    pub(crate) up: String,
    pub(crate) down: Option<String>,
    pub(crate) in_tx: bool,
}

/// The tenant migration set, in version order.
#[derive(Debug)]
pub(crate) struct CompiledSet {
    pub(crate) migrations: Vec<Compiled>,
    pub(crate) versions: Vec<String>,
    /// Whether some migration may write rows ([`defines_only`] is false): a clone then holds
    /// rows its migrations wrote.
    pub(crate) writes_rows: bool,
}

impl CompiledSet {
    /// Reads every migration of `source`: its `up.sql` (which must hold a statement), its
    /// `down.sql` (none when missing or empty) and its `run_in_transaction`.
    pub(crate) fn read<S: MigrationSource<Pg> + ?Sized>(source: &S) -> Result<Self> {
        let mut migrations = Vec::new();
        for m in source.migrations().map_err(Error::MigrationSource)? {
            let mut up = Capture::default();
            m.run(&mut up).map_err(Error::MigrationSource)?;
            let mut down = Capture::default();
            // No `down.sql`, or an empty one: the migration cannot be reverted (reverting it
            // fails then). Any other error (I/O, a malformed file) is the source's.
            let down = match m.revert(&mut down) {
                Ok(()) => Some(down.0),
                Err(e)
                    if matches!(
                        e.downcast_ref::<MigrationError>(),
                        Some(MigrationError::NoMigrationRevertFile)
                    ) || e
                        .to_string()
                        .ends_with("Attempted to run an empty migration.") =>
                {
                    None
                }
                Err(e) => return Err(Error::MigrationSource(e)),
            };
            if !has_statement(&up.0) {
                return Err(Error::MigrationSource(
                    format!(
                        "migration {} has no SQL statement in its up.sql (only comments or \
                         nothing): write the migration before running it",
                        m.name()
                    )
                    .into(),
                ));
            }
            migrations.push(Compiled {
                version: m.name().version().to_string(),
                up: up.0,
                down,
                in_tx: m.metadata().run_in_transaction(),
            });
        }
        migrations.sort_by(|a, b| a.version.cmp(&b.version));
        let versions = migrations.iter().map(|m| m.version.clone()).collect();
        let writes_rows = !defines_only(migrations.iter().map(|m| m.up.as_str()));
        Ok(Self {
            migrations,
            versions,
            writes_rows,
        })
    }
}

/// A shared migration set, read once; its pending migrations are applied by
/// [`run_pending`](SharedSet::run_pending).
#[derive(Debug, Clone)]
pub(crate) struct SharedSet {
    migrations: Vec<SharedMigration>,
}

#[derive(Debug, Clone)]
struct SharedMigration {
    name: String,
    version: String,
    up: String,
}

/// Why a shared migration did not apply.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SharedMigrationFailure {
    /// The server refused one of its statements.
    #[error("shared migration `{name}` failed")]
    Query {
        name: String,
        #[source]
        source: diesel::result::Error,
    },
    /// Its `up.sql` holds no statement (a migration just generated).
    #[error("shared migration `{name}` has no SQL statement: write its up.sql")]
    Empty { name: String },
}

impl SharedSet {
    /// Reads every migration of `source` (their `up.sql` as Diesel would run it).
    pub(crate) fn read<S: MigrationSource<Pg> + ?Sized>(source: &S) -> Result<Self> {
        let mut migrations = Vec::new();
        for m in source.migrations().map_err(Error::MigrationSource)? {
            let mut up = Capture::default();
            m.run(&mut up).map_err(Error::MigrationSource)?;
            migrations.push(SharedMigration {
                name: m.name().to_string(),
                version: m.name().version().to_string(),
                up: up.0,
            });
        }
        migrations.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(Self { migrations })
    }

    /// The versions of the set.
    pub(crate) fn versions(&self) -> impl Iterator<Item = &str> {
        self.migrations.iter().map(|m| m.version.as_str())
    }

    /// Applies the pending migrations of the set in version order, inside the caller's
    /// transaction, with the shared schema first on its path: creates Diesel's ledger
    /// (`__diesel_schema_migrations`, as Diesel's harness does) when it is missing, reads it, then
    /// sends each pending migration's SQL and its ledger row. Returns the versions applied.
    ///
    /// Diesel's harness is not used: from Diesel 2.4 on it reads the `search_path` before the
    /// migrations and sets it back after each one at session level (`set_config(…, false)`),
    /// which would make the transaction-local path the connection's session path.
    pub(crate) fn run_pending(
        &self,
        conn: &mut PgConnection,
    ) -> std::result::Result<Vec<String>, Box<dyn std::error::Error + Send + Sync>> {
        #[derive(QueryableByName)]
        struct Row {
            #[diesel(sql_type = diesel::sql_types::Text)]
            version: String,
        }
        conn.batch_execute(CREATE_MIGRATIONS_TABLE)?;
        let applied: std::collections::HashSet<String> = diesel::sql_query(
            "SELECT version::pg_catalog.text AS version FROM __diesel_schema_migrations",
        )
        .load::<Row>(conn)?
        .into_iter()
        .map(|r| r.version)
        .collect();
        let mut done = Vec::new();
        for m in self
            .migrations
            .iter()
            .filter(|m| !applied.contains(&m.version))
        {
            if !has_statement(&m.up) {
                return Err(Box::new(SharedMigrationFailure::Empty {
                    name: m.name.clone(),
                }));
            }
            let failed = |source| SharedMigrationFailure::Query {
                name: m.name.clone(),
                source,
            };
            conn.batch_execute(&m.up).map_err(failed)?;
            diesel::sql_query("INSERT INTO __diesel_schema_migrations (version) VALUES ($1)")
                .bind::<diesel::sql_types::Text, _>(&m.version)
                .execute(conn)
                .map_err(failed)?;
            done.push(m.version.clone());
        }
        Ok(done)
    }
}

/// Whether `sql` holds anything but comments, white space and semicolons. A migration without a
/// statement would otherwise be recorded as applied and never run once it is written.
fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return !rest.is_empty();
        }
    }
}

/// A stand-in connection that records the SQL a migration sends, so the library can batch it.
#[derive(Default)]
struct Capture(String);

impl SimpleConnection for Capture {
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.0.push_str(query);
        Ok(())
    }
}

impl BoxableConnection<Pg> for Capture {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Whether the migrations (their `up.sql`) only define objects (no statement that may write
/// rows), so that a schema built from a template's blueprint holds what one built by the
/// migrations holds: no rows at all.
fn defines_only<'a>(ups: impl IntoIterator<Item = &'a str>) -> bool {
    // `UPDATE` and `DELETE` change rows only where some were written first; anything that may
    // write or read rows in (a query, `VALUES`, `COPY`, `DO`, a call) is not a definition.
    const DEFINING: [&str; 11] = [
        "CREATE", "ALTER", "DROP", "COMMENT", "GRANT", "REVOKE", "SET", "RESET", "UPDATE",
        "DELETE", "TRUNCATE",
    ];
    const WRITING: [&str; 7] = [
        "SELECT", "VALUES", "EXECUTE", "INSERT", "COPY", "MERGE", "CALL",
    ];
    ups.into_iter().all(|up| {
        split_statements(up).is_ok_and(|statements| {
            statements.iter().all(|s| {
                let upper = s.sql().to_ascii_uppercase();
                let mut words = upper
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| !w.is_empty());
                words.next().is_some_and(|w| DEFINING.contains(&w))
                    && words.all(|w| !WRITING.contains(&w))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_definitions_count_as_defining() {
        let ddl = "CREATE TABLE a (id int); ALTER TABLE a ADD COLUMN b text; -- x\n";
        let insert = "CREATE TABLE a (id int); INSERT INTO a VALUES (1);";
        let ctas = "CREATE TABLE b AS SELECT 1 AS x;";
        let backfill = "ALTER TABLE a ADD COLUMN selected bool; UPDATE a SET selected = true;";
        let from = "UPDATE a SET b = (SELECT 'x');";
        assert!(defines_only([ddl, backfill]));
        assert!(!defines_only([ddl, insert]));
        assert!(!defines_only([ctas]));
        assert!(!defines_only([from]));
    }
}
