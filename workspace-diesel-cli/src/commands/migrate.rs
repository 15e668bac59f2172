//! Migration commands: `migrate_tenant`, `migrate_all`, `revert_tenant`, and the fleet progress
//! display.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use diesel_workspace::{
    Budget, Error, FailurePolicy, MigrateOptions, MigrationReport, Progress, TenantOutcome, Wave,
    DEFAULT_SNAPSHOT_RETENTION,
};
use indicatif::{ProgressBar, ProgressStyle};

use super::{ensure_registered, plural, registry_exists, select, tenant_id, Ctx};
use crate::cli::{FleetArgs, MigrateAllArgs, RevertArgs, TenantOrAll};
use crate::exit::usage;
use crate::output::{self, Verb};

/// `migrate_tenant <identifier>` or `migrate_tenant --all`.
pub(crate) fn migrate_tenant(ctx: &Ctx, args: &TenantOrAll) -> Result<()> {
    let Some(identifier) = args.identifier.as_deref().filter(|_| !args.all) else {
        return fleet_migrate(ctx, &args.fleet, "migrate_tenant");
    };
    no_selection(&args.fleet)?;
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    ensure_registered(&mut conn, &migrator, &tenant)?;
    let shared = migrator.run_shared(&mut conn)?;
    super::lint::before_applying(&mut conn, &migrator)?;
    let opts = snapshot_options(&args.fleet, MigrateOptions::default());
    let started = Instant::now();
    let outcome = migrator.migrate_tenant_with(&mut conn, &tenant, &opts)?;
    let kept = match &outcome {
        TenantOutcome::Applied(_) if args.fleet.snapshot => {
            migrator.snapshots(&mut conn, Some(&tenant))?.pop()
        }
        _ => None,
    };
    drop(conn);
    let schema_file = super::schema::regenerate(ctx)?;
    if ctx.json() {
        let result = match outcome {
            TenantOutcome::Applied(versions) => output::TenantResult {
                snapshot: kept.map(|s| s.name),
                ..output::TenantResult::new(&tenant, "applied", versions)
            },
            _ => output::TenantResult::new(&tenant, "up_to_date", Vec::new()),
        };
        let elapsed = started.elapsed().as_secs_f64();
        return output::print(&output::Report {
            schema_file,
            ..output::Report::new("migrate_tenant", shared, vec![result], elapsed)
        });
    }
    report_shared(&shared)?;
    match outcome {
        TenantOutcome::Applied(versions) => {
            out!("tenant `{tenant}`: applied {}", versions_list(&versions));
            if let Some(s) = kept {
                out!(
                    "tenant `{tenant}`: snapshot {} kept (restore_tenant {})",
                    s.name,
                    s.name
                );
            }
        }
        _ => out!("tenant `{tenant}` is up to date"),
    }
    report_schema_file(schema_file.as_deref())
}

/// `migrate_all`: the shared migrations, then every tenant; with `--dry-run`, the plan only;
/// with `--max-lock-table-size`, the plan checked first and nothing applied when it is over.
/// `command` names it in the report (`migrate_all`, `migration run`).
pub(crate) fn migrate_all(ctx: &Ctx, args: &MigrateAllArgs, command: &'static str) -> Result<()> {
    if args.dry_run {
        return super::plan::plan(ctx, &args.fleet.select, &args.budget);
    }
    if args.budget.max_lock_table_size.is_some() {
        super::plan::check_budget(ctx, &args.fleet.select, &args.budget)?;
    }
    fleet_migrate(ctx, &args.fleet, command)
}

/// The shared migrations, then the selected tenants; the report under `command`.
pub(crate) fn fleet_migrate(ctx: &Ctx, fleet: &FleetArgs, command: &'static str) -> Result<()> {
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let shared = migrator.run_shared(&mut conn)?;
    super::lint::before_applying(&mut conn, &migrator)?;
    let selection = select::selection(&mut conn, &migrator, &fleet.select)?;
    // The snapshots there before the run: the new ones are this run's.
    let before: BTreeSet<String> = if fleet.snapshot {
        let all = migrator.snapshots(&mut conn, None)?;
        all.into_iter().map(|s| s.name).collect()
    } else {
        BTreeSet::new()
    };
    drop(conn);
    if !ctx.json() {
        report_shared(&shared)?;
    }
    let display = Display::new("applied", ctx.json());
    let opts = snapshot_options(fleet, options(fleet, &display)?);
    let result = migrator.migrate_selected(&url, &selection, &opts);
    display.finish();
    let mut taken = BTreeMap::new();
    if fleet.snapshot {
        let mut conn = ctx.connect()?;
        for s in migrator.snapshots(&mut conn, None)? {
            if !before.contains(&s.name) {
                taken.insert(s.tenant.to_string(), s.name);
            }
        }
        if !ctx.json() {
            out!("kept {} (see snapshots)", plural(taken.len(), "snapshot"));
        }
    }
    finish_fleet_with(ctx, command, shared, result, Verb::Apply, &taken)
}

/// Ends a fleet run: the JSON report or the summary; when no tenant failed, the schema file is
/// written again (after a run that applied or reverted migrations); an error naming the failed
/// tenants when any failed.
pub(crate) fn finish_fleet(
    ctx: &Ctx,
    command: &'static str,
    shared: Vec<String>,
    result: diesel_workspace::Result<MigrationReport>,
    verb: Verb,
) -> Result<()> {
    finish_fleet_with(ctx, command, shared, result, verb, &BTreeMap::new())
}

/// [`finish_fleet`], the JSON report naming the snapshot `taken` of each tenant (by name).
fn finish_fleet_with(
    ctx: &Ctx,
    command: &'static str,
    shared: Vec<String>,
    result: diesel_workspace::Result<MigrationReport>,
    verb: Verb,
    taken: &BTreeMap<String, String>,
) -> Result<()> {
    let fleet = |report: &MigrationReport, shared| {
        let mut doc = output::Report::fleet(command, shared, report, verb);
        for t in &mut doc.tenants {
            t.snapshot = taken.get(&t.tenant).cloned();
        }
        doc
    };
    let report = match result {
        Ok(report) => report,
        Err(Error::FleetMigration { report }) => {
            if ctx.json() {
                output::print(&fleet(&report, shared))?;
            } else {
                summary(&report, verb)?;
            }
            bail!("{}", report.failure_summary());
        }
        Err(e) => return Err(e.into()),
    };
    let schema_file = match verb {
        Verb::Create => None,
        Verb::Apply | Verb::Revert => super::schema::regenerate(ctx)?,
    };
    if ctx.json() {
        return output::print(&output::Report {
            schema_file,
            ..fleet(&report, shared)
        });
    }
    summary(&report, verb)?;
    report_schema_file(schema_file.as_deref())
}

/// The line saying the schema file was written again, if it was.
pub(crate) fn report_schema_file(file: Option<&str>) -> Result<()> {
    if let Some(file) = file {
        out!("schema: wrote {file}");
    }
    Ok(())
}

/// `revert_tenant <identifier>` or `revert_tenant --all`, optionally `--version V`.
pub(crate) fn revert_tenant(ctx: &Ctx, args: &RevertArgs) -> Result<()> {
    no_snapshot(&args.target.fleet, "revert_tenant")?;
    let migrator = ctx.migrator()?;
    let target = &args.target;
    let version = args.version.as_deref();
    if target.all {
        let url = ctx.database_url()?;
        let mut conn = ctx.connect()?;
        if !registry_exists(&mut conn, &migrator)? {
            if ctx.json() {
                return output::print(&output::Report::new(
                    "revert_tenant",
                    Vec::new(),
                    Vec::new(),
                    0.0,
                ));
            }
            out!("no tenants");
            return Ok(());
        }
        let selection = select::selection(&mut conn, &migrator, &target.fleet.select)?;
        drop(conn);
        let display = Display::new("reverted", ctx.json());
        let opts = options(&target.fleet, &display)?;
        let result = migrator.revert_selected(&url, version, &selection, &opts);
        display.finish();
        return finish_fleet(ctx, "revert_tenant", Vec::new(), result, Verb::Revert);
    }
    let Some(identifier) = target.identifier.as_deref() else {
        usage!("name a tenant, or pass --all");
    };
    no_selection(&target.fleet)?;
    let tenant = tenant_id(identifier)?;
    let mut conn = ctx.connect()?;
    ensure_registered(&mut conn, &migrator, &tenant)?;
    let display = Display::new("reverted", ctx.json());
    let opts = options(&target.fleet, &display)?;
    let started = Instant::now();
    let reverted = match version {
        Some(v) => migrator.revert_version(&mut conn, &tenant, v, &opts)?,
        None => migrator.revert_last_with(&mut conn, &tenant, &opts)?,
    };
    drop(conn);
    let schema_file = super::schema::regenerate(ctx)?;
    if ctx.json() {
        let result = match reverted {
            Some(version) => output::TenantResult::new(&tenant, "reverted", vec![version]),
            None => output::TenantResult::new(&tenant, "nothing_to_revert", Vec::new()),
        };
        let elapsed = started.elapsed().as_secs_f64();
        return output::print(&output::Report {
            schema_file,
            ..output::Report::new("revert_tenant", Vec::new(), vec![result], elapsed)
        });
    }
    match (reverted, version) {
        (Some(version), _) => out!("tenant `{tenant}`: reverted {version}"),
        (None, Some(v)) => out!("tenant `{tenant}`: {v} is not applied, nothing to revert"),
        (None, None) => out!("tenant `{tenant}` has no applied migration to revert"),
    }
    report_schema_file(schema_file.as_deref())
}

/// `opts` with the snapshot of `--snapshot [--retain AGE]`.
fn snapshot_options(fleet: &FleetArgs, opts: MigrateOptions) -> MigrateOptions {
    if fleet.snapshot {
        opts.snapshot(fleet.retain.unwrap_or(DEFAULT_SNAPSHOT_RETENTION))
    } else {
        opts
    }
}

/// Refuses `--snapshot` where nothing is migrated forward (a revert takes no snapshot).
pub(crate) fn no_snapshot(fleet: &FleetArgs, command: &str) -> Result<()> {
    if fleet.snapshot {
        bail!("`{command}` takes no snapshot: --snapshot is for migrate_tenant and migrate_all");
    }
    Ok(())
}

/// Refuses the selection options beside one named tenant.
fn no_selection(fleet: &FleetArgs) -> Result<()> {
    if select::is_given(&fleet.select) {
        usage!("the tenant selection options (--tenants, --pattern, ...) need --all, not a tenant name");
    }
    Ok(())
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
pub(crate) fn options(fleet: &FleetArgs, display: &Display) -> Result<MigrateOptions> {
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
    if !fleet.wave.is_empty() {
        opts = opts.waves(
            fleet
                .wave
                .iter()
                .map(|w| wave(w))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    if let Some(budget) = &fleet.failure_budget {
        opts = opts.failure_budget(failure_budget(budget)?);
    }
    if let Some(secs) = fleet.pause {
        opts = opts.pause(Duration::from_secs(secs));
    }
    Ok(opts.record(!fleet.no_record))
}

/// `--wave`: `tenants:a,b`, `N%` or `rest`.
fn wave(text: &str) -> Result<Wave> {
    if text == "rest" {
        return Ok(Wave::Rest);
    }
    if let Some(list) = text.strip_prefix("tenants:") {
        let names = list
            .split(',')
            .map(|n| tenant_id(n.trim()))
            .collect::<Result<Vec<_>>>()?;
        if names.is_empty() {
            usage!("--wave tenants: names no tenant");
        }
        return Ok(Wave::Tenants(names));
    }
    match text.strip_suffix('%').map(str::parse::<u8>) {
        Some(Ok(p)) if (1..=100).contains(&p) => Ok(Wave::Percent(p)),
        _ => usage!(
            "invalid --wave `{text}`: expected tenants:NAME,..., a share from 1% to 100%, or rest"
        ),
    }
}

/// `--failure-budget`: `N` failures or `N%` of the tenants run so far.
fn failure_budget(text: &str) -> Result<Budget> {
    let parsed = match text.strip_suffix('%') {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 100)
            .map(|p| Budget::Share(f64::from(p) / 100.0)),
        None => text.parse::<usize>().ok().map(Budget::Count),
    };
    match parsed {
        Some(budget) => Ok(budget),
        None => usage!("invalid --failure-budget `{text}`: expected a count (2) or a share (5%)"),
    }
}

/// The summary of a fleet run for people.
fn summary(report: &MigrationReport, verb: Verb) -> Result<()> {
    let (did, applied_word) = match verb {
        Verb::Apply => ("migrated", "applied"),
        Verb::Revert => ("reverted", "reverted"),
        Verb::Create => ("created", "created"),
    };
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
    if !report.held.is_empty() {
        let held: Vec<String> = report
            .held
            .iter()
            .map(|(t, state)| format!("{t} ({state})"))
            .collect();
        out!("  left alone: {}", held.join(", "));
    }
    if let Some(why) = &report.stopped {
        out!("  stopped: {why}");
    }
    if let Some(run) = report.run {
        out!("  recorded as run {run} (see runs; undo with revert_run {run})");
    }
    let skipped: Vec<String> = report.skipped().map(|t| t.to_string()).collect();
    if !skipped.is_empty() && report.stopped.is_some() {
        out!("  not started: {}", skipped.join(", "));
    } else if !skipped.is_empty() {
        out!(
            "  skipped after the first failure (pass --continue-on-error to go on): {}",
            skipped.join(", ")
        );
    }
    Ok(())
}

/// Fleet progress: a bar on a terminal (stderr), plain lines on stdout otherwise (none with
/// `--format json`, whose stdout is the report alone).
pub(crate) struct Display {
    bar: Option<ProgressBar>,
    verb: &'static str,
    quiet: bool,
}

impl Display {
    pub(crate) fn new(verb: &'static str, quiet: bool) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = crate::progress::add(ProgressBar::new(0));
            bar.set_style(
                ProgressStyle::with_template("[{bar:30}] {pos}/{len} tenants, {msg}, eta {eta}")
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar
        });
        Self { bar, verb, quiet }
    }

    pub(crate) fn callback(&self) -> impl Fn(&Progress) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let verb = self.verb;
        let quiet = self.quiet;
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
                None if quiet => {}
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

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
