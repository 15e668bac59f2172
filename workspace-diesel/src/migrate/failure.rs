//! Failure classification: the SQL that makes a failing migration name itself (its version and
//! SQLSTATE), and the mapping of what the server answered to the crate's [`Error`] and to a
//! fleet run's [`TenantOutcome`].

use diesel::result::DatabaseErrorKind;

use crate::error::{engine_changed, Error};
use crate::report::{MigrationFailure, TenantOutcome};
use crate::sql::quote_literal;
use crate::tenant::TenantId;

/// SQLSTATE `lock_not_available`.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// The message [`raise_if_schema_missing`] raises.
pub(crate) const SCHEMA_MISSING: &str = "workspace-diesel: schema missing";
/// PostgreSQL's message for SQLSTATE 55P03 raised by `lock_timeout` (the server's default
/// `lc_messages`; Diesel does not expose the SQLSTATE of an error).
const LOCK_TIMEOUT_MESSAGE: &str = "canceling statement due to lock timeout";
/// The prefix of the message [`wrap`]'s handler raises.
const MIGRATION_FAILED: &str = "workspace-diesel: migration ";

/// Dollar-quote tags `$<prefix><n>$`, one per prefix with the same `n`, none of which occurs
/// in `body` (distinct prefixes: one tag may quote a text that holds the others).
pub(crate) fn dollar_tags<const N: usize>(prefixes: [&str; N], body: &str) -> [String; N] {
    (0..)
        .map(|n| prefixes.map(|p| format!("${p}{n}$")))
        .find(|tags| tags.iter().all(|t| !body.contains(t.as_str())))
        .expect("some tag is free")
}

/// Runs `body` through PL/pgSQL's `EXECUTE` in a `DO` block whose handler re-raises any error
/// with the same SQLSTATE and a message naming the version and the SQLSTATE (Diesel does not
/// expose the SQLSTATE of an error).
pub(crate) fn wrap(version: &str, body: &str) -> String {
    let [inner, outer] = dollar_tags(["wd_sql", "wd_do"], body);
    format!(
        "DO {outer} DECLARE wd_state text; wd_message text; BEGIN EXECUTE {inner}{body}{inner}; \
         EXCEPTION WHEN OTHERS THEN \
         GET STACKED DIAGNOSTICS wd_state = RETURNED_SQLSTATE, wd_message = MESSAGE_TEXT; \
         RAISE EXCEPTION USING ERRCODE = wd_state, \
         MESSAGE = '{MIGRATION_FAILED}' || {v} || ' sqlstate ' || wd_state || ': ' || wd_message; \
         END {outer}",
        v = quote_literal(version)
    )
}

/// PL/pgSQL that raises [`SCHEMA_MISSING`] (SQLSTATE 3F000) when `schema` does not exist; see
/// [`classify_migrate_error`].
pub(crate) fn raise_if_schema_missing(schema: &TenantId) -> String {
    format!(
        "IF pg_catalog.to_regnamespace({}) IS NULL THEN \
         RAISE EXCEPTION '{SCHEMA_MISSING}' USING ERRCODE = 'invalid_schema_name'; END IF;",
        quote_literal(&schema.quoted())
    )
}

/// [`Error::TenantMigration`] of `tenant` with `failure`.
pub(crate) fn tenant_failure(tenant: &TenantId, failure: MigrationFailure) -> Error {
    Error::TenantMigration {
        tenant: tenant.clone(),
        source: Box::new(failure),
    }
}

fn is_marker(e: &diesel::result::Error, marker: &str) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message() == marker)
}

/// The server's message of a database error, or the error's text.
pub(crate) fn db_message(e: &diesel::result::Error) -> String {
    match e {
        diesel::result::Error::DatabaseError(_, info) => info.message().to_owned(),
        e => e.to_string(),
    }
}

/// Whether `e` is the server cancelling a statement at `lock_timeout`.
pub(crate) fn is_lock_timeout(e: &diesel::result::Error) -> bool {
    db_message(e) == LOCK_TIMEOUT_MESSAGE
}

/// Turns the error of a migration batch into the crate's error.
pub(crate) fn classify_migrate_error(schema: &TenantId, e: diesel::result::Error) -> Error {
    if engine_changed(&e).is_some() {
        return e.into();
    }
    if is_marker(&e, SCHEMA_MISSING) {
        return Error::SchemaMissing(schema.clone());
    }
    tenant_failure(schema, failure_of(&e))
}

/// Adds the versions `committed` before `e` to its [`MigrationFailure`] (an error without one
/// becomes a [`Error::TenantMigration`] naming them), so a report tells what was kept.
pub(crate) fn with_committed(schema: &TenantId, e: Error, committed: Vec<String>) -> Error {
    if committed.is_empty() {
        return e;
    }
    match e {
        Error::TenantMigration { tenant, mut source } => {
            source.prepend_committed(committed);
            Error::TenantMigration { tenant, source }
        }
        e => {
            let message = match &e {
                Error::Query(q) => format!("{e}: {}", db_message(q)),
                e => e.to_string(),
            };
            tenant_failure(
                schema,
                MigrationFailure::new(None, None, message).with_committed(committed),
            )
        }
    }
}

/// Whether `e` means the connection is gone (a retry on it cannot succeed).
pub(crate) fn connection_lost(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | diesel::result::Error::BrokenTransactionManager
    )
}

/// Whether sending the same SQL again on this connection cannot succeed: the connection is gone,
/// or the engine is another than the one the SQL was planned for.
pub(crate) fn unretryable(e: &diesel::result::Error) -> bool {
    connection_lost(e) || engine_changed(e).is_some()
}

/// Turns the error of a provisioning batch into the crate's error.
pub(crate) fn classify_create_error(schema: &TenantId, e: diesel::result::Error) -> Error {
    if engine_changed(&e).is_some() {
        return e.into();
    }
    if let diesel::result::Error::DatabaseError(kind, info) = &e {
        let msg = info.message();
        if !msg.starts_with(MIGRATION_FAILED)
            && (matches!(kind, DatabaseErrorKind::UniqueViolation)
                || msg.contains("already exists"))
        {
            return Error::TenantExists(schema.clone());
        }
        if msg.starts_with(MIGRATION_FAILED) {
            return tenant_failure(schema, failure_of(&e));
        }
    }
    e.into()
}

/// Parses the message raised by [`wrap`]'s handler.
pub(crate) fn failure_of(e: &diesel::result::Error) -> MigrationFailure {
    let msg = db_message(e);
    if let Some(rest) = msg.strip_prefix(MIGRATION_FAILED) {
        if let Some((version, rest)) = rest.split_once(" sqlstate ") {
            if let Some((state, message)) = rest.split_once(": ") {
                return MigrationFailure::new(
                    Some(version.to_owned()),
                    Some(state.to_owned()),
                    message,
                );
            }
        }
    }
    MigrationFailure::new(None, None, msg)
}

/// A fleet run's outcome for a tenant whose operation failed with `err`.
pub(crate) fn outcome_of(err: &Error) -> TenantOutcome {
    match err {
        Error::TenantMigration { source, .. } => TenantOutcome::Failed {
            sqlstate: source.sqlstate().map(str::to_owned),
            message: source.to_string(),
        },
        Error::SchemaMissing(_) => TenantOutcome::Failed {
            sqlstate: Some("3F000".into()),
            message: err.to_string(),
        },
        Error::Query(e) => TenantOutcome::Failed {
            sqlstate: None,
            message: format!("{err}: {}", failure_of(e).message()),
        },
        _ => TenantOutcome::Failed {
            sqlstate: None,
            message: error_chain(err),
        },
    }
}

fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        s.push_str(": ");
        s.push_str(&e.to_string());
        cur = e.source();
    }
    s
}
