//! What the engine reports, as plain data: a tenant's outcome, a fleet run's report, a tenant's
//! status and why one tenant migration failed. Below `error.rs`: imports only the tenant id.

use std::fmt;
use std::time::Duration;

use crate::tenant::TenantId;

/// What a fleet operation did to one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantOutcome {
    /// These versions were applied (for a revert: reverted; for provisioning: applied to the new
    /// schema).
    Applied(Vec<String>),
    /// Nothing to do.
    UpToDate,
    /// The tenant's transaction failed and was rolled back.
    Failed {
        /// PostgreSQL's SQLSTATE (`42701`: duplicate column), when known.
        sqlstate: Option<String>,
        /// What failed, naming the migration's version when known.
        message: String,
    },
    /// Not attempted: an earlier tenant failed under
    /// [`FailurePolicy::Stop`](crate::FailurePolicy::Stop).
    Skipped,
}

impl TenantOutcome {
    /// `Applied(versions)`, or `UpToDate` when nothing was applied.
    pub(crate) fn from_applied(applied: Vec<String>) -> Self {
        if applied.is_empty() {
            TenantOutcome::UpToDate
        } else {
            TenantOutcome::Applied(applied)
        }
    }
}

/// The result of a fleet operation: one outcome per tenant, in tenant order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Every tenant of the run with what happened to it, sorted by tenant. Skipped tenants
    /// (`TenantOutcome::Skipped`) were not started.
    pub tenants: Vec<(TenantId, TenantOutcome)>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Tenants the selection named but whose life-cycle state kept them out of the run, with
    /// that state (`suspended`, `provisioning`); archived tenants are not listed.
    pub held: Vec<(TenantId, String)>,
    /// Why a run in waves started no further wave (its failure budget spent, or its check
    /// said no); the tenants not started are [`TenantOutcome::Skipped`].
    pub stopped: Option<String>,
    /// The id of the run's record in the library's tables, when it was recorded (see
    /// [`Migrator::runs`](crate::Migrator::runs)).
    pub run: Option<i64>,
}

impl MigrationReport {
    /// Tenants that had migrations applied, with the versions.
    pub fn applied(&self) -> impl Iterator<Item = (&TenantId, &[String])> {
        self.tenants.iter().filter_map(|(t, o)| match o {
            TenantOutcome::Applied(v) => Some((t, v.as_slice())),
            _ => None,
        })
    }

    /// Tenants that were already up to date.
    pub fn up_to_date(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants
            .iter()
            .filter(|(_, o)| matches!(o, TenantOutcome::UpToDate))
            .map(|(t, _)| t)
    }

    /// Tenants that failed, with their SQLSTATE and message.
    pub fn failed(&self) -> impl Iterator<Item = (&TenantId, Option<&str>, &str)> {
        self.tenants.iter().filter_map(|(t, o)| match o {
            TenantOutcome::Failed { sqlstate, message } => {
                Some((t, sqlstate.as_deref(), message.as_str()))
            }
            _ => None,
        })
    }

    /// Tenants skipped after a failure under [`FailurePolicy::Stop`](crate::FailurePolicy::Stop).
    pub fn skipped(&self) -> impl Iterator<Item = &TenantId> {
        self.tenants
            .iter()
            .filter(|(_, o)| matches!(o, TenantOutcome::Skipped))
            .map(|(t, _)| t)
    }

    /// No tenant failed and none was skipped.
    pub fn is_success(&self) -> bool {
        self.tenants
            .iter()
            .all(|(_, o)| matches!(o, TenantOutcome::Applied(_) | TenantOutcome::UpToDate))
    }

    /// The outcome of `tenant`, if it was part of the run.
    pub fn outcome(&self, tenant: &TenantId) -> Option<&TenantOutcome> {
        self.tenants
            .binary_search_by(|(t, _)| t.cmp(tenant))
            .ok()
            .map(|i| &self.tenants[i].1)
    }

    /// `migration failed for 2 of 40 tenants: `a`, `b``: the message of
    /// [`Error::FleetMigration`](crate::Error::FleetMigration).
    pub fn failure_summary(&self) -> String {
        let failed: Vec<&TenantId> = self.failed().map(|(t, _, _)| t).collect();
        let mut s = format!(
            "migration failed for {} of {} tenants: ",
            failed.len(),
            self.tenants.len()
        );
        let names: Vec<String> = failed.iter().take(10).map(|t| format!("`{t}`")).collect();
        s.push_str(&names.join(", "));
        if failed.len() > 10 {
            s.push_str(&format!(" and {} more", failed.len() - 10));
        }
        s
    }
}

/// One tenant's migration state, from the central record (see
/// [`Migrator::status`](crate::Migrator::status)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantMigrations {
    /// The tenant.
    pub tenant: TenantId,
    /// Versions applied according to the central record, sorted.
    pub applied: Vec<String>,
    /// Versions of the tenant set not applied, sorted.
    pub pending: Vec<String>,
    /// How the tenant's own ledger disagrees with the central record; `None` when it agrees or
    /// when it was not checked ([`Migrator::status`](crate::Migrator::status) does not read
    /// ledgers; [`Migrator::status_with_drift`](crate::Migrator::status_with_drift) and
    /// [`Migrator::drift`](crate::Migrator::drift) do).
    pub drift: Option<String>,
    /// The tenant's snapshots, oldest first (see
    /// [`MigrateOptions::snapshot`](crate::MigrateOptions::snapshot)).
    pub snapshots: Vec<TenantSnapshot>,
}

/// One snapshot of a tenant as [`Migrator::status`](crate::Migrator::status) lists it (the
/// whole record, with its tables, is [`Migrator::snapshots`](crate::Migrator::snapshots)').
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TenantSnapshot {
    /// The snapshot's schema (`_snap_<hex>`), which names it.
    pub name: String,
    /// When it was taken.
    pub taken_at: chrono::DateTime<chrono::Utc>,
    /// When it expires; `None`: kept until pruned by age.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Its size on disk, in bytes.
    pub size_bytes: i64,
}

/// Why one tenant migration failed: the source of
/// [`Error::TenantMigration`](crate::Error::TenantMigration).
///
/// ```
/// use diesel_workspace::MigrationFailure;
///
/// let f = MigrationFailure::new(Some("20260101000002".into()), Some("42701".into()), "column \"x\" already exists");
/// assert_eq!(f.to_string(), "migration 20260101000002 failed with sqlstate 42701: column \"x\" already exists");
/// assert_eq!(f.sqlstate(), Some("42701"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFailure {
    version: Option<String>,
    sqlstate: Option<String>,
    message: String,
    committed: Vec<String>,
}

impl MigrationFailure {
    /// A failure of migration `version` with PostgreSQL's SQLSTATE and message.
    pub fn new(
        version: Option<String>,
        sqlstate: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            version,
            sqlstate,
            message: message.into(),
            committed: Vec::new(),
        }
    }

    /// The same failure, after `committed` were applied and committed by the same call (earlier
    /// transactions of the tenant: they stay applied).
    pub fn with_committed(mut self, committed: Vec<String>) -> Self {
        self.committed = committed;
        self
    }

    /// Puts `earlier` (committed by earlier attempts of the same call) before the versions this
    /// failure already names.
    pub(crate) fn prepend_committed(&mut self, mut earlier: Vec<String>) {
        earlier.append(&mut self.committed);
        self.committed = earlier;
    }

    /// Takes the committed versions out of the failure.
    pub(crate) fn take_committed(&mut self) -> Vec<String> {
        std::mem::take(&mut self.committed)
    }

    /// Versions the failing call applied and committed before the failure (they stay applied;
    /// the tenant's ledger and the central record list them). Empty when nothing was kept.
    pub fn committed(&self) -> &[String] {
        &self.committed
    }

    /// The version of the failing migration, when known.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// PostgreSQL's SQLSTATE (`42701` for a duplicate column), when known: it is known for
    /// every error raised by a transactional migration's SQL, not for a lost connection.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// PostgreSQL's message (or the client's, for a lost connection).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "migration {v} failed")?,
            None => f.write_str("migration failed")?,
        }
        if let Some(s) = &self.sqlstate {
            write!(f, " with sqlstate {s}")?;
        }
        write!(f, ": {}", self.message)?;
        if !self.committed.is_empty() {
            write!(
                f,
                " (committed before the failure: {})",
                self.committed.join(", ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for MigrationFailure {}

/// One fleet run as recorded in the library's tables (see
/// [`Migrator::runs`](crate::Migrator::runs)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FleetRun {
    /// The run's id.
    pub id: i64,
    /// `migrate`, or `revert` (a run that reverted another, [`reverts`](Self::reverts)).
    pub kind: String,
    /// The run this one reverted.
    pub reverts: Option<i64>,
    /// The database role that started it.
    pub started_by: String,
    /// When it started.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// When it ended; `None` while it runs, or when it was killed.
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The selection it took, as text.
    pub selection: String,
    /// `succeeded`, `failed` or `stopped` (a wave's failure budget spent); `None` while it
    /// runs, or when it was killed.
    pub outcome: Option<String>,
    /// How many tenants it took.
    pub tenants: i64,
    /// How many of them it changed.
    pub changed: i64,
    /// How many of them failed.
    pub failed: i64,
}

/// One tenant of a recorded fleet run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunTenant {
    /// The tenant.
    pub tenant: String,
    /// Its applied versions when the run started.
    pub before: Vec<String>,
    /// The versions the run applied (or, for a revert, reverted).
    pub versions: Vec<String>,
    /// `applied`, `up_to_date`, `failed` or `not_started`.
    pub outcome: String,
    /// PostgreSQL's SQLSTATE of a failure, when known.
    pub sqlstate: Option<String>,
    /// What failed.
    pub message: Option<String>,
    /// How long its migration took, in milliseconds (`None`: not started).
    pub duration_ms: Option<i64>,
}
