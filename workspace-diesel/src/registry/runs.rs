//! The record of fleet runs (`public.workspace_runs`, one row per run, and
//! `public.workspace_run_tenants`, one per tenant of a run): every statement on it. The functions
//! expect the library's own path (run them inside [`own`](crate::sql::own)).

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};

use crate::report::{FleetRun, RunTenant};
use crate::sql::{array_literal, CENTRAL_RECORD, RUNS_TABLE, RUN_TENANTS_TABLE};

/// What a finished run records for one tenant.
#[derive(Debug, Clone)]
pub(crate) struct TenantRecord {
    pub(crate) tenant: String,
    pub(crate) versions: Vec<String>,
    pub(crate) outcome: &'static str,
    pub(crate) sqlstate: Option<String>,
    pub(crate) message: Option<String>,
    pub(crate) duration_ms: Option<i64>,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(QueryableByName)]
struct Installed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    installed: bool,
}

/// Whether the record's tables exist (the registry migration that creates them has run).
pub(crate) fn installed(conn: &mut PgConnection) -> QueryResult<bool> {
    diesel::sql_query(format!(
        "SELECT pg_catalog.to_regclass('{RUNS_TABLE}') IS NOT NULL \
         AND pg_catalog.to_regclass('{RUN_TENANTS_TABLE}') IS NOT NULL AS installed"
    ))
    .get_result::<Installed>(conn)
    .map(|r| r.installed)
}

/// Records the start of a run, with each of `tenants` and its applied versions as they are now
/// (from the central record), in one statement; returns the run's id.
pub(crate) fn start(
    conn: &mut PgConnection,
    kind: &str,
    reverts: Option<i64>,
    selection: &str,
    tenants: &[String],
) -> QueryResult<i64> {
    diesel::sql_query(format!(
        "WITH r AS (INSERT INTO {RUNS_TABLE} (kind, reverts, selection) VALUES ($1, $2, $3) \
         RETURNING id), \
         t AS (INSERT INTO {RUN_TENANTS_TABLE} (run_id, schema_name, before_versions) \
         SELECT r.id, n, ARRAY(SELECT m.version::pg_catalog.text FROM {CENTRAL_RECORD} m \
         WHERE m.schema_name = n ORDER BY m.version::pg_catalog.text COLLATE \"C\") \
         FROM r, pg_catalog.unnest($4::pg_catalog.text[]) AS n) \
         SELECT id FROM r"
    ))
    .bind::<Text, _>(kind)
    .bind::<Nullable<BigInt>, _>(reverts)
    .bind::<Text, _>(selection)
    .bind::<Array<Text>, _>(tenants)
    .get_result::<Id>(conn)
    .map(|r| r.id)
}

/// Records how run `id` ended (`outcome`) and what it did to each tenant, in one statement.
pub(crate) fn finish(
    conn: &mut PgConnection,
    id: i64,
    outcome: &str,
    rows: &[TenantRecord],
) -> QueryResult<()> {
    let names: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
    let versions: Vec<String> = rows.iter().map(|r| array_literal(&r.versions)).collect();
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome).collect();
    let sqlstates: Vec<Option<&str>> = rows.iter().map(|r| r.sqlstate.as_deref()).collect();
    let messages: Vec<Option<&str>> = rows.iter().map(|r| r.message.as_deref()).collect();
    let durations: Vec<Option<i64>> = rows.iter().map(|r| r.duration_ms).collect();
    diesel::sql_query(format!(
        "WITH u AS (UPDATE {RUN_TENANTS_TABLE} t SET versions = x.v::pg_catalog.text[], \
         outcome = x.o, sqlstate = x.s, message = x.m, duration_ms = x.d \
         FROM ROWS FROM (pg_catalog.unnest($2::pg_catalog.text[]), \
         pg_catalog.unnest($3::pg_catalog.text[]), pg_catalog.unnest($4::pg_catalog.text[]), \
         pg_catalog.unnest($5::pg_catalog.text[]), pg_catalog.unnest($6::pg_catalog.text[]), \
         pg_catalog.unnest($7::pg_catalog.int8[])) AS x (n, v, o, s, m, d) WHERE t.run_id = $1 AND t.schema_name = x.n RETURNING 1) \
         UPDATE {RUNS_TABLE} SET finished_at = pg_catalog.now(), outcome = $8 WHERE id = $1"
    ))
    .bind::<BigInt, _>(id)
    .bind::<Array<Text>, _>(names)
    .bind::<Array<Text>, _>(versions)
    .bind::<Array<Text>, _>(outcomes)
    .bind::<Array<Nullable<Text>>, _>(sqlstates)
    .bind::<Array<Nullable<Text>>, _>(messages)
    .bind::<Array<Nullable<BigInt>>, _>(durations)
    .bind::<Text, _>(outcome)
    .execute(conn)
    .map(drop)
}

#[derive(QueryableByName)]
struct RunRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<BigInt>)]
    reverts: Option<i64>,
    #[diesel(sql_type = Text)]
    started_by: String,
    #[diesel(sql_type = Timestamptz)]
    started_at: chrono::DateTime<chrono::Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
    #[diesel(sql_type = Text)]
    selection: String,
    #[diesel(sql_type = Nullable<Text>)]
    outcome: Option<String>,
    #[diesel(sql_type = BigInt)]
    tenants: i64,
    #[diesel(sql_type = BigInt)]
    changed: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
}

/// The recorded runs, newest first (`id`: that run only).
pub(crate) fn list(conn: &mut PgConnection, id: Option<i64>) -> QueryResult<Vec<FleetRun>> {
    let rows: Vec<RunRow> = diesel::sql_query(format!(
        "SELECT r.id, r.kind, r.reverts, r.started_by, r.started_at, r.finished_at, r.selection, \
         r.outcome, pg_catalog.count(t.schema_name) AS tenants, \
         pg_catalog.count(t.schema_name) FILTER (WHERE t.outcome = 'applied') AS changed, \
         pg_catalog.count(t.schema_name) FILTER (WHERE t.outcome = 'failed') AS failed \
         FROM {RUNS_TABLE} r LEFT JOIN {RUN_TENANTS_TABLE} t ON t.run_id = r.id \
         WHERE $1::pg_catalog.int8 IS NULL OR r.id = $1 \
         GROUP BY r.id ORDER BY r.id DESC"
    ))
    .bind::<Nullable<BigInt>, _>(id)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| FleetRun {
            id: r.id,
            kind: r.kind,
            reverts: r.reverts,
            started_by: r.started_by,
            started_at: r.started_at,
            finished_at: r.finished_at,
            selection: r.selection,
            outcome: r.outcome,
            tenants: r.tenants,
            changed: r.changed,
            failed: r.failed,
        })
        .collect())
}

#[derive(QueryableByName)]
struct TenantRow {
    #[diesel(sql_type = Text)]
    schema_name: String,
    #[diesel(sql_type = Array<Text>)]
    before_versions: Vec<String>,
    #[diesel(sql_type = Array<Text>)]
    versions: Vec<String>,
    #[diesel(sql_type = Text)]
    outcome: String,
    #[diesel(sql_type = Nullable<Text>)]
    sqlstate: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    message: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    duration_ms: Option<i64>,
}

/// The tenants of run `id`, sorted.
pub(crate) fn tenants(conn: &mut PgConnection, id: i64) -> QueryResult<Vec<RunTenant>> {
    let rows: Vec<TenantRow> = diesel::sql_query(format!(
        "SELECT schema_name, before_versions, versions, outcome, sqlstate, message, duration_ms \
         FROM {RUN_TENANTS_TABLE} WHERE run_id = $1 ORDER BY schema_name COLLATE \"C\""
    ))
    .bind::<BigInt, _>(id)
    .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|r| RunTenant {
            tenant: r.schema_name,
            before: r.before_versions,
            versions: r.versions,
            outcome: r.outcome,
            sqlstate: r.sqlstate,
            message: r.message,
            duration_ms: r.duration_ms,
        })
        .collect())
}

#[derive(QueryableByName)]
struct Applied {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Array<Text>)]
    versions: Vec<String>,
}

/// Each of `tenants` with its applied versions now (from the central record), sorted.
pub(crate) fn applied_now(
    conn: &mut PgConnection,
    tenants: &[String],
) -> QueryResult<Vec<(String, Vec<String>)>> {
    let rows: Vec<Applied> = diesel::sql_query(format!(
        "SELECT n AS name, ARRAY(SELECT m.version::pg_catalog.text FROM {CENTRAL_RECORD} m \
         WHERE m.schema_name = n ORDER BY m.version::pg_catalog.text COLLATE \"C\") AS versions \
         FROM pg_catalog.unnest($1::pg_catalog.text[]) AS n"
    ))
    .bind::<Array<Text>, _>(tenants)
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.name, r.versions)).collect())
}
