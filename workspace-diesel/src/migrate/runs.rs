//! The record of fleet runs: writing it around a run, listing it, and reverting a run as a
//! whole (exactly the tenants it advanced, back to where each was before it).

use std::collections::BTreeSet;
use std::time::Instant;

use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::migrate::workers::Ran;
use crate::options::MigrateOptions;
use crate::registry::runs::{self, TenantRecord};
use crate::report::{FleetRun, MigrationReport, RunTenant, TenantOutcome};
use crate::sql::own;
use crate::tenant::TenantId;

impl Migrator {
    /// The recorded fleet runs, newest first (see [`MigrateOptions::record`]); empty before the
    /// registry migration that creates the record has run ([`run_shared`](Self::run_shared)).
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// for run in migrator.runs(conn)? {
    ///     println!("{} {} by {}: {:?}", run.id, run.kind, run.started_by, run.outcome);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the query fails.
    pub fn runs(&self, conn: &mut PgConnection) -> Result<Vec<FleetRun>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        own(conn, |conn| {
            if !runs::installed(conn)? {
                return Ok(Vec::new());
            }
            runs::list(conn, None)
        })
        .map_err(Error::Query)
    }

    /// The tenants of recorded run `run`: each one's versions before it, what it applied (or
    /// reverted), how long it took, how it ended.
    ///
    /// # Errors
    /// [`Error::RunNotFound`] when there is no such run; [`Error::Query`] when a query fails.
    pub fn run_tenants(&self, conn: &mut PgConnection, run: i64) -> Result<Vec<RunTenant>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        self.read_run(conn, run).map(|(_, tenants)| tenants)
    }

    fn read_run(&self, conn: &mut PgConnection, run: i64) -> Result<(FleetRun, Vec<RunTenant>)> {
        let read = own(conn, |conn| {
            if !runs::installed(conn)? {
                return Ok(None);
            }
            let header = runs::list(conn, Some(run))?.pop();
            match header {
                Some(h) => Ok(Some((h, runs::tenants(conn, run)?))),
                None => Ok(None),
            }
        })
        .map_err(Error::Query)?;
        read.ok_or(Error::RunNotFound(run))
    }

    /// Reverts recorded run `run`: each tenant it advanced goes back to the versions it had
    /// before the run, newest version first, each version in a transaction of its own under the
    /// options' lock timeout and retries. Tenants whose versions moved on since (a version
    /// applied or reverted that the run did not apply), tenants dropped since and the tenants
    /// that failed in the run are left alone and listed in the report's
    /// [`held`](MigrationReport::held) with why. A tenant already back where it was is up to
    /// date, so a rerun (after an interruption, a kill included) reverts what is left and
    /// reverts no version twice. The revert is recorded as a run of its own.
    ///
    /// # Errors
    /// [`Error::RunNotFound`] when there is no such run; [`Error::RunNotRevertible`] when it is
    /// a revert itself, or did not finish (its record holds no versions);
    /// [`Error::FleetMigration`] with the full report when a tenant failed.
    pub fn revert_run(
        &self,
        database_url: &str,
        run: i64,
        opts: &MigrateOptions,
    ) -> Result<MigrationReport> {
        let span = crate::trace::fleet_span!("fleet.revert_run");
        let started = Instant::now();
        let mut conn = span.in_scope(|| self.open(database_url))?;
        let _span = self.enter(&mut conn, span, Op::Fleet)?;
        let (header, rows) = self.read_run(&mut conn, run)?;
        if header.kind != "migrate" {
            return Err(Error::RunNotRevertible {
                run,
                reason: "it is a revert",
            });
        }
        if header.outcome.is_none() {
            return Err(Error::RunNotRevertible {
                run,
                reason: "it did not finish, so its record holds no versions",
            });
        }
        let names: Vec<String> = rows.iter().map(|r| r.tenant.clone()).collect();
        let (now, registered) = own(&mut conn, |conn| {
            let now = runs::applied_now(conn, &names)?;
            let registered = self.registry.list(conn)?;
            Ok::<_, Error>((now, registered))
        })?;
        let registered: BTreeSet<TenantId> = registered.into_iter().collect();
        let mut held = Vec::new();
        let mut tenants = Vec::new();
        let mut plans = Vec::new();
        for (row, (_, current)) in rows.iter().zip(now) {
            let tenant = TenantId::new(&row.tenant)?;
            if row.versions.is_empty() {
                if row.outcome == "failed" {
                    held.push((tenant, format!("failed in run {run}")));
                }
                continue;
            }
            if !registered.contains(&tenant) {
                held.push((tenant, format!("dropped since run {run}")));
                continue;
            }
            let before: BTreeSet<&String> = row.before.iter().collect();
            let did: BTreeSet<&String> = row.versions.iter().collect();
            let current: BTreeSet<&String> = current.iter().collect();
            let untouched = before.is_subset(&current)
                && current
                    .iter()
                    .all(|v| before.contains(v) || did.contains(v));
            if !untouched {
                held.push((tenant, format!("moved on since run {run}")));
                continue;
            }
            let mut back: Vec<String> = current.difference(&before).map(|v| (*v).clone()).collect();
            back.sort_by(|a, b| b.cmp(a));
            if !back.is_empty() {
                plans.push((tenants.len(), back));
            }
            tenants.push(tenant);
        }
        held.sort();
        let id = if opts.record {
            self.record_start(
                &mut conn,
                "revert",
                Some(run),
                &format!("run {run}"),
                &tenants,
            )?
        } else {
            None
        };
        let params = opts.params();
        let ran = self.run_fleet(
            Some(&mut conn),
            database_url,
            opts,
            (started, held),
            tenants,
            plans,
            |conn, t, versions: &Vec<String>| {
                let mut reverted = Vec::new();
                for v in versions {
                    reverted.extend(self.revert_tenant(conn, t, Some(v), &params)?);
                }
                Ok(TenantOutcome::from_applied(reverted))
            },
        );
        self.record_finish(&mut conn, database_url, id, ran)?
            .into_result()
    }

    /// Records the start of a run of `kind` over `tenants` (their versions now) and returns its
    /// id; `None` when the record's tables are not installed.
    pub(crate) fn record_start(
        &self,
        conn: &mut PgConnection,
        kind: &str,
        reverts: Option<i64>,
        selection: &str,
        tenants: &[TenantId],
    ) -> Result<Option<i64>> {
        let names: Vec<String> = tenants.iter().map(ToString::to_string).collect();
        own(conn, |conn| {
            if !runs::installed(conn)? {
                return Ok(None);
            }
            runs::start(conn, kind, reverts, selection, &names).map(Some)
        })
        .map_err(Error::Query)
    }

    /// Records how run `id` ended (nothing without an id), and names it in the report.
    pub(crate) fn record_finish(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        id: Option<i64>,
        mut ran: Ran,
    ) -> Result<Ran> {
        let Some(id) = id else { return Ok(ran) };
        let report = &ran.report;
        let rows: Vec<TenantRecord> = report
            .tenants
            .iter()
            .zip(&ran.durations)
            .map(|((tenant, outcome), took)| {
                let (outcome, versions, sqlstate, message) = match outcome {
                    TenantOutcome::Applied(v) => ("applied", v.clone(), None, None),
                    TenantOutcome::UpToDate => ("up_to_date", Vec::new(), None, None),
                    TenantOutcome::Failed { sqlstate, message } => (
                        "failed",
                        Vec::new(),
                        sqlstate.clone(),
                        Some(message.clone()),
                    ),
                    TenantOutcome::Skipped => ("not_started", Vec::new(), None, None),
                };
                TenantRecord {
                    tenant: tenant.to_string(),
                    versions,
                    outcome,
                    sqlstate,
                    message,
                    duration_ms: took.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                }
            })
            .collect();
        let outcome = if report.is_success() {
            "succeeded"
        } else if report.stopped.is_some() {
            "stopped"
        } else {
            "failed"
        };
        // The run's connection may be the one a tenant's failure lost: then a new one.
        if own(conn, |conn| runs::finish(conn, id, outcome, &rows)).is_err() {
            let mut fresh = self.open(database_url)?;
            own(&mut fresh, |conn| runs::finish(conn, id, outcome, &rows)).map_err(Error::Query)?;
        }
        ran.report.run = Some(id);
        Ok(ran)
    }
}
