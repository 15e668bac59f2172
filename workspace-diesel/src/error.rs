//! The crate's error type.

use std::fmt;
use std::str::FromStr;

use crate::report::{MigrationFailure, MigrationReport};
use crate::tenant::TenantId;

/// Everything that can go wrong in this crate.
///
/// Messages say *what* failed and name the tenant; [`std::error::Error::source`] carries *why*.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A string was not a valid tenant name; nothing was sent to the database. The message shows
    /// control characters escaped (a newline as `\n`), so it stays on one line.
    #[error("invalid tenant name `{}`: {reason}", escape_controls(name))]
    InvalidTenantName {
        /// The rejected input, as given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A tenant table was queried (or a tenant transaction opened) outside any
    /// [`switch`](crate::switch); nothing was sent to the database.
    #[error("{0}")]
    NoActiveTenant(NoActiveTenant),
    /// A tenant selection could not be read: a pattern that is not a valid glob, a list file
    /// that cannot be read or holds an invalid name. Nothing was run.
    #[error("invalid tenant selection: {0}")]
    InvalidSelection(String),
    /// No fleet run with this id is recorded.
    #[error("no fleet run {0} is recorded")]
    RunNotFound(i64),
    /// A recorded fleet run cannot be reverted as a whole.
    #[error("fleet run {run} cannot be reverted: {reason}")]
    RunNotRevertible {
        /// The run.
        run: i64,
        /// Why.
        reason: &'static str,
    },
    /// The tenant is already registered, or its schema already exists.
    #[error("tenant `{0}` already exists")]
    TenantExists(TenantId),
    /// The tenant is not in the registry.
    #[error("tenant `{0}` does not exist")]
    TenantNotFound(TenantId),
    /// The tenant is registered, but its schema is gone.
    #[error("the schema of tenant `{0}` does not exist")]
    SchemaMissing(TenantId),
    /// Opening a connection failed.
    #[error("could not connect to the database")]
    Connection(#[from] diesel::ConnectionError),
    /// A query failed.
    #[error("database query failed")]
    Query(#[source] diesel::result::Error),
    /// A call that commits transactions of its own (create a tenant, migrate or revert one, the
    /// fleet runs, the warm pool) was made on a connection inside an outer transaction (Diesel's
    /// `transaction` or `begin_test_transaction`); nothing was sent. Run it on a connection with
    /// no transaction open: in tests, one of its own (the `workspace-diesel-test` crate gives
    /// each test a database and tenants from the warm pool instead of a rolled-back transaction).
    #[error("this call commits its own transactions and cannot run inside an outer transaction (run it on a connection with no transaction open)")]
    OuterTransaction,
    /// The shared migrations failed; the failing migration's changes were rolled back.
    #[error("shared migrations failed")]
    SharedMigration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A tenant's migrations failed; that tenant's changes were rolled back.
    #[error("migration failed for tenant `{tenant}`")]
    TenantMigration {
        /// The tenant whose migrations failed.
        tenant: TenantId,
        /// Why: the failing version, its SQLSTATE and message, and the versions committed before
        /// the failure (boxed to keep `Error` small).
        #[source]
        source: Box<MigrationFailure>,
    },
    /// A fleet operation ([`Migrator::migrate_all`](crate::Migrator::migrate_all) and friends)
    /// had failing tenants; the report holds every tenant's outcome, as refinery's
    /// `Error { kind, report }`.
    #[error("{}", .report.failure_summary())]
    FleetMigration {
        /// What happened to each tenant.
        report: MigrationReport,
    },
    /// A migration source could not be read (a migrations directory that is missing or malformed,
    /// a placeholder migration): returned by [`MigratorBuilder::build`](crate::MigratorBuilder::build),
    /// which reads every migration set once.
    #[error("could not read the migrations")]
    MigrationSource(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database engine lacks something tenant provisioning or migrations rely on (see
    /// [`Dialect`](crate::citus::Dialect)); nothing was changed.
    #[error("{engine} is not supported: it lacks {missing}")]
    UnsupportedEngine {
        /// The engine, as [`Dialect::name`](crate::citus::Dialect::name) reports it.
        engine: &'static str,
        /// The capabilities it lacks.
        missing: &'static str,
    },
    /// On Citus, a tenant's schema would not be a distributed schema with every table
    /// distributed (a table created inside a PL/pgSQL block stays local on the coordinator);
    /// its transaction was rolled back.
    #[error("tenant `{tenant}` would not be fully distributed on Citus (local tables: {})", .local_tables.join(", "))]
    NotDistributed {
        /// The tenant (or warm spare).
        tenant: TenantId,
        /// Its tables that are not in Citus's metadata (none: the schema itself is not a
        /// distributed schema).
        local_tables: Vec<String>,
    },
    /// An operation that only exists on Citus (moving a tenant, rebalancing) was called on
    /// another engine.
    #[error("{operation} needs Citus with schema-based sharding; this database runs {engine}")]
    RequiresCitus {
        /// What was asked for.
        operation: &'static str,
        /// The engine found instead.
        engine: &'static str,
    },
    /// A transaction pooler (PgBouncer in `pool_mode = transaction`) was found behind a pool or
    /// migrator that was not declared to go through one; nothing was run for a tenant. The
    /// message names the setting ([`Pooler::Transaction`](crate::pooler::Pooler::Transaction)).
    #[error("{0}")]
    PoolerNotDeclared(crate::pooler::PoolerDetected),
    /// The connection goes through a pooler in statement pooling mode (PgBouncer
    /// `pool_mode = statement`), which refuses the transactions the library runs; nothing was
    /// run for a tenant.
    #[error("{0}")]
    StatementPooling(crate::startup::StatementPooling),
    /// A tenant's pool of the enforcing roles mode is not logged in as the tenant's role (its
    /// URL names another user); nothing was run for the tenant.
    #[error("the pool of tenant `{tenant}` logs in as `{login}`, not as its role `{role}`")]
    RoleLogin {
        /// The tenant.
        tenant: TenantId,
        /// The tenant's role.
        role: String,
        /// The role the pool's connections are logged in as.
        login: String,
    },
    /// The database lets roles other than the schema owners change what SQL does (create rights
    /// on the shared or a tenant schema, or overloads of `pg_catalog` names: see
    /// [`Hazard::enables_hijack`](crate::Hazard::enables_hijack)), and the migrator or the pool
    /// was built to refuse to run on that. Nothing else was sent.
    #[error("refusing to run: {}", hijack_summary(.0))]
    HijackHazards(Vec<crate::hazard::Hazard>),
    /// A tenant's life-cycle state was to be changed in a registry that keeps none (see
    /// [`Registry::status_column`](crate::registry::Registry::status_column)); nothing was
    /// changed.
    #[error("the registry {registry} keeps no life-cycle state (no status column)")]
    NoLifecycleState {
        /// The registry table, qualified and quoted.
        registry: String,
    },
    /// A tenant cannot be cloned from `template` (see
    /// [`Migrator::clone_tenant`](crate::Migrator::clone_tenant)); nothing was created.
    #[error("cannot clone tenant `{template}`: {reason}")]
    CloneRefused {
        /// The template tenant.
        template: TenantId,
        /// Why, for people.
        reason: String,
    },
    /// A tenant archive was refused (`Migrator::import_tenant`: a version the migration set
    /// does not know or whose `up.sql` differs, a corrupted or truncated archive, rows that do
    /// not match their checksums; `Migrator::export_tenant`: a ledger the set does not know);
    /// nothing was created.
    #[error("tenant archive refused for `{tenant}`: {reason}")]
    ArchiveRefused {
        /// The tenant exported, or to be imported.
        tenant: TenantId,
        /// Why, for people.
        reason: String,
    },
    /// Exporting or importing a tenant archive failed: reading or writing the archive, or the
    /// `COPY` connection; nothing was created.
    #[error("tenant archive of `{tenant}` failed: {reason}")]
    ArchiveFailed {
        /// The tenant exported, or to be imported.
        tenant: TenantId,
        /// What failed, for people.
        reason: String,
    },
    /// No snapshot of this name is recorded (see
    /// [`Migrator::snapshots`](crate::Migrator::snapshots)).
    #[error("snapshot `{0}` does not exist")]
    SnapshotNotFound(String),
    /// A snapshot could not be taken or restored (see
    /// [`MigrateOptions::snapshot`](crate::MigrateOptions::snapshot) and
    /// [`Migrator::restore_snapshot`](crate::Migrator::restore_snapshot)): a snapshot whose
    /// versions the migration set does not know, rows that do not match its checksums, another
    /// restore of the tenant running. Nothing was changed.
    #[error("snapshot of tenant `{tenant}` refused: {reason}")]
    SnapshotRefused {
        /// The tenant.
        tenant: TenantId,
        /// Why, for people.
        reason: String,
    },
    /// The database behind the connection is not the engine a call planned its SQL for, and it
    /// changed again while the call detected it anew: nothing was done. A call that finds
    /// another engine than the one it assumed (a migrator used with connections to several
    /// servers) detects it and sends its SQL again on its own; this error means the engine
    /// changed during the call (the Citus extension created or dropped meanwhile).
    #[error("the database engine changed during the call (now `{found}`)")]
    EngineChanged {
        /// What the database reported: its `version()`, and the Citus extension's version.
        found: String,
    },
    /// Checking a connection out of the pool failed.
    #[cfg(feature = "r2d2")]
    #[error("could not get a connection from the pool")]
    Pool(#[from] r2d2::Error),
}

fn hijack_summary(hazards: &[crate::hazard::Hazard]) -> String {
    match hazards {
        [] => "no hazard".to_owned(),
        [one] => one.to_string(),
        [first, rest @ ..] => format!("{first} (and {} more hazards)", rest.len()),
    }
}

/// The start of the message a dialect's guard raises when it finds another engine; the identity
/// found follows.
pub(crate) const ENGINE_CHANGED: &str = "workspace-diesel: engine changed: ";

/// The identity a dialect's guard found, when `e` is its failure.
pub(crate) fn engine_changed(e: &diesel::result::Error) -> Option<String> {
    match e {
        diesel::result::Error::DatabaseError(_, info) => info
            .message()
            .strip_prefix(ENGINE_CHANGED)
            .map(str::to_owned),
        _ => None,
    }
}

/// A `Result` whose error defaults to this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        if let Some(found) = engine_changed(&e) {
            return Error::EngineChanged { found };
        }
        match e {
            diesel::result::Error::AlreadyInTransaction => Error::OuterTransaction,
            diesel::result::Error::QueryBuilderError(inner) if inner.is::<NoActiveTenant>() => {
                match inner.downcast::<NoActiveTenant>() {
                    Ok(no_tenant) => Error::NoActiveTenant(*no_tenant),
                    Err(inner) => Error::Query(diesel::result::Error::QueryBuilderError(inner)),
                }
            }
            diesel::result::Error::QueryBuilderError(inner)
                if inner.is::<crate::pooler::PoolerDetected>() =>
            {
                match inner.downcast::<crate::pooler::PoolerDetected>() {
                    Ok(detected) => Error::PoolerNotDeclared(*detected),
                    Err(inner) => Error::Query(diesel::result::Error::QueryBuilderError(inner)),
                }
            }
            diesel::result::Error::QueryBuilderError(inner)
                if inner.is::<crate::startup::StatementPooling>() =>
            {
                match inner.downcast::<crate::startup::StatementPooling>() {
                    Ok(refused) => Error::StatementPooling(*refused),
                    Err(inner) => Error::Query(diesel::result::Error::QueryBuilderError(inner)),
                }
            }
            e => Error::Query(e),
        }
    }
}

/// The error a tenant table returns when it is rendered outside any [`switch`](crate::switch).
///
/// Diesel reports it as [`diesel::result::Error::QueryBuilderError`] before anything is sent;
/// `Error::from` turns it into [`Error::NoActiveTenant`].
///
/// ```
/// use diesel_workspace::NoActiveTenant;
///
/// let e = NoActiveTenant::table("notes");
/// assert_eq!(
///     e.to_string(),
///     "no tenant is active: tenant table `notes` used outside `diesel_workspace::switch`"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoActiveTenant {
    table: Option<&'static str>,
}

impl NoActiveTenant {
    /// The error for the tenant table `table`.
    pub fn table(table: &'static str) -> Self {
        Self { table: Some(table) }
    }

    /// The error for an operation that is not tied to one table (a tenant transaction).
    pub fn operation() -> Self {
        Self { table: None }
    }

    /// The tenant table that was used, if one was.
    pub fn table_name(&self) -> Option<&'static str> {
        self.table
    }
}

impl fmt::Display for NoActiveTenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.table {
            Some(t) => write!(
                f,
                "no tenant is active: tenant table `{t}` used outside `diesel_workspace::switch`"
            ),
            None => f.write_str(
                "no tenant is active: tenant transaction opened outside `diesel_workspace::switch`",
            ),
        }
    }
}

impl std::error::Error for NoActiveTenant {}

impl From<NoActiveTenant> for diesel::result::Error {
    fn from(e: NoActiveTenant) -> Self {
        diesel::result::Error::QueryBuilderError(Box::new(e))
    }
}

/// `text` with every control character (newline, tab, NUL, escape, ...) written as Rust escapes
/// it (`\n`, `\t`, `\0`, `\u{1b}`), and everything else as is.
pub(crate) fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

// A name becomes a `TenantId` here, beside the error that rejects it: `tenant.rs` holds the type
// and its rule and needs no `Error`.
impl TenantId {
    /// Validates `name` and returns it as a tenant id.
    ///
    /// # Errors
    /// [`Error::InvalidTenantName`] naming the input and the rule it breaks.
    pub fn new(name: impl AsRef<str>) -> Result<Self, Error> {
        let name = name.as_ref();
        match Self::parse(name) {
            Ok(id) => Ok(id),
            Err(reason) => Err(Error::InvalidTenantName {
                name: name.to_owned(),
                reason,
            }),
        }
    }
}

impl FromStr for TenantId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TenantId {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}

impl TryFrom<String> for TenantId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::new(s)
    }
}
