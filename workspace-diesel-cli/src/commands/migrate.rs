//! Migration commands: `migrate_tenant`, `migrate_all`, `revert_tenant`, `status`, and the fleet
//! progress display.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{bail, Result};
use diesel::prelude::*;
use diesel_workspace::{
    Error, FailurePolicy, MigrateOptions, MigrationReport, Migrator, Progress, TenantOutcome,
    TenantStatus,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{ensure_registered, plural, registry_exists, tenant_id, Ctx};
use crate::cli::{FleetArgs, RevertArgs, TenantOrAll};

/// `migrate_tenant <identifier>` or `migrate_tenant --all`.
pub(crate) fn migrate_tenant(ctx: &Ctx, args: &TenantOrAll) -> Result<()> {
    let Some(identifier) = args.identifier.as_deref().filter(|_| !args.all) else {
        return migrate_all(ctx, &args.fleet);
    };
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    ensure_registered(&mut conn, &migrator, &tenant)?;
    let shared = migrator.run_shared(&mut conn)?;
    report_shared(&shared)?;
    match migrator.migrate_tenant(&mut conn, &tenant)? {
        TenantOutcome::Applied(versions) => {
            out!("tenant `{tenant}`: applied {}", versions_list(&versions))
        }
        _ => out!("tenant `{tenant}` is up to date"),
    }
    Ok(())
}

/// `migrate_all` (and `migrate_tenant --all`): the shared migrations, then every tenant.
pub(crate) fn migrate_all(ctx: &Ctx, fleet: &FleetArgs) -> Result<()> {
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let shared = migrator.run_shared(&mut conn)?;
    drop(conn);
    report_shared(&shared)?;
    let display = Display::new("applied");
    let result = migrator.migrate_all(url, &options(fleet, &display));
    display.finish();
    fleet_result(result, "migrated", "applied")
}

/// `revert_tenant <identifier>` or `revert_tenant --all`, optionally `--version V`.
pub(crate) fn revert_tenant(ctx: &Ctx, args: &RevertArgs) -> Result<()> {
    let migrator = ctx.migrator()?;
    let target = &args.target;
    let version = args.version.as_deref();
    if target.all {
        let url = ctx.database_url()?;
        let mut conn = ctx.connect()?;
        if !registry_exists(&mut conn, &migrator)? {
            out!("no tenants");
            return Ok(());
        }
        drop(conn);
        let display = Display::new("reverted");
        let opts = options(&target.fleet, &display);
        let result = match version {
            Some(v) => migrator.revert_version_all(url, v, &opts),
            None => migrator.revert_last_all(url, &opts),
        };
        display.finish();
        return fleet_result(result, "reverted", "reverted");
    }
    let Some(identifier) = target.identifier.as_deref() else {
        bail!("name a tenant, or pass --all");
    };
    let tenant = tenant_id(identifier)?;
    let mut conn = ctx.connect()?;
    ensure_registered(&mut conn, &migrator, &tenant)?;
    let display = Display::new("reverted");
    let opts = options(&target.fleet, &display);
    match version {
        Some(v) => match migrator.revert_version(&mut conn, &tenant, v, &opts)? {
            Some(version) => out!("tenant `{tenant}`: reverted {version}"),
            None => out!("tenant `{tenant}`: {v} is not applied, nothing to revert"),
        },
        None => match migrator.revert_last_with(&mut conn, &tenant, &opts)? {
            Some(version) => out!("tenant `{tenant}`: reverted {version}"),
            None => out!("tenant `{tenant}` has no applied migration to revert"),
        },
    }
    Ok(())
}

/// `status`: the shared migrations, then a summary of the tenants and the ones that need care,
/// then a `warning:` line on stderr for each hazard [`Migrator::audit`] finds.
pub(crate) fn status(ctx: &Ctx) -> Result<()> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    let shared = migrator.shared_status(&mut conn)?;
    out!(
        "shared migrations: {} applied, {} pending{}",
        shared.applied.len(),
        shared.pending.len(),
        if shared.pending.is_empty() {
            String::new()
        } else {
            format!(" ({})", shared.pending.join(", "))
        }
    );
    let versions = migrator.tenant_versions();
    out!(
        "tenant migrations: {}{}",
        plural(versions.len(), "migration"),
        versions
            .last()
            .map(|v| format!(", latest {v}"))
            .unwrap_or_default()
    );
    let statuses = statuses(&mut conn, &migrator)?;
    let up_to_date = statuses
        .iter()
        .filter(|s| s.pending.is_empty() && s.drift.is_none())
        .count();
    let with_pending = statuses.iter().filter(|s| !s.pending.is_empty()).count();
    let drifted = statuses.iter().filter(|s| s.drift.is_some()).count();
    out!(
        "tenants: {} ({up_to_date} up to date, {with_pending} with pending migrations, {drifted} drifted)",
        statuses.len()
    );
    for s in statuses
        .iter()
        .filter(|s| !s.pending.is_empty() || s.drift.is_some())
    {
        out!("  {}: {}", s.tenant, state(s));
    }
    // What weakens isolation in this database's set-up (superuser, CVE-2018-1058, shadowing
    // shared tables, tenants without a schema), on stderr so the summary stays parseable.
    if super::registry_exists(&mut conn, &migrator)? {
        for hazard in migrator.audit(&mut conn)? {
            eprintln!("warning: {hazard}");
        }
    }
    Ok(())
}

/// Every tenant's state, drift included; empty when the registry does not exist yet.
pub(crate) fn statuses(conn: &mut PgConnection, migrator: &Migrator) -> Result<Vec<TenantStatus>> {
    if !registry_exists(conn, migrator)? {
        return Ok(Vec::new());
    }
    Ok(migrator.status_with_drift(conn)?)
}

/// One tenant's state in a few words.
pub(crate) fn state(s: &TenantStatus) -> String {
    let mut parts = Vec::new();
    if !s.pending.is_empty() {
        parts.push(format!(
            "{} pending ({})",
            s.pending.len(),
            s.pending.join(", ")
        ));
    }
    if let Some(drift) = &s.drift {
        parts.push(format!("drift: {drift}"));
    }
    if parts.is_empty() {
        "up to date".to_owned()
    } else {
        parts.join("; ")
    }
}

fn report_shared(applied: &[String]) -> Result<()> {
    if !applied.is_empty() {
        out!("shared: applied {}", versions_list(applied));
    }
    Ok(())
}

fn versions_list(versions: &[String]) -> String {
    versions.join(", ")
}

/// The library's fleet options from the command line, reporting to `display`.
fn options(fleet: &FleetArgs, display: &Display) -> MigrateOptions {
    let mut opts = MigrateOptions::default()
        .on_failure(if fleet.continue_on_error {
            FailurePolicy::Continue
        } else {
            FailurePolicy::Stop
        })
        .progress(display.callback());
    if let Some(n) = fleet.parallel {
        opts = opts.parallel(usize::from(n));
    }
    if let Some(secs) = fleet.lock_timeout {
        opts = opts.lock_timeout(Duration::from_secs(secs));
    }
    opts
}

/// Prints the report's summary; an error naming the failed tenants when any failed.
fn fleet_result(
    result: diesel_workspace::Result<MigrationReport>,
    did: &str,
    applied_word: &str,
) -> Result<()> {
    let report = match result {
        Ok(report) => report,
        Err(Error::FleetMigration { report }) => {
            summary(&report, did, applied_word)?;
            bail!("{}", report.failure_summary());
        }
        Err(e) => return Err(e.into()),
    };
    summary(&report, did, applied_word)
}

fn summary(report: &MigrationReport, did: &str, applied_word: &str) -> Result<()> {
    let applied = report.applied().count();
    let up_to_date = report.up_to_date().count();
    let failed: Vec<_> = report.failed().collect();
    let skipped = report.skipped().count();
    out!(
        "{did} {} in {:.2} s: {applied} {applied_word}, {up_to_date} up to date, {} failed, {skipped} skipped",
        plural(report.tenants.len(), "tenant"),
        report.elapsed.as_secs_f64(),
        failed.len(),
    );
    for (tenant, _, message) in failed {
        out!("  failed: {tenant}: {message}");
    }
    let skipped: Vec<String> = report.skipped().map(|t| t.to_string()).collect();
    if !skipped.is_empty() {
        out!(
            "  skipped after the first failure (pass --continue-on-error to go on): {}",
            skipped.join(", ")
        );
    }
    Ok(())
}

/// Fleet progress: a bar on a terminal (stderr), plain lines on stdout otherwise.
struct Display {
    bar: Option<ProgressBar>,
    verb: &'static str,
}

impl Display {
    fn new(verb: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} tenants, {msg}, eta {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self { bar, verb }
    }

    fn callback(&self) -> impl Fn(&Progress) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let verb = self.verb;
        move |p: &Progress| {
            let what = match &p.outcome {
                TenantOutcome::Applied(v) => format!("{verb} {}", v.join(", ")),
                TenantOutcome::UpToDate => "up to date".to_owned(),
                TenantOutcome::Failed { message, .. } => format!("FAILED: {message}"),
                TenantOutcome::Skipped => "skipped".to_owned(),
            };
            let secs = p.elapsed.as_secs_f64();
            let rate = if secs > 0.0 {
                p.done as f64 / secs
            } else {
                0.0
            };
            match &bar {
                Some(bar) => {
                    bar.set_length(p.total as u64);
                    bar.set_position(p.done as u64);
                    bar.set_message(format!("{} failed, {rate:.1} tenants/s", p.failed));
                    if matches!(p.outcome, TenantOutcome::Failed { .. }) {
                        bar.println(format!("{}: {what}", p.tenant));
                    }
                }
                None => {
                    // A closed stdout must not stop the run: the summary reports it afterwards.
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stdout().lock(),
                        "[{}/{}] {}: {what} ({} failed, {rate:.1} tenants/s)",
                        p.done,
                        p.total,
                        p.tenant,
                        p.failed
                    );
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
