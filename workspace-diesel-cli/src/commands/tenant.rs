//! Tenant commands: `create_tenant_schema`, `list_tenants`, `drop_tenant`, `rename_tenant`,
//! `set_tenant_status`.

use anyhow::{bail, Context as _, Result};

use super::{confirm, plural, tenant_id, Ctx};
use crate::cli::TenantState;

/// `create_tenant_schema <identifier>`: applies pending shared migrations (the registry table
/// comes with them), then registers the tenant and creates its schema with every tenant
/// migration, in one transaction.
pub(crate) fn create(ctx: &Ctx, identifier: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let versions = migrator.tenant_versions().len();
    let mut conn = ctx.connect()?;
    let registered = migrator
        .is_registered(&mut conn, &tenant)
        .with_context(|| format!("could not look up tenant `{tenant}` in the registry"))?;
    if registered {
        bail!("tenant `{tenant}` already exists");
    }
    migrator.run_shared(&mut conn)?;
    migrator.create_tenant(&mut conn, &tenant)?;
    out!(
        "created tenant `{tenant}` (schema {}, {} applied)",
        tenant.quoted(),
        plural(versions, "migration")
    );
    Ok(())
}

/// `list_tenants`: one line per tenant with its migration state.
pub(crate) fn list(ctx: &Ctx) -> Result<()> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    let statuses = super::migrate::statuses(&mut conn, &migrator)?;
    if statuses.is_empty() {
        out!("no tenants");
        return Ok(());
    }
    let width = statuses
        .iter()
        .map(|s| s.tenant.as_str().len())
        .max()
        .unwrap_or(0)
        .max("TENANT".len());
    out!(
        "{:<width$}  {:>7}  {:>7}  STATE",
        "TENANT",
        "APPLIED",
        "PENDING"
    );
    for s in &statuses {
        out!(
            "{:<width$}  {:>7}  {:>7}  {}",
            s.tenant.as_str(),
            s.applied.len(),
            s.pending.len(),
            super::migrate::state(s)
        );
    }
    Ok(())
}

/// `drop_tenant <identifier>`: asks first unless `--yes`.
pub(crate) fn drop(ctx: &Ctx, identifier: &str, yes: bool) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    super::ensure_registered(&mut conn, &migrator, &tenant)?;
    if !yes
        && !confirm(
            &format!(
        "Drop tenant `{tenant}`, its schema and all its data? Type the tenant's name to confirm: "
    ),
            tenant.as_str(),
            &format!("drop tenant `{tenant}`"),
        )?
    {
        bail!("tenant `{tenant}` was not dropped: not confirmed (pass --yes to skip the question)");
    }
    migrator.drop_tenant(&mut conn, &tenant)?;
    out!("dropped tenant `{tenant}`");
    Ok(())
}

/// `rename_tenant <from> <to>`.
pub(crate) fn rename(ctx: &Ctx, from: &str, to: &str) -> Result<()> {
    let from = tenant_id(from)?;
    let to = tenant_id(to)?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    super::ensure_registered(&mut conn, &migrator, &from)?;
    migrator.rename_tenant(&mut conn, &from, &to)?;
    out!("renamed tenant `{from}` to `{to}`");
    Ok(())
}

/// `set_tenant_status <identifier> <status>`.
pub(crate) fn set_status(ctx: &Ctx, identifier: &str, status: TenantState) -> Result<()> {
    use diesel_workspace::WorkspaceStatus;
    let tenant = tenant_id(identifier)?;
    let status = match status {
        TenantState::Provisioning => WorkspaceStatus::Provisioning,
        TenantState::Active => WorkspaceStatus::Active,
        TenantState::Suspended => WorkspaceStatus::Suspended,
        TenantState::Archived => WorkspaceStatus::Archived,
    };
    let mut conn = ctx.connect()?;
    let before = diesel_workspace::set_tenant_status(&mut conn, &tenant, status)?;
    out!(
        "tenant `{tenant}`: {} -> {}",
        state_name(before),
        state_name(status)
    );
    Ok(())
}

fn state_name(s: diesel_workspace::WorkspaceStatus) -> &'static str {
    use diesel_workspace::WorkspaceStatus::*;
    match s {
        Provisioning => "provisioning",
        Active => "active",
        Suspended => "suspended",
        Archived => "archived",
    }
}
