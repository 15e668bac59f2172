#![doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))]
#![deny(missing_docs)]
#![warn(rust_2018_idioms, unreachable_pub)]

#[cfg(feature = "r2d2")]
pub mod affinity;
mod audit;
#[cfg(feature = "cache")]
pub mod cache;
pub mod citus;
mod connect;
mod connection;
mod context;
#[cfg(feature = "deadpool")]
mod deadpool;
mod dialect;
mod error;
#[cfg(feature = "fanout")]
pub mod fanout;
mod hazard;
#[cfg(feature = "jobs")]
pub mod jobs;
mod lint;
#[cfg(feature = "metrics")]
pub mod metrics;
mod migrate;
mod options;
mod placement;
pub mod pooler;
pub mod registry;
mod report;
#[cfg(feature = "reporting")]
pub mod reporting;
#[cfg(feature = "r2d2")]
mod role_pool;
mod roles;
mod selection;
mod sql;
mod startup;
pub mod statements;
mod table;
mod tenant;
mod trace;

#[cfg(feature = "r2d2")]
pub mod pool;
pub mod prelude;

pub use crate::connect::connect;
pub use crate::connection::TenantConnectionExt;
pub use crate::context::{
    bind, bind_fn, current, on_switch, spawn, switch, with_current, SwitchListener, TenantFuture,
};
pub use crate::error::{Error, NoActiveTenant, Result};
pub use crate::hazard::{CatalogSize, Hazard, CATALOG_BYTES_PER_RELATION, CATALOG_SCALE_RELATIONS};
pub use crate::lint::{
    statement_locks, CostFinding, CostLint, CostRule, LockLevel, StatementLocks, TableLock,
    FLEET_SCALE_TENANTS,
};
#[cfg(feature = "archive")]
pub use crate::migrate::{ArchiveSummary, TableSummary};
pub use crate::migrate::{
    LockOverBudget, MigrationPlan, Migrator, MigratorBuilder, PlannedMigration, PlannedStatement,
    SharedMigrations, Snapshot, SnapshotTable, TableSize, TenantPlan,
};
pub use crate::options::{
    Budget, CheckFn, CloneData, FailurePolicy, MigrateOptions, Progress, ProgressFn, Wave, WaveEnd,
    DEFAULT_SNAPSHOT_RETENTION,
};
pub use crate::report::{
    FleetRun, MigrationFailure, MigrationReport, RunTenant, TenantMigrations, TenantOutcome,
    TenantSnapshot,
};
#[cfg(feature = "r2d2")]
pub use crate::role_pool::{TenantRolePools, TenantRolePoolsBuilder};
pub use crate::roles::TenantRoles;
pub use crate::selection::Selection;
pub use crate::table::{TenantModel, TenantTable};
pub use crate::tenant::{TenantId, MAX_TENANT_ID_LEN};
pub use workspace_diesel_derive::TenantModel;

/// Declares tenant tables: the declarations diesel's [`table!`](diesel::table) takes, with rows in
/// each tenant's schema.
///
/// One invocation may declare several tables, each with its doc comments and attributes,
/// `#[sql_name = "..."]`, and a primary key of one column or several (`id` when none is named);
/// `use` items before the first table serve every table that brings none of its own. Diesel's
/// `*-column-tables` features set the widest table, as for `table!`: a table too wide for the
/// features enabled fails to compile with an error naming the feature to enable.
///
/// The generated module is used exactly like a `table!` module (`notes::table`, `notes::title`,
/// `notes::dsl::*`, joins, `#[diesel(table_name = notes)]` derives). What differs is the `FROM`
/// clause: it renders `"<active tenant>"."notes"`, read from [`switch`] each time the query runs
/// (a query value captures no tenant), and a query run outside any switch fails with
/// [`NoActiveTenant`] before anything is sent. A schema in the declaration (`acme.notes`) is a compile error.
///
/// Because its SQL depends on the active tenant, a tenant table's query id is not static, so
/// Diesel's prepared-statement cache keys such queries by SQL text: one prepared statement per
/// tenant and query shape (see [`pool`] for the bound on their number).
///
/// Relations work as with `table!`: `diesel::joinable!` and
/// `diesel::allow_tables_to_appear_in_same_query!` accept tenant tables and shared tables
/// together.
///
/// ```
/// use diesel::prelude::*;
/// use diesel_workspace::{switch, tenant_table, NoActiveTenant, TenantId};
///
/// tenant_table! {
///     notes (id) {
///         id -> Int4,
///         title -> Text,
///     }
/// }
///
/// let query = notes::table.filter(notes::id.eq(1)).select(notes::title);
/// let acme = TenantId::new("acme")?;
/// let sql = switch(&acme, || diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string());
/// assert!(sql.starts_with(r#"SELECT "notes"."title" FROM "acme"."notes" WHERE"#), "{sql}");
///
/// // Outside a switch, building the SQL fails.
/// use diesel::query_builder::QueryBuilder;
/// let mut qb = diesel::pg::PgQueryBuilder::new();
/// let err = diesel::query_builder::QueryFragment::<diesel::pg::Pg>::to_sql(
///     &query,
///     &mut qb,
///     &diesel::pg::Pg,
/// )
/// .unwrap_err();
/// assert!(err.to_string().starts_with("no tenant is active"), "{err}");
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
///
/// Several tables, a composite key and SQL names that differ from the Rust names:
///
/// ```
/// use diesel::prelude::*;
/// use diesel_workspace::{switch, tenant_table, TenantId};
///
/// tenant_table! {
///     use diesel::sql_types::*;
///
///     /// Projects of a tenant.
///     projects (id) {
///         id -> Int4,
///         name -> Text,
///     }
///
///     #[sql_name = "project_members"]
///     members (user_id, project_id) {
///         user_id -> Int4,
///         project_id -> Int4,
///         #[sql_name = "role"]
///         kind -> Text,
///     }
/// }
///
/// diesel::joinable!(members -> projects (project_id));
/// diesel::allow_tables_to_appear_in_same_query!(projects, members);
///
/// let query = members::table
///     .inner_join(projects::table)
///     .filter(members::user_id.eq(7))
///     .select((projects::name, members::kind));
/// let acme = TenantId::new("acme")?;
/// let sql = switch(&acme, || diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string());
/// assert!(
///     sql.starts_with(
///         r#"SELECT "projects"."name", "project_members"."role" FROM ("acme"."project_members" INNER JOIN "acme"."projects""#
///     ),
///     "{sql}"
/// );
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub use workspace_diesel_derive::tenant_table;

#[doc(hidden)]
pub mod __private {
    pub use crate::table::{walk_tenant_table, width};
    pub use diesel;
}
