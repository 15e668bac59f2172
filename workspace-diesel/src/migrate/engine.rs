//! One tenant, both directions: applying the pending migrations and reverting the last one, on
//! the fast path (one unwrapped batch planned from the central record) or the checked path (the
//! ledger read after the lock decides; each migration wrapped so a failure names itself), the
//! non-transactional path (`run_in_transaction = false`), and the retry loop on lock timeouts.
//!
//! Apply and revert build the same tenant transaction plan ([`Plan`]) and open it the same way
//! ([`tx::begin`]): `BEGIN` (the library's own `search_path`, `pg_catalog, pg_temp`), the
//! tenant's advisory lock first, the caller's `lock_timeout`, the schema check (for a spare, its
//! row lock too), then the ledger read after the lock; [`tx::send`] sends the rest. Nothing here
//! asks which engine runs it.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::connection::{no_outer_transaction, rollback};
use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::failure::{
    classify_migrate_error, db_message, is_lock_timeout, tenant_failure, unretryable,
    with_committed, LOCK_NOT_AVAILABLE,
};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::snapshot::{snapshot_read, snapshot_unread};
use crate::migrate::split::Step;
use crate::migrate::tx::{self, read_ledger, Check, Failed, Opening, Plan};
use crate::options::{MigrateOptions, MigrateParams};
use crate::report::{MigrationFailure, TenantOutcome};
use crate::sql::{
    own, own_batch, quote_literal, tenant_session_lock, work_path, CENTRAL_RECORD, LEDGER,
};
use crate::tenant::TenantId;

impl Migrator {
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
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// match migrator.migrate_tenant(conn, &TenantId::new("acme")?)? {
    ///     TenantOutcome::Applied(versions) => println!("applied {versions:?}"),
    ///     _ => println!("up to date"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`MigrateOptions::lock_timeout`]: crate::MigrateOptions::lock_timeout
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when the tenant is not registered;
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
        let span = crate::trace::op_span!("tenant.migrate", tenant = %tenant);
        let _span = self.enter(conn, span, Op::Tenant(tenant))?;
        #[cfg(feature = "metrics")]
        let began = std::time::Instant::now();
        let applied = self.migrate_schema(conn, tenant, None, &MigrateParams::default());
        let applied = self.or_gone(conn, tenant, applied);
        #[cfg(feature = "metrics")]
        crate::metrics::tenant_migration(applied.is_ok(), began.elapsed());
        crate::trace::finish_with(applied, |a| Some(a.len())).map(TenantOutcome::from_applied)
    }

    /// [`migrate_tenant`](Self::migrate_tenant) under `opts`' lock timeout and retries, and
    /// its [`snapshot`](MigrateOptions::snapshot) when set.
    ///
    /// # Errors
    /// As [`migrate_tenant`](Self::migrate_tenant).
    pub fn migrate_tenant_with(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        opts: &MigrateOptions,
    ) -> Result<TenantOutcome> {
        let span = crate::trace::op_span!("tenant.migrate", tenant = %tenant);
        let _span = self.enter(conn, span, Op::Tenant(tenant))?;
        let applied = self.migrate_schema(conn, tenant, None, &opts.params());
        let applied = self.or_gone(conn, tenant, applied);
        crate::trace::finish_with(applied, |a| Some(a.len())).map(TenantOutcome::from_applied)
    }

    /// Reverts `tenant`'s last applied migration with its `down.sql`, deleting its ledger row and
    /// its central record row in the same transaction (the tenant's lock first, the ledger read
    /// after it, DDL under the default lock timeout, retried on lock timeouts, as
    /// [`migrate_tenant`](Self::migrate_tenant)). Returns the reverted version, or `None` when
    /// nothing is applied.
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when the tenant is not registered;
    /// - [`Error::SchemaMissing`] when the schema is gone;
    /// - [`Error::TenantMigration`] when the migration has no `down.sql`, is not part of the
    ///   tenant set, or its `down.sql` fails (rolled back).
    pub fn revert_last(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Option<String>> {
        self.revert_tenant(conn, tenant, None, &MigrateParams::default())
    }

    /// [`revert_last`](Self::revert_last) under `opts`' lock timeout and retries.
    ///
    /// # Errors
    /// As [`revert_last`](Self::revert_last).
    pub fn revert_last_with(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        opts: &MigrateOptions,
    ) -> Result<Option<String>> {
        self.revert_tenant(conn, tenant, None, &opts.params())
    }

    /// Reverts `version` of `tenant` when it is the tenant's last applied migration, under
    /// `opts`' lock timeout and retries (as [`revert_last`](Self::revert_last) otherwise).
    /// Returns `Some(version)` when it reverted it and `None` when `version` is not applied: a
    /// rerun after an interrupted call (a killed process whose transaction committed anyway) is
    /// a no-op, never a second revert.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{MigrateOptions, Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let acme = TenantId::new("acme")?;
    /// let opts = MigrateOptions::default();
    /// migrator.revert_version(conn, &acme, "20260101000001", &opts)?;
    /// // Safe to run again: nothing happens once the version is gone.
    /// assert_eq!(migrator.revert_version(conn, &acme, "20260101000001", &opts)?, None);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As [`revert_last`](Self::revert_last), and [`Error::TenantMigration`] when `version` is
    /// applied but is not the last applied migration (nothing is reverted).
    pub fn revert_version(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        version: &str,
        opts: &MigrateOptions,
    ) -> Result<Option<String>> {
        self.revert_tenant(conn, tenant, Some(version), &opts.params())
    }

    /// [`revert_last`](Self::revert_last) (`expected` = `None`) or
    /// [`revert_version`](Self::revert_version) with the caller's options.
    pub(crate) fn revert_tenant(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        expected: Option<&str>,
        params: &MigrateParams,
    ) -> Result<Option<String>> {
        let span = crate::trace::op_span!("tenant.revert", tenant = %tenant);
        let _span = self.enter(conn, span, Op::Tenant(tenant))?;
        #[cfg(feature = "metrics")]
        let began = std::time::Instant::now();
        let reverted = self.with_dialect(conn, |conn, dialect| {
            with_retries(tenant, params, || {
                self.revert_once(conn, dialect, tenant, expected, params)
            })
        });
        let reverted = self.or_gone(conn, tenant, reverted);
        #[cfg(feature = "metrics")]
        crate::metrics::tenant_migration(reverted.is_ok(), began.elapsed());
        crate::trace::finish_with(reverted, |r| Some(r.len())).map(|mut r| r.pop())
    }

    /// Applies the pending tenant migrations to `schema` and returns their versions.
    ///
    /// `plan` is what the central record says is pending: with it (and only transactional
    /// migrations in it), everything is one transaction whose ledger rows come first (a version
    /// already recorded fails on the ledger's primary key, after the lock). When that fails, or
    /// without a plan, the checked path runs: the ledger is read after the lock and decides, and
    /// each migration is wrapped so a failure reports its version and SQLSTATE. Lock timeouts
    /// (SQLSTATE 55P03) are retried `params.retries` times.
    pub(crate) fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        plan: Option<&[String]>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        let _span = tracing::debug_span!("schema.apply", schema = %schema).entered();
        no_outer_transaction(conn)?;
        self.with_dialect(conn, |conn, dialect| {
            with_retries(schema, params, || {
                self.apply_once(conn, dialect, schema, plan, params)
            })
        })
    }

    fn apply_once(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        schema: &TenantId,
        plan: Option<&[String]>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        let set = &*self.set;
        if let (Some(plan), Some(snap)) = (plan, snapshot_unread(dialect, schema, params)) {
            let planned: Option<Vec<&Compiled>> = plan
                .iter()
                .map(|v| set.migrations.iter().find(|m| &m.version == v && m.in_tx))
                .collect();
            if let Some(planned) = planned.filter(|p| !p.is_empty()) {
                // The fast path: the same statements as the plain DDL, plus the lock and the two
                // record rows, unwrapped. A failure (a version already in the ledger, a missing
                // schema or ledger, a failing migration) rolls back and falls through to the
                // checked path, which reads the ledger after the lock and reports the failing
                // version and SQLSTATE. A lost connection is reported as it is, and a lock
                // timeout goes to the caller's retries without waiting for it a second time.
                let opening = Opening {
                    lock_timeout: Some(params.lock_timeout),
                    ..self.opening()
                };
                let mut fast = Plan::new(schema, opening).apply(&planned, false);
                fast.before_steps = snap;
                match tx::send(conn, dialect, &fast, false) {
                    Ok(()) => return Ok(plan.to_vec()),
                    Err(Failed::Batch(e)) => {
                        if unretryable(&e) {
                            return Err(classify_migrate_error(schema, e));
                        }
                        if is_lock_timeout(&e) {
                            return Err(tenant_failure(
                                schema,
                                MigrationFailure::new(
                                    None,
                                    Some(LOCK_NOT_AVAILABLE.to_owned()),
                                    db_message(&e),
                                ),
                            ));
                        }
                    }
                    Err(Failed::Classified(e)) => {
                        let lock_timeout = matches!(&e, Error::TenantMigration { source, .. }
                            if source.sqlstate() == Some(LOCK_NOT_AVAILABLE));
                        if lock_timeout || !matches!(e, Error::TenantMigration { .. }) {
                            return Err(e);
                        }
                    }
                }
            }
        }
        let mut applied = Vec::new();
        let mut snapshot = params.snapshot.is_some();
        match self.apply_checked(conn, dialect, schema, params, &mut snapshot, &mut applied) {
            Ok(()) => Ok(applied),
            Err(e) => Err(with_committed(schema, e, applied)),
        }
    }

    /// The checked path of [`migrate_schema`](Self::migrate_schema): the ledger read after the
    /// lock decides; the pending transactional migrations go in one transaction, wrapped (or
    /// statement by statement), the next non-transactional one on its own path, and so on.
    /// Pushes each version it commits to `applied` (also when a later step fails). While
    /// `snapshot`, the first transaction with something pending takes the snapshot.
    fn apply_checked(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        schema: &TenantId,
        params: &MigrateParams,
        snapshot: &mut bool,
        applied: &mut Vec<String>,
    ) -> Result<()> {
        let opening = Opening {
            lock_timeout: Some(params.lock_timeout),
            check: Some(Check {
                spare: params.spare,
                create_ledger: true,
            }),
            ..self.opening()
        };
        loop {
            let ledger = tx::begin(conn, dialect, &Plan::new(schema, opening))?;
            let pending: Vec<&Compiled> = self
                .set
                .migrations
                .iter()
                .filter(|m| !ledger.contains(&m.version))
                .collect();
            let batch: Vec<&Compiled> = pending.iter().copied().take_while(|m| m.in_tx).collect();
            let mut plan = Plan::new(schema, opening).apply(&batch, true);
            if *snapshot && !pending.is_empty() {
                // Committed with the first batch, or alone before a migration that runs
                // outside a transaction.
                match snapshot_read(conn, dialect, schema, params) {
                    Ok(commands) => plan.before_steps = commands,
                    Err(e) => {
                        rollback(conn);
                        return Err(e);
                    }
                }
                *snapshot = false;
            }
            tx::send(conn, dialect, &plan, true)
                .map_err(|f| f.classify(|e| classify_migrate_error(schema, e)))?;
            applied.extend(batch.iter().map(|m| m.version.clone()));
            match pending.get(batch.len()) {
                None => return Ok(()),
                Some(m) => {
                    if apply_outside(conn, dialect, schema, m)? {
                        applied.push(m.version.clone());
                    }
                }
            }
        }
    }

    /// One attempt at reverting the last applied migration of `schema`.
    fn revert_once(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        schema: &TenantId,
        expected: Option<&str>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        let opening = Opening {
            lock_timeout: Some(params.lock_timeout),
            check: Some(Check {
                spare: params.spare,
                create_ledger: false,
            }),
            ..self.opening()
        };
        let mut plan = Plan::new(schema, opening);
        let ledger = tx::begin(conn, dialect, &plan)?;
        let fail = |version: &str, message: &str| {
            tenant_failure(
                schema,
                MigrationFailure::new(Some(version.to_owned()), None, message),
            )
        };
        if let Some(expected) = expected {
            // Decided after the lock, from the ledger: not applied is done already.
            if !ledger.iter().any(|v| v == expected) {
                rollback(conn);
                return Ok(Vec::new());
            }
            if ledger.last().map(String::as_str) != Some(expected) {
                rollback(conn);
                let last = ledger.last().map(String::as_str).unwrap_or_default();
                return Err(fail(
                    expected,
                    &format!("not the last applied migration (the last is {last})"),
                ));
            }
        }
        let Some(last) = ledger.last() else {
            rollback(conn);
            return Ok(Vec::new());
        };
        let Some(m) = self.set.migrations.iter().find(|m| &m.version == last) else {
            rollback(conn);
            return Err(fail(last, "the migration is not part of the tenant set"));
        };
        let Some(down) = &m.down else {
            rollback(conn);
            return Err(fail(last, "the migration has no down.sql"));
        };
        let v = quote_literal(last);
        let forget = format!(
            "DELETE FROM {}.{LEDGER} WHERE version = {v}; \
             DELETE FROM {CENTRAL_RECORD} WHERE schema_name = {} AND version = {v}",
            schema.quoted(),
            quote_literal(schema.as_str())
        );
        if !m.in_tx {
            // `run_in_transaction = false`: its own path, outside this transaction.
            rollback(conn);
            let still_last = |ledger: &[String]| ledger.last() == Some(last);
            let ran = outside_transaction(conn, dialect, schema, last, down, still_last, &forget)?;
            return Ok(if ran { vec![last.clone()] } else { Vec::new() });
        }
        plan.steps = vec![Step::new(last, down)];
        plan.wrapped = true;
        plan.records = format!("{forget}; ");
        plan.records_first = false;
        tx::send(conn, dialect, &plan, true)
            .map_err(|f| f.classify(|e| classify_migrate_error(schema, e)))?;
        Ok(vec![last.clone()])
    }
}

/// Runs `attempt` and retries it `params.retries` times, with a short back-off, while it fails
/// on a lock timeout; versions committed by failed attempts (before a non-transactional
/// migration hit the timeout) are part of what the call applied.
fn with_retries(
    schema: &TenantId,
    params: &MigrateParams,
    mut attempt: impl FnMut() -> Result<Vec<String>>,
) -> Result<Vec<String>> {
    let mut retried = 0;
    let mut committed = Vec::new();
    loop {
        match attempt() {
            Ok(applied) => {
                committed.extend(applied);
                return Ok(committed);
            }
            Err(Error::TenantMigration { mut source, .. })
                if retried < params.retries && source.sqlstate() == Some(LOCK_NOT_AVAILABLE) =>
            {
                committed.append(&mut source.take_committed());
                retried += 1;
                tracing::debug!(retry = retried, "lock timeout, retrying");
                std::thread::sleep(Duration::from_millis(50 * u64::from(retried)));
            }
            Err(e) => return Err(with_committed(schema, e, committed)),
        }
    }
}

/// Applies the `run_in_transaction = false` migration `m` on its own path (see
/// [`outside_transaction`]) with its ledger and central-record rows, unless it is applied
/// meanwhile; returns whether it ran.
fn apply_outside(
    conn: &mut PgConnection,
    dialect: &Dialect,
    schema: &TenantId,
    m: &Compiled,
) -> Result<bool> {
    let record = format!(
        "INSERT INTO {}.{LEDGER} (version) VALUES ({v}); \
         INSERT INTO {CENTRAL_RECORD} (schema_name, version) VALUES ({lit}, {v}) \
         ON CONFLICT DO NOTHING",
        schema.quoted(),
        v = quote_literal(&m.version),
        lit = quote_literal(schema.as_str()),
    );
    let still_pending = |ledger: &[String]| !ledger.contains(&m.version);
    outside_transaction(
        conn,
        dialect,
        schema,
        &m.version,
        &m.up,
        still_pending,
        &record,
    )
}

/// The `run_in_transaction = false` path, for applying and reverting alike: a session-level
/// advisory lock, the ledger checked after it (`still_needed`), the migration's `sql` sent on its
/// own with the tenant alone on a session `search_path` (restored afterwards), then the ledger
/// and central rows (`record`) in a transaction. Returns whether the migration ran (false:
/// another migrator did it meanwhile).
fn outside_transaction(
    conn: &mut PgConnection,
    dialect: &Dialect,
    schema: &TenantId,
    version: &str,
    sql: &str,
    still_needed: impl FnOnce(&[String]) -> bool,
    record: &str,
) -> Result<bool> {
    own_batch(conn, &tenant_session_lock(schema.as_str(), true))?;
    let result = (|| -> Result<bool> {
        if !still_needed(&own(conn, |conn| read_ledger(conn, schema))?) {
            return Ok(false);
        }
        #[derive(QueryableByName)]
        struct Path {
            #[diesel(sql_type = Text)]
            path: String,
        }
        let saved = diesel::sql_query("SELECT pg_catalog.current_setting('search_path') AS path")
            .get_result::<Path>(conn)?
            .path;
        conn.batch_execute(&format!(
            "SET search_path TO {}",
            work_path(&schema.quoted())
        ))?;
        // One batch, or statement by statement where the dialect asks (see `tx::send_outside`).
        let ran = tx::send_outside(conn, dialect, sql);
        let failure = |message: String| {
            tenant_failure(
                schema,
                MigrationFailure::new(Some(version.to_owned()), None, message),
            )
        };
        if let Err(restore) = restore_search_path(conn, &saved) {
            // The session may still have the tenant alone on its path: mark the connection
            // broken so a pool discards it (`has_broken`) and Diesel refuses transactions on it.
            AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
            let outcome = match &ran {
                Ok(()) => "the migration ran but is not recorded".to_owned(),
                Err(e) => format!("the migration failed: {}", db_message(e)),
            };
            return Err(failure(format!(
                "could not restore the session search_path ({}): the connection must not be \
                 reused; {outcome}",
                db_message(&restore)
            )));
        }
        ran.map_err(|e| failure(db_message(&e)))?;
        own_batch(conn, record)?;
        Ok(true)
    })();
    let unlocked = own_batch(conn, &tenant_session_lock(schema.as_str(), false));
    let ran = result?;
    unlocked?;
    Ok(ran)
}

/// Sets the session `search_path` back to `saved`, or to the server's default (`RESET`) when
/// that fails.
fn restore_search_path(conn: &mut PgConnection, saved: &str) -> QueryResult<()> {
    let restored = diesel::sql_query("SELECT pg_catalog.set_config('search_path', $1, false)")
        .bind::<Text, _>(saved)
        .execute(conn);
    match restored {
        Ok(_) => Ok(()),
        Err(_) => conn.batch_execute("RESET search_path"),
    }
}
