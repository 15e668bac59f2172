//! One tenant, both directions: applying the pending migrations and reverting the last one, on
//! the fast path (one unwrapped batch planned from the central record) or the checked path (the
//! ledger read after the lock decides; each migration wrapped so a failure names itself), the
//! non-transactional path (`run_in_transaction = false`), and the retry loop on lock timeouts.
//!
//! Apply and revert open a tenant's transaction the same way ([`begin_locked`]): [`BEGIN`] (the
//! library's own `search_path`, `pg_catalog, pg_temp`), the tenant's advisory lock first, the
//! caller's `lock_timeout`, the schema check (for a spare, its row lock too), then the ledger
//! read after the lock. The migrations' own SQL runs with the tenant alone on the path
//! ([`in_schema`]); the ledger and central record rows under the library's path again.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::connection::{no_outer_transaction, rollback};
use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::failure::{
    classify_migrate_error, connection_lost, db_message, is_lock_timeout, raise_if_schema_missing,
    tenant_failure, with_committed, wrap, LOCK_NOT_AVAILABLE, SCHEMA_MISSING,
};
use crate::migrate::report::{MigrationFailure, TenantOutcome};
use crate::migrate::set::{Compiled, CompiledSet};
use crate::migrate::split;
use crate::migrate::Migrator;
use crate::sql::{
    in_schema, own, own_batch, quote_literal, tenant_lock, tenant_session_lock, work_path, BEGIN,
    CENTRAL_RECORD, LEDGER, SPARES_TABLE,
};
use crate::tenant::TenantId;

/// Default of [`MigrateOptions::lock_timeout`](crate::MigrateOptions::lock_timeout).
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`MigrateOptions::retries`](crate::MigrateOptions::retries).
pub(crate) const DEFAULT_RETRIES: u32 = 3;

/// Knobs of one tenant's migration, from the caller's
/// [`MigrateOptions`](crate::MigrateOptions) (or their defaults).
#[derive(Debug, Clone)]
pub(crate) struct MigrateParams {
    pub(crate) lock_timeout: Duration,
    pub(crate) retries: u32,
    /// The schema is a spare: each transaction also locks its `workspace_spares` row (skipping
    /// it when a claim holds it), and fails with [`Error::SchemaMissing`] when it is not a spare
    /// any more, so an upgrade and a claim never interleave.
    pub(crate) spare: bool,
}

impl Default for MigrateParams {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retries: DEFAULT_RETRIES,
            spare: false,
        }
    }
}

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
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
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
        let _span = crate::trace::op_span!("tenant.migrate", tenant = %tenant).entered();
        self.ready(conn);
        self.ensure_tenant(conn, tenant)?;
        self.refuse_hazards(conn)?;
        let applied = self.migrate_schema(conn, tenant, None, &MigrateParams::default());
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
        self.ready(conn);
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
        opts: &crate::MigrateOptions,
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
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
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
        opts: &crate::MigrateOptions,
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
        let _span = crate::trace::op_span!("tenant.revert", tenant = %tenant).entered();
        no_outer_transaction(conn)?;
        self.ensure_tenant(conn, tenant)?;
        self.refuse_hazards(conn)?;
        let dialect = self.dialect(conn)?;
        let reverted = with_retries(tenant, params, || {
            self.revert_once(conn, dialect, tenant, expected, params)
        });
        let reverted = self.or_gone(conn, tenant, reverted);
        crate::trace::finish_with(reverted, |r| Some(r.len())).map(|mut r| r.pop())
    }

    /// Applies the pending tenant migrations to `schema` and returns their versions.
    ///
    /// `plan` is what the central record says is pending: with it (and only transactional
    /// migrations in it), everything is one round trip whose ledger rows come first (a version
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
        let dialect = self.dialect(conn)?;
        if dialect.splits_statements() {
            return with_retries(schema, params, || {
                let mut applied = Vec::new();
                match self.apply_split(conn, dialect, schema, params, &mut applied) {
                    Ok(()) => Ok(applied),
                    Err(e) => Err(with_committed(schema, e, applied)),
                }
            });
        }
        with_retries(schema, params, || {
            self.apply_once(conn, schema, plan, params)
        })
    }

    /// [`migrate_schema`](Self::migrate_schema) statement by statement (see
    /// [`split`](crate::migrate::split)): the ledger read after the lock decides, the pending
    /// transactional migrations go one statement per command, then their ledger and central
    /// record rows, the dialect's distribution check and `COMMIT`. Pushes each version it
    /// commits to `applied`.
    fn apply_split(
        &self,
        conn: &mut PgConnection,
        dialect: &Dialect,
        schema: &TenantId,
        params: &MigrateParams,
        applied: &mut Vec<String>,
    ) -> Result<()> {
        loop {
            let open = open_sql(schema, params, true, true);
            let ledger = begin_with(conn, schema, &open)?;
            let pending: Vec<&Compiled> = self
                .set
                .migrations
                .iter()
                .filter(|m| !ledger.contains(&m.version))
                .collect();
            let batch: Vec<&Compiled> = pending.iter().copied().take_while(|m| m.in_tx).collect();
            let steps = match split::steps(schema, &batch) {
                Ok(steps) => steps,
                Err(e) => {
                    rollback(conn);
                    return Err(e);
                }
            };
            let mut close = String::new();
            push_records(&mut close, schema, &batch);
            if let Some(check) = dialect.distribution_check(schema) {
                close.push_str(&check);
                close.push_str("; ");
            }
            close.push_str("COMMIT");
            split::run(conn, dialect, schema, &open, &steps, &close)?;
            applied.extend(batch.iter().map(|m| m.version.clone()));
            match pending.get(batch.len()) {
                None => return Ok(()),
                Some(m) => {
                    if apply_outside(conn, schema, m, true)? {
                        applied.push(m.version.clone());
                    }
                }
            }
        }
    }

    fn apply_once(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        plan: Option<&[String]>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        let set = &*self.set;
        if let Some(plan) = plan {
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
                let mut sql = begin_tenant_sql(schema, params);
                push_apply(&mut sql, schema, &planned, false);
                sql.push_str("COMMIT");
                match conn.batch_execute(&sql) {
                    Ok(()) => return Ok(plan.to_vec()),
                    Err(e) => {
                        rollback(conn);
                        if connection_lost(&e) {
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
                }
            }
        }
        let mut applied = Vec::new();
        match self.apply_checked(conn, schema, set, params, &mut applied) {
            Ok(()) => Ok(applied),
            Err(e) => Err(with_committed(schema, e, applied)),
        }
    }

    /// The checked path of [`migrate_schema`](Self::migrate_schema): pushes each version it
    /// commits to `applied` (also when a later step fails).
    fn apply_checked(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        set: &CompiledSet,
        params: &MigrateParams,
        applied: &mut Vec<String>,
    ) -> Result<()> {
        loop {
            let ledger = begin_locked(conn, schema, params, true)?;
            let pending: Vec<&Compiled> = set
                .migrations
                .iter()
                .filter(|m| !ledger.contains(&m.version))
                .collect();
            let batch: Vec<&Compiled> = pending.iter().copied().take_while(|m| m.in_tx).collect();
            let mut sql = String::new();
            push_apply(&mut sql, schema, &batch, true);
            sql.push_str("COMMIT");
            if let Err(e) = conn.batch_execute(&sql) {
                rollback(conn);
                return Err(classify_migrate_error(schema, e));
            }
            applied.extend(batch.iter().map(|m| m.version.clone()));
            match pending.get(batch.len()) {
                None => return Ok(()),
                Some(m) => {
                    if apply_outside(conn, schema, m, false)? {
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
        let split = dialect.splits_statements();
        let open = open_sql(schema, params, false, split);
        let ledger = begin_with(conn, schema, &open)?;
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
            let ran = outside_transaction(conn, schema, last, down, still_last, &forget, split)?;
            return Ok(if ran { vec![last.clone()] } else { Vec::new() });
        }
        if split {
            let steps = match split::steps_of(schema, last, down) {
                Ok(steps) => steps,
                Err(e) => {
                    rollback(conn);
                    return Err(e);
                }
            };
            let check = dialect
                .distribution_check(schema)
                .map(|c| format!("{c}; "))
                .unwrap_or_default();
            split::run(
                conn,
                dialect,
                schema,
                &open,
                &steps,
                &format!("{forget}; {check}COMMIT"),
            )?;
            return Ok(vec![last.clone()]);
        }
        let down = in_schema(&schema.quoted(), &wrap(last, down));
        if let Err(e) = conn.batch_execute(&format!("{down}{forget}; COMMIT")) {
            rollback(conn);
            return Err(classify_migrate_error(schema, e));
        }
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

/// The SQL that opens `schema`'s transaction: [`BEGIN`] (the library's own path), the lock
/// (first), the lock timeout for DDL, a check that fails with [`Error::SchemaMissing`] when the
/// schema is gone (or, for a spare, when it is not a spare any more or a claim holds its row)
/// and, when `create_ledger`, the ledger created when it is missing (inside the check's `DO`
/// block, or as a top-level `CREATE TABLE IF NOT EXISTS` when `split`: a table created inside
/// `DO` would stay local on Citus). All of it runs under the library's own path, and leaves it
/// set: the migrations' SQL gets the tenant's path from [`in_schema`] (or, statement by
/// statement, from [`split::run`]).
fn open_sql(schema: &TenantId, params: &MigrateParams, create_ledger: bool, split: bool) -> String {
    let ledger = format!("{}.{LEDGER}", schema.quoted());
    let columns = "(version VARCHAR(50) PRIMARY KEY NOT NULL, \
                   run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)";
    let (inside, after) = match (create_ledger, split) {
        (false, _) => (String::new(), String::new()),
        (true, false) => (
            format!(
                "IF pg_catalog.to_regclass({}) IS NULL THEN CREATE TABLE {ledger} {columns}; END IF; ",
                quote_literal(&ledger)
            ),
            String::new(),
        ),
        (true, true) => (
            String::new(),
            format!("; CREATE TABLE IF NOT EXISTS {ledger} {columns}"),
        ),
    };
    let spare = if params.spare {
        // A claim holds the row (or has deleted it): not ours to upgrade any more.
        format!(
            "PERFORM FROM {SPARES_TABLE} WHERE schema_name = {} FOR UPDATE SKIP LOCKED; \
             IF NOT FOUND THEN RAISE EXCEPTION '{SCHEMA_MISSING}' USING ERRCODE = 'invalid_schema_name'; END IF; ",
            quote_literal(schema.as_str())
        )
    } else {
        String::new()
    };
    format!(
        "{}DO $wd_check$ BEGIN {spare}{} {inside}END $wd_check${after}",
        begin_tenant_sql(schema, params),
        raise_if_schema_missing(schema),
    )
}

/// Sends `open` (from [`open_sql`]) and reads the ledger after the lock. The transaction stays
/// open on success and is rolled back on failure.
fn begin_with(conn: &mut PgConnection, schema: &TenantId, open: &str) -> Result<Vec<String>> {
    if let Err(e) = conn.batch_execute(open) {
        rollback(conn);
        return Err(classify_migrate_error(schema, e));
    }
    read_ledger(conn, schema).map_err(|e| {
        rollback(conn);
        e.into()
    })
}

/// Opens `schema`'s transaction and reads its ledger after the lock (see [`open_sql`]).
fn begin_locked(
    conn: &mut PgConnection,
    schema: &TenantId,
    params: &MigrateParams,
    create_ledger: bool,
) -> Result<Vec<String>> {
    begin_with(
        conn,
        schema,
        &open_sql(schema, params, create_ledger, false),
    )
}

/// [`BEGIN`] (the library's own path), the lock (first statement after it), then the lock
/// timeout for DDL. The migrations' own SQL gets the tenant alone on the path ([`in_schema`]).
fn begin_tenant_sql(schema: &TenantId, params: &MigrateParams) -> String {
    format!(
        "{BEGIN}; {}; SET LOCAL lock_timeout = '{}ms'; ",
        tenant_lock(schema.as_str()),
        params.lock_timeout.as_millis(),
    )
}

/// Appends the ledger rows and central record rows of `migrations`, then each migration's SQL
/// (wrapped, when asked, so a failure names its version and SQLSTATE) with the tenant alone on
/// the path and the library's path put back after it ([`in_schema`]).
pub(crate) fn push_apply(
    sql: &mut String,
    schema: &TenantId,
    migrations: &[&Compiled],
    wrapped: bool,
) {
    push_records(sql, schema, migrations);
    for m in migrations {
        let up = if wrapped {
            wrap(&m.version, &m.up)
        } else {
            m.up.clone()
        };
        sql.push_str(&in_schema(&schema.quoted(), &up));
    }
}

/// Appends the ledger rows and central record rows of `migrations` (nothing when empty).
pub(crate) fn push_records(sql: &mut String, schema: &TenantId, migrations: &[&Compiled]) {
    if migrations.is_empty() {
        return;
    }
    // The ledger rows go first: a version another migrator already recorded fails the batch
    // (primary key) before any DDL runs.
    let lit = quote_literal(schema.as_str());
    let versions: Vec<String> = migrations
        .iter()
        .map(|m| quote_literal(&m.version))
        .collect();
    sql.push_str(&format!(
        "INSERT INTO {}.{LEDGER} (version) VALUES ({}); ",
        schema.quoted(),
        versions.join("), (")
    ));
    let central: Vec<String> = versions.iter().map(|v| format!("({lit}, {v})")).collect();
    sql.push_str(&format!(
        "INSERT INTO {CENTRAL_RECORD} (schema_name, version) VALUES {} \
         ON CONFLICT DO NOTHING; ",
        central.join(", ")
    ));
}

/// Reads the tenant's ledger (its own `__diesel_schema_migrations`).
pub(crate) fn read_ledger(conn: &mut PgConnection, schema: &TenantId) -> QueryResult<Vec<String>> {
    #[derive(QueryableByName)]
    struct VersionRow {
        #[diesel(sql_type = Text)]
        version: String,
    }
    Ok(diesel::sql_query(format!(
        "SELECT version::pg_catalog.text AS version FROM {}.{LEDGER} \
         ORDER BY version::pg_catalog.text COLLATE \"C\"",
        schema.quoted()
    ))
    .load::<VersionRow>(conn)?
    .into_iter()
    .map(|r| r.version)
    .collect())
}

/// The `run_in_transaction = false` path, for applying and reverting alike: a session-level
/// advisory lock, the ledger checked after it (`still_needed`), the migration's `sql` sent on its
/// own with the tenant alone on a session `search_path` (restored afterwards), then the ledger
/// and central rows (`record`) in a transaction. Returns whether the migration ran (false:
/// another migrator did it meanwhile).
/// Applies the `run_in_transaction = false` migration `m` on its own path (see
/// [`outside_transaction`]) with its ledger and central-record rows, unless it is applied
/// meanwhile; returns whether it ran.
fn apply_outside(
    conn: &mut PgConnection,
    schema: &TenantId,
    m: &Compiled,
    split: bool,
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
        schema,
        &m.version,
        &m.up,
        still_pending,
        &record,
        split,
    )
}

fn outside_transaction(
    conn: &mut PgConnection,
    schema: &TenantId,
    version: &str,
    sql: &str,
    still_needed: impl FnOnce(&[String]) -> bool,
    record: &str,
    split: bool,
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
        // Statement by statement when the dialect asks for it (see `split`).
        let ran = if split {
            match crate::statements::split_statements(sql) {
                Ok(statements) => statements
                    .iter()
                    .try_for_each(|s| conn.batch_execute(s.sql())),
                Err(e) => Err(diesel::result::Error::QueryBuilderError(Box::new(e))),
            }
        } else {
            conn.batch_execute(sql)
        };
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
