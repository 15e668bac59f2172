//! `runs` (the recorded fleet runs, or one run's tenants) and `revert_run`.

use anyhow::Result;

use super::migrate::{finish_fleet, options, Display};
use super::{plural, registry_exists, Ctx};
use crate::cli::FleetArgs;
use crate::exit::usage;
use crate::output::{self, Verb};

/// `runs [--run ID]`.
pub(crate) fn list(ctx: &Ctx, run: Option<i64>) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    let migrator = &read.migrator;
    let mut conn = ctx.connect()?;
    let runs = if registry_exists(&mut conn, migrator)? {
        migrator.runs(&mut conn)?
    } else {
        Vec::new()
    };
    let Some(id) = run else {
        if ctx.json() {
            let runs = runs.iter().map(output::Run::from).collect();
            return output::print(&output::Runs { runs });
        }
        if runs.is_empty() {
            out!("no recorded fleet run");
        }
        for r in &runs {
            let what = match r.reverts {
                Some(of) => format!("revert of run {of}"),
                None => r.kind.clone(),
            };
            out!(
                "run {}: {what} by {} at {}, {} ({}, {} changed, {} failed), selection: {}",
                r.id,
                r.started_by,
                r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
                r.outcome.as_deref().unwrap_or("unfinished"),
                plural(usize::try_from(r.tenants).unwrap_or(0), "tenant"),
                r.changed,
                r.failed,
                r.selection
            );
        }
        return Ok(());
    };
    let header = runs
        .iter()
        .find(|r| r.id == id)
        .ok_or(diesel_workspace::Error::RunNotFound(id))?;
    let tenants = migrator.run_tenants(&mut conn, id)?;
    if ctx.json() {
        return output::print(&output::RunDetail {
            run: output::Run::from(header),
            tenants: tenants.iter().map(output::RunTenant::from).collect(),
        });
    }
    out!(
        "run {id}: {} by {}, {}, selection: {}",
        header.kind,
        header.started_by,
        header.outcome.as_deref().unwrap_or("unfinished"),
        header.selection
    );
    for t in &tenants {
        let took = t
            .duration_ms
            .map(|ms| format!(" in {ms} ms"))
            .unwrap_or_default();
        let detail = match (&t.sqlstate, &t.message) {
            (Some(s), Some(m)) => format!(": {m} ({s})"),
            (None, Some(m)) => format!(": {m}"),
            _ => String::new(),
        };
        out!(
            "  {}: {} [{}] before [{}]{took}{detail}",
            t.tenant,
            t.outcome,
            t.versions.join(", "),
            t.before.join(", ")
        );
    }
    Ok(())
}

/// `revert_run ID`.
pub(crate) fn revert(ctx: &Ctx, id: i64, fleet: &FleetArgs) -> Result<()> {
    if super::select::is_given(&fleet.select) || !fleet.wave.is_empty() {
        usage!("revert_run takes the run's tenants: no selection or waves");
    }
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let display = Display::new("reverted", ctx.json());
    let opts = options(fleet, &display)?;
    let result = migrator.revert_run(&url, id, &opts);
    display.finish();
    finish_fleet(ctx, "revert_run", Vec::new(), result, Verb::Revert)
}
