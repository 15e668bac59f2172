//! One tenant imported from an archive ([`archive`](super::archive)), under any name, into any
//! database: its schema built by the migration set (the archive's versions, each checked
//! against its migration's checksum), its rows copied in through `COPY`, its sequences and
//! ledger, in one transaction that commits only when every table's count and checksum match.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use diesel::prelude::*;

use crate::error::{Error, Result};
use crate::migrate::archive::{
    self, unexpected, ArchiveSummary, Manifest, TableHash, CHUNK, DATA, END, TABLE_END,
};
use crate::migrate::door::Op;
use crate::migrate::export::{
    column_list, failed, open_copy, ordered_tables, pg_failed, read_error, refused, table_sum,
    STABLE_TEXT,
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
            match import_rows(&mut pg, &commands, tenant, &manifest, &mut reader) {
                Ok(()) => {
                    pg.batch_execute("COMMIT")
                        .map_err(|e| pg_failed(tenant, &e))?;
                    Ok(manifest.summary(tenant, reader.bytes))
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
/// archive's rows in and checks them.
fn import_rows(
    pg: &mut postgres::Client,
    commands: &[String],
    tenant: &TenantId,
    manifest: &Manifest,
    reader: &mut archive::Reader<'_>,
) -> Result<()> {
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
    pg.batch_execute(STABLE_TEXT).map_err(fail)?;
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
    let mut buf = Vec::with_capacity(CHUNK);
    for table in &manifest.tables {
        let sql = format!(
            "COPY {}.{} ({}) FROM STDIN",
            tenant.quoted(),
            quote_ident(&table.name),
            column_list(&table.columns)
        );
        let mut writer = Some(pg.copy_in(&sql).map_err(fail)?);
        let mut copy_error = None;
        let mut hash = TableHash::default();
        loop {
            match reader.next(&mut buf).map_err(|e| read_error(tenant, e))? {
                DATA => {
                    hash.update(&buf);
                    if let Some(w) = writer.as_mut() {
                        if let Err(e) = w.write_all(&buf) {
                            copy_error = Some(e.to_string());
                            writer = None;
                        }
                    }
                }
                TABLE_END => break,
                tag => return Err(read_error(tenant, unexpected(tag))),
            }
        }
        if hash.finish() != buf {
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
                w.finish().map_err(fail)?;
            }
            (_, e) => {
                return Err(failed(
                    tenant,
                    &format!("copying `{}`: {}", table.name, e.unwrap_or_default()),
                ))
            }
        }
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
    for table in &manifest.tables {
        let (rows, checksum) = table_sum(pg, tenant, &table.name)?;
        if rows != table.rows || checksum != table.checksum {
            return Err(refused(
                tenant,
                &format!(
                    "table `{}` holds {rows} rows (checksum {checksum}) after the copy, \
                     where the archive says {} (checksum {})",
                    table.name, table.rows, table.checksum
                ),
            ));
        }
    }
    Ok(())
}
