//! The dry-run plan of a fleet run: for a selection, each tenant's pending migrations, each
//! statement's locks (PostgreSQL's documented lock levels), the size of each table a statement
//! locks, and the statements whose cost grows with the table or the fleet. Nothing is changed.

use std::collections::{BTreeMap, BTreeSet};

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text};

use crate::error::{Error, Result};
use crate::lint::{statement_costs, CostLint, CostRule, LockLevel, TableLock};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::selection::Selection;
use crate::sql::own;
use crate::statements::split_statements;
use crate::tenant::TenantId;

/// How many tenants' tables one catalog query of [`Migrator::plan`] sizes.
const SIZE_BATCH: usize = 1_000;

/// What a fleet run over a selection would do, read without changing anything (see
/// [`Migrator::plan`]).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MigrationPlan {
    /// The migrations pending for at least one planned tenant, in version order, each
    /// statement with its locks and costs.
    pub migrations: Vec<PlannedMigration>,
    /// The tenants the run would migrate (selected, in a state the run takes, something
    /// pending), sorted.
    pub tenants: Vec<TenantPlan>,
    /// The selected tenants the run would take that have nothing pending.
    pub up_to_date: usize,
    /// The selected tenants the run would not touch, with why (their state, or a missing schema
    /// the run would fail on).
    pub held: Vec<(TenantId, String)>,
    /// How many tenants are registered (what [`CostRule::DefaultAtFleetScale`] counts).
    pub fleet_size: usize,
}

/// One pending migration of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedMigration {
    /// Its version.
    pub version: String,
    /// Whether it runs in a transaction (`run_in_transaction`).
    pub in_transaction: bool,
    /// Its statements, in order.
    pub statements: Vec<PlannedStatement>,
}

/// One statement of a planned migration.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedStatement {
    /// Its line in the migration's `up.sql` (1-based).
    pub line: usize,
    /// Its SQL.
    pub sql: String,
    /// The locks it takes on existing tables; a lock without a schema is on the tenant's own
    /// table.
    pub locks: Vec<TableLock>,
    /// The fleet-cost rules it breaks (as [`CostLint`] with the plan's fleet size).
    pub costs: Vec<CostRule>,
}

/// One tenant of the plan: what is pending, and the tables its statements lock.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TenantPlan {
    /// The tenant.
    pub tenant: TenantId,
    /// Its pending versions, in order (each one of [`MigrationPlan::migrations`]).
    pub pending: Vec<String>,
    /// Each table its pending statements lock, with its size.
    pub tables: Vec<TableSize>,
}

/// A table and its size as the catalog says (`pg_total_relation_size`: table, indexes and
/// TOAST; `reltuples`: the planner's row estimate).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TableSize {
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub table: String,
    /// Bytes on disk; `None` when the table does not exist yet (an earlier statement of the
    /// run creates it).
    pub bytes: Option<i64>,
    /// The row estimate; `None` when the table was never vacuumed or analyzed.
    pub rows: Option<i64>,
}

/// A lock of the plan over a size budget (see [`MigrationPlan::over_budget`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockOverBudget {
    /// The tenant.
    pub tenant: TenantId,
    /// The migration.
    pub version: String,
    /// The statement's line in its `up.sql`.
    pub line: usize,
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The lock the statement takes on it.
    pub lock: LockLevel,
    /// The table's size in bytes.
    pub bytes: i64,
}

impl TenantPlan {
    /// The size of `schema.table`, when the plan read it.
    pub fn size(&self, schema: &str, table: &str) -> Option<&TableSize> {
        self.tables
            .iter()
            .find(|t| t.schema == schema && t.table == table)
    }
}

impl MigrationPlan {
    /// The migration of `version`, when it is in the plan.
    pub fn migration(&self, version: &str) -> Option<&PlannedMigration> {
        self.migrations.iter().find(|m| m.version == version)
    }

    /// Every lock at least as strong as `at_least` that a statement would take on a table of
    /// more than `max_bytes` bytes, tenant by tenant, in the order the run would take them.
    /// Empty when the plan stays within the budget.
    pub fn over_budget(&self, at_least: LockLevel, max_bytes: i64) -> Vec<LockOverBudget> {
        let mut out = Vec::new();
        for tenant in &self.tenants {
            for version in &tenant.pending {
                let Some(m) = self.migration(version) else {
                    continue;
                };
                for statement in &m.statements {
                    for lock in statement.locks.iter().filter(|l| l.lock >= at_least) {
                        let schema = lock.schema.as_deref().unwrap_or(tenant.tenant.as_str());
                        let bytes = tenant
                            .size(schema, &lock.table)
                            .and_then(|s| s.bytes)
                            .unwrap_or(0);
                        if bytes > max_bytes {
                            out.push(LockOverBudget {
                                tenant: tenant.tenant.clone(),
                                version: version.clone(),
                                line: statement.line,
                                schema: schema.to_owned(),
                                table: lock.table.clone(),
                                lock: lock.lock,
                                bytes,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

#[derive(QueryableByName)]
struct SizeRow {
    #[diesel(sql_type = Text)]
    schema: String,
    #[diesel(sql_type = Text)]
    table: String,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    rows: Option<i64>,
}

impl Migrator {
    /// The dry-run plan of [`migrate_selected`](Self::migrate_selected) over `selection`:
    /// which tenants it would migrate and what is pending for each (from the central record, as
    /// the run decides it), every statement of each pending migration (split with
    /// [`split_statements`]) with the lock it takes on which table (PostgreSQL's documented
    /// lock levels, see [`statement_locks`](crate::statement_locks)) and the rules of the
    /// [`CostLint`] it breaks, and the size of each table locked, per tenant.
    ///
    /// It only reads: one query over the registry and the central record, then one catalog
    /// query per 1,000 planned tenants for the table sizes (`pg_total_relation_size`, whose
    /// brief `ACCESS SHARE` lock is released at once, so no lock accumulates). No ledger, no
    /// registry row and no catalog row changes.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{LockLevel, Migrator, Selection};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let plan = migrator.plan(conn, &Selection::all())?;
    /// for lock in plan.over_budget(LockLevel::Share, 100 << 20) {
    ///     eprintln!(
    ///         "{} {} line {}: {} on {}.{} ({} bytes)",
    ///         lock.tenant, lock.version, lock.line, lock.lock, lock.schema, lock.table, lock.bytes
    ///     );
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::TenantNotFound`] when the selection names a tenant that is not registered;
    /// [`Error::MigrationSource`] when a pending migration cannot be split into statements;
    /// [`Error::Query`] when a query fails.
    pub fn plan(&self, conn: &mut PgConnection, selection: &Selection) -> Result<MigrationPlan> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let rows = self.pending_rows(conn)?;
        let fleet_size = rows.len();
        let picked = self.pick(selection, rows, |r| (r.name.as_str(), r.state.as_str()))?;
        let mut plan = MigrationPlan {
            held: picked.held,
            fleet_size,
            ..MigrationPlan::default()
        };
        let mut pending_somewhere = BTreeSet::new();
        for row in picked.run {
            let tenant = TenantId::new(&row.name)?;
            if !row.has_schema {
                plan.held
                    .push((tenant, "schema missing: the run would fail it".to_owned()));
            } else if row.pending.is_empty() {
                plan.up_to_date += 1;
            } else {
                pending_somewhere.extend(row.pending.iter().cloned());
                plan.tenants.push(TenantPlan {
                    tenant,
                    pending: row.pending,
                    tables: Vec::new(),
                });
            }
        }
        plan.held.sort();
        let lint = CostLint::new().fleet_size(fleet_size);
        for m in &self.set.migrations {
            if !pending_somewhere.contains(&m.version) {
                continue;
            }
            let split = |e| Error::MigrationSource(format!("migration {}: {e}", m.version).into());
            let mut created = BTreeSet::new();
            let mut statements = Vec::new();
            for s in split_statements(&m.up).map_err(split)? {
                let (locks, costs) =
                    statement_costs(&lint, s.sql(), &mut created).map_err(split)?;
                statements.push(PlannedStatement {
                    line: s.line(),
                    sql: s.sql().trim().to_owned(),
                    locks: locks.locks,
                    costs: costs.into_iter().map(|(rule, _)| rule).collect(),
                });
            }
            plan.migrations.push(PlannedMigration {
                version: m.version.clone(),
                in_transaction: m.in_tx,
                statements,
            });
        }
        self.size_tables(conn, &mut plan)?;
        Ok(plan)
    }

    /// Fills each planned tenant's [`TableSize`]s: one catalog query per [`SIZE_BATCH`]
    /// tenants, each in a transaction of its own.
    fn size_tables(&self, conn: &mut PgConnection, plan: &mut MigrationPlan) -> Result<()> {
        let by_version: BTreeMap<&str, &PlannedMigration> = plan
            .migrations
            .iter()
            .map(|m| (m.version.as_str(), m))
            .collect();
        let mut wanted: Vec<BTreeSet<(String, String)>> = Vec::new();
        for tenant in &plan.tenants {
            let mut tables = BTreeSet::new();
            for m in tenant
                .pending
                .iter()
                .filter_map(|v| by_version.get(v.as_str()))
            {
                for lock in m.statements.iter().flat_map(|s| &s.locks) {
                    let schema = lock.schema.as_deref().unwrap_or(tenant.tenant.as_str());
                    tables.insert((schema.to_owned(), lock.table.clone()));
                }
            }
            wanted.push(tables);
        }
        for (tenants, wanted) in plan
            .tenants
            .chunks_mut(SIZE_BATCH)
            .zip(wanted.chunks(SIZE_BATCH))
        {
            let (schemas, tables): (Vec<&str>, Vec<&str>) = wanted
                .iter()
                .flatten()
                .map(|(s, t)| (s.as_str(), t.as_str()))
                .unzip();
            let found: BTreeMap<(String, String), (i64, Option<i64>)> = own(conn, |conn| {
                diesel::sql_query(
                    "SELECT u.s AS schema, u.t AS table, \
                     pg_catalog.pg_total_relation_size(c.oid) AS bytes, \
                     CASE WHEN c.reltuples >= 0 THEN c.reltuples::pg_catalog.int8 END AS rows \
                     FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), \
                     pg_catalog.unnest($2::pg_catalog.text[])) AS u (s, t) \
                     JOIN pg_catalog.pg_namespace n ON n.nspname = u.s \
                     JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = u.t",
                )
                .bind::<Array<Text>, _>(&schemas)
                .bind::<Array<Text>, _>(&tables)
                .load::<SizeRow>(conn)
            })?
            .into_iter()
            .map(|r| ((r.schema, r.table), (r.bytes, r.rows)))
            .collect();
            for (tenant, wanted) in tenants.iter_mut().zip(wanted) {
                tenant.tables = wanted
                    .iter()
                    .map(|(schema, table)| {
                        let size = found.get(&(schema.clone(), table.clone()));
                        TableSize {
                            schema: schema.clone(),
                            table: table.clone(),
                            bytes: size.map(|s| s.0),
                            rows: size.and_then(|s| s.1),
                        }
                    })
                    .collect();
            }
        }
        Ok(())
    }
}
