//! The SQL vocabulary every module shares: quoting, the advisory-lock keys, the names of the
//! library's own tables, and the one rule for the library's own SQL ([`OWN_PATH`]). Imports
//! nothing from the crate.

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::Text;

/// The shared schema: the library's tables and the shared migrations live here.
pub(crate) const SHARED_SCHEMA: &str = "public";

/// The central record of applied tenant migrations, schema-qualified.
pub(crate) const CENTRAL_RECORD: &str = "public.workspace_migrations";

/// The warm pool of spare schemas, schema-qualified.
pub(crate) const SPARES_TABLE: &str = "public.workspace_spares";

/// Schema names of warm spares start with this (no tenant name may).
pub const SPARE_PREFIX: &str = "_spare_";

/// Diesel's migration ledger, one per schema (unqualified: it resolves through `search_path`).
pub(crate) const LEDGER: &str = "__diesel_schema_migrations";

/// The tables the library's registry migration creates in the shared schema `public`: the
/// built-in registry, the central record of tenant migrations, the warm pool and the record of
/// fleet runs.
///
/// Tools that print or compare the shared schema (the CLI's `print-schema`) leave them out:
/// `diesel_workspace` declares them itself ([`workspaces`](crate::registry::workspaces),
/// [`workspace_migrations`](crate::registry::workspace_migrations)).
///
/// ```
/// assert_eq!(
///     diesel_workspace::registry::LIBRARY_TABLES,
///     ["workspaces", "workspace_migrations", "workspace_spares", "workspace_runs", "workspace_run_tenants"]
/// );
/// ```
pub const LIBRARY_TABLES: &[&str] = &[
    "workspaces",
    "workspace_migrations",
    "workspace_spares",
    "workspace_runs",
    "workspace_run_tenants",
];

/// The record of fleet runs, one row per run.
pub(crate) const RUNS_TABLE: &str = "public.workspace_runs";
/// The record of fleet runs, one row per tenant of a run.
pub(crate) const RUN_TENANTS_TABLE: &str = "public.workspace_run_tenants";

/// First key of the per-tenant advisory locks (`pg_advisory_xact_lock(key, hashtext(schema))`).
pub(crate) const LOCK_KEY: i32 = 0x5744_0001;
/// Key of the lock that serialises shared migrations.
pub(crate) const SHARED_LOCK_KEY: i32 = 0x5744_0002;
/// Key of the session lock that serialises `fill_spares` (second key 0).
pub(crate) const SPARES_LOCK_KEY: i32 = 0x5744_0003;

/// `SELECT pg_advisory_xact_lock(key, hashtext('<schema>'))`, as one statement: the per-tenant
/// lock, first statement of every per-tenant transaction, so concurrent migrators queue instead
/// of racing.
pub(crate) fn tenant_lock(schema: &str) -> String {
    format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({LOCK_KEY}, pg_catalog.hashtext({}))",
        quote_literal(schema)
    )
}

/// The session-level form of [`tenant_lock`] (`lock`: take it; otherwise release it), for work
/// that spans several transactions.
pub(crate) fn tenant_session_lock(schema: &str, lock: bool) -> String {
    format!(
        "SELECT pg_catalog.pg_advisory_{}({LOCK_KEY}, pg_catalog.hashtext({}))",
        if lock { "lock" } else { "unlock" },
        quote_literal(schema)
    )
}

/// The rule for the library's own SQL (CVE-2018-1058): every statement the library sends on its
/// own behalf (registry, central record, spares, locks, ledgers, status, audit) runs under this
/// transaction-local `search_path`, and names the library's tables with their schema. With only
/// `pg_catalog` on the path, and `pg_temp` last (PostgreSQL never looks there for functions or
/// operators), no function, operator, type or table planted in another schema can win name
/// resolution, however exact its match: `public.=(varchar, text)` is not even a candidate.
/// Statements open their transactions with [`BEGIN`] or run inside [`own`]; the application's
/// migration SQL runs in between with its schema alone on the path ([`in_schema`]).
pub(crate) const OWN_PATH: &str = "SET LOCAL search_path TO pg_catalog, pg_temp";

/// `BEGIN` then [`OWN_PATH`], one batch: how the library opens each transaction of its own.
pub(crate) const BEGIN: &str = "BEGIN; SET LOCAL search_path TO pg_catalog, pg_temp";

/// A `search_path` for tenant work: `schemas` (quoted, comma-separated), then `pg_temp`.
///
/// Unless it is named, PostgreSQL searches the session's temporary schema *first* for tables
/// and views. A temporary table left on the connection (by earlier work for another tenant, or
/// by another client of a transaction pooler sharing the server connection) would then answer
/// an unqualified name in place of the tenant's own table, and a temporary
/// `__diesel_schema_migrations` in place of the tenant's ledger. Named last, it loses to every
/// schema before it. (Functions and operators are never looked up there.)
///
/// Every `search_path` the library sets for tenant or shared work is spelled by this function.
pub(crate) fn work_path(schemas: &str) -> String {
    format!("{schemas}, pg_temp")
}

/// The application's `sql` (a migration's `up.sql` or `down.sql`) inside one of the library's
/// transactions: `schema` alone on the path while it runs ([`work_path`]: `pg_temp` named
/// last), [`OWN_PATH`] again right after.
pub(crate) fn in_schema(schema_quoted: &str, sql: &str) -> String {
    let path = work_path(schema_quoted);
    format!("SET LOCAL search_path TO {path}; {sql};\n{OWN_PATH}; ")
}

/// Runs `f`, the library's own statements, under [`OWN_PATH`]: in a transaction of its own when
/// the connection is in none (one round trip to open, one to commit), or, inside the caller's
/// transaction, with the caller's `search_path` put back afterwards.
pub(crate) fn own<T, E>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    #[derive(QueryableByName)]
    struct Saved {
        #[diesel(sql_type = Text)]
        path: String,
    }
    let depth = AnsiTransactionManager::transaction_manager_status_mut(conn)
        .transaction_depth()
        .map_err(E::from)?;
    if depth.is_none() {
        AnsiTransactionManager::begin_transaction_sql(conn, BEGIN).map_err(E::from)?;
        return match f(conn) {
            Ok(value) => {
                AnsiTransactionManager::commit_transaction(conn).map_err(E::from)?;
                Ok(value)
            }
            Err(e) => {
                let _ = AnsiTransactionManager::rollback_transaction(conn);
                Err(e)
            }
        };
    }
    let saved = diesel::sql_query(
        "SELECT pg_catalog.current_setting('search_path') AS path, \
         pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true) AS own",
    )
    .get_result::<Saved>(conn)
    .map_err(E::from)?;
    let result = f(conn);
    // After a failed statement the caller's transaction is aborted and must roll back, which
    // ends the local setting too: report the first error.
    let restored = diesel::sql_query("SELECT pg_catalog.set_config('search_path', $1, true)")
        .bind::<Text, _>(&saved.path)
        .execute(conn);
    match (result, restored) {
        (Err(e), _) => Err(e),
        (Ok(value), Ok(_)) => Ok(value),
        (Ok(_), Err(e)) => Err(E::from(e)),
    }
}

/// Sends `body`, the library's own statements, as one transaction under [`OWN_PATH`], one round
/// trip: [`BEGIN`], `body`, `COMMIT`; rolls back when it fails. The connection must not be in a
/// transaction.
pub(crate) fn own_batch(conn: &mut PgConnection, body: &str) -> QueryResult<()> {
    let sent = conn.batch_execute(&format!("{BEGIN}; {body}; COMMIT"));
    if sent.is_err() {
        let _ = conn.batch_execute("ROLLBACK");
    }
    sent
}

/// Quotes an SQL identifier, doubling embedded quotes.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Quotes an SQL string literal (standard_conforming_strings, the default since PostgreSQL 9.1).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A string literal that means the same whatever `standard_conforming_strings` is, with characters
/// other than printable ASCII replaced by `?` (as PostgreSQL does for `application_name`).
#[cfg_attr(not(feature = "r2d2"), allow(dead_code))]
pub(crate) fn escape_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('\'');
    out
}

/// A PostgreSQL array literal of text values (`{"a","b"}`).
pub(crate) fn array_literal(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(escape_literal("it's a\\b"), r"E'it''s a\\b'");
        assert_eq!(escape_literal("naïve\n"), "E'na?ve?'");
        assert_eq!(
            array_literal(&["a".into(), "b\"c".into()]),
            r#"{"a","b\"c"}"#
        );
    }

    #[test]
    fn library_tables_are_the_registry_migrations() {
        let up = [
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/00000000000000_workspace_registry/up.sql"
            )),
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/migrations/00000000000001_workspace_fleet_runs/up.sql"
            )),
        ]
        .concat();
        let created: Vec<&str> = up
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("CREATE TABLE "))
            .filter_map(|rest| rest.split(|c: char| c.is_whitespace() || c == '(').next())
            .collect();
        assert_eq!(created, LIBRARY_TABLES);
        assert!(CENTRAL_RECORD.ends_with(LIBRARY_TABLES[1]));
        assert!(SPARES_TABLE.ends_with(LIBRARY_TABLES[2]));
        assert!(RUNS_TABLE.ends_with(LIBRARY_TABLES[3]));
        assert!(RUN_TENANTS_TABLE.ends_with(LIBRARY_TABLES[4]));
    }
}
