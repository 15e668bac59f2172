//! Warm pool commands: `fill_spares`, `list_spares`, `drain_spares`.
//!
//! A spare is a schema named `_spare_<hex>` with every tenant migration applied, listed in
//! `public.workspace_spares`; `create_tenant_schema` claims the oldest current one instead of
//! provisioning a tenant from scratch.

use anyhow::{bail, Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::{Migrator, TenantId};

use super::{confirm, plural, Ctx};
use crate::exit::usage;
use crate::output;

/// The most spare schemas `fill_spares` keeps: each one is a full tenant schema.
pub(crate) const MAX_SPARES: usize = 1000;

/// Parses the `<N>` of `fill_spares`: a whole number from 0 to [`MAX_SPARES`].
fn spare_count(text: &str) -> Result<usize> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_SPARES => Ok(n),
        _ => usage!("invalid spare count `{text}`: expected a whole number from 0 to {MAX_SPARES}"),
    }
}

/// `fill_spares <N>`: applies pending shared migrations (the pool's table comes with them),
/// brings stale spares up to date, then creates spares until the pool holds `N`.
pub(crate) fn fill(ctx: &Ctx, target: &str) -> Result<()> {
    let target = spare_count(target)?;
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    migrator.run_shared(&mut conn)?;
    super::lint::before_applying(&mut conn, &migrator)?;
    let created = migrator
        .fill_spares(&mut conn, target)
        .context("could not fill the warm pool")?;
    let total = migrator.spares(&mut conn)?.len();
    if ctx.json() {
        return output::done(
            "fill_spares",
            serde_json::json!({"created": created, "spares": total}),
        );
    }
    out!(
        "created {} ({total} in the warm pool)",
        plural(created, "spare schema")
    );
    Ok(())
}

/// `list_spares`: one spare schema per line, oldest (claimed first) first.
pub(crate) fn list(ctx: &Ctx) -> Result<()> {
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    let spares = spares(&mut conn, &migrator)?;
    if ctx.json() {
        let names: Vec<&str> = spares.iter().map(TenantId::as_str).collect();
        return output::print(&serde_json::json!({"spares": names}));
    }
    if spares.is_empty() {
        out!("no spares");
        return Ok(());
    }
    for spare in &spares {
        out!("{spare}");
    }
    Ok(())
}

/// `drain_spares [--yes]`: drops every spare schema; asks first unless `--yes`.
pub(crate) fn drain(ctx: &Ctx, yes: bool) -> Result<()> {
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    let n = spares(&mut conn, &migrator)?.len();
    if n == 0 {
        if ctx.json() {
            return output::done("drain_spares", serde_json::json!({"dropped": 0}));
        }
        out!("no spares");
        return Ok(());
    }
    if !yes
        && !confirm(
            &format!(
                "Drop the {} of the warm pool? Type `yes` to confirm: ",
                plural(n, "spare schema")
            ),
            "yes",
            "drain the warm pool",
        )?
    {
        bail!("the warm pool was not drained: not confirmed (pass --yes to skip the question)");
    }
    let dropped = migrator
        .drain_spares(&mut conn)
        .context("could not drain the warm pool")?;
    if ctx.json() {
        return output::done("drain_spares", serde_json::json!({"dropped": dropped}));
    }
    out!("dropped {}", plural(dropped, "spare schema"));
    Ok(())
}

/// The spares, oldest first; none when the pool's table does not exist yet (the shared
/// migrations have not run).
fn spares(conn: &mut PgConnection, migrator: &Migrator) -> Result<Vec<TenantId>> {
    let installed = migrator
        .is_installed(conn)
        .context("could not look for the warm pool's table")?;
    if !installed {
        return Ok(Vec::new());
    }
    migrator
        .spares(conn)
        .context("could not list the warm pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_counts() {
        assert_eq!(spare_count("0").unwrap(), 0);
        assert_eq!(spare_count("3").unwrap(), 3);
        assert_eq!(spare_count("1000").unwrap(), MAX_SPARES);
        for bad in ["-1", "1001", "18446744073709551616", "three", "", " 3", "+"] {
            let error = spare_count(bad).unwrap_err();
            assert!(error.downcast_ref::<crate::exit::Usage>().is_some());
            let message = error.to_string();
            assert_eq!(
                message,
                format!("invalid spare count `{bad}`: expected a whole number from 0 to 1000")
            );
        }
    }
}
