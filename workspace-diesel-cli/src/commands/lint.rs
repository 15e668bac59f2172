//! `lint_migrations`, and the same check before anything is applied on Citus.

use anyhow::{bail, Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::Migrator;

use super::{plural, Ctx};

/// `lint_migrations`: prints what Citus could not apply in a distributed schema; fails when
/// anything is found.
pub(crate) fn lint(ctx: &Ctx) -> Result<()> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    let findings = migrator
        .lint_citus(&mut conn)
        .context("could not check the tenant migrations")?;
    if ctx.json() {
        let findings: Vec<String> = findings.iter().map(ToString::to_string).collect();
        crate::output::print(&serde_json::json!({
            "command": "lint_migrations",
            "ok": findings.is_empty(),
            "checked": migrator.tenant_versions().len(),
            "findings": findings,
        }))?;
    } else if findings.is_empty() {
        out!(
            "{} checked: nothing Citus cannot do in a distributed schema",
            plural(migrator.tenant_versions().len(), "tenant migration")
        );
    } else {
        for f in &findings {
            out!("{f}");
        }
    }
    if findings.is_empty() {
        return Ok(());
    }
    bail!(
        "{} in the tenant migrations that Citus cannot apply in a distributed schema",
        plural(findings.len(), "problem")
    )
}

/// On Citus, refuses to apply tenant migrations the lint rejects (naming each finding); does
/// nothing on PostgreSQL.
pub(crate) fn before_applying(conn: &mut PgConnection, migrator: &Migrator) -> Result<()> {
    if !migrator.dialect(conn)?.distributes_schemas() {
        return Ok(());
    }
    let findings = migrator
        .lint_citus(conn)
        .context("could not check the tenant migrations")?;
    if findings.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = findings.iter().map(|f| format!("  {f}")).collect();
    bail!(
        "refusing to apply tenant migrations that Citus cannot run in a distributed schema \
         (see lint_migrations):\n{}",
        list.join("\n")
    )
}
