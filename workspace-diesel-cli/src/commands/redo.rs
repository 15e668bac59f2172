//! `redo_tenant`: revert a tenant's last migration and apply it again, as `diesel migration
//! redo` does for one database.

use std::time::Instant;

use anyhow::{bail, Result};
use diesel_workspace::TenantOutcome;

use super::{ensure_registered, tenant_id, Ctx};
use crate::output;

/// `redo_tenant <identifier>`: reverts the tenant's last applied migration (its down.sql), then
/// applies the pending migrations again, that one first. These are two transactions: when the
/// second fails, the tenant stays reverted and the error says so.
pub(crate) fn redo(ctx: &Ctx, identifier: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    ensure_registered(&mut conn, &migrator, &tenant)?;
    let started = Instant::now();
    let Some(reverted) = migrator.revert_last(&mut conn, &tenant)? else {
        bail!("tenant `{tenant}` has no applied migration to redo");
    };
    let applied = match migrator.migrate_tenant(&mut conn, &tenant) {
        Ok(TenantOutcome::Applied(versions)) => versions,
        Ok(_) => Vec::new(),
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "tenant `{tenant}`: reverted {reverted}, but applying it again failed (the tenant stays reverted)"
            )))
        }
    };
    drop(conn);
    let schema_file = super::schema::regenerate(ctx)?;
    if ctx.json() {
        let result = output::TenantResult {
            reverted: Some(reverted),
            ..output::TenantResult::new(&tenant, "redone", applied)
        };
        let report = output::Report {
            schema_file,
            ..output::Report::new(
                "redo_tenant",
                Vec::new(),
                vec![result],
                started.elapsed().as_secs_f64(),
            )
        };
        return output::print(&report);
    }
    out!("tenant `{tenant}`: reverted {reverted}");
    out!(
        "tenant `{tenant}`: applied {}",
        if applied.is_empty() {
            "nothing".to_owned()
        } else {
            applied.join(", ")
        }
    );
    super::migrate::report_schema_file(schema_file.as_deref())
}
