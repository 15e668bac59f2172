//! One tenant exported to an archive ([`archive`]): the rows travel through `COPY` on a
//! connection of the `postgres` crate (Diesel's `COPY` needs compile-time table types), read as
//! of one snapshot under the tenant's lock. Also what the import shares: the catalog reads (tables
//! parents first, sequences), the order-independent checksum, the settings that make values'
//! text stable, the errors.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use diesel::prelude::*;

use crate::dialect::Dialect;
use crate::error::{Error, Result, ENGINE_CHANGED};
use crate::migrate::archive::{
    self, ArchiveSummary, Manifest, MigrationEntry, ReadError, RowSum, SequenceEntry, TableEnd,
    TableEntry, TableHash, TableSummary, CHUNK, DATA,
};
use crate::migrate::clone::{parents_first, Edge};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::sql::{quote_ident, quote_literal, tenant_session_lock, LEDGER};
use crate::tenant::TenantId;

/// The settings under which rows are read, written and summed: the library's own path, and a
/// text form of values that does not depend on the server's or the session's settings.
const STABLE_TEXT: &str = "SET LOCAL search_path TO pg_catalog, pg_temp; \
     SET LOCAL TimeZone = 'UTC'; SET LOCAL DateStyle = 'ISO, MDY'; \
     SET LOCAL IntervalStyle = 'postgres'; SET LOCAL extra_float_digits = 1; \
     SET LOCAL bytea_output = 'hex'; SET LOCAL lc_monetary = 'C'";

/// [`STABLE_TEXT`] for a transaction on `dialect`: on Citus the `SET LOCAL`s are propagated to
/// the workers' connections of the transaction too (`citus.propagate_set_commands`), so a value
/// a worker turns into text reads the same whatever the worker's own session settings.
pub(crate) fn stable_text(dialect: &Dialect) -> String {
    match dialect.citus() {
        Some(_) => format!("SET LOCAL citus.propagate_set_commands = 'local'; {STABLE_TEXT}"),
        None => STABLE_TEXT.to_owned(),
    }
}

impl Migrator {
    /// Writes `tenant` to `out` as an archive: a manifest (the tenant's ledger with the
    /// SHA-256 of each migration's `up.sql`, each table's columns, row count and checksum, each
    /// sequence), then every table's rows through `COPY`, parents before children, streamed in
    /// chunks, so a tenant larger than memory exports. The rows, counts and sequences are read
    /// as of one snapshot, under the tenant's lock (no migration of it runs meanwhile; the
    /// application keeps writing). `database_url` opens the `COPY` connection (plain TCP or a
    /// Unix socket), to the database `conn` is connected to.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn backup(conn: &mut PgConnection, url: &str) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let mut file = std::io::BufWriter::new(std::fs::File::create("acme.wdt").unwrap());
    /// let summary = migrator.export_tenant(conn, url, &TenantId::new("acme")?, &mut file)?;
    /// println!("{} bytes, {} tables", summary.bytes, summary.tables.len());
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::TenantNotFound`] when `tenant` is not registered (or its schema is gone);
    /// - [`Error::ArchiveRefused`] when its ledger holds a version the migration set does not
    ///   know, or its tables reference each other in a cycle;
    /// - [`Error::ArchiveFailed`] when the `COPY` connection or `out` fails.
    pub fn export_tenant(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        tenant: &TenantId,
        out: &mut dyn Write,
    ) -> Result<ArchiveSummary> {
        let span = crate::trace::op_span!("tenant.export", tenant = %tenant);
        let _span = self.enter(conn, span, Op::Tenant(tenant))?;
        let dialect = self.dialect(conn)?;
        let mut pg = open_copy(database_url, tenant)?;
        let lock = tenant_session_lock(tenant.as_str(), true);
        pg.batch_execute(&lock).map_err(|e| pg_failed(tenant, &e))?;
        let exported = self.export_locked(&mut pg, &dialect, tenant, out);
        // A closed connection releases both; an open one is left clean.
        let _ = pg.batch_execute("ROLLBACK");
        let _ = pg.batch_execute(&tenant_session_lock(tenant.as_str(), false));
        let exported = self.or_gone(conn, tenant, exported);
        crate::trace::finish(exported)
    }

    fn export_locked(
        &self,
        pg: &mut postgres::Client,
        dialect: &Dialect,
        tenant: &TenantId,
        out: &mut dyn Write,
    ) -> Result<ArchiveSummary> {
        let fail = |e: postgres::Error| pg_failed(tenant, &e);
        pg.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {}",
            stable_text(dialect)
        ))
        .map_err(fail)?;
        let exists: bool = pg
            .query_one(
                &format!(
                    "SELECT pg_catalog.to_regnamespace({}) IS NOT NULL",
                    quote_literal(&tenant.quoted())
                ),
                &[],
            )
            .map_err(fail)?
            .get(0);
        if !exists {
            return Err(Error::TenantNotFound(tenant.clone()));
        }
        let ledger = pg
            .query(
                &format!(
                    "SELECT version::text, run_on::text FROM {}.{LEDGER} \
                     ORDER BY version::text COLLATE \"C\"",
                    tenant.quoted()
                ),
                &[],
            )
            .map_err(fail)?;
        let mut migrations = Vec::with_capacity(ledger.len());
        for row in ledger {
            let version: String = row.get(0);
            let Some(m) = self.set.migrations.iter().find(|m| m.version == version) else {
                return Err(refused(
                    tenant,
                    &format!("its ledger holds version {version}, which this migration set does not know"),
                ));
            };
            migrations.push(MigrationEntry {
                sha256: archive::sha256_hex(m.up.as_bytes()),
                version,
                run_on: row.get(1),
            });
        }
        let tables = ordered_tables(pg, tenant)?
            .into_iter()
            .map(|(name, columns)| TableEntry {
                name,
                columns,
                rows: None,
                checksum: None,
            })
            .collect();
        let mut sequences = Vec::new();
        for name in sequence_names(pg, tenant)? {
            let row = pg
                .query_one(
                    &format!(
                        "SELECT last_value, is_called FROM {}.{}",
                        tenant.quoted(),
                        quote_ident(&name)
                    ),
                    &[],
                )
                .map_err(fail)?;
            sequences.push(SequenceEntry {
                name,
                last_value: row.get(0),
                is_called: row.get(1),
            });
        }
        let manifest = Manifest {
            tenant: tenant.as_str().to_owned(),
            migrations,
            tables,
            sequences,
        };
        let io_fail = |e: std::io::Error| failed(tenant, &format!("writing the archive: {e}"));
        let mut writer = archive::Writer::start(out, &manifest).map_err(io_fail)?;
        let mut frame = Vec::with_capacity(CHUNK);
        let mut summaries = Vec::with_capacity(manifest.tables.len());
        for table in &manifest.tables {
            let mut rows = pg
                .copy_out(&copy_out_sql(tenant, &table.name, &table.columns))
                .map_err(fail)?;
            let (mut hash, mut sum) = (TableHash::default(), RowSum::default());
            let mut send = |frame: &mut Vec<u8>, writer: &mut archive::Writer<'_>| {
                hash.update(frame);
                sum.update(frame);
                writer.frame(DATA, frame).map_err(io_fail)?;
                frame.clear();
                Ok::<_, Error>(())
            };
            loop {
                let data = rows
                    .fill_buf()
                    .map_err(|e| failed(tenant, &format!("reading `{}`: {e}", table.name)))?;
                if data.is_empty() {
                    break;
                }
                let take = data.len().min(CHUNK - frame.len());
                frame.extend_from_slice(&data[..take]);
                rows.consume(take);
                if frame.len() == CHUNK {
                    send(&mut frame, &mut writer)?;
                }
            }
            if !frame.is_empty() {
                send(&mut frame, &mut writer)?;
            }
            drop(rows);
            let (count, total) = sum.finish();
            writer
                .table_end(&TableEnd {
                    sha256: hash.finish(),
                    sum: Some((count, total)),
                })
                .map_err(io_fail)?;
            summaries.push(TableSummary {
                name: table.name.clone(),
                rows: i64::try_from(count).unwrap_or(i64::MAX),
                checksum: archive::checksum_text(total),
            });
        }
        let bytes = writer.end().map_err(io_fail)?;
        Ok(manifest.summary(tenant, summaries, bytes))
    }
}

/// The `COPY` that reads a table's rows: the columns an archive carries, in their order, as text
/// under [`stable_text`]'s settings.
pub(crate) fn copy_out_sql(tenant: &TenantId, table: &str, columns: &[String]) -> String {
    format!(
        "COPY (SELECT {} FROM ONLY {}.{}) TO STDOUT",
        column_list(columns),
        tenant.quoted(),
        quote_ident(table)
    )
}

/// A table's rows and [`RowSum`] checksum, read through [`copy_out_sql`].
pub(crate) fn copy_sum(
    pg: &mut postgres::Client,
    tenant: &TenantId,
    table: &str,
    columns: &[String],
) -> Result<(u64, u128)> {
    let mut rows = pg
        .copy_out(&copy_out_sql(tenant, table, columns))
        .map_err(|e| pg_failed(tenant, &e))?;
    let mut sum = RowSum::default();
    loop {
        let data = rows
            .fill_buf()
            .map_err(|e| failed(tenant, &format!("reading `{table}`: {e}")))?;
        if data.is_empty() {
            return Ok(sum.finish());
        }
        let n = data.len();
        sum.update(data);
        rows.consume(n);
    }
}

/// Opens the `COPY` connection.
pub(crate) fn open_copy(database_url: &str, tenant: &TenantId) -> Result<postgres::Client> {
    postgres::Client::connect(database_url, postgres::NoTls).map_err(|e| pg_failed(tenant, &e))
}

/// The tenant's tables (not the ledger) with the columns a copy carries (not generated ones),
/// parents before children by their foreign keys; refused on a cycle.
pub(crate) fn ordered_tables(
    pg: &mut postgres::Client,
    tenant: &TenantId,
) -> Result<Vec<(String, Vec<String>)>> {
    let fail = |e: postgres::Error| pg_failed(tenant, &e);
    let ns = format!(
        "pg_catalog.to_regnamespace({})",
        quote_literal(&tenant.quoted())
    );
    let rows = pg
        .query(
            &format!(
                "SELECT c.relname::text, \
                 (SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{{}}') \
                  FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                  AND NOT a.attisdropped AND a.attgenerated = '') \
                 FROM pg_class c WHERE c.relnamespace = {ns} AND c.relkind IN ('r', 'p') \
                 AND c.relname <> {} ORDER BY c.relname COLLATE \"C\"",
                quote_literal(LEDGER)
            ),
            &[],
        )
        .map_err(fail)?;
    let columns: BTreeMap<String, Vec<String>> = rows
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .filter(|(_, c): &(String, Vec<String>)| !c.is_empty())
        .collect();
    let edges: Vec<Edge> = pg
        .query(
            &format!(
                "SELECT c.relname::text, p.relname::text FROM pg_constraint k \
                 JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid \
                 WHERE k.contype = 'f' AND c.oid <> p.oid AND c.relnamespace = {ns} \
                 AND p.relnamespace = {ns}"
            ),
            &[],
        )
        .map_err(fail)?
        .into_iter()
        .map(|r| Edge {
            child: r.get(0),
            parent: r.get(1),
        })
        .collect();
    let order = parents_first(&columns.keys().cloned().collect(), &edges)
        .ok_or_else(|| refused(tenant, "its tables reference each other in a cycle"))?;
    let mut columns = columns;
    Ok(order
        .into_iter()
        .map(|t| {
            let c = columns.remove(&t).unwrap_or_default();
            (t, c)
        })
        .collect())
}

/// The tenant's sequences, by name.
pub(crate) fn sequence_names(pg: &mut postgres::Client, tenant: &TenantId) -> Result<Vec<String>> {
    Ok(pg
        .query(
            &format!(
                "SELECT relname::text FROM pg_class WHERE relkind = 'S' \
                 AND relnamespace = pg_catalog.to_regnamespace({}) ORDER BY relname COLLATE \"C\"",
                quote_literal(&tenant.quoted())
            ),
            &[],
        )
        .map_err(|e| pg_failed(tenant, &e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
}

/// A table's row count and the checksum of archives of format version 1, computed by the server:
/// the sum of the first 64 bits of each row's MD5 (of its text form under [`stable_text`]'s
/// settings), independent of the rows' order.
pub(crate) fn table_sum_v1(
    pg: &mut postgres::Client,
    tenant: &TenantId,
    table: &str,
) -> Result<(i64, String)> {
    let row = pg
        .query_one(
            &format!(
                "SELECT count(*)::int8, coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)\
                 ::int8::numeric), 0)::text FROM ONLY {}.{} t",
                tenant.quoted(),
                quote_ident(table)
            ),
            &[],
        )
        .map_err(|e| pg_failed(tenant, &e))?;
    Ok((row.get(0), row.get(1)))
}

pub(crate) fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn refused(tenant: &TenantId, reason: &str) -> Error {
    Error::ArchiveRefused {
        tenant: tenant.clone(),
        reason: reason.to_owned(),
    }
}

pub(crate) fn failed(tenant: &TenantId, reason: &str) -> Error {
    Error::ArchiveFailed {
        tenant: tenant.clone(),
        reason: reason.to_owned(),
    }
}

/// [`Error::ArchiveFailed`] with the server's message.
pub(crate) fn pg_failed(tenant: &TenantId, e: &postgres::Error) -> Error {
    if let Some(found) = e
        .as_db_error()
        .and_then(|db| db.message().strip_prefix(ENGINE_CHANGED))
    {
        return Error::EngineChanged {
            found: found.to_owned(),
        };
    }
    let reason = match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    };
    failed(tenant, &reason)
}

pub(crate) fn read_error(tenant: &TenantId, e: ReadError) -> Error {
    match e {
        ReadError::Io(e) => failed(tenant, &format!("reading the archive: {e}")),
        ReadError::Corrupt(reason) => refused(tenant, &reason),
    }
}
