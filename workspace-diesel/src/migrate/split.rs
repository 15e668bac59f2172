//! The statement-by-statement path, taken when the [`Dialect`] says so (Citus): a tenant's
//! transaction opened with one batch of library SQL, then every statement of its migrations sent
//! as a top-level command of its own (no `DO` wrapper), then one closing batch (the ledger and
//! central record rows, the dialect's distribution check, `COMMIT`).
//!
//! The library's batches run under its own path (`pg_catalog, pg_temp`: the opening batch starts
//! with [`BEGIN`](crate::sql::BEGIN)). The statements of the migrations run with the tenant alone
//! on the path, set by a command of its own before the first one (a statement must be sent
//! alone: Citus propagates a command to the workers with the text it was sent in, and refuses a
//! text holding several); the closing batch starts with [`OWN_PATH`] again.
//!
//! A failing statement is attributed to its migration; its SQLSTATE comes from the error's kind
//! when Diesel knows it, otherwise from a diagnosis on the error path only: the transaction is
//! replayed up to that statement, which then runs wrapped so the server names its SQLSTATE, and
//! rolled back. The message is the original one, with shard names made logical.

use diesel::connection::SimpleConnection;
use diesel::result::DatabaseErrorKind;
use diesel::PgConnection;

use crate::connection::rollback;
use crate::dialect::{Dialect, NOT_DISTRIBUTED_MESSAGE};
use crate::error::{Error, Result};
use crate::migrate::failure::{
    connection_lost, db_message, failure_of, is_lock_timeout, tenant_failure, wrap,
    LOCK_NOT_AVAILABLE,
};
use crate::report::MigrationFailure;
use crate::sql::{work_path, OWN_PATH};
use crate::statements::split_statements;
use crate::tenant::TenantId;

/// A migration's SQL (or one statement of it), with the migration's version.
pub(crate) struct Step<'a> {
    pub(crate) version: &'a str,
    pub(crate) sql: &'a str,
}

impl<'a> Step<'a> {
    pub(crate) fn new(version: &'a str, sql: &'a str) -> Self {
        Self { version, sql }
    }
}

/// The statements of `step`, each attributed to its version.
///
/// # Errors
/// [`Error::TenantMigration`] naming the migration whose SQL cannot be split (an unterminated
/// string or comment).
pub(crate) fn statements<'a>(schema: &TenantId, step: &Step<'a>) -> Result<Vec<Step<'a>>> {
    let statements = split_statements(step.sql).map_err(|e| {
        tenant_failure(
            schema,
            MigrationFailure::new(
                Some(step.version.to_owned()),
                Some("42601".to_owned()),
                e.to_string(),
            ),
        )
    })?;
    Ok(statements
        .into_iter()
        .map(|s| Step::new(step.version, s.sql()))
        .collect())
}

/// Sends `steps` one by one inside the transaction `open` began (already sent), with `schema`
/// alone on the path ([`tenant_path`], one command before them), then `close` under the
/// library's own path ([`OWN_PATH`] first; `close` ends in `COMMIT`). On failure the transaction
/// is rolled back.
///
/// `open` is sent again only on the error path, to diagnose a failing statement's SQLSTATE.
pub(crate) fn run(
    conn: &mut PgConnection,
    dialect: &Dialect,
    schema: &TenantId,
    open: &str,
    steps: &[Step<'_>],
    close: &str,
) -> Result<()> {
    if !steps.is_empty() {
        if let Err(e) = conn.batch_execute(&tenant_path(schema)) {
            rollback(conn);
            return Err(e.into());
        }
    }
    for (i, step) in steps.iter().enumerate() {
        if let Err(e) = conn.batch_execute(step.sql) {
            rollback(conn);
            if connection_lost(&e) {
                return Err(e.into());
            }
            let sqlstate = sqlstate_of(&e)
                .map(str::to_owned)
                .or_else(|| diagnose(conn, schema, open, &steps[..i], step));
            let message = dialect.logical_message(conn, schema, &db_message(&e));
            return Err(tenant_failure(
                schema,
                MigrationFailure::new(Some(step.version.to_owned()), sqlstate, message),
            ));
        }
    }
    if let Err(e) = conn.batch_execute(&format!("{OWN_PATH}; {close}")) {
        rollback(conn);
        return Err(close_error(conn, dialect, schema, e));
    }
    Ok(())
}

/// `schema` alone on the transaction's path: what the statements of its migrations run under.
pub(crate) fn tenant_path(schema: &TenantId) -> String {
    format!("SET LOCAL search_path TO {}", work_path(&schema.quoted()))
}

/// The error of a transaction's closing batch: the distribution check's, or the server's.
pub(crate) fn close_error(
    conn: &mut PgConnection,
    dialect: &Dialect,
    schema: &TenantId,
    e: diesel::result::Error,
) -> Error {
    let message = db_message(&e);
    if let Some(local) = message.strip_prefix(NOT_DISTRIBUTED_MESSAGE) {
        return Error::NotDistributed {
            tenant: schema.clone(),
            local_tables: local
                .split(", ")
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
        };
    }
    if connection_lost(&e) {
        return e.into();
    }
    let sqlstate = sqlstate_of(&e).map(str::to_owned);
    let message = dialect.logical_message(conn, schema, &message);
    tenant_failure(schema, MigrationFailure::new(None, sqlstate, message))
}

/// The SQLSTATE of `e` when Diesel's error kind (or the lock timeout's message) tells it.
fn sqlstate_of(e: &diesel::result::Error) -> Option<&'static str> {
    if is_lock_timeout(e) {
        return Some(LOCK_NOT_AVAILABLE);
    }
    let diesel::result::Error::DatabaseError(kind, _) = e else {
        return None;
    };
    Some(match kind {
        DatabaseErrorKind::UniqueViolation => "23505",
        DatabaseErrorKind::ForeignKeyViolation => "23503",
        DatabaseErrorKind::NotNullViolation => "23502",
        DatabaseErrorKind::CheckViolation => "23514",
        DatabaseErrorKind::RestrictViolation => "23001",
        DatabaseErrorKind::ExclusionViolation => "23P01",
        DatabaseErrorKind::ReadOnlyTransaction => "25006",
        DatabaseErrorKind::SerializationFailure => "40001",
        _ => return None,
    })
}

/// Replays the transaction up to `failing` (which is sent wrapped, so the server's message names
/// its SQLSTATE), rolls it back and returns that SQLSTATE; `None` when the replay does not fail
/// the same way. The replay sends what [`run`] sent: `open`, `schema` alone on the path, the
/// statements before the failing one.
fn diagnose(
    conn: &mut PgConnection,
    schema: &TenantId,
    open: &str,
    before: &[Step<'_>],
    failing: &Step<'_>,
) -> Option<String> {
    let replayed = conn.batch_execute(open).is_ok()
        && conn.batch_execute(&tenant_path(schema)).is_ok()
        && before.iter().all(|s| conn.batch_execute(s.sql).is_ok());
    let state = if replayed {
        match conn.batch_execute(&wrap(failing.version, failing.sql)) {
            Err(e) => failure_of(&e).sqlstate().map(str::to_owned),
            Ok(()) => None,
        }
    } else {
        None
    };
    rollback(conn);
    state
}
