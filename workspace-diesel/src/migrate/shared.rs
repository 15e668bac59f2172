//! What a [`Migrator`] does outside any one tenant: the shared migrations, the lints of the
//! tenant set (Citus, fleet cost), and the audit.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::error::{Error, Result};
use crate::hazard::{CatalogSize, Hazard};
use crate::lint::{shared_references, CitusLint, CostFinding, CostLint, LintFinding};
use crate::migrate::door::Op;
use crate::migrate::migrator::Migrator;
use crate::sql::{own, SHARED_LOCK_KEY, SHARED_SCHEMA};

impl Migrator {
    /// Runs the registry's migrations, then the application's shared migrations, in the shared
    /// schema `public` (alone on the `search_path`), in one transaction under an advisory lock
    /// (several processes may start at once).
    ///
    /// The library's own tables (the central record, the warm pool and the built-in registry)
    /// always live in `public`, even when [`MigratorBuilder::registry`](crate::MigratorBuilder::registry) points at an application
    /// table in another schema.
    ///
    /// Returns the versions applied.
    ///
    /// # Errors
    /// [`Error::SharedMigration`] when a migration fails; nothing of this run is kept.
    pub fn run_shared(&self, conn: &mut PgConnection) -> Result<Vec<String>> {
        let _span = self.enter(conn, crate::trace::op_span!("shared.migrate"), Op::Shared)?;
        let applied = self.with_dialect(conn, |conn, dialect| {
            // On Citus, the shared tables that tenant tables reference become reference tables.
            let references = dialect.reference_tables_sql(
                SHARED_SCHEMA,
                &shared_references(
                    self.set.migrations.iter().map(|m| m.up.as_str()),
                    SHARED_SCHEMA,
                ),
            );
            own(conn, |conn| {
                // The lock and the dialect's guard under the library's own path; then Diesel's
                // harness and the migrations' SQL with the shared schema alone on the path.
                conn.batch_execute(&format!(
                    "SELECT pg_catalog.pg_advisory_xact_lock({SHARED_LOCK_KEY}, 0); {}; \
                     SET LOCAL search_path TO {}",
                    dialect.guard(),
                    crate::sql::work_path(SHARED_SCHEMA)
                ))?;
                let mut applied = self
                    .registry_set
                    .run_pending(conn)
                    .map_err(Error::SharedMigration)?;
                if let Some(shared) = &self.shared {
                    applied.extend(shared.run_pending(conn).map_err(Error::SharedMigration)?);
                }
                if let Some(sql) = &references {
                    // The library's own statement: back under its own path.
                    conn.batch_execute(&format!("{}; {sql}", crate::sql::OWN_PATH))
                        .map_err(|e| Error::SharedMigration(Box::new(e)))?;
                }
                Ok(applied)
            })
        });
        crate::trace::finish_with(applied, |a| Some(a.len()))
    }

    /// Checks the tenant migration set with the [`CitusLint`]: what a Citus distributed schema
    /// cannot hold (triggers, `ADD COLUMN ... serial`, foreign keys to other schemas or to shared
    /// tables that are not reference tables, tables without a primary key). The reference tables
    /// are read from Citus's metadata, together with the shared tables that
    /// [`run_shared`](Self::run_shared) makes reference tables on Citus; on PostgreSQL only the
    /// latter count. Empty when Citus can apply every migration.
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// for finding in migrator.lint_citus(conn)? {
    ///     eprintln!("{finding}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the metadata cannot be read; [`Error::MigrationSource`] when a
    /// migration cannot be split into statements.
    pub fn lint_citus(&self, conn: &mut PgConnection) -> Result<Vec<LintFinding>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        #[derive(QueryableByName)]
        struct Name {
            #[diesel(sql_type = Text)]
            name: String,
        }
        let ups = || self.set.migrations.iter().map(|m| m.up.as_str());
        // The shared tables run_shared turns into reference tables (on Citus), when they exist.
        let mut reference: Vec<String> = diesel::sql_query(
            "SELECT t AS name FROM pg_catalog.unnest($1::pg_catalog.text[]) AS t \
             WHERE pg_catalog.to_regclass(pg_catalog.quote_ident($2) || '.' || pg_catalog.quote_ident(t)) IS NOT NULL",
        )
        .bind::<diesel::sql_types::Array<Text>, _>(shared_references(ups(), SHARED_SCHEMA))
        .bind::<Text, _>(SHARED_SCHEMA)
        .load::<Name>(conn)?
        .into_iter()
        .map(|r| r.name)
        .collect();
        if self.dialect(conn)?.distributes_schemas() {
            reference.extend(
                diesel::sql_query(
                    "SELECT c.relname::pg_catalog.text AS name FROM pg_catalog.pg_dist_partition p \
                     JOIN pg_catalog.pg_class c ON c.oid = p.logicalrelid \
                     WHERE c.relnamespace = pg_catalog.to_regnamespace($1) \
                       AND p.partmethod = 'n' AND p.repmodel = 't'",
                )
                .bind::<Text, _>(SHARED_SCHEMA)
                .load::<Name>(conn)?
                .into_iter()
                .map(|r| r.name),
            );
        }
        CitusLint::new()
            .shared_schema(SHARED_SCHEMA)
            .reference_tables(reference)
            .check(self.tenant_sources())
            .map_err(|e| Error::MigrationSource(Box::new(e)))
    }

    /// Checks the tenant migration set with the [`CostLint`]: the statements whose cost grows
    /// with a table's size or with the fleet, each finding naming the safe rewrite. The fleet
    /// size is the number of registered tenants (none before the registry exists); empty when
    /// nothing is costly.
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// for finding in migrator.lint_costs(conn)? {
    ///     eprintln!("{finding}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the registry cannot be read; [`Error::MigrationSource`] when a
    /// migration cannot be split into statements.
    pub fn lint_costs(&self, conn: &mut PgConnection) -> Result<Vec<CostFinding>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        let fleet = own(conn, |conn| {
            if self.registry.exists(conn)? {
                Ok::<_, Error>(self.registry.list(conn)?.len())
            } else {
                Ok(0)
            }
        })?;
        CostLint::new()
            .fleet_size(fleet)
            .check(self.tenant_sources())
            .map_err(|e| Error::MigrationSource(Box::new(e)))
    }

    /// Checks the database for what would weaken tenant isolation: a superuser connection, a
    /// shared schema where every role may create objects, create rights of other roles than the
    /// owner on the shared schema or a tenant schema, functions and operators overloading
    /// `pg_catalog` names (these three let a role hijack SQL, CVE-2018-1058), shared tables named
    /// like tenant tables, and registered tenants without a schema; on Citus, tenants that are not
    /// fully distributed. Five catalog queries (six on Citus) whatever the number of tenants,
    /// after the engine's detection on the migrator's first use; run it at start-up and log what
    /// it returns.
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// for hazard in migrator.audit(conn)? {
    ///     eprintln!("warning: {hazard}");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the catalog or the registry cannot be read.
    pub fn audit(&self, conn: &mut PgConnection) -> Result<Vec<Hazard>> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        // The registered names, as the registry spells its query (one column, `name`).
        let registry = self.registry.names_sql();
        let column = "name";
        let distributes_schemas = self.dialect(conn)?.distributes_schemas();
        // The catalog queries run in one transaction (the library's own path): the backend is
        // read before and after it, in transactions of their own, to see a transaction pooler.
        let was = backend_pid(conn)?;
        let mut hazards = own(conn, |conn| {
            crate::audit::audit(conn, &registry, column, distributes_schemas)
        })?;
        let now = backend_pid(conn)?;
        if now != was && !self.pooler().is_transaction() {
            hazards.push(Hazard::UndeclaredPooler {
                evidence: crate::pooler::PoolerEvidence::BackendChanged { was, now },
            });
        }
        Ok(hazards)
    }
}

impl Migrator {
    /// The size of the database's catalog (schemas, relations, columns) and, through
    /// [`CatalogSize::backend_bytes`], the catalog cache a backend that touches every tenant
    /// keeps: one query on the catalog, whatever the number of tenants. [`audit`](Self::audit)
    /// reports [`Hazard::CatalogScale`] past [`CATALOG_SCALE_RELATIONS`](crate::CATALOG_SCALE_RELATIONS).
    ///
    /// ```no_run
    /// # fn run(migrator: &diesel_workspace::Migrator, conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// let size = migrator.catalog_size(conn)?;
    /// println!("catalog: {size}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Query`] when the catalog cannot be read.
    pub fn catalog_size(&self, conn: &mut PgConnection) -> Result<CatalogSize> {
        let _span = self.enter(conn, tracing::Span::none(), Op::ReadOnly)?;
        Ok(own(conn, crate::audit::catalog_size)?)
    }

    /// The tenant migrations as the lints read them: `(version, up.sql)`, in order.
    fn tenant_sources(&self) -> impl Iterator<Item = (&str, &str)> {
        self.set
            .migrations
            .iter()
            .map(|m| (m.version.as_str(), m.up.as_str()))
    }
}

/// The connection's backend process (`pg_backend_pid()`), in a statement of its own.
fn backend_pid(conn: &mut PgConnection) -> Result<i32> {
    Ok(
        diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "pg_catalog.pg_backend_pid()",
        ))
        .get_result(conn)?,
    )
}
