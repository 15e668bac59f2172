//! Where tenants live on a Citus cluster: each tenant's node and size, moving a tenant to
//! another node, and the shard rebalancer.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Nullable, Text};

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::sql::{own, quote_literal};
use crate::tenant::TenantId;

/// Where one tenant lives and how much room it takes, from [`Migrator::placement`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPlacement {
    /// The tenant, as stored in the registry.
    pub tenant: String,
    /// The node holding the tenant's tables (`host:port`) on Citus; `None` on PostgreSQL, and on
    /// Citus for a tenant whose schema holds no distributed table.
    pub node: Option<String>,
    /// The size of the tenant's tables, indexes and TOAST data, in bytes (0 when the schema is
    /// gone).
    pub size_bytes: i64,
}

#[derive(QueryableByName)]
struct PlacementRow {
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Nullable<Text>)]
    node: Option<String>,
    #[diesel(sql_type = BigInt)]
    size: i64,
}

/// The state of the latest rebalance job, from [`rebalance_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebalanceStatus {
    /// The background job's id.
    pub job_id: i64,
    /// Citus's state: `scheduled`, `running`, `finished`, `cancelling`, `cancelled`, `failing`
    /// or `failed`.
    pub state: String,
    /// Moves done.
    pub done: i32,
    /// Moves planned.
    pub total: i32,
}

impl RebalanceStatus {
    /// Whether the job has ended (finished, cancelled or failed).
    pub fn is_over(&self) -> bool {
        matches!(self.state.as_str(), "finished" | "cancelled" | "failed")
    }

    /// Whether the job ended with every move done.
    pub fn succeeded(&self) -> bool {
        self.state == "finished"
    }
}

#[derive(QueryableByName)]
struct StatusRow {
    #[diesel(sql_type = BigInt)]
    job_id: i64,
    #[diesel(sql_type = Text)]
    state: String,
    #[diesel(sql_type = Integer)]
    done: i32,
    #[diesel(sql_type = Integer)]
    total: i32,
}

#[derive(QueryableByName)]
struct JobRow {
    #[diesel(sql_type = Nullable<BigInt>)]
    job: Option<i64>,
}

fn citus_only(conn: &mut PgConnection, operation: &'static str) -> Result<Dialect> {
    let dialect = Dialect::detect_supported(conn)?;
    if dialect.distributes_schemas() {
        Ok(dialect)
    } else {
        Err(Error::RequiresCitus {
            operation,
            engine: dialect.name(),
        })
    }
}

impl Migrator {
    /// Every registered tenant's node and size, in tenant order: one query (plus the engine's
    /// detection). On Citus the node is the one holding the tenant's distributed schema and the
    /// size the sum of its shards; on PostgreSQL the node is `None` and the size the schema's.
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// for p in migrator.placement(conn)? {
    ///     println!("{} on {} ({} bytes)", p.tenant, p.node.as_deref().unwrap_or("-"), p.size_bytes);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the catalog or the registry cannot be read;
    /// [`Error::UnsupportedEngine`] on an engine the crate cannot run on.
    pub fn placement(&self, conn: &mut PgConnection) -> Result<Vec<TenantPlacement>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let dialect = self.dialect(conn)?;
        // The registered names, as the registry spells its query (one column, `name`).
        let registry = self.registry().names_sql();
        let column = "name";
        let sizes = if dialect.distributes_schemas() {
            "SELECT n.nspname::pg_catalog.text AS schema, \
             pg_catalog.min(s.nodename || ':' || s.nodeport) AS node, \
             pg_catalog.sum(s.shard_size)::pg_catalog.int8 AS size \
             FROM pg_catalog.citus_shards s \
             JOIN pg_catalog.pg_class c ON c.oid = s.table_name \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE s.citus_table_type = 'schema' GROUP BY 1"
        } else {
            "SELECT n.nspname::pg_catalog.text AS schema, NULL::pg_catalog.text AS node, \
             pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid))::pg_catalog.int8 AS size \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'm', 'p') GROUP BY 1"
        };
        let rows: Vec<PlacementRow> = own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT reg.{column}::pg_catalog.text AS tenant, p.node, \
                 COALESCE(p.size, 0)::pg_catalog.int8 AS size \
                 FROM {registry} reg LEFT JOIN ({sizes}) p ON p.schema = reg.{column}::pg_catalog.text \
                 ORDER BY 1"
            ))
            .load(conn)
        })?;
        Ok(rows
            .into_iter()
            .map(|r| TenantPlacement {
                tenant: r.tenant,
                node: r.node,
                size_bytes: r.size,
            })
            .collect())
    }

    /// Moves a tenant's distributed schema to the node `host:port` (`citus_schema_move`, which
    /// copies the shards with logical replication, then switches over; reads and writes keep
    /// working meanwhile, writes block briefly at the switch). Every table of the tenant needs a
    /// primary key (see [`CitusLint`](crate::citus::CitusLint)).
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// let acme = diesel_workspace::TenantId::new("acme")?;
    /// migrator.move_tenant(conn, &acme, "10.0.0.12", 5432)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::RequiresCitus`] on PostgreSQL; [`Error::TenantNotFound`] when the tenant is not
    /// registered; [`Error::Query`] when Citus refuses (the same node, an unknown node, a table
    /// without a primary key).
    pub fn move_tenant(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        host: &str,
        port: u16,
    ) -> Result<()> {
        let _span = self.enter(conn, tracing::Span::none(), Op::Tenant(tenant))?;
        citus_only(conn, "moving a tenant")?;
        own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT pg_catalog.citus_schema_move({}::pg_catalog.regnamespace, $1, $2)",
                quote_literal(&tenant.quoted()),
            ))
            .bind::<Text, _>(host)
            .bind::<Integer, _>(i32::from(port))
            .execute(conn)
        })?;
        Ok(())
    }
}

/// Starts Citus's shard rebalancer in the background (`citus_rebalance_start`): it moves tenant
/// schemas until the nodes hold about as many each. Returns the job's id, or `None` when
/// nothing needs to move. Watch it with [`rebalance_status`] or [`wait_rebalance`].
///
/// # Errors
/// [`Error::RequiresCitus`] on PostgreSQL; [`Error::Query`] when Citus refuses (a rebalance is
/// already running).
pub fn start_rebalance(conn: &mut PgConnection) -> Result<Option<i64>> {
    citus_only(conn, "rebalancing")?;
    let row: JobRow = own(conn, |conn| {
        diesel::sql_query("SELECT pg_catalog.citus_rebalance_start() AS job").get_result(conn)
    })?;
    Ok(row.job)
}

/// The latest rebalance job's state and progress, or `None` when no rebalance ever ran.
///
/// # Errors
/// [`Error::RequiresCitus`] on PostgreSQL; [`Error::Query`] when the status cannot be read.
pub fn rebalance_status(conn: &mut PgConnection) -> Result<Option<RebalanceStatus>> {
    citus_only(conn, "rebalancing")?;
    read_status(conn)
}

fn read_status(conn: &mut PgConnection) -> Result<Option<RebalanceStatus>> {
    let rows: Vec<StatusRow> = own(conn, |conn| {
        diesel::sql_query(
        "SELECT r.job_id, r.state::pg_catalog.text AS state, \
         COALESCE((r.details -> 'task_state_counts' ->> 'done')::pg_catalog.int4, 0) AS done, \
         COALESCE((SELECT pg_catalog.sum(c.value::pg_catalog.int4) \
                   FROM pg_catalog.jsonb_each_text(r.details -> 'task_state_counts') c), 0)::pg_catalog.int4 AS total \
         FROM pg_catalog.citus_rebalance_status() r ORDER BY r.job_id DESC LIMIT 1",
        )
        .load(conn)
    })?;
    Ok(rows.into_iter().next().map(|r| RebalanceStatus {
        job_id: r.job_id,
        state: r.state,
        done: r.done,
        total: r.total,
    }))
}

/// Polls the latest rebalance job every `poll` until it is over, calling `progress` after each
/// poll, and returns its final state (`None` when no rebalance ever ran).
///
/// ```no_run
/// use std::time::Duration;
/// use diesel_workspace::{citus::start_rebalance, citus::wait_rebalance};
///
/// # fn run(conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
/// if start_rebalance(conn)?.is_some() {
///     let end = wait_rebalance(conn, Duration::from_millis(500), |s| {
///         eprintln!("rebalance {}: {}/{} moves, {}", s.job_id, s.done, s.total, s.state)
///     })?;
///     assert!(end.is_some_and(|s| s.succeeded()));
/// }
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::RequiresCitus`] on PostgreSQL; [`Error::Query`] when the status cannot be read.
pub fn wait_rebalance(
    conn: &mut PgConnection,
    poll: Duration,
    mut progress: impl FnMut(&RebalanceStatus),
) -> Result<Option<RebalanceStatus>> {
    citus_only(conn, "rebalancing")?;
    loop {
        let Some(status) = read_status(conn)? else {
            return Ok(None);
        };
        progress(&status);
        if status.is_over() {
            return Ok(Some(status));
        }
        std::thread::sleep(poll);
    }
}
