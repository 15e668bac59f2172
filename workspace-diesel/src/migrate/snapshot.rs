//! Snapshots before risky changes: the SQL that copies a tenant's tables into a snapshot schema
//! (`_snap_<hex>`) and records it, run inside the tenant transaction that applies its first
//! pending migration (so a tenant is never changed without its snapshot); the list of
//! snapshots; and pruning the expired ones. Restoring one is `restore.rs`.
//!
//! On PostgreSQL the copy is one PL/pgSQL block sent in the transaction's batch. On Citus,
//! where a table created in PL/pgSQL stays local on the coordinator, the copy's statements are
//! generated on the client from one catalog read under the tenant's lock and sent one by one
//! ([`snapshot_read`]): the snapshot is a distributed schema of its own, placed by Citus like
//! a new tenant (Citus refuses to colocate other tables with a distributed schema's, and a
//! schema cannot be moved in the transaction that creates it).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz};

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::options::MigrateParams;
use crate::sql::{
    own, quote_ident, quote_literal, tenant_lock, CENTRAL_RECORD, LEDGER, SNAPSHOTS_TABLE,
    SNAPSHOT_PREFIX,
};
use crate::tenant::TenantId;

/// A snapshot of a tenant, taken before a migration changed it (see
/// [`MigrateOptions::snapshot`](crate::MigrateOptions::snapshot)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// The snapshot's schema (`_snap_<hex>`), which names it.
    pub name: String,
    /// The tenant it is a copy of.
    pub tenant: TenantId,
    /// When it was taken (the start of the migration's transaction).
    pub taken_at: DateTime<Utc>,
    /// When [`Migrator::prune_snapshots`] may remove it; `None`: kept until pruned by age.
    pub expires_at: Option<DateTime<Utc>>,
    /// The tenant's ledger when it was taken: the versions a restore brings it back to.
    pub versions: Vec<String>,
    /// Each table with its row count and checksum, by name.
    pub tables: Vec<SnapshotTable>,
    /// The snapshot's size on disk, in bytes (its tables with their TOAST).
    pub size_bytes: i64,
}

/// One table of a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotTable {
    /// The table's name in the tenant's schema.
    pub name: String,
    /// Its rows when the snapshot was taken.
    pub rows: i64,
    /// The sum of the first 64 bits of each row's MD5 (of its text form, under fixed date,
    /// time and float settings), independent of the rows' order: equal rows, equal sums.
    pub checksum: String,
}

/// Raised by a restore whose rows do not match the snapshot's checksums.
pub(crate) const MISMATCH: &str = "workspace-diesel: restored rows differ from the snapshot";

/// Raised by a snapshot whose copy of a table does not match the table (taken statement by
/// statement, where `INSERT ... SELECT` crosses nodes).
pub(crate) const COPY_DIFFERS: &str = "workspace-diesel: snapshot copy differs from the tenant";

/// A fresh snapshot name: the prefix, the time, the process and a counter, in hex.
pub(crate) fn snapshot_name() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{SNAPSHOT_PREFIX}{nanos:x}_{:x}_{n:x}", std::process::id())
}

/// The snapshot's commands for a plan sent without a catalog read (the fast path, before the
/// tenant's lock): `Some` and empty when `params` ask for none, `Some` with one batch where
/// the copy is one PL/pgSQL block (PostgreSQL: its loop reads the catalog after the lock),
/// `None` where the copy's statements are generated on the client from the catalog as it
/// stands under the lock ([`snapshot_read`], the checked path only).
pub(crate) fn snapshot_unread(
    dialect: &Dialect,
    schema: &TenantId,
    params: &MigrateParams,
) -> Option<Vec<String>> {
    match params.snapshot {
        None => Some(Vec::new()),
        Some(_) if dialect.splits_statements() => None,
        Some(retain) => Some(vec![command(snapshot_sql(
            schema,
            &snapshot_name(),
            retain,
            false,
        ))]),
    }
}

/// The snapshot's commands inside the tenant's transaction, after its lock (empty when
/// `params` ask for none). One batch on PostgreSQL. Where the dialect sends statement by
/// statement (Citus), the copy is generated here from one catalog read of the tenant's tables
/// and columns, as top-level commands each sent alone: the snapshot's schema created as a
/// distributed schema (`provisioning_settings`), each table created `LIKE` the tenant's, with
/// `REPLICA IDENTITY FULL` (so the rebalancer can move it by logical replication, as it moves
/// tenants), its rows copied by `INSERT ... SELECT`; then one PL/pgSQL block with no DDL in it
/// checks each copy's row count and checksum against the tenant's table and records the
/// snapshot (its sequences read there).
///
/// # Errors
/// [`Error::Query`] when the catalog cannot be read.
pub(crate) fn snapshot_read(
    conn: &mut PgConnection,
    dialect: &Dialect,
    schema: &TenantId,
    params: &MigrateParams,
) -> Result<Vec<String>> {
    if let Some(unread) = snapshot_unread(dialect, schema, params) {
        return Ok(unread);
    }
    let Some(retain) = params.snapshot else {
        return Ok(Vec::new());
    };
    let name = snapshot_name();
    let snap = quote_ident(&name);
    let t = schema.quoted();
    let mut commands = Vec::new();
    let settings = dialect.provisioning_settings().trim().trim_end_matches(';');
    if !settings.is_empty() {
        commands.push(settings.to_owned());
    }
    commands.push(format!("CREATE SCHEMA {snap}"));
    let tables = tenant_tables(conn, schema)?;
    for (table, _) in &tables {
        let table = quote_ident(table);
        commands.push(format!("CREATE TABLE {snap}.{table} (LIKE {t}.{table})"));
        commands.push(format!("ALTER TABLE {snap}.{table} REPLICA IDENTITY FULL"));
    }
    for (table, columns) in &tables {
        let table = quote_ident(table);
        commands.push(match columns {
            Some(cols) => {
                format!("INSERT INTO {snap}.{table} ({cols}) SELECT {cols} FROM ONLY {t}.{table}")
            }
            None => format!("INSERT INTO {snap}.{table} SELECT FROM ONLY {t}.{table}"),
        });
    }
    commands.push(command(snapshot_sql(schema, &name, retain, true)));
    Ok(commands)
}

/// `sql` without its trailing `; `: one of a plan's `before_steps`.
fn command(sql: String) -> String {
    sql.trim_end().trim_end_matches(';').to_owned()
}

/// The tenant's tables (its ledger apart), by name, each with its columns quoted and joined in
/// their order (`None` for a table without columns): one catalog query.
fn tenant_tables(
    conn: &mut PgConnection,
    schema: &TenantId,
) -> QueryResult<Vec<(String, Option<String>)>> {
    #[derive(QueryableByName)]
    struct TableRow {
        #[diesel(sql_type = Text)]
        name: String,
        #[diesel(sql_type = Nullable<Text>)]
        columns: Option<String>,
    }
    let rows: Vec<TableRow> = diesel::sql_query(format!(
        "SELECT c.relname::pg_catalog.text AS name, \
         (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) \
          FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid \
            AND a.attnum OPERATOR(pg_catalog.>) 0 AND NOT a.attisdropped) AS columns \
         FROM pg_catalog.pg_class c \
         WHERE c.relnamespace OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace({ns}) \
           AND c.relkind OPERATOR(pg_catalog.=) 'r' AND c.relname OPERATOR(pg_catalog.<>) {ledger} \
         ORDER BY 1",
        ns = quote_literal(&schema.quoted()),
        ledger = quote_literal(LEDGER),
    ))
    .load(conn)?;
    Ok(rows.into_iter().map(|r| (r.name, r.columns)).collect())
}

/// The PL/pgSQL statements that run `body` with the settings that fix the text form of values
/// (time zone, date and interval styles, float digits, bytea), then put the caller's back: a
/// migration after the snapshot runs with the session's own settings.
pub(crate) fn with_stable_text(body: &str) -> String {
    const SETTINGS: [(&str, &str); 5] = [
        ("TimeZone", "UTC"),
        ("DateStyle", "ISO, MDY"),
        ("IntervalStyle", "postgres"),
        ("extra_float_digits", "1"),
        ("bytea_output", "hex"),
    ];
    let mut save = String::new();
    let mut restore = String::new();
    for (i, (name, value)) in SETTINGS.iter().enumerate() {
        save.push_str(&format!(
            "saved[{n}] := pg_catalog.current_setting('{name}'); \
             PERFORM pg_catalog.set_config('{name}', '{value}', true); ",
            n = i + 1
        ));
        restore.push_str(&format!(
            "PERFORM pg_catalog.set_config('{name}', saved[{n}], true); ",
            n = i + 1
        ));
    }
    format!("{save}{body}{restore}")
}

/// The row count and checksum of the table `%I.%I` (the format arguments follow), as the
/// `EXECUTE` of a PL/pgSQL block spells it.
pub(crate) const TABLE_SUM: &str = "'SELECT pg_catalog.count(*)::pg_catalog.int8, \
     COALESCE(pg_catalog.sum((''x'' OPERATOR(pg_catalog.||) pg_catalog.left(pg_catalog.md5(t::pg_catalog.text), 16))\
     ::pg_catalog.bit(64)::pg_catalog.int8::pg_catalog.numeric), 0)::pg_catalog.text FROM ONLY %I.%I t'";

/// The SQL, for a tenant transaction after the tenant's lock and before its first migration,
/// that takes a snapshot of `tenant` named `name`, kept for `retain`: the snapshot's schema, a
/// copy of each of the tenant's tables (its ledger apart), its record with the ledger, the
/// central record, each table's row count and checksum, each sequence's value and the size.
/// With `copied`, the schema and its tables were made and filled by top-level commands before
/// it (see [`snapshot_read`]): the block checks each copy's row count and checksum against the
/// tenant's table instead (failing with [`COPY_DIFFERS`]) and records it. Ends in `; `.
pub(crate) fn snapshot_sql(
    tenant: &TenantId,
    name: &str,
    retain: Duration,
    copied: bool,
) -> String {
    let t = quote_literal(tenant.as_str());
    let s = quote_literal(name);
    let ns = format!(
        "pg_catalog.to_regnamespace({})",
        quote_literal(&tenant.quoted())
    );
    let copy = if copied {
        format!(
            "EXECUTE pg_catalog.format({TABLE_SUM}, {t}, r.rel) INTO n0, chk0; \
             EXECUTE pg_catalog.format({TABLE_SUM}, {s}, r.rel) INTO n, chk; \
             IF n OPERATOR(pg_catalog.<>) n0 OR chk OPERATOR(pg_catalog.<>) chk0 THEN \
               RAISE EXCEPTION '{COPY_DIFFERS}: table % has % rows (checksum %), its copy % (checksum %)', \
                 r.rel, n0, chk0, n, chk USING ERRCODE = 'data_exception'; \
             END IF; "
        )
    } else {
        format!(
            "EXECUTE pg_catalog.format('CREATE TABLE %I.%I AS TABLE ONLY %I.%I', {s}, r.rel, {t}, r.rel); \
             EXECUTE pg_catalog.format({TABLE_SUM}, {s}, r.rel) INTO n, chk; "
        )
    };
    let body = format!(
        "FOR r IN SELECT c.relname::pg_catalog.text AS rel FROM pg_catalog.pg_class c \
           WHERE c.relnamespace OPERATOR(pg_catalog.=) {ns} AND c.relkind OPERATOR(pg_catalog.=) 'r' \
             AND c.relname OPERATOR(pg_catalog.<>) {ledger} ORDER BY 1 LOOP \
           {copy}\
           v_tables := v_tables OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(r.rel, \
             pg_catalog.jsonb_build_object('rows', n, 'checksum', chk)); \
         END LOOP; \
         FOR r IN SELECT c.relname::pg_catalog.text AS rel FROM pg_catalog.pg_class c \
           WHERE c.relnamespace OPERATOR(pg_catalog.=) {ns} AND c.relkind OPERATOR(pg_catalog.=) 'S' LOOP \
           EXECUTE pg_catalog.format('SELECT pg_catalog.jsonb_build_object(''last_value'', last_value, \
             ''is_called'', is_called) FROM %I.%I', {t}, r.rel) INTO seq; \
           v_seqs := v_seqs OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(r.rel, seq); \
         END LOOP; ",
        ledger = quote_literal(LEDGER),
    );
    let create = if copied {
        String::new()
    } else {
        format!("CREATE SCHEMA {}; ", quote_ident(name))
    };
    format!(
        "{create}DO $wd_snap$ DECLARE r record; n pg_catalog.int8; chk pg_catalog.text; seq pg_catalog.jsonb; \
           n0 pg_catalog.int8; chk0 pg_catalog.text; \
           v_tables pg_catalog.jsonb := '{{}}'; v_seqs pg_catalog.jsonb := '{{}}'; saved pg_catalog.text[]; \
         BEGIN {stable} \
         INSERT INTO {SNAPSHOTS_TABLE} (snapshot_name, schema_name, taken_at, expires_at, versions, \
           ledger, central, tables, sequences, size_bytes) \
         SELECT {s}, {t}, pg_catalog.now(), \
           pg_catalog.now() OPERATOR(pg_catalog.+) pg_catalog.make_interval(secs => {secs}), \
           ARRAY(SELECT l.version::pg_catalog.text FROM {tq}.{LEDGER} l \
             ORDER BY l.version::pg_catalog.text COLLATE \"C\"), \
           (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('version', l.version, \
             'run_on', l.run_on)), '[]') FROM {tq}.{LEDGER} l), \
           (SELECT COALESCE(pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object('version', m.version, \
             'run_on', m.run_on)), '[]') FROM {CENTRAL_RECORD} m WHERE m.schema_name OPERATOR(pg_catalog.=) {t}), \
           v_tables, v_seqs, \
           (SELECT COALESCE(pg_catalog.sum(pg_catalog.pg_total_relation_size(c.oid)), 0)::pg_catalog.int8 \
             FROM pg_catalog.pg_class c \
             WHERE c.relnamespace OPERATOR(pg_catalog.=) pg_catalog.to_regnamespace({sq}) \
               AND c.relkind OPERATOR(pg_catalog.=) 'r'); \
         END $wd_snap$; ",
        stable = with_stable_text(&body),
        secs = retain.as_secs_f64(),
        tq = tenant.quoted(),
        sq = quote_literal(&quote_ident(name)),
    )
}

#[derive(QueryableByName)]
struct SnapshotRow {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    tenant: String,
    #[diesel(sql_type = Timestamptz)]
    taken_at: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    expires_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Array<Text>)]
    versions: Vec<String>,
    #[diesel(sql_type = BigInt)]
    size_bytes: i64,
    #[diesel(sql_type = Array<Text>)]
    table_names: Vec<String>,
    #[diesel(sql_type = Array<BigInt>)]
    table_rows: Vec<i64>,
    #[diesel(sql_type = Array<Text>)]
    table_sums: Vec<String>,
}

impl SnapshotRow {
    fn into_snapshot(self) -> Result<Snapshot> {
        let tables = self
            .table_names
            .into_iter()
            .zip(self.table_rows)
            .zip(self.table_sums)
            .map(|((name, rows), checksum)| SnapshotTable {
                name,
                rows,
                checksum,
            })
            .collect();
        Ok(Snapshot {
            name: self.name,
            tenant: TenantId::new(self.tenant)?,
            taken_at: self.taken_at,
            expires_at: self.expires_at,
            versions: self.versions,
            tables,
            size_bytes: self.size_bytes,
        })
    }
}

/// The recorded snapshots matching `filter` (an SQL condition on `s`), oldest first. Their
/// sizes are the recorded ones, or where the dialect keeps snapshots in shards (Citus: the
/// coordinator holds empty shell tables, and the shards' sizes cannot be read in the
/// transaction that writes them), the sizes of their shards now.
pub(crate) fn read_snapshots(
    conn: &mut PgConnection,
    dialect: &Dialect,
    filter: &str,
) -> Result<Vec<Snapshot>> {
    let (sizes, size) = match dialect.snapshot_sizes_sql() {
        Some(sizes) => (
            format!("WITH sizes AS MATERIALIZED ({sizes}) "),
            "COALESCE((SELECT z.size FROM sizes z \
             WHERE z.schema OPERATOR(pg_catalog.=) s.snapshot_name::pg_catalog.text), s.size_bytes)",
        ),
        None => (String::new(), "s.size_bytes"),
    };
    let rows: Vec<SnapshotRow> = diesel::sql_query(format!(
        "{sizes}SELECT s.snapshot_name AS name, s.schema_name AS tenant, s.taken_at, s.expires_at, \
         s.versions, {size} AS size_bytes, \
         ARRAY(SELECT k FROM pg_catalog.jsonb_object_keys(s.tables) k ORDER BY k COLLATE \"C\") AS table_names, \
         ARRAY(SELECT (s.tables OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.->>) 'rows')::pg_catalog.int8 \
           FROM pg_catalog.jsonb_object_keys(s.tables) k ORDER BY k COLLATE \"C\") AS table_rows, \
         ARRAY(SELECT s.tables OPERATOR(pg_catalog.->) k OPERATOR(pg_catalog.->>) 'checksum' \
           FROM pg_catalog.jsonb_object_keys(s.tables) k ORDER BY k COLLATE \"C\") AS table_sums \
         FROM {SNAPSHOTS_TABLE} s WHERE {filter} ORDER BY s.taken_at, s.snapshot_name"
    ))
    .load(conn)?;
    rows.into_iter().map(SnapshotRow::into_snapshot).collect()
}

impl Migrator {
    /// The recorded snapshots, oldest first: every tenant's, or `tenant`'s only.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// for s in migrator.snapshots(conn, Some(&TenantId::new("acme")?))? {
    ///     println!("{} taken {} ({} bytes)", s.name, s.taken_at, s.size_bytes);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`](crate::Error::Query) when the query fails.
    pub fn snapshots(
        &self,
        conn: &mut PgConnection,
        tenant: Option<&TenantId>,
    ) -> Result<Vec<Snapshot>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let filter = match tenant {
            Some(t) => format!(
                "s.schema_name OPERATOR(pg_catalog.=) {}",
                quote_literal(t.as_str())
            ),
            None => "true".to_owned(),
        };
        let dialect = self.dialect(conn)?;
        own(conn, |conn| read_snapshots(conn, &dialect, &filter))
    }

    /// Removes the snapshots that have expired, or with `older_than`, those taken longer ago
    /// than that (expired or not): each snapshot's schema and record in one transaction under
    /// its tenant's lock (a restore of it in flight finishes first). Returns the removed
    /// snapshots.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let removed = migrator.prune_snapshots(conn, None)?;
    /// println!("{} expired snapshots removed", removed.len());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::OuterTransaction`](crate::Error::OuterTransaction) inside the caller's
    /// transaction; [`Error::Query`](crate::Error::Query) when a statement fails (the
    /// snapshots removed before it stay removed).
    pub fn prune_snapshots(
        &self,
        conn: &mut PgConnection,
        older_than: Option<Duration>,
    ) -> Result<Vec<Snapshot>> {
        let span = crate::trace::op_span!("snapshots.prune");
        let _span = self.enter(conn, span, Op::Fleet)?;
        let filter = match older_than {
            Some(age) => format!(
                "s.taken_at OPERATOR(pg_catalog.<) (pg_catalog.now() \
                 OPERATOR(pg_catalog.-) pg_catalog.make_interval(secs => {}))",
                age.as_secs_f64()
            ),
            None => "s.expires_at OPERATOR(pg_catalog.<=) pg_catalog.now()".to_owned(),
        };
        let dialect = self.dialect(conn)?;
        let candidates = own(conn, |conn| read_snapshots(conn, &dialect, &filter))?;
        let mut removed = Vec::with_capacity(candidates.len());
        for snapshot in candidates {
            // Each a top-level command (on Citus, a `DROP SCHEMA` in PL/pgSQL would not reach
            // the workers' shards); the record first, then the schema, under the tenant's lock.
            let gone = own(conn, |conn| {
                conn.batch_execute(&format!(
                    "{lock}; DELETE FROM {SNAPSHOTS_TABLE} \
                     WHERE snapshot_name OPERATOR(pg_catalog.=) {name}",
                    lock = tenant_lock(snapshot.tenant.as_str()),
                    name = quote_literal(&snapshot.name),
                ))?;
                conn.batch_execute(&format!(
                    "DROP SCHEMA IF EXISTS {} CASCADE",
                    quote_ident(&snapshot.name)
                ))
            });
            gone.map_err(Error::Query)?;
            removed.push(snapshot);
        }
        crate::trace::finish(Ok(removed))
    }
}
