//! diesel_cli's spellings: `migration revert|redo|list` on every tenant (`migration run` and
//! `migration generate` are `migrate_all` and `makemigrations_tenant` under another name), and
//! `database drop|reset`. Each maps onto the library's fleet calls and the commands beside it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel_workspace::statements::quote_ident;
use diesel_workspace::{Error, MigrationReport, TenantOutcome};

use super::migrate::{options, report_schema_file, Display};
use super::{confirm, plural, registry_exists, select, Ctx};
use crate::cli::{SelectArgs, StepArgs};
use crate::output::{self, TenantResult};

/// What `migration revert` (or the first half of `migration redo`) did to each tenant.
struct Reverted {
    /// The versions each tenant had reverted, in the order they were.
    by_tenant: BTreeMap<String, Vec<String>>,
    /// The tenants of the last round (all the selected ones), with a failure, if any.
    failed: Option<MigrationReport>,
}

/// Reverts the last migration of every selected tenant, round after round: `-n N` rounds, or
/// with `--all` until no tenant has anything left. Each round is one fleet run of the library's
/// `revert_selected` (recorded like any, see `runs`); a round with a failing tenant is the last.
fn revert_rounds(ctx: &Ctx, args: &StepArgs, verb: &'static str) -> Result<Reverted> {
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !registry_exists(&mut conn, &migrator)? {
        return Ok(Reverted {
            by_tenant,
            failed: None,
        });
    }
    let selection = select::selection(&mut conn, &migrator, &args.fleet.select)?;
    drop(conn);
    let rounds = if args.all {
        u32::MAX
    } else {
        args.number.unwrap_or(1)
    };
    for _ in 0..rounds {
        let display = Display::new(verb, ctx.json());
        let opts = options(&args.fleet, &display)?;
        let result = migrator.revert_selected(&url, None, &selection, &opts);
        display.finish();
        let (report, failed) = outcome(result)?;
        let mut any = false;
        for (tenant, outcome) in &report.tenants {
            let entry = by_tenant.entry(tenant.to_string()).or_default();
            if let TenantOutcome::Applied(versions) = outcome {
                entry.extend(versions.iter().cloned());
                any = true;
            }
        }
        if failed {
            return Ok(Reverted {
                by_tenant,
                failed: Some(report),
            });
        }
        if !any {
            break;
        }
    }
    Ok(Reverted {
        by_tenant,
        failed: None,
    })
}

/// The failed (and not started) tenants of `report`, as results.
fn failures(report: &MigrationReport) -> BTreeMap<String, TenantResult> {
    report
        .tenants
        .iter()
        .filter_map(|(tenant, outcome)| match outcome {
            TenantOutcome::Failed { sqlstate, message } => Some((
                tenant.to_string(),
                TenantResult {
                    sqlstate: sqlstate.clone(),
                    message: Some(message.clone()),
                    ..TenantResult::new(tenant, "failed", Vec::new())
                },
            )),
            TenantOutcome::Skipped => Some((
                tenant.to_string(),
                TenantResult::new(tenant, "skipped", Vec::new()),
            )),
            _ => None,
        })
        .collect()
}

/// `migration revert [-n N | --all]`.
pub(crate) fn revert(ctx: &Ctx, args: &StepArgs) -> Result<()> {
    let started = Instant::now();
    let reverted = revert_rounds(ctx, args, "reverted")?;
    let mut failed = reverted.failed.as_ref().map(failures).unwrap_or_default();
    let tenants: Vec<TenantResult> = reverted
        .by_tenant
        .iter()
        .map(|(tenant, versions)| match failed.remove(tenant) {
            Some(result) => result,
            None => TenantResult {
                tenant: tenant.clone(),
                ..TenantResult {
                    outcome: if versions.is_empty() {
                        "nothing_to_revert"
                    } else {
                        "reverted"
                    },
                    versions: versions.clone(),
                    ..empty_result()
                }
            },
        })
        .collect();
    let doc = report_of("migration revert", tenants, started);
    finish(ctx, doc, reverted.failed.as_ref())
}

/// `migration redo [-n N | --all]`: the reverts of `migration revert`, then the pending
/// migrations applied again to the same tenants (`migrate_selected`).
pub(crate) fn redo(ctx: &Ctx, args: &StepArgs) -> Result<()> {
    let started = Instant::now();
    let reverted = revert_rounds(ctx, args, "reverted")?;
    if let Some(report) = &reverted.failed {
        let failed = failures(report);
        let tenants = reverted
            .by_tenant
            .iter()
            .map(|(tenant, versions)| {
                failed.get(tenant).map_or_else(
                    || TenantResult {
                        tenant: tenant.clone(),
                        outcome: "reverted",
                        versions: versions.clone(),
                        ..empty_result()
                    },
                    |f| TenantResult {
                        tenant: f.tenant.clone(),
                        sqlstate: f.sqlstate.clone(),
                        message: f.message.clone(),
                        ..empty_result()
                    },
                )
            })
            .collect();
        return finish(
            ctx,
            report_of("migration redo", tenants, started),
            Some(report),
        );
    }
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let selection = select::selection(&mut conn, &migrator, &args.fleet.select)?;
    drop(conn);
    let display = Display::new("applied", ctx.json());
    let result = migrator.migrate_selected(&url, &selection, &options(&args.fleet, &display)?);
    display.finish();
    let (report, failed) = outcome(result)?;
    let mut failures = failures(&report);
    let tenants = report
        .tenants
        .iter()
        .map(|(tenant, outcome)| {
            let name = tenant.to_string();
            let before = reverted.by_tenant.get(&name).cloned().unwrap_or_default();
            match (failures.remove(&name), outcome) {
                (Some(f), _) => TenantResult {
                    reverted_versions: before,
                    ..f
                },
                (None, TenantOutcome::Applied(versions)) => TenantResult {
                    tenant: name,
                    // Nothing was reverted (nothing was applied): the migrations were only applied.
                    outcome: if before.is_empty() {
                        "applied"
                    } else {
                        "redone"
                    },
                    versions: versions.clone(),
                    reverted: (before.len() == 1).then(|| before[0].clone()),
                    reverted_versions: before,
                    ..empty_result()
                },
                (None, _) => TenantResult {
                    tenant: name,
                    outcome: "up_to_date",
                    reverted_versions: before,
                    ..empty_result()
                },
            }
        })
        .collect();
    let doc = report_of("migration redo", tenants, started);
    finish(ctx, doc, failed.then_some(&report))
}

/// A fleet run's report, and whether a tenant failed (the library's error carries the report).
fn outcome(result: diesel_workspace::Result<MigrationReport>) -> Result<(MigrationReport, bool)> {
    match result {
        Ok(report) => Ok((report, false)),
        Err(Error::FleetMigration { report }) => Ok((report, true)),
        Err(e) => Err(e.into()),
    }
}

/// The report of `command` (no shared migrations run) since `started`.
fn report_of(
    command: &'static str,
    tenants: Vec<TenantResult>,
    started: Instant,
) -> output::Report {
    output::Report::new(
        command,
        Vec::new(),
        tenants,
        started.elapsed().as_secs_f64(),
    )
}

fn empty_result() -> TenantResult {
    TenantResult {
        tenant: String::new(),
        outcome: "failed",
        versions: Vec::new(),
        reverted: None,
        reverted_versions: Vec::new(),
        sqlstate: None,
        message: None,
        snapshot: None,
    }
}

/// Prints `doc` (JSON, or a line per tenant that changed and a summary); the schema file is
/// written again when nothing failed; an error naming the failures when something did.
fn finish(ctx: &Ctx, mut doc: output::Report, failed: Option<&MigrationReport>) -> Result<()> {
    if failed.is_none() {
        doc.schema_file = super::schema::regenerate(ctx)?;
    }
    if ctx.json() {
        output::print(&doc)?;
    } else {
        for t in &doc.tenants {
            match t.outcome {
                "reverted" => out!("tenant `{}`: reverted {}", t.tenant, t.versions.join(", ")),
                "applied" => out!("tenant `{}`: applied {}", t.tenant, t.versions.join(", ")),
                "redone" => out!(
                    "tenant `{}`: reverted {}, applied {}",
                    t.tenant,
                    t.reverted_versions.join(", "),
                    t.versions.join(", ")
                ),
                "failed" => out!(
                    "tenant `{}`: failed: {}",
                    t.tenant,
                    t.message.as_deref().unwrap_or_default()
                ),
                _ => {}
            }
        }
        let s = &doc.summary;
        out!(
            "{} in {:.2} s: {} changed, {} unchanged, {} failed, {} skipped",
            plural(s.total, "tenant"),
            doc.elapsed_seconds,
            s.changed,
            s.unchanged,
            s.failed,
            s.skipped
        );
        report_schema_file(doc.schema_file.as_deref())?;
    }
    match failed {
        Some(report) => bail!("{}", report.failure_summary()),
        None => Ok(()),
    }
}

/// `migration list`: the shared migrations, each applied or not, then the tenant migrations,
/// each with the tenants (of the selection) where it is applied.
pub(crate) fn list(ctx: &Ctx, select: &SelectArgs) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    let Some(tenant_dir) = &read.tenant_dir else {
        bail!(
            "the tenant migrations directory `{}` does not exist (see --migration-dir)",
            ctx.tenant_dir_path().display()
        );
    };
    super::status::warn_unknown(ctx, &read);
    let migrator = &read.migrator;
    let mut conn = ctx.connect()?;
    let shared = migrator.shared_status(&mut conn)?;
    let statuses = if registry_exists(&mut conn, migrator)? {
        let selection = select::selection(&mut conn, migrator, select)?;
        migrator.status_selected(&mut conn, &selection)?
    } else {
        Vec::new()
    };
    let names = directory_names(tenant_dir)?;
    let shared_names = match ctx.shared_dir()? {
        Some(dir) => directory_names(&dir)?,
        None => BTreeMap::new(),
    };
    let shared_rows: Vec<output::SharedMigration> = (shared.applied.iter().map(|v| (v, true)))
        .chain(shared.pending.iter().map(|v| (v, false)))
        .map(|(version, applied)| output::SharedMigration {
            version: version.clone(),
            applied,
        })
        .collect();
    let tenant_rows: Vec<output::TenantMigration> = migrator
        .tenant_versions()
        .iter()
        .map(|version| {
            let (applied, pending): (Vec<_>, Vec<_>) = statuses
                .iter()
                .filter(|s| s.applied.contains(version) || s.pending.contains(version))
                .partition(|s| s.applied.contains(version));
            let name = |list: Vec<&diesel_workspace::TenantMigrations>| -> Vec<String> {
                list.iter().map(|s| s.tenant.to_string()).collect()
            };
            let (applied, pending) = (name(applied), name(pending));
            output::TenantMigration {
                version: version.clone(),
                name: names
                    .get(version)
                    .cloned()
                    .unwrap_or_else(|| version.clone()),
                state: match (applied.is_empty(), pending.is_empty()) {
                    (false, true) => "applied",
                    (false, false) => "partial",
                    (true, _) => "pending",
                },
                applied,
                pending,
            }
        })
        .collect();
    if ctx.json() {
        return output::print(&output::MigrationList {
            command: "migration list",
            shared: shared_rows,
            tenant: tenant_rows,
            tenants: statuses.len(),
        });
    }
    out!("Shared migrations:");
    for m in &shared_rows {
        let mark = if m.applied { "X" } else { " " };
        let name = shared_names.get(&m.version).unwrap_or(&m.version);
        out!("  [{mark}] {name}");
    }
    out!("Tenant migrations ({}):", plural(statuses.len(), "tenant"));
    for m in &tenant_rows {
        let mark = match m.state {
            "applied" => "X",
            "partial" => "~",
            _ => " ",
        };
        let pending = match m.pending.len() {
            0 => String::new(),
            n if n <= 5 => format!("; pending: {}", m.pending.join(", ")),
            n => format!(
                "; pending: {} and {} more",
                m.pending[..5].join(", "),
                n - 5
            ),
        };
        out!(
            "  [{mark}] {} ({}/{}{pending})",
            m.name,
            m.applied.len(),
            statuses.len()
        );
    }
    Ok(())
}

/// The migration directories of `dir` by version (`2026-01-01-000001_notes` under
/// `20260101000001`, as Diesel reads the version: the part before the first `_`, dashes left
/// out).
fn directory_names(dir: &Path) -> Result<BTreeMap<String, String>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not read `{}`", dir.display()))?;
    let mut out = BTreeMap::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not read `{}`", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((version, _)) = name.split_once('_') {
            out.insert(version.replace('-', ""), name);
        }
    }
    Ok(out)
}

/// `database drop`: drops the database the URL names (from the server's `postgres` database),
/// after asking unless `--yes`; a database that does not exist is reported, not an error (as
/// diesel_cli's `DROP DATABASE IF EXISTS`). Returns the database's name and whether it existed.
pub(crate) fn drop_database(ctx: &Ctx, yes: bool) -> Result<(String, bool)> {
    let url = ctx.database_url()?;
    let (database, maintenance_url) = super::setup::split_database(&url)?;
    let mut admin = PgConnection::establish(&maintenance_url)
        .context("could not connect to the server's `postgres` database to drop the database")?;
    let exists: bool = diesel::select(
        diesel::dsl::sql::<diesel::sql_types::Bool>(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = ",
        )
        .bind::<diesel::sql_types::Text, _>(&database)
        .sql(")"),
    )
    .get_result(&mut admin)
    .context("could not look for the database")?;
    if !exists {
        if !ctx.json() {
            out!("database `{database}` does not exist");
        }
        return Ok((database, false));
    }
    if !yes
        && !confirm(
            &format!(
                "Drop database `{database}`, every tenant and all its data? Type the database's name to confirm: "
            ),
            &database,
            &format!("drop database `{database}`"),
        )?
    {
        bail!("database `{database}` was not dropped: not confirmed (pass --yes to skip the question)");
    }
    admin
        .batch_execute(&format!("DROP DATABASE {}", quote_ident(&database)))
        .with_context(|| format!("could not drop database `{database}`"))?;
    if !ctx.json() {
        out!("dropped database `{database}`");
    }
    Ok((database, true))
}
