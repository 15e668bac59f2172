//! `plan` and `migrate_all --dry-run`: what a fleet run would do, changing nothing, and its lock
//! budget (`--max-lock-table-size`), whose breach exits with its own status.

use anyhow::{bail, Result};
use diesel_workspace::{LockLevel, LockOverBudget, MigrationPlan, TableLock};

use super::{plural, registry_exists, select, Ctx};
use crate::cli::{BudgetArgs, SelectArgs};
use crate::exit::Usage;
use crate::output;

/// A plan over its lock budget: the command exits with status 3 ([`crate::exit::CHECK`]; 1 is
/// any other failure, 2 a usage error).
#[derive(Debug)]
pub(crate) struct OverBudget(String);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OverBudget {}

/// The budget the options describe: the weakest lock counted and the largest table size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    pub(crate) at_least: LockLevel,
    pub(crate) max_bytes: i64,
}

impl Budget {
    fn from_args(args: &BudgetArgs) -> Result<Option<Self>> {
        let Some(size) = &args.max_lock_table_size else {
            return Ok(None);
        };
        // A value the flags cannot take is a usage error (status 2), like clap's own.
        let at_least = match &args.strong_lock {
            Some(level) => level
                .parse()
                .map_err(|e| anyhow::Error::new(Usage(format!("--strong-lock: {e}"))))?,
            None => LockLevel::Share,
        };
        let max_bytes = parse_size(size).map_err(|e| anyhow::Error::new(Usage(e.to_string())))?;
        Ok(Some(Self {
            at_least,
            max_bytes,
        }))
    }
}

/// `plan` (and `migrate_all --dry-run`): prints the plan; fails with [`OverBudget`] when a lock
/// is over the budget.
pub(crate) fn plan(ctx: &Ctx, select_args: &SelectArgs, args: &BudgetArgs) -> Result<()> {
    let budget = Budget::from_args(args)?;
    let plan = read_plan(ctx, select_args)?;
    let over = budget
        .map(|b| plan.over_budget(b.at_least, b.max_bytes))
        .unwrap_or_default();
    if ctx.json() {
        output::print(&output::Plan::new(&plan, budget, &over))?;
    } else {
        print_plan(&plan)?;
        print_over(budget, &over)?;
    }
    verdict(budget, &over)
}

/// `migrate_all --max-lock-table-size`: the plan's budget checked before anything is applied;
/// the locks over it are printed (human output) and the run refused.
pub(crate) fn check_budget(ctx: &Ctx, select_args: &SelectArgs, args: &BudgetArgs) -> Result<()> {
    let budget = Budget::from_args(args)?;
    let plan = read_plan(ctx, select_args)?;
    let over = budget
        .map(|b| plan.over_budget(b.at_least, b.max_bytes))
        .unwrap_or_default();
    if !ctx.json() && !over.is_empty() {
        print_over(budget, &over)?;
    }
    verdict(budget, &over)
}

fn read_plan(ctx: &Ctx, select_args: &SelectArgs) -> Result<MigrationPlan> {
    let migrator = ctx.migrator()?;
    let mut conn = ctx.connect()?;
    if !registry_exists(&mut conn, &migrator)? {
        return Ok(MigrationPlan::default());
    }
    let selection = select::selection(&mut conn, &migrator, select_args)?;
    Ok(migrator.plan(&mut conn, &selection)?)
}

fn verdict(budget: Option<Budget>, over: &[LockOverBudget]) -> Result<()> {
    match budget {
        Some(b) if !over.is_empty() => Err(OverBudget(format!(
            "{} would take a {} lock or stronger on a table over {} (--max-lock-table-size); \
             nothing was applied",
            plural(over.len(), "statement"),
            b.at_least,
            pretty_size(b.max_bytes)
        ))
        .into()),
        _ => Ok(()),
    }
}

fn print_plan(plan: &MigrationPlan) -> Result<()> {
    out!(
        "plan: {} to migrate, {} up to date, {} held (of {} registered)",
        plural(plan.tenants.len(), "tenant"),
        plan.up_to_date,
        plan.held.len(),
        plan.fleet_size
    );
    for m in &plan.migrations {
        let tx = if m.in_transaction {
            "in a transaction"
        } else {
            "outside a transaction"
        };
        out!("migration {} ({tx})", m.version);
        for s in &m.statements {
            out!("  line {}: {}", s.line, one_line(&s.sql));
            if !s.locks.is_empty() {
                let locks: Vec<String> = s.locks.iter().map(lock_text).collect();
                out!("    locks: {}", locks.join(", "));
            }
            for rule in &s.costs {
                out!(
                    "    cost: {rule}: {}; instead: {}",
                    rule.cost(),
                    rule.rewrite()
                );
            }
        }
    }
    for t in &plan.tenants {
        let tables: Vec<String> = t
            .tables
            .iter()
            .map(|s| {
                let size = match (s.bytes, s.rows) {
                    (None, _) => "new".to_owned(),
                    (Some(b), Some(r)) => format!("{}, ~{r} rows", pretty_size(b)),
                    (Some(b), None) => pretty_size(b),
                };
                format!("{}.{} {size}", s.schema, s.table)
            })
            .collect();
        out!(
            "tenant {}: {} pending; {}",
            t.tenant,
            t.pending.len(),
            if tables.is_empty() {
                "locks no existing table".to_owned()
            } else {
                tables.join("; ")
            }
        );
    }
    for (tenant, why) in &plan.held {
        out!("held: {tenant} ({why})");
    }
    Ok(())
}

fn print_over(budget: Option<Budget>, over: &[LockOverBudget]) -> Result<()> {
    let Some(b) = budget else { return Ok(()) };
    out!(
        "lock budget: {} or stronger on tables up to {}: {}",
        b.at_least,
        pretty_size(b.max_bytes),
        if over.is_empty() {
            "within".to_owned()
        } else {
            format!("{} over", plural(over.len(), "lock"))
        }
    );
    for o in over {
        out!(
            "  over: {} {} line {}: {} on {}.{} ({})",
            o.tenant,
            o.version,
            o.line,
            o.lock,
            o.schema,
            o.table,
            pretty_size(o.bytes)
        );
    }
    Ok(())
}

fn lock_text(l: &TableLock) -> String {
    match &l.schema {
        Some(s) => format!("{} on {s}.{}", l.lock, l.table),
        None => format!("{} on {}", l.lock, l.table),
    }
}

fn one_line(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `SIZE` of `--max-lock-table-size`: bytes, or a number with a unit (`kB`, `MB`, `GB`, `TB`,
/// 1024-based, any case; `B` for bytes).
pub(crate) fn parse_size(text: &str) -> Result<i64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim());
    let factor: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 1.0,
        "kb" | "kib" => 1024.0,
        "mb" | "mib" => 1024.0 * 1024.0,
        "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => bail!("invalid size `{text}`: the unit must be one of B, kB, MB, GB, TB"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size `{text}`: expected a number, e.g. 100MB"))?;
    let bytes = value * factor;
    if !(0.0..9.0e18).contains(&bytes) {
        bail!("invalid size `{text}`: out of range");
    }
    // Truncation to whole bytes is intended.
    #[allow(clippy::cast_possible_truncation)]
    Ok(bytes as i64)
}

/// `bytes` as PostgreSQL's `pg_size_pretty` would round it, 1024-based.
pub(crate) fn pretty_size(bytes: i64) -> String {
    let mut value = bytes as f64;
    for unit in ["bytes", "kB", "MB", "GB"] {
        if value.abs() < 10.0 * 1024.0 {
            return if unit == "bytes" {
                format!("{bytes} bytes")
            } else {
                format!("{value:.0} {unit}")
            };
        }
        value /= 1024.0;
    }
    format!("{value:.0} TB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100MB").unwrap(), 100 << 20);
        assert_eq!(parse_size("1.5 gb").unwrap(), 3 << 29);
        assert_eq!(parse_size("8192").unwrap(), 8192);
        assert_eq!(parse_size("16kB").unwrap(), 16384);
        assert!(parse_size("10 parsecs").is_err());
        assert!(parse_size("MB").is_err());
        assert_eq!(pretty_size(8192), "8192 bytes");
        assert_eq!(pretty_size(100 << 20), "100 MB");
    }
}
