//! `lint_migrations` (the fleet-cost lint and the Citus lint), and the Citus check before
//! anything is applied on Citus.

use anyhow::{bail, Context as _, Result};
use diesel::PgConnection;
use diesel_workspace::Migrator;

use super::{plural, Ctx};

/// `lint_migrations`: prints the statements whose cost grows with the table or the fleet (a
/// failure with `--deny-costs`), then what Citus could not apply in a distributed schema (always
/// a failure).
pub(crate) fn lint(ctx: &Ctx, deny_costs: bool) -> Result<()> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    let costs = migrator
        .lint_costs(&mut conn)
        .context("could not check the tenant migrations")?;
    let findings = migrator
        .lint_citus(&mut conn)
        .context("could not check the tenant migrations")?;
    let denied_costs = deny_costs && !costs.is_empty();
    if ctx.json() {
        let shown = |list: &[_]| -> Vec<String> { list.iter().map(ToString::to_string).collect() };
        crate::output::print(&serde_json::json!({
            "command": "lint_migrations",
            "ok": findings.is_empty() && !denied_costs,
            "checked": migrator.tenant_versions().len(),
            "costs": costs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "findings": shown(&findings),
        }))?;
    } else {
        for f in &costs {
            out!("cost: {f}");
        }
        if findings.is_empty() && !denied_costs {
            out!(
                "{} checked: nothing Citus cannot do in a distributed schema",
                plural(migrator.tenant_versions().len(), "tenant migration")
            );
        }
        for f in &findings {
            out!("{f}");
        }
    }
    if denied_costs {
        bail!(
            "{} in the tenant migrations whose cost grows with the table or the fleet \
             (--deny-costs){}",
            plural(costs.len(), "statement"),
            if findings.is_empty() {
                String::new()
            } else {
                format!(
                    ", and {} Citus cannot apply",
                    plural(findings.len(), "problem")
                )
            }
        );
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
