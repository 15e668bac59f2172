//! Tenant life cycle and fleet operations: migrate every tenant, status, revert, drop, rename,
//! list, bulk provisioning and the warm pool of spare schemas.
//!
//! Fleet operations (`migrate_all`, `create_tenants`, `revert_last_all`, `startup`) open their own
//! connections from a database URL: at most [`MigrateOptions::parallel`] worker threads (scoped
//! threads sharing one work queue), one connection each.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use crate::error::{Error, Result};
use crate::migrate::{
    classify_migrate_error, failure_of, in_raw_transaction, lock_sql, no_outer_transaction,
    quote_literal, raise_if_schema_missing, read_ledger, revert_outside_transaction, rollback,
    wrap, MigrateParams, MigrationFailure, Migrator, Provision, DEFAULT_LOCK_TIMEOUT,
    DEFAULT_RETRIES, SPARES_LOCK_KEY, SPARE_PREFIX,
};
use crate::registry::quote_ident;
use crate::tenant::TenantId;

/// What a fleet operation does after a tenant fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Start no further tenant; tenants already in flight on other workers finish. The tenants
    /// never started are reported as [`TenantOutcome::Skipped`]. The default.
    #[default]
    Stop,
    /// Go on with every other tenant.
    Continue,
}

/// A progress callback, called after each tenant a fleet operation worked on.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of the fleet operations ([`Migrator::migrate_all`] and friends).
///
/// ```
/// use std::time::Duration;
/// use diesel_workspace::{FailurePolicy, MigrateOptions};
///
/// let opts = MigrateOptions::default()
///     .parallel(4)
///     .on_failure(FailurePolicy::Continue)
///     .lock_timeout(Duration::from_secs(2))
///     .retries(5)
///     .progress(|p| eprintln!("{}/{} ({} failed)", p.done, p.total, p.failed));
/// assert_eq!(opts.parallel, 4);
/// ```
#[derive(Clone)]
pub struct MigrateOptions {
    /// Worker threads, each with its own connection. Defaults to the number of CPUs (at least 1).
    pub parallel: usize,
    /// What to do after a tenant fails. Defaults to [`FailurePolicy::Stop`].
    pub on_failure: FailurePolicy,
    /// `SET LOCAL lock_timeout` for each tenant's DDL, so a migration waiting behind application
    /// traffic gives up instead of queueing every query behind it. Defaults to 5 s.
    pub lock_timeout: Duration,
    /// How often a tenant whose DDL hit the lock timeout (SQLSTATE 55P03) is retried, with a
    /// short back-off. Defaults to 3.
    pub retries: u32,
    /// Called after each tenant that needed work (not for tenants already up to date). Defaults
    /// to none.
    pub progress: Option<ProgressFn>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            on_failure: FailurePolicy::Stop,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retries: DEFAULT_RETRIES,
            progress: None,
        }
    }
}

impl fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("parallel", &self.parallel)
            .field("on_failure", &self.on_failure)
            .field("lock_timeout", &self.lock_timeout)
            .field("retries", &self.retries)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl MigrateOptions {
    /// Sets [`parallel`](Self::parallel) (0 is taken as 1).
    pub fn parallel(mut self, workers: usize) -> Self {
        self.parallel = workers.max(1);
        self
    }

    /// Sets [`on_failure`](Self::on_failure).
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// Sets [`lock_timeout`](Self::lock_timeout).
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Sets [`retries`](Self::retries).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Sets [`progress`](Self::progress).
    pub fn progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    fn params(&self) -> MigrateParams {
        MigrateParams {
            lock_timeout: self.lock_timeout,
            retries: self.retries,
        }
    }
}

/// Where a fleet operation is, passed to [`MigrateOptions::progress`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress {
    /// Tenants finished so far (of those that needed work).
    pub done: usize,
    /// Tenants that need work in this run.
    pub total: usize,
    /// Tenants failed so far.
    pub failed: usize,
    /// Time since the operation started.
    pub elapsed: Duration,
    /// The tenant just finished.
    pub tenant: TenantId,
    /// What happened to it.
    pub outcome: TenantOutcome,
}

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
    /// Not attempted: an earlier tenant failed under [`FailurePolicy::Stop`].
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

    fn from_error(err: &Error) -> Self {
        match err {
            Error::TenantMigration { source, .. } => {
                match source.downcast_ref::<MigrationFailure>() {
                    Some(f) => TenantOutcome::Failed {
                        sqlstate: f.sqlstate().map(str::to_owned),
                        message: f.to_string(),
                    },
                    None => TenantOutcome::Failed {
                        sqlstate: None,
                        message: error_chain(err),
                    },
                }
            }
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

/// The result of a fleet operation: one outcome per tenant, in tenant order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationReport {
    /// Every tenant of the run with what happened to it, sorted by tenant.
    pub tenants: Vec<(TenantId, TenantOutcome)>,
    /// Wall time of the run.
    pub elapsed: Duration,
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

    /// Tenants skipped after a failure under [`FailurePolicy::Stop`].
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
    /// [`Error::FleetMigration`].
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

/// One tenant's migration state, from the central record (see [`Migrator::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantStatus {
    /// The tenant.
    pub tenant: TenantId,
    /// Versions applied according to the central record, sorted.
    pub applied: Vec<String>,
    /// Versions of the tenant set not applied, sorted.
    pub pending: Vec<String>,
    /// How the tenant's own ledger disagrees with the central record; `None` when it agrees or
    /// when it was not checked ([`Migrator::status`] does not read ledgers;
    /// [`Migrator::status_with_drift`] and [`Migrator::drift`] do).
    pub drift: Option<String>,
}

#[derive(QueryableByName)]
struct NameRow {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    versions: Vec<String>,
    #[diesel(sql_type = Bool)]
    has_ledger: bool,
}

impl Migrator {
    /// Runs the shared migrations, then migrates every tenant: what an application calls at
    /// start-up. Safe when several processes start at once (shared migrations run under one
    /// advisory lock, each tenant under its own).
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{MigrateOptions, Migrator};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).build();
    /// let report = migrator.startup("postgres://localhost/app", &MigrateOptions::default())?;
    /// println!("{} tenants migrated", report.applied().count());
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`run_shared`](Self::run_shared) and [`migrate_all`](Self::migrate_all).
    pub fn startup(&self, database_url: &str, opts: &MigrateOptions) -> Result<MigrationReport> {
        let mut conn = PgConnection::establish(database_url)?;
        self.run_shared(&mut conn)?;
        drop(conn);
        self.migrate_all(database_url, opts)
    }

    /// Brings one tenant up to date: in one transaction, the tenant's advisory lock (first
    /// statement), its ledger read after the lock, the pending migrations' DDL, their ledger rows
    /// and their central record rows. DDL runs under [`MigrateOptions::lock_timeout`]'s default
    /// (5 s) and is retried on lock timeouts.
    ///
    /// Migrations marked `run_in_transaction = false` (Diesel's `metadata.toml`) run outside that
    /// transaction, under a session-level advisory lock, with their ledger row written after they
    /// succeed; make them idempotent (`CREATE INDEX CONCURRENTLY IF NOT EXISTS`).
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId, TenantOutcome};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build();
    /// match migrator.migrate_tenant(conn, &TenantId::new("acme")?)? {
    ///     TenantOutcome::Applied(versions) => println!("applied {versions:?}"),
    ///     _ => println!("up to date"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::SchemaMissing`] when the schema is gone (nothing is created, in `public` or
    ///   elsewhere: migrating never creates a schema);
    /// - [`Error::TenantMigration`] when a migration fails; its source is a
    ///   [`MigrationFailure`] with the version and SQLSTATE. Nothing of the tenant's
    ///   transaction is kept.
    pub fn migrate_tenant(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<TenantOutcome> {
        self.ensure_tenant(conn, tenant)?;
        let applied = self.migrate_schema(conn, tenant, None, &MigrateParams::default())?;
        Ok(TenantOutcome::from_applied(applied))
    }

    /// Brings every registered tenant up to date, [`MigrateOptions::parallel`] tenants at a time,
    /// one transaction each (as [`migrate_tenant`](Self::migrate_tenant)).
    ///
    /// Which tenants need work is decided from one query over the central record: when nothing
    /// is pending, no tenant is touched, no worker connection is opened and no DDL runs. Each
    /// tenant that needs work is then sent as one batch (lock, ledger check, DDL, ledger and
    /// central rows, `COMMIT`); when its ledger disagrees with the plan (another migrator was
    /// faster), the ledger decides.
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Error, FailurePolicy, MigrateOptions, Migrator};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).build();
    /// let opts = MigrateOptions::default().on_failure(FailurePolicy::Continue);
    /// match migrator.migrate_all("postgres://localhost/app", &opts) {
    ///     Ok(report) => println!("{} tenants migrated", report.applied().count()),
    ///     Err(Error::FleetMigration { report, .. }) => {
    ///         for (tenant, sqlstate, message) in report.failed() {
    ///             eprintln!("{tenant}: {message} ({sqlstate:?})");
    ///         }
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::FleetMigration`] with the full report when a tenant failed; [`Error::Connection`]
    /// or [`Error::Query`] when the central record cannot be read.
    pub fn migrate_all(
        &self,
        database_url: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let started = Instant::now();
        let mut conn = PgConnection::establish(database_url)?;
        self.migrate_all_from(&mut conn, database_url, opts, started)
    }

    /// [`migrate_all`](Self::migrate_all), deciding what is pending on `conn` (e.g. a pooled
    /// connection, not inside a transaction) instead of a new one: when nothing is pending, this
    /// is one query and no connection is opened. `conn` is also the first worker's connection;
    /// the other workers open theirs from `database_url`.
    ///
    /// # Errors
    /// As [`migrate_all`](Self::migrate_all).
    pub fn migrate_all_with(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        self.migrate_all_from(conn, database_url, opts, Instant::now())
    }

    fn migrate_all_from(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        opts: &MigrateOptions,
        started: Instant,
    ) -> Result<MigrationReport> {
        let expected = self.tenant_versions()?.to_vec();
        #[derive(QueryableByName)]
        struct PendingRow {
            #[diesel(sql_type = Text)]
            name: String,
            #[diesel(sql_type = Array<Text>)]
            pending: Vec<String>,
        }
        let rows = diesel::sql_query(format!(
            "SELECT r.{col}::pg_catalog.text AS name, \
             ARRAY(SELECT v FROM pg_catalog.unnest($1::pg_catalog.text[]) \
             WITH ORDINALITY AS e (v, n) WHERE NOT EXISTS (SELECT 1 FROM \
             public.workspace_migrations m WHERE m.schema_name = r.{col} AND m.version = e.v) \
             ORDER BY e.n) AS pending \
             FROM {reg} r ORDER BY r.{col}::pg_catalog.text COLLATE \"C\"",
            col = self.registry().quoted_identifier_column(),
            reg = self.registry().qualified_table(),
        ))
        .bind::<Array<Text>, _>(&expected)
        .load::<PendingRow>(conn)?;
        let mut tenants = Vec::with_capacity(rows.len());
        let mut jobs = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let tenant = TenantId::new(&row.name)?;
            self.check_tenant_name(&tenant)?;
            tenants.push(tenant);
            if !row.pending.is_empty() {
                jobs.push((i, row.pending));
            }
        }
        let params = opts.params();
        self.run_fleet(
            Some(conn),
            database_url,
            opts,
            started,
            tenants,
            jobs,
            |conn, t, plan| {
                let applied = self.migrate_schema(conn, t, Some(plan), &params)?;
                Ok(TenantOutcome::from_applied(applied))
            },
        )
    }

    /// Creates many tenants, [`MigrateOptions::parallel`] at a time, each atomically as
    /// [`create_tenant`](Self::create_tenant) (claiming warm spares first). The report's outcome
    /// is `Applied(versions)` for each created tenant.
    ///
    /// # Errors
    /// [`Error::FleetMigration`] with the full report when a tenant could not be created (one
    /// that already exists fails with SQLSTATE `42P06`).
    pub fn create_tenants(
        &self,
        database_url: &str,
        tenants: &[TenantId],
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let started = Instant::now();
        let versions = self.tenant_versions()?.to_vec();
        let mut sorted = tenants.to_vec();
        sorted.sort();
        sorted.dedup();
        let jobs = (0..sorted.len()).map(|i| (i, ())).collect();
        self.run_fleet(
            None,
            database_url,
            opts,
            started,
            sorted,
            jobs,
            |conn, t, ()| match self.create_tenant(conn, t) {
                Ok(()) => Ok(TenantOutcome::Applied(versions.clone())),
                Err(Error::TenantExists(t)) => Ok(TenantOutcome::Failed {
                    sqlstate: Some("42P06".into()),
                    message: Error::TenantExists(t).to_string(),
                }),
                Err(e) => Err(e),
            },
        )
    }

    /// Reverts the last applied tenant migration of every tenant (see
    /// [`revert_last`](Self::revert_last)). The outcome is `Applied(vec![reverted version])`, or
    /// `UpToDate` for a tenant with nothing applied.
    ///
    /// # Errors
    /// [`Error::FleetMigration`] with the full report when a tenant failed.
    pub fn revert_last_all(
        &self,
        database_url: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let started = Instant::now();
        let mut conn = PgConnection::establish(database_url)?;
        let tenants = self.list_tenants(&mut conn)?;
        let jobs = (0..tenants.len()).map(|i| (i, ())).collect();
        self.run_fleet(
            Some(&mut conn),
            database_url,
            opts,
            started,
            tenants,
            jobs,
            |conn, t, ()| {
                Ok(match self.revert_last(conn, t)? {
                    Some(v) => TenantOutcome::Applied(vec![v]),
                    None => TenantOutcome::UpToDate,
                })
            },
        )
    }

    /// Runs `op` for each job on up to `opts.parallel` scoped worker threads with a connection
    /// each (the first worker reuses `first`, when given); tenants without a job are up to date.
    #[allow(clippy::too_many_arguments)]
    fn run_fleet<J, F>(
        &self,
        first: Option<&mut PgConnection>,
        database_url: &str,
        opts: &MigrateOptions,
        started: Instant,
        tenants: Vec<TenantId>,
        jobs: Vec<(usize, J)>,
        op: F,
    ) -> Result<MigrationReport>
    where
        J: Sync,
        F: Fn(&mut PgConnection, &TenantId, &J) -> Result<TenantOutcome> + Sync,
    {
        let mut outcomes: Vec<TenantOutcome> = vec![TenantOutcome::UpToDate; tenants.len()];
        for (i, _) in &jobs {
            outcomes[*i] = TenantOutcome::Skipped;
        }
        let outcomes = Mutex::new(outcomes);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let counters = Mutex::new((0usize, 0usize));
        let workers = opts.parallel.max(1).min(jobs.len());
        let mut first = first;
        std::thread::scope(|scope| {
            for _ in 0..workers {
                let mut conn = match first.take() {
                    Some(c) => WorkerConn::Borrowed(c),
                    None => WorkerConn::None,
                };
                let (stop, next, jobs, tenants, outcomes, counters, op) =
                    (&stop, &next, &jobs, &tenants, &outcomes, &counters, &op);
                scope.spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        let Some((i, job)) = jobs.get(k) else { break };
                        let tenant = &tenants[*i];
                        let outcome = match conn.get(database_url) {
                            Ok(c) => match op(c, tenant, job) {
                                Ok(o) => o,
                                Err(e) => TenantOutcome::from_error(&e),
                            },
                            Err(e) => TenantOutcome::from_error(&e),
                        };
                        let failed = matches!(outcome, TenantOutcome::Failed { .. });
                        if failed {
                            // A killed backend or a lost connection: reconnect for the next.
                            if let Ok(c) = conn.get(database_url) {
                                if c.batch_execute("SELECT 1").is_err() {
                                    conn = WorkerConn::None;
                                }
                            }
                            if opts.on_failure == FailurePolicy::Stop {
                                stop.store(true, Ordering::SeqCst);
                            }
                        }
                        let (done, nfailed) = {
                            let mut c = counters.lock().unwrap_or_else(|e| e.into_inner());
                            c.0 += 1;
                            c.1 += usize::from(failed);
                            *c
                        };
                        if let Some(progress) = &opts.progress {
                            progress(&Progress {
                                done,
                                total: jobs.len(),
                                failed: nfailed,
                                elapsed: started.elapsed(),
                                tenant: tenant.clone(),
                                outcome: outcome.clone(),
                            });
                        }
                        outcomes.lock().unwrap_or_else(|e| e.into_inner())[*i] = outcome;
                    }
                });
            }
        });
        let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
        let report = MigrationReport {
            tenants: tenants.into_iter().zip(outcomes).collect(),
            elapsed: started.elapsed(),
        };
        if report.is_success() {
            Ok(report)
        } else {
            Err(Error::FleetMigration { report })
        }
    }

    /// Every registered tenant's applied and pending versions, from one query over the registry
    /// and the central record (no tenant schema is read; `drift` is `None`). Sorted by tenant.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build();
    /// for s in migrator.status(conn)? {
    ///     println!("{}: {} applied, {} pending", s.tenant, s.applied.len(), s.pending.len());
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails; [`Error::InvalidTenantName`] for a registry row
    /// written by hand with an invalid name.
    pub fn status(&self, conn: &mut PgConnection) -> Result<Vec<TenantStatus>> {
        Ok(self
            .status_rows(conn)?
            .into_iter()
            .map(|(status, _)| status)
            .collect())
    }

    fn status_rows(&self, conn: &mut PgConnection) -> Result<Vec<(TenantStatus, bool)>> {
        let expected = self.tenant_versions()?;
        let rows = diesel::sql_query(format!(
            "SELECT r.{col}::pg_catalog.text AS name, \
             ARRAY(SELECT m.version::pg_catalog.text FROM public.workspace_migrations m \
             WHERE m.schema_name = r.{col} ORDER BY m.version::pg_catalog.text COLLATE \"C\") AS versions, \
             pg_catalog.to_regclass(pg_catalog.quote_ident(r.{col}) || \
             '.__diesel_schema_migrations') IS NOT NULL AS has_ledger \
             FROM {reg} r ORDER BY r.{col}::pg_catalog.text COLLATE \"C\"",
            col = self.registry().quoted_identifier_column(),
            reg = self.registry().qualified_table(),
        ))
        .load::<StatusRow>(conn)?;
        rows.into_iter()
            .map(|r| {
                let pending = expected
                    .iter()
                    .filter(|v| !r.versions.contains(v))
                    .cloned()
                    .collect();
                Ok((
                    TenantStatus {
                        tenant: TenantId::new(&r.name)?,
                        applied: r.versions,
                        pending,
                        drift: None,
                    },
                    r.has_ledger,
                ))
            })
            .collect()
    }

    /// [`status`](Self::status) with `drift` filled in for every tenant: all ledgers are read in
    /// one more query (a `UNION ALL` over the tenants whose ledger exists).
    ///
    /// # Errors
    /// As [`status`](Self::status).
    pub fn status_with_drift(&self, conn: &mut PgConnection) -> Result<Vec<TenantStatus>> {
        let rows = self.status_rows(conn)?;
        let with_ledger: Vec<&TenantId> = rows
            .iter()
            .filter(|(_, has)| *has)
            .map(|(s, _)| &s.tenant)
            .collect();
        let mut ledgers: std::collections::HashMap<String, Vec<String>> =
            std::collections::HashMap::new();
        for chunk in with_ledger.chunks(500) {
            let sql = chunk
                .iter()
                .map(|t| {
                    format!(
                        "SELECT {}::pg_catalog.text AS name, version::pg_catalog.text AS version \
                         FROM {}.__diesel_schema_migrations",
                        quote_literal(t.as_str()),
                        t.quoted()
                    )
                })
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            #[derive(QueryableByName)]
            struct LedgerRow {
                #[diesel(sql_type = Text)]
                name: String,
                #[diesel(sql_type = Text)]
                version: String,
            }
            for row in diesel::sql_query(sql).load::<LedgerRow>(conn)? {
                ledgers.entry(row.name).or_default().push(row.version);
            }
        }
        rows.into_iter()
            .map(|(mut status, has_ledger)| {
                status.drift = if has_ledger {
                    let ledger = ledgers.remove(status.tenant.as_str()).unwrap_or_default();
                    compare(&ledger, &status.applied)
                } else {
                    Some(missing_ledger_drift(conn, &status.tenant)?)
                };
                Ok(status)
            })
            .collect()
    }

    /// Checks one tenant's own ledger against the central record: `None` when they agree,
    /// otherwise what differs (`ledger has 2026… missing from the central record`, `the schema is
    /// missing`, …).
    ///
    /// # Errors
    /// [`Error::Query`] when a query fails.
    pub fn drift(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<Option<String>> {
        let central: Vec<String> = diesel::sql_query(
            "SELECT version::pg_catalog.text AS name FROM public.workspace_migrations \
             WHERE schema_name = $1 ORDER BY version::pg_catalog.text COLLATE \"C\"",
        )
        .bind::<Text, _>(tenant.as_str())
        .load::<NameRow>(conn)?
        .into_iter()
        .map(|r| r.name)
        .collect();
        let has_ledger = diesel::sql_query(
            "SELECT $1 AS name WHERE pg_catalog.to_regclass(pg_catalog.quote_ident($1) || \
             '.__diesel_schema_migrations') IS NOT NULL",
        )
        .bind::<Text, _>(tenant.as_str())
        .load::<NameRow>(conn)?;
        if has_ledger.is_empty() {
            return missing_ledger_drift(conn, tenant).map(Some);
        }
        let ledger = read_ledger(conn, tenant)?;
        Ok(compare(&ledger, &central))
    }

    /// Reverts `tenant`'s last applied migration with its `down.sql`, deleting its ledger row and
    /// its central record row in the same transaction (the tenant's lock first, the ledger read
    /// after it). Returns the reverted version, or `None` when nothing is applied.
    ///
    /// # Errors
    /// - [`Error::SchemaMissing`] when the schema is gone;
    /// - [`Error::TenantMigration`] when the migration has no `down.sql`, is not part of the
    ///   tenant set, or its `down.sql` fails (rolled back).
    pub fn revert_last(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Option<String>> {
        no_outer_transaction(conn)?;
        self.ensure_tenant(conn, tenant)?;
        let set = self.compiled()?;
        let q = tenant.quoted();
        let begin = format!(
            "BEGIN; {}; SET LOCAL search_path TO {q}; DO $wd_check$ BEGIN {} END $wd_check$",
            lock_sql(tenant),
            raise_if_schema_missing(tenant)
        );
        let fail = |version: &str, message: &str| Error::TenantMigration {
            tenant: tenant.clone(),
            source: Box::new(MigrationFailure::new(
                Some(version.to_owned()),
                None,
                message,
            )),
        };
        if let Err(e) = conn.batch_execute(&begin) {
            rollback(conn);
            return Err(classify_migrate_error(tenant, e));
        }
        let ledger = match read_ledger(conn, tenant) {
            Ok(l) => l,
            Err(e) => {
                rollback(conn);
                return Err(e.into());
            }
        };
        let Some(last) = ledger.last() else {
            rollback(conn);
            return Ok(None);
        };
        let Some(m) = set.migrations.iter().find(|m| &m.version == last) else {
            rollback(conn);
            return Err(fail(last, "the migration is not part of the tenant set"));
        };
        let Some(down) = &m.down else {
            rollback(conn);
            return Err(fail(last, "the migration has no down.sql"));
        };
        if !m.in_tx {
            // `run_in_transaction = false`: its own path, outside this transaction.
            rollback(conn);
            return Ok(revert_outside_transaction(conn, tenant, last, down)?.then(|| last.clone()));
        }
        let v = quote_literal(last);
        let sql = format!(
            "{}; DELETE FROM {q}.__diesel_schema_migrations WHERE version = {v}; \
             DELETE FROM public.workspace_migrations WHERE schema_name = {} AND version = {v}; \
             COMMIT",
            wrap(last, down),
            quote_literal(tenant.as_str())
        );
        if let Err(e) = conn.batch_execute(&sql) {
            rollback(conn);
            return Err(classify_migrate_error(tenant, e));
        }
        Ok(Some(last.clone()))
    }

    /// Drops a tenant: its registry row, its central record rows and `DROP SCHEMA … CASCADE`, in
    /// one transaction under the tenant's lock. Its data is gone for good.
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when the tenant is not registered (nothing is dropped).
    pub fn drop_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        self.check_tenant_name(tenant)?;
        conn.transaction::<_, Error, _>(|conn| {
            conn.batch_execute(&lock_sql(tenant))?;
            let deleted = diesel::sql_query(format!(
                "DELETE FROM {} WHERE {} = $1",
                self.registry().qualified_table(),
                self.registry().quoted_identifier_column()
            ))
            .bind::<Text, _>(tenant.as_str())
            .execute(conn)?;
            if deleted == 0 {
                return Err(Error::TenantNotFound(tenant.clone()));
            }
            conn.batch_execute(&format!(
                "DELETE FROM public.workspace_migrations WHERE schema_name = {}; \
                 DROP SCHEMA IF EXISTS {} CASCADE",
                quote_literal(tenant.as_str()),
                tenant.quoted()
            ))?;
            Ok(())
        })
    }

    /// Renames a tenant: `ALTER SCHEMA … RENAME`, its registry row and its central record rows,
    /// in one transaction under both tenants' locks. Its ledger moves with the schema.
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when `from` is not registered;
    /// - [`Error::TenantExists`] when `to` is registered or its schema exists;
    /// - [`Error::SchemaMissing`] when `from`'s schema is gone.
    pub fn rename_tenant(
        &self,
        conn: &mut PgConnection,
        from: &TenantId,
        to: &TenantId,
    ) -> Result<()> {
        self.check_tenant_name(from)?;
        self.check_tenant_name(to)?;
        conn.transaction::<_, Error, _>(|conn| {
            let (a, b) = if from < to { (from, to) } else { (to, from) };
            conn.batch_execute(&format!("{}; {}", lock_sql(a), lock_sql(b)))?;
            #[derive(QueryableByName)]
            struct Existing {
                #[diesel(sql_type = Bool)]
                from_row: bool,
                #[diesel(sql_type = Bool)]
                to_row: bool,
                #[diesel(sql_type = Bool)]
                from_schema: bool,
                #[diesel(sql_type = Bool)]
                to_schema: bool,
            }
            let e = diesel::sql_query(format!(
                "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col} = $1) AS from_row, \
                 EXISTS (SELECT 1 FROM {reg} WHERE {col} = $2) AS to_row, \
                 pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL AS from_schema, \
                 pg_catalog.to_regnamespace(pg_catalog.quote_ident($2)) IS NOT NULL AS to_schema",
                reg = self.registry().qualified_table(),
                col = self.registry().quoted_identifier_column()
            ))
            .bind::<Text, _>(from.as_str())
            .bind::<Text, _>(to.as_str())
            .get_result::<Existing>(conn)?;
            if !e.from_row {
                return Err(Error::TenantNotFound(from.clone()));
            }
            if e.to_row || e.to_schema {
                return Err(Error::TenantExists(to.clone()));
            }
            if !e.from_schema {
                return Err(Error::SchemaMissing(from.clone()));
            }
            conn.batch_execute(&format!(
                "ALTER SCHEMA {qf} RENAME TO {qt}; \
                 UPDATE {reg} SET {col} = {lt} WHERE {col} = {lf}; \
                 UPDATE public.workspace_migrations SET schema_name = {lt} WHERE schema_name = {lf}",
                qf = from.quoted(),
                qt = to.quoted(),
                reg = self.registry().qualified_table(),
                col = self.registry().quoted_identifier_column(),
                lf = quote_literal(from.as_str()),
                lt = quote_literal(to.as_str()),
            ))?;
            Ok(())
        })
    }

    /// Refuses a name that cannot be a tenant (the registry's schema, a spare) and a tenant that is
    /// not in the registry, so that single-tenant calls never run tenant DDL in another schema.
    fn ensure_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        self.check_tenant_name(tenant)?;
        #[derive(QueryableByName)]
        struct Registered {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            registered: bool,
        }
        let row: Registered = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col}::pg_catalog.text = $1) AS registered",
            col = self.registry().quoted_identifier_column(),
            reg = self.registry().qualified_table(),
        ))
        .bind::<Text, _>(tenant.as_str())
        .get_result(conn)?;
        if row.registered {
            Ok(())
        } else {
            Err(Error::TenantNotFound(tenant.clone()))
        }
    }

    /// Every registered tenant, sorted, from the registry (spares are not tenants and are not
    /// listed).
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails; [`Error::InvalidTenantName`] for a registry row
    /// written by hand with an invalid name.
    pub fn list_tenants(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        diesel::sql_query(format!(
            "SELECT {col}::pg_catalog.text AS name FROM {reg} ORDER BY {col}::pg_catalog.text COLLATE \"C\"",
            col = self.registry().quoted_identifier_column(),
            reg = self.registry().qualified_table(),
        ))
        .load::<NameRow>(conn)?
        .into_iter()
        .map(|r| TenantId::new(r.name))
        .collect()
    }

    /// Tops the warm pool up to `target` spare schemas and returns how many it created.
    ///
    /// A spare is a schema named `_spare_<hex>` with every tenant migration applied, listed in
    /// `public.workspace_spares` and recorded in the central record under its own name. Spares
    /// are not tenants: they are not listed and [`migrate_all`](Self::migrate_all) does not
    /// migrate them. [`create_tenant`](Self::create_tenant) claims only a spare that is current;
    /// this call first brings stale spares (made before new tenant migrations were added) up to
    /// date, then creates the missing ones.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build();
    /// migrator.fill_spares(conn, 10)?; // e.g. from a periodic job
    /// migrator.create_tenant(conn, &TenantId::new("acme")?)?; // a rename, no table DDL
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantMigration`] when a spare's migrations fail; [`Error::Query`].
    pub fn fill_spares(&self, conn: &mut PgConnection, target: usize) -> Result<usize> {
        no_outer_transaction(conn)?;
        let expected = self.tenant_versions()?.to_vec();
        // One filler at a time (a session lock: the work spans several transactions), so two
        // concurrent calls do not both top up from the same count.
        conn.batch_execute(&format!(
            "SELECT pg_catalog.pg_advisory_lock({SPARES_LOCK_KEY}, 0)"
        ))?;
        let result = self.fill_spares_locked(conn, &expected, target);
        let unlocked = conn.batch_execute(&format!(
            "SELECT pg_catalog.pg_advisory_unlock({SPARES_LOCK_KEY}, 0)"
        ));
        let created = result?;
        unlocked?;
        Ok(created)
    }

    /// [`fill_spares`](Self::fill_spares) under the warm pool's lock.
    fn fill_spares_locked(
        &self,
        conn: &mut PgConnection,
        expected: &[String],
        target: usize,
    ) -> Result<usize> {
        let mut spares = self.spares(conn)?.len();
        #[derive(QueryableByName)]
        struct Stale {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let stale = diesel::sql_query(
            "SELECT s.schema_name AS name FROM public.workspace_spares s \
             WHERE (SELECT pg_catalog.count(*) FROM public.workspace_migrations m \
             WHERE m.schema_name = s.schema_name AND m.version = ANY ($1)) < $2",
        )
        .bind::<Array<Text>, _>(expected)
        .bind::<diesel::sql_types::BigInt, _>(expected.len() as i64)
        .load::<Stale>(conn)?;
        for s in stale {
            let spare = TenantId::new(&s.name)?;
            match self.migrate_schema(conn, &spare, None, &MigrateParams::default()) {
                Ok(_) => {}
                // Claimed (renamed to a tenant) or dropped since the query: not a spare any more.
                Err(Error::SchemaMissing(_)) => spares = spares.saturating_sub(1),
                Err(e) => return Err(e),
            }
        }
        let mut created = 0;
        while spares + created < target {
            let name = TenantId::new(spare_name())?;
            self.provision(conn, &name, Provision::Spare)?;
            created += 1;
        }
        Ok(created)
    }

    /// The spare schemas of the warm pool, oldest first.
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn spares(&self, conn: &mut PgConnection) -> Result<Vec<TenantId>> {
        diesel::sql_query(
            "SELECT schema_name AS name FROM public.workspace_spares ORDER BY created_at, 1",
        )
        .load::<NameRow>(conn)?
        .into_iter()
        .map(|r| TenantId::new(r.name))
        .collect()
    }

    /// Drops every spare schema of the warm pool (e.g. before changing the tenant set in a way
    /// that cannot be migrated); returns how many were dropped.
    ///
    /// # Errors
    /// [`Error::Query`] when a statement fails.
    pub fn drain_spares(&self, conn: &mut PgConnection) -> Result<usize> {
        no_outer_transaction(conn)?;
        let mut n = 0;
        for spare in self.spares(conn)? {
            let dropped = in_raw_transaction(conn, |conn| {
                conn.batch_execute("BEGIN")?;
                let rows = diesel::sql_query(
                    "DELETE FROM public.workspace_spares WHERE schema_name IN \
                     (SELECT schema_name FROM public.workspace_spares WHERE schema_name = $1 \
                     FOR UPDATE SKIP LOCKED)",
                )
                .bind::<Text, _>(spare.as_str())
                .execute(conn)?;
                if rows > 0 {
                    conn.batch_execute(&format!(
                        "DELETE FROM public.workspace_migrations WHERE schema_name = {}; \
                         DROP SCHEMA IF EXISTS {} CASCADE",
                        quote_literal(spare.as_str()),
                        quote_ident(spare.as_str())
                    ))?;
                }
                conn.batch_execute("COMMIT")?;
                Ok(rows)
            })?;
            n += dropped;
        }
        Ok(n)
    }
}

/// A fleet worker's connection: the caller's (first worker), its own, or none yet.
enum WorkerConn<'a> {
    Borrowed(&'a mut PgConnection),
    Owned(PgConnection),
    None,
}

impl WorkerConn<'_> {
    /// The connection, opened from `url` when there is none.
    fn get(&mut self, url: &str) -> Result<&mut PgConnection> {
        if let WorkerConn::None = self {
            *self = WorkerConn::Owned(PgConnection::establish(url)?);
        }
        match self {
            WorkerConn::Borrowed(c) => Ok(c),
            WorkerConn::Owned(c) => Ok(c),
            WorkerConn::None => unreachable!("just opened"),
        }
    }
}

/// A fresh spare name: `_spare_` and a hex time stamp with a process-wide counter.
fn spare_name() -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{SPARE_PREFIX}{nanos:x}_{:x}_{n:x}", std::process::id())
}

/// Describes how the ledger differs from the central record, if it does.
fn compare(ledger: &[String], central: &[String]) -> Option<String> {
    let ledger: BTreeSet<&String> = ledger.iter().collect();
    let central: BTreeSet<&String> = central.iter().collect();
    let only_ledger: Vec<&str> = ledger.difference(&central).map(|s| s.as_str()).collect();
    let only_central: Vec<&str> = central.difference(&ledger).map(|s| s.as_str()).collect();
    let mut parts = Vec::new();
    if !only_ledger.is_empty() {
        parts.push(format!(
            "the ledger has {} missing from the central record",
            only_ledger.join(", ")
        ));
    }
    if !only_central.is_empty() {
        parts.push(format!(
            "the central record has {} missing from the ledger",
            only_central.join(", ")
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The drift of a tenant without a ledger: its schema has none, or the schema is missing.
fn missing_ledger_drift(conn: &mut PgConnection, tenant: &TenantId) -> Result<String> {
    let schema_exists = !diesel::sql_query(
        "SELECT $1 AS name WHERE pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL",
    )
    .bind::<Text, _>(tenant.as_str())
    .load::<NameRow>(conn)?
    .is_empty();
    Ok(if schema_exists {
        "the schema has no ledger (__diesel_schema_migrations)".into()
    } else {
        "the schema is missing".into()
    })
}
