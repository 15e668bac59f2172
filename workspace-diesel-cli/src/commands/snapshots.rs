//! Snapshot commands: `snapshots`, `restore_tenant`, `prune_snapshots`.
//!
//! A snapshot is a schema named `_snap_<hex>` holding a copy of a tenant's tables, taken by a
//! `migrate_tenant` / `migrate_all` run with `--snapshot` in the transaction of the tenant's
//! first pending migration, and recorded in `public.workspace_snapshots`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::{Migrator, Snapshot, TenantId};

use super::{confirm, plural, tenant_id, Ctx};
use crate::output;

/// `snapshots [--tenant T]`: one snapshot per line, oldest first.
pub(crate) fn list(ctx: &Ctx, tenant: Option<&str>) -> Result<()> {
    let tenant = tenant.map(tenant_id).transpose()?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    let snapshots = snapshots(&mut conn, &migrator, tenant.as_ref())?;
    if ctx.json() {
        return output::print(&output::Snapshots {
            snapshots: snapshots.iter().map(output::Snapshot::new).collect(),
        });
    }
    if snapshots.is_empty() {
        out!("no snapshots");
        return Ok(());
    }
    for s in &snapshots {
        out!("{}", line(s));
    }
    let total: i64 = snapshots.iter().map(|s| s.size_bytes).sum();
    out!("{}, {}", plural(snapshots.len(), "snapshot"), size(total));
    Ok(())
}

/// `restore_tenant <snapshot> [--yes]`: asks first (the tenant's rows since the snapshot are
/// lost) unless `--yes`.
pub(crate) fn restore(ctx: &Ctx, snapshot: &str, yes: bool) -> Result<()> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    let found = snapshots(&mut conn, &migrator, None)?
        .into_iter()
        .find(|s| s.name == snapshot);
    let Some(found) = found else {
        bail!("snapshot `{snapshot}` does not exist (see snapshots)");
    };
    if !yes
        && !confirm(
            &format!(
                "Restore tenant `{}` to {} (taken {})? Its changes since are lost. \
                 Type the tenant's name to confirm: ",
                found.tenant,
                found.name,
                found.taken_at.to_rfc3339()
            ),
            found.tenant.as_str(),
            "restore a tenant",
        )?
    {
        bail!(
            "tenant `{}` was not restored: not confirmed (pass --yes to skip the question)",
            found.tenant
        );
    }
    let started = Instant::now();
    let restored = migrator
        .restore_snapshot(&mut conn, snapshot)
        .with_context(|| format!("could not restore tenant `{}`", found.tenant))?;
    let elapsed = started.elapsed().as_secs_f64();
    if ctx.json() {
        return output::print(&output::SnapshotReport {
            command: "restore_tenant",
            ok: true,
            restored: Some(output::Snapshot::new(&restored)),
            removed: None,
            elapsed_seconds: elapsed,
        });
    }
    let rows: i64 = restored.tables.iter().map(|t| t.rows).sum();
    out!(
        "tenant `{}`: restored to {} ({}, {rows} rows, checksums equal) in {elapsed:.2} s",
        restored.tenant,
        restored.name,
        versions(&restored.versions),
    );
    Ok(())
}

/// `prune_snapshots [--older-than AGE]`.
pub(crate) fn prune(ctx: &Ctx, older_than: Option<Duration>) -> Result<()> {
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    let started = Instant::now();
    let removed = if is_installed(&mut conn, &migrator)? {
        migrator
            .prune_snapshots(&mut conn, older_than)
            .context("could not prune the snapshots")?
    } else {
        Vec::new()
    };
    if ctx.json() {
        return output::print(&output::SnapshotReport {
            command: "prune_snapshots",
            ok: true,
            restored: None,
            removed: Some(removed.iter().map(output::Snapshot::new).collect()),
            elapsed_seconds: started.elapsed().as_secs_f64(),
        });
    }
    for s in &removed {
        out!("removed {}", line(s));
    }
    let freed: i64 = removed.iter().map(|s| s.size_bytes).sum();
    out!(
        "removed {} ({} freed)",
        plural(removed.len(), "snapshot"),
        size(freed)
    );
    Ok(())
}

/// The snapshots (of `tenant`), oldest first; none when the table does not exist yet.
fn snapshots(
    conn: &mut PgConnection,
    migrator: &Migrator,
    tenant: Option<&TenantId>,
) -> Result<Vec<Snapshot>> {
    if !is_installed(conn, migrator)? {
        return Ok(Vec::new());
    }
    migrator
        .snapshots(conn, tenant)
        .context("could not list the snapshots")
}

fn is_installed(conn: &mut PgConnection, migrator: &Migrator) -> Result<bool> {
    migrator
        .is_installed(conn)
        .context("could not look for the snapshots' table")
}

/// One snapshot for people: name, tenant, when, expiry, size, versions.
fn line(s: &Snapshot) -> String {
    let expires = match s.expires_at {
        Some(e) => format!("expires {}", e.format("%Y-%m-%d %H:%M:%S UTC")),
        None => "kept until pruned".to_owned(),
    };
    format!(
        "{}  tenant `{}`  taken {}  {expires}  {}  {}",
        s.name,
        s.tenant,
        s.taken_at.format("%Y-%m-%d %H:%M:%S UTC"),
        size(s.size_bytes),
        versions(&s.versions)
    )
}

fn versions(versions: &[String]) -> String {
    match versions.last() {
        Some(last) => format!("{} up to {last}", plural(versions.len(), "version")),
        None => "no version".to_owned(),
    }
}

/// A size for people, in binary units.
pub(crate) fn size(bytes: i64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 * 1024 * 1024), "5.0 MiB");
    }

    #[test]
    fn durations_take_a_unit() {
        use crate::cli::duration;
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("0m"), Ok(Duration::ZERO));
        for bad in ["", "7", "d", "-1d", "1.5h", "7w", "99999999999999999d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
