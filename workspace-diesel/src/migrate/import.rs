//! One tenant imported from an archive ([`archive`](super::archive)), under any name, into any
//! database: its schema built by the migration set (the archive's versions, each checked
//! against its migration's checksum), its rows copied in through `COPY`, its sequences and
//! ledger, in one transaction that commits only when every table's count and checksum match.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use diesel::prelude::*;

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::archive::{
    self, checksum_text, unexpected, ArchiveSummary, Format, Manifest, RowSum, TableEnd, TableHash,
    TableSummary, CHUNK, DATA, END, TABLE_END,
};
use crate::migrate::door::Op;
use crate::migrate::export::{
    column_list, copy_sum, failed, open_copy, ordered_tables, pg_failed, read_error, refused,
    stable_text, table_sum_v1,
};
use crate::migrate::migrator::Migrator;
use crate::migrate::set::Compiled;
use crate::migrate::tenants::Provision;
use crate::migrate::tx::{self, Opening, Plan};
use crate::sql::{own, quote_ident, quote_literal, LEDGER};
use crate::tenant::TenantId;

impl Migrator {
    /// Creates `tenant` from the archive read from `input`: its schema built by this
    /// migration set's migrations (the archive's versions, each checked against the SHA-256 of
    /// its `up.sql`), its registry row, ledger and central record, every table's rows through
    /// `COPY` (streamed), its sequences; then each table's row count and checksum compared with
    /// the manifest's. One transaction on the `COPY` connection (`database_url`, the database
    /// `conn` is connected to): the tenant appears complete or not at all. The archive may come
    /// from another database or server, under another name. On Citus the tenant becomes a
    /// distributed schema: the migrations' statements are sent one by one, as `create_tenant`
    /// sends them, and nothing commits unless every table of the schema is distributed.
    ///
    /// ```no_run
    /// # use diesel::prelude::*;
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, TenantId};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn restore(conn: &mut PgConnection, url: &str) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// let mut file = std::io::BufReader::new(std::fs::File::open("acme.wdt").unwrap());
    /// migrator.import_tenant(conn, url, &TenantId::new("acme_copy")?, &mut file)?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// - [`Error::TenantExists`] when `tenant` is registered or its schema exists;
    /// - [`Error::ArchiveRefused`], nothing created, when the archive holds a version this
    ///   migration set does not know or whose `up.sql` differs, when it is corrupted or
    ///   truncated, when its tables are not the ones the migrations build, or when a table's
    ///   rows do not match their count and checksum; also when the set has migrations that run
    ///   outside a transaction;
    /// - [`Error::ArchiveFailed`], nothing created, when reading `input` or the `COPY`
    ///   connection fails.
    pub fn import_tenant(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        tenant: &TenantId,
        input: &mut dyn Read,
    ) -> Result<ArchiveSummary> {
        let span = crate::trace::op_span!("tenant.import", tenant = %tenant);
        let _span = self.enter(conn, span, Op::NewTenant(tenant))?;
        let imported = self.import_entered(conn, database_url, tenant, input);
        crate::trace::finish(imported)
    }

    fn import_entered(
        &self,
        conn: &mut PgConnection,
        database_url: &str,
        tenant: &TenantId,
        input: &mut dyn Read,
    ) -> Result<ArchiveSummary> {
        let (mut reader, manifest) =
            archive::Reader::start(input).map_err(|e| read_error(tenant, e))?;
        let migrations = self.archive_migrations(tenant, &manifest)?;
        if own(conn, |conn| self.registry.contains(conn, tenant))? {
            return Err(Error::TenantExists(tenant.clone()));
        }
        let mut plan = Plan::new(
            tenant,
            Opening {
                provisioning: true,
                ..self.opening()
            },
        )
        .apply(&migrations, false);
        plan.create = self.create_sql(tenant, Provision::Tenant);
        if let Some(roles) = &self.tenant_roles {
            plan.close = format!("{}; ", roles.create_sql(tenant)?);
        }
        // The first command holds the dialect's guard: on another engine it fails before a row
        // of the archive is read, and the import is sent again with the right one.
        self.with_dialect(conn, |_, dialect| {
            let Some(commands) = tx::commands(dialect, &plan)? else {
                return Err(failed(tenant, "a provisioning plan that claims a spare"));
            };
            let mut pg = open_copy(database_url, tenant)?;
            match import_rows(&mut pg, &commands, dialect, tenant, &manifest, &mut reader) {
                Ok(tables) => {
                    pg.batch_execute("COMMIT")
                        .map_err(|e| pg_failed(tenant, &e))?;
                    Ok(manifest.summary(tenant, tables, reader.bytes))
                }
                Err(e) => {
                    let _ = pg.batch_execute("ROLLBACK");
                    Err(e)
                }
            }
        })
    }

    /// The migrations of this set the archive's ledger names, in the set's order; refused
    /// when a version is unknown here, its `up.sql` differs, or one runs outside a transaction.
    fn archive_migrations(&self, tenant: &TenantId, manifest: &Manifest) -> Result<Vec<&Compiled>> {
        let mut wanted = BTreeMap::new();
        for m in &manifest.migrations {
            let Some(ours) = self.set.migrations.iter().find(|c| c.version == m.version) else {
                return Err(refused(
                    tenant,
                    &format!(
                        "it holds version {}, which this migration set does not know \
                         (exported by a newer set?)",
                        m.version
                    ),
                ));
            };
            if archive::sha256_hex(ours.up.as_bytes()) != m.sha256 {
                return Err(refused(
                    tenant,
                    &format!(
                        "the up.sql of version {} differs from the one the archive was exported with",
                        m.version
                    ),
                ));
            }
            wanted.insert(m.version.as_str(), ());
        }
        let chosen: Vec<&Compiled> = self
            .set
            .migrations
            .iter()
            .filter(|c| wanted.contains_key(c.version.as_str()))
            .collect();
        if chosen.iter().any(|c| !c.in_tx) {
            return Err(refused(
                tenant,
                "the migration set has migrations that run outside a transaction",
            ));
        }
        Ok(chosen)
    }
}

/// Provisions `tenant` (`commands`, sent in order, the transaction left open), copies the
/// archive's rows in (on PostgreSQL with the foreign keys and plain indexes set aside, then
/// rebuilt) and checks them: each table read back, its rows and checksum the archive's.
fn import_rows(
    pg: &mut postgres::Client,
    commands: &[String],
    dialect: &Dialect,
    tenant: &TenantId,
    manifest: &Manifest,
    reader: &mut archive::Reader<'_>,
) -> Result<Vec<TableSummary>> {
    let fail = |e: postgres::Error| pg_failed(tenant, &e);
    for command in commands {
        pg.batch_execute(command).map_err(|e| match e.code() {
            Some(c)
                if *c == postgres::error::SqlState::UNIQUE_VIOLATION
                    || *c == postgres::error::SqlState::DUPLICATE_SCHEMA =>
            {
                Error::TenantExists(tenant.clone())
            }
            _ => pg_failed(tenant, &e),
        })?;
    }
    pg.batch_execute(&stable_text(dialect)).map_err(fail)?;
    let built: BTreeMap<String, Vec<String>> = ordered_tables(pg, tenant)?.into_iter().collect();
    let archived: BTreeMap<String, Vec<String>> = manifest
        .tables
        .iter()
        .map(|t| (t.name.clone(), t.columns.clone()))
        .collect();
    if built != archived {
        return Err(refused(
            tenant,
            "its tables or columns differ from the ones this migration set builds",
        ));
    }
    // Citus checks a foreign key on the worker that holds both shards; the set-aside is for
    // PostgreSQL, where each row's check is a query of its own.
    let aside = match dialect.citus() {
        None => SetAside::take(pg, tenant)?,
        Some(_) => SetAside::default(),
    };
    let mut buf = Vec::with_capacity(CHUNK);
    let mut sums = Vec::with_capacity(manifest.tables.len());
    for table in &manifest.tables {
        sums.push(copy_table(pg, tenant, table, reader, &mut buf)?);
    }
    match reader.next(&mut buf).map_err(|e| read_error(tenant, e))? {
        END => {}
        tag => return Err(read_error(tenant, unexpected(tag))),
    }
    let mut sql = String::new();
    for s in &manifest.sequences {
        sql.push_str(&format!(
            "SELECT pg_catalog.setval({}::pg_catalog.regclass, {}, {}); ",
            quote_literal(&format!("{}.{}", tenant.quoted(), quote_ident(&s.name))),
            s.last_value,
            s.is_called
        ));
    }
    for m in &manifest.migrations {
        sql.push_str(&format!(
            "UPDATE {}.{LEDGER} SET run_on = {}::pg_catalog.timestamp WHERE version = {}; ",
            tenant.quoted(),
            quote_literal(&m.run_on),
            quote_literal(&m.version)
        ));
    }
    pg.batch_execute(&sql).map_err(fail)?;
    aside.put_back(pg, tenant)?;
    let mut tables = Vec::with_capacity(sums.len());
    for (table, sum) in manifest.tables.iter().zip(sums) {
        let (rows, checksum, got) = match (reader.format, sum) {
            (Format::V2, Some((rows, sum))) => {
                let (n, s) = copy_sum(pg, tenant, &table.name, &table.columns)?;
                (
                    rows as i64,
                    checksum_text(sum),
                    (n as i64, checksum_text(s)),
                )
            }
            (Format::V1, None) => {
                let (Some(rows), Some(checksum)) = (table.rows, table.checksum.clone()) else {
                    return Err(refused(
                        tenant,
                        "its manifest lacks a table's rows (corrupted)",
                    ));
                };
                (rows, checksum, table_sum_v1(pg, tenant, &table.name)?)
            }
            _ => return Err(read_error(tenant, unexpected(TABLE_END))),
        };
        if got != (rows, checksum.clone()) {
            return Err(refused(
                tenant,
                &format!(
                    "table `{}` holds {} rows (checksum {}) after the copy, \
                     where the archive says {rows} (checksum {checksum})",
                    table.name, got.0, got.1
                ),
            ));
        }
        tables.push(TableSummary {
            name: table.name.clone(),
            rows,
            checksum,
        });
    }
    Ok(tables)
}

/// Copies one table's frames in through `COPY FROM STDIN`; refused when its bytes do not match
/// its end frame. Returns the rows and checksum the end frame states (version 2).
fn copy_table(
    pg: &mut postgres::Client,
    tenant: &TenantId,
    table: &archive::TableEntry,
    reader: &mut archive::Reader<'_>,
    buf: &mut Vec<u8>,
) -> Result<Option<(u64, u128)>> {
    let sql = format!(
        "COPY {}.{} ({}) FROM STDIN",
        tenant.quoted(),
        quote_ident(&table.name),
        column_list(&table.columns)
    );
    let mut writer = Some(pg.copy_in(&sql).map_err(|e| pg_failed(tenant, &e))?);
    let mut copy_error = None;
    let (mut hash, mut sum) = (TableHash::default(), RowSum::default());
    loop {
        match reader.next(buf).map_err(|e| read_error(tenant, e))? {
            DATA => {
                hash.update(buf);
                sum.update(buf);
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.write_all(buf) {
                        copy_error = Some(e.to_string());
                        writer = None;
                    }
                }
            }
            TABLE_END => break,
            tag => return Err(read_error(tenant, unexpected(tag))),
        }
    }
    let end = TableEnd::decode(reader.format, buf).map_err(|e| read_error(tenant, e))?;
    if hash.finish() != end.sha256 || end.sum.is_some_and(|s| s != sum.finish()) {
        return Err(refused(
            tenant,
            &format!(
                "the rows of table `{}` do not match their checksum (corrupted)",
                table.name
            ),
        ));
    }
    match (writer, copy_error) {
        (Some(w), None) => {
            w.finish().map_err(|e| pg_failed(tenant, &e))?;
            Ok(end.sum)
        }
        (_, e) => Err(failed(
            tenant,
            &format!("copying `{}`: {}", table.name, e.unwrap_or_default()),
        )),
    }
}

/// One foreign key or index set aside: its kind (1 a foreign key, 2 an index), table, name, and
/// the statements that drop it and build it again.
type Object = (i32, String, String, String, String);

/// The foreign keys and plain indexes of a new tenant's tables, set aside while its rows are
/// copied in (each row's foreign-key check is a query of its own; an index built once costs less
/// than one kept up row by row) and built again from their definitions afterwards, in the same
/// transaction: the rebuilt ones must read exactly as the ones set aside, or the import is
/// refused. Left in place: the indexes of constraints (and those a foreign key relies on), and
/// what a rebuild would not give back the same (a comment, a tablespace, a statistics target,
/// clustering, the replica identity, partitions).
#[derive(Default)]
struct SetAside(Vec<Object>);

impl SetAside {
    fn take(pg: &mut postgres::Client, tenant: &TenantId) -> Result<Self> {
        let objects = set_aside_objects(pg, tenant)?;
        if !objects.is_empty() {
            let drop: Vec<&str> = objects.iter().map(|o| o.3.as_str()).collect();
            pg.batch_execute(&drop.join("; "))
                .map_err(|e| pg_failed(tenant, &e))?;
        }
        Ok(Self(objects))
    }

    /// Builds the indexes again, then the foreign keys (each checked once against all rows).
    fn put_back(self, pg: &mut postgres::Client, tenant: &TenantId) -> Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let create: Vec<&str> = self.0.iter().rev().map(|o| o.4.as_str()).collect();
        pg.batch_execute(&create.join("; "))
            .map_err(|e| pg_failed(tenant, &e))?;
        if set_aside_objects(pg, tenant)? != self.0 {
            return Err(refused(
                tenant,
                "its foreign keys or indexes did not build again as the migrations built them",
            ));
        }
        Ok(())
    }
}

/// The foreign keys and indexes of `tenant`'s tables a load may set aside, foreign keys first.
fn set_aside_objects(pg: &mut postgres::Client, tenant: &TenantId) -> Result<Vec<Object>> {
    let ns = format!(
        "pg_catalog.to_regnamespace({})",
        quote_literal(&tenant.quoted())
    );
    let sql = format!(
        "SELECT kind, tbl, name, drop_sql, create_sql FROM ( \
         SELECT 1 AS kind, t.relname::text AS tbl, c.conname::text AS name, \
          format('ALTER TABLE %s DROP CONSTRAINT %I', c.conrelid::regclass, c.conname) AS drop_sql, \
          format('ALTER TABLE %s ADD CONSTRAINT %I %s', c.conrelid::regclass, c.conname, \
                 pg_get_constraintdef(c.oid)) AS create_sql \
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
         WHERE c.contype = 'f' AND t.relnamespace = {ns} AND t.relkind = 'r' \
          AND NOT t.relispartition AND c.conparentid = 0 AND c.coninhcount = 0 \
          AND obj_description(c.oid, 'pg_constraint') IS NULL \
         UNION ALL \
         SELECT 2, t.relname::text, x.relname::text, \
          format('DROP INDEX %s', i.indexrelid::regclass), pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
          JOIN pg_class x ON x.oid = i.indexrelid \
         WHERE t.relnamespace = {ns} AND t.relkind = 'r' AND NOT t.relispartition \
          AND x.relkind = 'i' AND x.reltablespace = 0 AND i.indisvalid AND i.indisready \
          AND i.indislive AND NOT i.indisclustered AND NOT i.indisreplident \
          AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
          AND NOT EXISTS (SELECT 1 FROM pg_attribute a \
                          WHERE a.attrelid = i.indexrelid AND a.attstattarget >= 0) \
          AND obj_description(i.indexrelid, 'pg_class') IS NULL \
         ) o ORDER BY kind, tbl COLLATE \"C\", name COLLATE \"C\""
    );
    Ok(pg
        .query(&sql, &[])
        .map_err(|e| pg_failed(tenant, &e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect())
}
