//! Fleet runs: every tenant (or many new ones) on parallel workers, and their options.
//!
//! Fleet operations (`migrate_all`, `create_tenants`, `revert_last_all`, `startup`) open their own
//! connections from a database URL: at most [`MigrateOptions::parallel`] worker threads (scoped
//! threads sharing one work queue), one connection each.

use std::collections::BTreeSet;
use std::time::Instant;

use diesel::prelude::*;
use diesel::sql_types::{Array, Bool, Text};

use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::options::MigrateOptions;
use crate::registry::model::LifecycleState;
use crate::report::{MigrationReport, TenantOutcome};
use crate::selection::{Pick, Selection};
use crate::sql::{own, CENTRAL_RECORD};
use crate::tenant::TenantId;

impl Migrator {
    /// Runs the shared migrations, then migrates every tenant: what an application calls at
    /// start-up. Safe when several processes start at once (shared migrations run under one
    /// advisory lock, each tenant under its own).
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{MigrateOptions, Migrator};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let report = migrator.startup("postgres://localhost/app", &MigrateOptions::default())?;
    /// println!("{} tenants migrated", report.applied().count());
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`run_shared`](Self::run_shared) and [`migrate_all`](Self::migrate_all).
    pub fn startup(&self, database_url: &str, opts: &MigrateOptions) -> Result<MigrationReport> {
        let mut conn = self.open(database_url)?;
        self.run_shared(&mut conn)?;
        drop(conn);
        self.migrate_all(database_url, opts)
    }

    /// Brings every registered tenant up to date, [`MigrateOptions::parallel`] tenants at a time,
    /// one transaction each (as [`migrate_tenant`](Self::migrate_tenant)).
    ///
    /// Which tenants need work is decided from one query over the central record: when nothing
    /// is pending, no tenant is touched, no worker connection is opened and no DDL runs. A
    /// registered tenant whose schema is gone fails with [`Error::SchemaMissing`] (SQLSTATE
    /// `3F000` in the report), also when nothing is pending for it. Each
    /// tenant that needs work is then sent as one batch (lock, ledger check, DDL, ledger and
    /// central rows, `COMMIT`); when its ledger disagrees with the plan (another migrator was
    /// faster), the ledger decides.
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Error, FailurePolicy, MigrateOptions, Migrator};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).build()?;
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
    /// [`Error::FleetMigration`] with the full report when a tenant failed (a tenant whose schema
    /// is missing included); [`Error::Connection`] or [`Error::Query`] when the central record
    /// cannot be read.
    pub fn migrate_all(
        &self,
        database_url: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        self.migrate_selected(database_url, &Selection::all(), opts)
    }

    /// [`migrate_all`](Self::migrate_all) for the tenants of `selection` only: the tenants it
    /// names, matches and does not leave out, in the states it runs (by default `active`). The
    /// selected tenants in other states are not touched: `suspended` and `provisioning` ones are
    /// listed in the report's [`held`](MigrationReport::held), `archived` ones left out.
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{MigrateOptions, Migrator, Selection, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let eu = Selection::all().pattern("eu_*")?.except([TenantId::new("eu_big")?]);
    /// let report = migrator.migrate_selected("postgres://localhost/app", &eu, &MigrateOptions::default())?;
    /// println!("{} tenants migrated, {} held", report.applied().count(), report.held.len());
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`migrate_all`](Self::migrate_all); [`Error::TenantNotFound`] before anything runs when
    /// the selection names a tenant that is not registered.
    pub fn migrate_selected(
        &self,
        database_url: &str,
        selection: &Selection,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let span = crate::trace::fleet_span!("fleet.migrate_all");
        let started = Instant::now();
        let mut conn = span.in_scope(|| self.open(database_url))?;
        self.migrate_all_from(&mut conn, span, database_url, selection, opts, started)
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
        let span = crate::trace::fleet_span!("fleet.migrate_all");
        let all = Selection::all();
        self.migrate_all_from(conn, span, database_url, &all, opts, Instant::now())
    }

    fn migrate_all_from(
        &self,
        conn: &mut PgConnection,
        span: tracing::Span,
        database_url: &str,
        selection: &Selection,
        opts: &MigrateOptions,
        started: Instant,
    ) -> Result<MigrationReport> {
        let _span = self.enter(conn, span, Op::Fleet)?;
        let rows = self.pending_rows(conn)?;
        let picked = self.pick(selection, rows, |r| (r.name.as_str(), r.state.as_str()))?;
        let held = picked.held;
        let rows = picked.run;
        let mut tenants = Vec::with_capacity(rows.len());
        // A tenant's plan, or `None` for a registered tenant whose schema is gone: a failure of
        // that tenant even when nothing is pending (the central record alone would say "up to
        // date").
        let mut jobs: Vec<(usize, Option<Vec<String>>)> = Vec::new();
        for (i, row) in rows.into_iter().enumerate() {
            let tenant = TenantId::new(&row.name)?;
            self.check_tenant_name(&tenant)?;
            tenants.push(tenant);
            if !row.has_schema {
                jobs.push((i, None));
            } else if !row.pending.is_empty() {
                jobs.push((i, Some(row.pending)));
            }
        }
        let params = opts.params();
        // A run with something to do is recorded; one with nothing to do stays one query.
        let id = if opts.record && !jobs.is_empty() {
            self.record_start(conn, "migrate", None, &selection.to_string(), &tenants)?
        } else {
            None
        };
        let ran = self.run_fleet(
            Some(&mut *conn),
            database_url,
            opts,
            (started, held),
            tenants,
            jobs,
            |conn, t, plan| match plan {
                Some(plan) => {
                    let applied = self.migrate_schema(conn, t, Some(plan), &params);
                    let applied = self.or_gone(conn, t, applied)?;
                    Ok(TenantOutcome::from_applied(applied))
                }
                None => Err(Error::SchemaMissing(t.clone())),
            },
        );
        self.record_finish(conn, database_url, id, ran)?
            .into_result()
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
        let _span = crate::trace::fleet_span!("fleet.create_tenants").entered();
        let started = Instant::now();
        let versions = self.tenant_versions().to_vec();
        let mut sorted = tenants.to_vec();
        sorted.sort();
        sorted.dedup();
        let jobs = (0..sorted.len()).map(|i| (i, ())).collect();
        let ran = self.run_fleet(
            None,
            database_url,
            opts,
            (started, Vec::new()),
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
        );
        self.analyze_registry(database_url, ran.report.applied().count())?;
        ran.into_result()
    }

    /// Reverts the last applied tenant migration of every tenant (see
    /// [`revert_last`](Self::revert_last)), under the options' lock timeout and retries. The
    /// outcome is `Applied(vec![reverted version])`, or `UpToDate` for a tenant with nothing
    /// applied.
    ///
    /// # Errors
    /// [`Error::FleetMigration`] with the full report when a tenant failed.
    pub fn revert_last_all(
        &self,
        database_url: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let _span = crate::trace::fleet_span!("fleet.revert_last").entered();
        self.revert_all(database_url, None, &Selection::all(), opts)
    }

    /// Reverts `version` of every tenant whose last applied migration it is (see
    /// [`revert_version`](Self::revert_version)), under the options' lock timeout and retries.
    /// The outcome is `Applied(vec![version])`, or `UpToDate` for a tenant where `version` is not
    /// applied: a rerun after an interruption reverts nothing twice.
    ///
    /// # Errors
    /// [`Error::FleetMigration`] with the full report when a tenant failed, including a tenant
    /// whose last applied migration is a later one.
    pub fn revert_version_all(
        &self,
        database_url: &str,
        version: &str,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let _span = crate::trace::fleet_span!("fleet.revert_version").entered();
        self.revert_all(database_url, Some(version), &Selection::all(), opts)
    }

    /// [`revert_last_all`](Self::revert_last_all) (with `version`:
    /// [`revert_version_all`](Self::revert_version_all)) for the tenants of `selection` only,
    /// its states held back as in [`migrate_selected`](Self::migrate_selected).
    ///
    /// # Errors
    /// As [`revert_last_all`](Self::revert_last_all); [`Error::TenantNotFound`] before anything
    /// runs when the selection names a tenant that is not registered.
    pub fn revert_selected(
        &self,
        database_url: &str,
        version: Option<&str>,
        selection: &Selection,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let _span = crate::trace::fleet_span!("fleet.revert_selected").entered();
        self.revert_all(database_url, version, selection, opts)
    }

    fn revert_all(
        &self,
        database_url: &str,
        expected: Option<&str>,
        selection: &Selection,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let started = Instant::now();
        let mut conn = self.open(database_url)?;
        let _span = self.enter(&mut conn, tracing::Span::none(), Op::Fleet)?;
        let states = own(&mut conn, |conn| self.registry.lifecycle_states(conn))?;
        let picked = self.pick(selection, states, |(t, s)| (t.as_str(), s.as_str()))?;
        let held = picked.held;
        let mut tenants: Vec<TenantId> = picked.run.into_iter().map(|(t, _)| t).collect();
        tenants.sort();
        let jobs = (0..tenants.len()).map(|i| (i, ())).collect();
        let params = opts.params();
        self.run_fleet(
            Some(&mut conn),
            database_url,
            opts,
            (started, held),
            tenants,
            jobs,
            |conn, t, ()| {
                Ok(match self.revert_tenant(conn, t, expected, &params)? {
                    Some(v) => TenantOutcome::Applied(vec![v]),
                    None => TenantOutcome::UpToDate,
                })
            },
        )
        .into_result()
    }
}

/// A registered tenant as a fleet run sees it: its state, the versions of the set missing from
/// the central record (in order), whether its schema exists.
#[derive(QueryableByName)]
pub(crate) struct PendingRow {
    #[diesel(sql_type = Text)]
    pub(crate) name: String,
    #[diesel(sql_type = Text)]
    pub(crate) state: String,
    #[diesel(sql_type = Array<Text>)]
    pub(crate) pending: Vec<String>,
    #[diesel(sql_type = Bool)]
    pub(crate) has_schema: bool,
}

/// The registry's rows split by a [`Selection`]: those to run, those held back by their state.
pub(crate) struct Picked<R> {
    pub(crate) run: Vec<R>,
    pub(crate) held: Vec<(TenantId, String)>,
}

impl Migrator {
    /// Every registered tenant's [`PendingRow`], from one query over the registry and the
    /// central record, sorted by name.
    pub(crate) fn pending_rows(&self, conn: &mut PgConnection) -> Result<Vec<PendingRow>> {
        Ok(own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT r.{col}::pg_catalog.text AS name, r.state, \
             CASE WHEN m.applied OPERATOR(pg_catalog.@>) $1::pg_catalog.text[] \
             THEN '{{}}'::pg_catalog.text[] \
             ELSE ARRAY(SELECT v FROM pg_catalog.unnest($1::pg_catalog.text[]) \
             WITH ORDINALITY AS e (v, n) \
             WHERE v OPERATOR(pg_catalog.<>) ALL (COALESCE(m.applied, '{{}}')) \
             ORDER BY e.n) END AS pending, \
             s.nspname IS NOT NULL AS has_schema \
             FROM {reg} r \
             LEFT JOIN (SELECT schema_name, \
             pg_catalog.array_agg(version::pg_catalog.text) AS applied \
             FROM {CENTRAL_RECORD} GROUP BY schema_name) m ON m.schema_name = r.{col} \
             LEFT JOIN pg_catalog.pg_namespace s \
             ON s.nspname::pg_catalog.text = r.{col} \
             ORDER BY r.{col}::pg_catalog.text COLLATE \"C\"",
                col = "name",
                reg = self.registry.states_sql(),
            ))
            .bind::<Array<Text>, _>(self.tenant_versions())
            .load::<PendingRow>(conn)
        })?)
    }

    /// Splits `rows` (each giving its name and state) by `selection`; fails with
    /// [`Error::TenantNotFound`] when the selection names a tenant no row has, and with
    /// [`Error::InvalidTenantName`] for a row whose name breaks the rules.
    pub(crate) fn pick<R>(
        &self,
        selection: &Selection,
        rows: Vec<R>,
        key: impl Fn(&R) -> (&str, &str),
    ) -> Result<Picked<R>> {
        let mut named = BTreeSet::new();
        let mut picked = Picked {
            run: Vec::new(),
            held: Vec::new(),
        };
        for row in rows {
            let (name, state) = key(&row);
            let tenant = TenantId::new(name)?;
            self.check_tenant_name(&tenant)?;
            let state: LifecycleState = state.parse().map_err(Error::InvalidSelection)?;
            match selection.pick(&tenant, state) {
                Pick::Run => picked.run.push(row),
                Pick::Hold(state) => picked.held.push((tenant.clone(), state.to_string())),
                Pick::Omit => {}
            }
            named.insert(tenant);
        }
        selection.check_named(&named.iter().collect())?;
        picked.held.sort();
        Ok(picked)
    }
}
