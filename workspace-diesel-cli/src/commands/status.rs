//! Read-only views of the migration state: `status`, and the helpers `list_tenants` and
//! `pending` share with it.
//!
//! They work without the tenant migrations directory (the applied migrations, drift and hazards
//! come from the database; what is pending is then unknown, and said so), and a migration whose
//! up.sql is still empty is reported, not fatal.

use anyhow::Result;
use diesel::prelude::*;
use diesel_workspace::{Migrator, TenantMigrations, TenantSnapshot};

use super::{plural, registry_exists, Ctx, ReadOnly};
use crate::cli::SelectArgs;
use crate::output;

/// `status`: the shared migrations, then a summary of the tenants and the ones that need care,
/// then a `warning:` line on stderr for each hazard [`Migrator::audit`] finds.
pub(crate) fn status(ctx: &Ctx, select: &SelectArgs) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    let migrator = &read.migrator;
    let known = read.tenant_dir.is_some();
    let mut conn = ctx.connect()?;
    let shared = migrator.shared_status(&mut conn)?;
    let (applied_shared, pending_shared) = (shared.applied, shared.pending);
    let versions = migrator.tenant_versions().to_vec();
    let mut statuses = statuses(&mut conn, migrator)?;
    if super::select::is_given(select) && registry_exists(&mut conn, migrator)? {
        let selection = super::select::selection(&mut conn, migrator, select)?;
        let chosen: std::collections::HashSet<_> = migrator
            .status_selected(&mut conn, &selection)?
            .into_iter()
            .map(|s| s.tenant)
            .collect();
        statuses.retain(|s| chosen.contains(&s.tenant));
    }
    let drifted = statuses.iter().filter(|s| s.drift.is_some()).count();
    let up_to_date = statuses
        .iter()
        .filter(|s| s.pending.is_empty() && s.drift.is_none())
        .count();
    let with_pending = statuses.iter().filter(|s| !s.pending.is_empty()).count();
    let attention: Vec<&TenantMigrations> = statuses
        .iter()
        .filter(|s| (known && !s.pending.is_empty()) || s.drift.is_some())
        .collect();
    // What weakens isolation in this database's set-up (superuser, CVE-2018-1058, shadowing
    // shared tables, tenants without a schema), on stderr so the summary stays parseable.
    // The catalog's size (schemas, relations, columns), what a backend serving every tenant
    // keeps of it, beside the hazards (among them `CatalogScale` past its threshold).
    let (hazards, catalog): (Vec<String>, _) = if registry_exists(&mut conn, migrator)? {
        let hazards = migrator
            .audit(&mut conn)?
            .iter()
            .map(ToString::to_string)
            .collect();
        (hazards, Some(migrator.catalog_size(&mut conn)?))
    } else {
        (Vec::new(), None)
    };
    warn_unknown(ctx, &read);
    let snapshots: Vec<(&TenantMigrations, &TenantSnapshot)> = statuses
        .iter()
        .flat_map(|s| s.snapshots.iter().map(move |snap| (s, snap)))
        .collect();
    if ctx.json() {
        let doc = output::Status {
            shared: output::Shared {
                applied: applied_shared,
                pending: pending_shared,
            },
            tenant_migrations: output::TenantMigrations {
                directory: read.tenant_dir.as_ref().map(|d| d.display().to_string()),
                latest: versions.last().cloned(),
                versions,
                empty: read.placeholders.clone(),
            },
            tenants: output::TenantSummary {
                total: statuses.len(),
                up_to_date: known.then_some(up_to_date),
                with_pending: known.then_some(with_pending),
                drifted,
                attention: attention
                    .iter()
                    .map(|s| output::Tenant::from_status(s, known))
                    .collect(),
            },
            warnings: hazards.clone(),
            catalog: catalog.map(|c| output::Catalog {
                schemas: c.schemas,
                relations: c.relations,
                attributes: c.attributes,
                backend_bytes: c.backend_bytes(),
            }),
            snapshots: snapshots
                .iter()
                .map(|(s, snap)| output::StatusSnapshot {
                    tenant: s.tenant.to_string(),
                    name: snap.name.clone(),
                    taken_at: snap.taken_at.to_rfc3339(),
                    expires_at: snap.expires_at.map(|e| e.to_rfc3339()),
                    size_bytes: snap.size_bytes,
                })
                .collect(),
        };
        output::print(&doc)?;
        return warn_hazards(&hazards);
    }
    out!(
        "shared migrations: {} applied, {} pending{}",
        applied_shared.len(),
        pending_shared.len(),
        if pending_shared.is_empty() {
            String::new()
        } else {
            format!(" ({})", pending_shared.join(", "))
        }
    );
    match &read.tenant_dir {
        Some(_) => out!(
            "tenant migrations: {}{}",
            plural(versions.len(), "migration"),
            versions
                .last()
                .map(|v| format!(", latest {v}"))
                .unwrap_or_default()
        ),
        None => out!(
            "tenant migrations: unknown (no directory `{}`)",
            ctx.tenant_dir_path().display()
        ),
    }
    if !read.placeholders.is_empty() {
        out!(
            "  not written yet (empty up.sql, not counted): {}",
            read.placeholders.join(", ")
        );
    }
    if known {
        out!(
            "tenants: {} ({up_to_date} up to date, {with_pending} with pending migrations, {drifted} drifted)",
            statuses.len()
        );
    } else {
        out!(
            "tenants: {} (pending migrations unknown, {drifted} drifted)",
            statuses.len()
        );
    }
    for s in attention {
        out!("  {}: {}", s.tenant, state(s, known));
    }
    if !snapshots.is_empty() {
        let total: i64 = snapshots.iter().map(|(_, snap)| snap.size_bytes).sum();
        out!(
            "snapshots: {} ({})",
            snapshots.len(),
            super::snapshots::size(total)
        );
        for (s, snap) in &snapshots {
            out!(
                "  {}: {} taken {}, {}",
                s.tenant,
                snap.name,
                snap.taken_at.format("%Y-%m-%d %H:%M:%S UTC"),
                super::snapshots::size(snap.size_bytes)
            );
        }
    }
    if let Some(catalog) = catalog {
        out!("catalog: {catalog}");
    }
    if let Some(dialect) = super::placement::citus(&mut conn)? {
        if registry_exists(&mut conn, migrator)? {
            super::placement::status_lines(&mut conn, migrator, &dialect)?;
        }
    }
    warn_hazards(&hazards)
}

/// The hazards, after the results (a closed stdout has ended the command before).
fn warn_hazards(hazards: &[String]) -> Result<()> {
    for hazard in hazards {
        eprintln!("warning: {hazard}");
    }
    Ok(())
}

/// A `warning:` on stderr when the tenant migrations directory is missing (what is pending is
/// then unknown) and for each migration left out because its up.sql is still empty.
pub(crate) fn warn_unknown(ctx: &Ctx, read: &ReadOnly) {
    if read.tenant_dir.is_none() {
        eprintln!(
            "warning: the tenant migrations directory `{}` does not exist: pending migrations are unknown (see --migration-dir)",
            ctx.tenant_dir_path().display()
        );
    }
    for name in &read.placeholders {
        eprintln!(
            "warning: tenant migration `{name}` has no SQL statement in its up.sql yet: not counted until it is written"
        );
    }
}

/// Every tenant's state, drift included; empty when the registry does not exist yet.
pub(crate) fn statuses(
    conn: &mut PgConnection,
    migrator: &Migrator,
) -> Result<Vec<TenantMigrations>> {
    if !registry_exists(conn, migrator)? {
        return Ok(Vec::new());
    }
    Ok(migrator.status_with_drift(conn)?)
}

/// One tenant's state in a few words; `known` is false when pending migrations are unknown.
pub(crate) fn state(s: &TenantMigrations, known: bool) -> String {
    let mut parts = Vec::new();
    if !known {
        parts.push("pending unknown".to_owned());
    } else if !s.pending.is_empty() {
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
