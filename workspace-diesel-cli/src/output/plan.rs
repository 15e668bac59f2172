//! The `plan` document (`plan`, `migrate_all --dry-run`).

use serde::Serialize;

/// `plan` and `migrate_all --dry-run`: what a fleet run would do, changing nothing.
#[derive(Debug, Serialize)]
pub(crate) struct Plan {
    pub(crate) command: &'static str,
    /// False when a lock is over the budget (the exit status is 3 then).
    pub(crate) ok: bool,
    /// How many tenants are registered.
    pub(crate) fleet_size: usize,
    /// How many selected tenants the run would take have nothing pending.
    pub(crate) up_to_date: usize,
    /// The selected tenants the run would not touch, with why.
    pub(crate) held: Vec<Held>,
    /// The migrations pending for at least one tenant of the plan, in version order.
    pub(crate) migrations: Vec<PlanMigration>,
    /// The tenants the run would migrate.
    pub(crate) tenants: Vec<PlanTenant>,
    /// The lock budget and the locks over it; `null` without `--max-lock-table-size`.
    pub(crate) budget: Option<PlanBudget>,
}

/// A tenant held back, and why.
#[derive(Debug, Serialize)]
pub(crate) struct Held {
    pub(crate) tenant: String,
    pub(crate) reason: String,
}

/// One pending migration of a plan.
#[derive(Debug, Serialize)]
pub(crate) struct PlanMigration {
    pub(crate) version: String,
    pub(crate) in_transaction: bool,
    pub(crate) statements: Vec<PlanStatement>,
}

/// One statement of a planned migration.
#[derive(Debug, Serialize)]
pub(crate) struct PlanStatement {
    /// Its line in up.sql (1-based).
    pub(crate) line: usize,
    pub(crate) sql: String,
    /// The locks it takes; `schema` is `null` for the tenant's own table.
    pub(crate) locks: Vec<PlanLock>,
    /// The fleet-cost rules it breaks.
    pub(crate) costs: Vec<PlanCost>,
}

/// A lock a statement takes.
#[derive(Debug, Serialize)]
pub(crate) struct PlanLock {
    pub(crate) schema: Option<String>,
    pub(crate) table: String,
    /// PostgreSQL's name of the mode (`ACCESS EXCLUSIVE`).
    pub(crate) lock: &'static str,
}

/// A fleet-cost rule a statement breaks.
#[derive(Debug, Serialize)]
pub(crate) struct PlanCost {
    pub(crate) rule: &'static str,
    pub(crate) cost: &'static str,
    pub(crate) rewrite: &'static str,
}

/// One tenant of a plan.
#[derive(Debug, Serialize)]
pub(crate) struct PlanTenant {
    pub(crate) tenant: String,
    pub(crate) pending: Vec<String>,
    /// Each table its statements lock: `bytes` `null` when the run creates it first, `rows`
    /// (the planner's estimate) `null` when never analyzed.
    pub(crate) tables: Vec<PlanTable>,
}

/// A table and its size.
#[derive(Debug, Serialize)]
pub(crate) struct PlanTable {
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) bytes: Option<i64>,
    pub(crate) rows: Option<i64>,
}

/// The lock budget of a plan.
#[derive(Debug, Serialize)]
pub(crate) struct PlanBudget {
    /// The weakest lock counted.
    pub(crate) strong_lock: &'static str,
    pub(crate) max_bytes: i64,
    pub(crate) over: Vec<PlanOver>,
}

/// A lock over the budget.
#[derive(Debug, Serialize)]
pub(crate) struct PlanOver {
    pub(crate) tenant: String,
    pub(crate) version: String,
    pub(crate) line: usize,
    pub(crate) schema: String,
    pub(crate) table: String,
    pub(crate) lock: &'static str,
    pub(crate) bytes: i64,
}

impl Plan {
    /// From the library's plan, the budget and the locks over it.
    pub(crate) fn new(
        plan: &diesel_workspace::MigrationPlan,
        budget: Option<crate::commands::Budget>,
        over: &[diesel_workspace::LockOverBudget],
    ) -> Self {
        Self {
            command: "plan",
            ok: over.is_empty(),
            fleet_size: plan.fleet_size,
            up_to_date: plan.up_to_date,
            held: plan
                .held
                .iter()
                .map(|(t, why)| Held {
                    tenant: t.to_string(),
                    reason: why.clone(),
                })
                .collect(),
            migrations: plan
                .migrations
                .iter()
                .map(|m| PlanMigration {
                    version: m.version.clone(),
                    in_transaction: m.in_transaction,
                    statements: m
                        .statements
                        .iter()
                        .map(|s| PlanStatement {
                            line: s.line,
                            sql: s.sql.clone(),
                            locks: s
                                .locks
                                .iter()
                                .map(|l| PlanLock {
                                    schema: l.schema.clone(),
                                    table: l.table.clone(),
                                    lock: l.lock.name(),
                                })
                                .collect(),
                            costs: s
                                .costs
                                .iter()
                                .map(|r| PlanCost {
                                    rule: r.name(),
                                    cost: r.cost(),
                                    rewrite: r.rewrite(),
                                })
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            tenants: plan
                .tenants
                .iter()
                .map(|t| PlanTenant {
                    tenant: t.tenant.to_string(),
                    pending: t.pending.clone(),
                    tables: t
                        .tables
                        .iter()
                        .map(|s| PlanTable {
                            schema: s.schema.clone(),
                            table: s.table.clone(),
                            bytes: s.bytes,
                            rows: s.rows,
                        })
                        .collect(),
                })
                .collect(),
            budget: budget.map(|b| PlanBudget {
                strong_lock: b.at_least.name(),
                max_bytes: b.max_bytes,
                over: over
                    .iter()
                    .map(|o| PlanOver {
                        tenant: o.tenant.to_string(),
                        version: o.version.clone(),
                        line: o.line,
                        schema: o.schema.clone(),
                        table: o.table.clone(),
                        lock: o.lock.name(),
                        bytes: o.bytes,
                    })
                    .collect(),
            }),
        }
    }
}
