//! The migration engine: the [`Migrator`] and its builder, and the shared migrations.
//!
//! Each file answers one question: `set` (the migration sets, read once), `engine` (one tenant,
//! both directions), `failure` (classifying what failed), `tenants` (create, drop, rename,
//! list), `spares` (the warm pool), `fleet` (every tenant, in parallel), `report` (what the
//! engine reports, plain data) and `status` (status and drift).

mod engine;
mod failure;
mod fleet;
pub(crate) mod report;
mod set;
mod spares;
mod split;
mod status;
mod tenants;

use std::sync::{Arc, OnceLock};

use diesel::connection::SimpleConnection;
use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::hazard::Hazard;
use crate::lint::{shared_references, CitusLint, LintFinding};
use crate::pooler::Pooler;
use crate::registry::Registry;
use crate::roles::TenantRoles;
use crate::sql::{own, SHARED_LOCK_KEY, SHARED_SCHEMA, SPARE_PREFIX};
use crate::tenant::TenantId;

pub use self::fleet::{FailurePolicy, MigrateOptions, Progress, ProgressFn};
pub use self::report::{MigrationFailure, MigrationReport, TenantOutcome, TenantStatus};
pub use self::set::REGISTRY_MIGRATIONS;
pub use self::status::SharedStatus;

use self::set::{CompiledSet, SharedSet};

/// Runs the shared and tenant migrations, and provisions tenants.
///
/// Built with [`Migrator::builder`] from the application's two migration sets, which
/// [`MigratorBuilder::build`] reads and checks once: no later call reads a migration source.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel_migrations::{embed_migrations, EmbeddedMigrations};
/// use diesel_workspace::{Migrator, TenantId};
///
/// const SHARED: EmbeddedMigrations = embed_migrations!("../migrations_shared");
/// const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
///
/// # fn run(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
/// let migrator = Migrator::builder(TENANT).shared(SHARED).build()?;
/// migrator.run_shared(conn)?;
/// migrator.create_tenant(conn, &TenantId::new("acme")?)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Migrator {
    /// The tenant set's source, as given.
    tenant: Arc<dyn MigrationSource<Pg> + Send + Sync>,
    /// The tenant set, read from `tenant` once.
    set: Arc<CompiledSet>,
    /// The registry's own migrations, read once.
    registry_set: Arc<SharedSet>,
    /// The application's shared migrations, read once.
    shared: Option<Arc<SharedSet>>,
    registry: Registry,
    /// The database's engine, detected on first use.
    dialect: Arc<OnceLock<Dialect>>,
    pooler: Pooler,
    /// Per-tenant roles, when enabled.
    pub(crate) tenant_roles: Option<TenantRoles>,
    /// Whether to refuse to run on hijack hazards.
    refuse_hijack_hazards: bool,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("shared", &self.shared.is_some())
            .field("registry", &self.registry)
            .field("pooler", &self.pooler)
            .field("tenant_roles", &self.tenant_roles)
            .field("refuse_hijack_hazards", &self.refuse_hijack_hazards)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Migrator`].
#[must_use]
pub struct MigratorBuilder {
    tenant: Arc<dyn MigrationSource<Pg> + Send + Sync>,
    shared: Option<Arc<dyn MigrationSource<Pg> + Send + Sync>>,
    registry: Registry,
    pooler: Pooler,
    tenant_roles: Option<TenantRoles>,
    refuse_hijack_hazards: bool,
}

impl MigratorBuilder {
    /// Gives each tenant a role of its own ([`TenantRoles`]): created with the tenant (also when
    /// it claims a spare), renamed and dropped with it. Assume it with
    /// [`TenantConnectionExt::tenant_transaction_as`](crate::TenantConnectionExt::tenant_transaction_as).
    /// The migrator's role needs `CREATEROLE`. Defaults to none (opt-in).
    pub fn tenant_roles(mut self, roles: TenantRoles) -> Self {
        self.tenant_roles = Some(roles);
        self
    }

    /// Makes every call that changes the database (shared migrations, create, drop, rename,
    /// migrate, revert, spares) refuse to run, with [`Error::HijackHazards`], when
    /// [`Migrator::audit`] finds a hazard that lets another role change what SQL does
    /// ([`Hazard::enables_hijack`](crate::Hazard::enables_hijack)): a role other than the owner
    /// with `CREATE` on the shared schema or a tenant schema, or a function or operator
    /// overloading a `pg_catalog` name. Two catalog queries per call. Defaults to `false`.
    pub fn refuse_hijack_hazards(mut self, refuse: bool) -> Self {
        self.refuse_hijack_hazards = refuse;
        self
    }

    /// The application's shared migrations, run once in the registry's schema after the registry's
    /// own. Defaults to none.
    ///
    /// Any Diesel migration source works: [`EmbeddedMigrations`](diesel_migrations::EmbeddedMigrations)
    /// from `embed_migrations!`, or `diesel_migrations::FileBasedMigrations` read from a
    /// directory at run time.
    pub fn shared<S>(mut self, shared: S) -> Self
    where
        S: MigrationSource<Pg> + Send + Sync + 'static,
    {
        self.shared = Some(Arc::new(shared));
        self
    }

    /// Where the registry lives. Defaults to [`Registry::default`] (`public.workspaces`).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// What sits between the migrator and PostgreSQL. Defaults to [`Pooler::Direct`].
    ///
    /// With [`Pooler::Transaction`] (PgBouncer in transaction pooling mode), Diesel's statement
    /// cache is turned off on every connection the migrator opens and on every connection passed
    /// to it; every lock it takes is transaction-scoped ([`fill_spares`](Migrator::fill_spares)
    /// then takes no lock across its transactions: two concurrent callers may each create one of
    /// the last missing spares); and a migration marked `run_in_transaction = false`, which needs
    /// a session of its own, is refused by [`build`](Self::build).
    ///
    /// Not in pooler mode, the connections the migrator opens (the fleet's workers) are checked
    /// as the pool's are: two of them served by the same backend are refused with
    /// [`Error::PoolerNotDeclared`]. Open the connections you pass with
    /// [`connect`](crate::connect), which checks too.
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::{Migrator, Pooler};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).pooler(Pooler::Transaction).build()?;
    /// let mut conn = diesel_workspace::connect("postgres://app@127.0.0.1:6432/app", Pooler::Transaction)?;
    /// migrator.run_shared(&mut conn)?;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn pooler(mut self, pooler: Pooler) -> Self {
        self.pooler = pooler;
        self
    }

    /// Reads and checks every migration set once (the tenant set, the registry's and the shared
    /// set) and returns the migrator.
    ///
    /// # Errors
    /// [`Error::MigrationSource`] when a set cannot be read: a directory that vanished, an
    /// unreadable `up.sql` or `down.sql`, or a tenant migration whose `up.sql` holds no
    /// statement (a placeholder that would otherwise be recorded as applied), or, in pooler mode,
    /// a tenant migration marked `run_in_transaction = false`.
    pub fn build(self) -> Result<Migrator> {
        let set = CompiledSet::read(&*self.tenant)?;
        if self.pooler.is_transaction() {
            if let Some(m) = set.migrations.iter().find(|m| !m.in_tx) {
                return Err(Error::MigrationSource(
                    format!(
                        "tenant migration `{}` is marked run_in_transaction = false, which needs a \
                         session of its own: run it over a direct connection (Pooler::Direct), not \
                         through a transaction pooler",
                        m.version
                    )
                    .into(),
                ));
            }
        }
        let registry_set = SharedSet::read(&REGISTRY_MIGRATIONS)?;
        let shared = match &self.shared {
            Some(source) => Some(Arc::new(SharedSet::read(&**source)?)),
            None => None,
        };
        Ok(Migrator {
            tenant: self.tenant,
            set: Arc::new(set),
            registry_set: Arc::new(registry_set),
            shared,
            registry: self.registry,
            dialect: Arc::new(OnceLock::new()),
            pooler: self.pooler,
            tenant_roles: self.tenant_roles,
            refuse_hijack_hazards: self.refuse_hijack_hazards,
        })
    }
}

impl Migrator {
    /// Starts a migrator for the tenant migration set `tenant`: any Diesel migration source
    /// ([`EmbeddedMigrations`](diesel_migrations::EmbeddedMigrations), or
    /// `diesel_migrations::FileBasedMigrations` read at run time).
    ///
    /// ```no_run
    /// use diesel_migrations::FileBasedMigrations;
    /// use diesel_workspace::Migrator;
    ///
    /// let tenant = FileBasedMigrations::from_path("migrations_tenant").expect("a directory");
    /// let shared = FileBasedMigrations::from_path("migrations_shared").expect("a directory");
    /// let migrator = Migrator::builder(tenant).shared(shared).build()?;
    /// # let _ = migrator;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn builder<S>(tenant: S) -> MigratorBuilder
    where
        S: MigrationSource<Pg> + Send + Sync + 'static,
    {
        MigratorBuilder {
            tenant: Arc::new(tenant),
            shared: None,
            registry: Registry::default(),
            pooler: Pooler::Direct,
            tenant_roles: None,
            refuse_hijack_hazards: false,
        }
    }

    /// Where the registry lives.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// What sits between the migrator and PostgreSQL ([`MigratorBuilder::pooler`]).
    pub fn pooler(&self) -> Pooler {
        self.pooler
    }

    /// Readies a connection passed to the migrator: in pooler mode, Diesel's statement cache off.
    pub(crate) fn ready(&self, conn: &mut PgConnection) {
        if self.pooler.is_transaction() {
            conn.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
        }
    }

    /// Opens a connection for the migrator's own work (see [`crate::pooler::open`]).
    pub(crate) fn open(&self, database_url: &str) -> Result<PgConnection> {
        crate::pooler::open(database_url, self.pooler)
    }

    /// The tenant migration set's source, as given to [`Migrator::builder`].
    pub fn tenant_migrations(&self) -> &(dyn MigrationSource<Pg> + Send + Sync) {
        &*self.tenant
    }

    /// The versions of the tenant migration set, sorted (as Diesel writes them to its ledger:
    /// `2024-01-01-000000_notes` is `20240101000000`), as read by [`MigratorBuilder::build`].
    pub fn tenant_versions(&self) -> &[String] {
        &self.set.versions
    }

    /// Runs the registry's migrations, then the application's shared migrations, in the shared
    /// schema `public` (alone on the `search_path`), in one transaction under an advisory lock
    /// (several processes may start at once).
    ///
    /// The library's own tables (the central record, the warm pool and the built-in registry)
    /// always live in `public`, even when [`MigratorBuilder::registry`] points at an application
    /// table in another schema.
    ///
    /// Returns the versions applied.
    ///
    /// # Errors
    /// [`Error::SharedMigration`] when a migration fails; nothing of this run is kept.
    pub fn run_shared(&self, conn: &mut PgConnection) -> Result<Vec<String>> {
        let _span = crate::trace::op_span!("shared.migrate").entered();
        self.ready(conn);
        self.refuse_hazards(conn)?;
        let dialect = self.dialect(conn)?;
        // On Citus, the shared tables that tenant tables reference become reference tables.
        let references = dialect.reference_tables_sql(
            SHARED_SCHEMA,
            &shared_references(
                self.set.migrations.iter().map(|m| m.up.as_str()),
                SHARED_SCHEMA,
            ),
        );
        let applied = own(conn, |conn| {
            // The lock under the library's own path; then Diesel's harness and the migrations'
            // SQL with the shared schema alone on the path.
            conn.batch_execute(&format!(
                "SELECT pg_catalog.pg_advisory_xact_lock({SHARED_LOCK_KEY}, 0); \
                 SET LOCAL search_path TO {}",
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
        });
        crate::trace::finish_with(applied, |a| Some(a.len()))
    }

    /// The engine of the database behind `conn`, detected on the migrator's first use (one
    /// query) and then remembered: use one migrator per database.
    ///
    /// # Errors
    /// [`Error::UnsupportedEngine`] on CockroachDB and YugabyteDB; [`Error::Query`] when the
    /// catalog cannot be read.
    pub fn dialect(&self, conn: &mut PgConnection) -> Result<&Dialect> {
        if let Some(d) = self.dialect.get() {
            return Ok(d);
        }
        let detected = Dialect::detect_supported(conn)?;
        Ok(self.dialect.get_or_init(|| detected))
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
            .check(
                self.set
                    .migrations
                    .iter()
                    .map(|m| (m.version.as_str(), m.up.as_str())),
            )
            .map_err(|e| Error::MigrationSource(Box::new(e)))
    }

    /// Whether the registry has a row for `tenant` (the registry must exist).
    pub(crate) fn registered(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<bool> {
        #[derive(QueryableByName)]
        struct Flag {
            #[diesel(sql_type = Bool)]
            flag: bool,
        }
        let row: Flag = diesel::sql_query(format!(
            "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col}::pg_catalog.text = $1) AS flag",
            col = self.registry.quoted_identifier_column(),
            reg = self.registry.qualified_table(),
        ))
        .bind::<Text, _>(tenant.as_str())
        .get_result(conn)?;
        Ok(row.flag)
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
        self.ready(conn);
        let registry = self.registry.qualified_table();
        let column = self.registry.quoted_identifier_column();
        let distributes_schemas = self.dialect(conn)?.distributes_schemas();
        // The catalog queries run in one transaction (the library's own path): the backend is
        // read before and after it, in transactions of their own, to see a transaction pooler.
        let was = backend_pid(conn)?;
        let mut hazards = own(conn, |conn| {
            crate::audit::audit(conn, &registry, &column, distributes_schemas)
        })?;
        let now = backend_pid(conn)?;
        if now != was && !self.pooler().is_transaction() {
            hazards.push(Hazard::UndeclaredPooler {
                evidence: crate::PoolerEvidence::BackendChanged { was, now },
            });
        }
        Ok(hazards)
    }

    /// With [`MigratorBuilder::refuse_hijack_hazards`], fails with [`Error::HijackHazards`] when
    /// the database has hazards that let another role hijack SQL.
    pub(crate) fn refuse_hazards(&self, conn: &mut PgConnection) -> Result<()> {
        if !self.refuse_hijack_hazards {
            return Ok(());
        }
        let hazards = own(conn, |conn| {
            crate::audit::hijack_hazards(conn, SHARED_SCHEMA)
        })?;
        if hazards.is_empty() {
            Ok(())
        } else {
            Err(Error::HijackHazards(hazards))
        }
    }

    /// Whether `tenant` is registered and its schema exists, read in a statement of its own (so
    /// after a failure, with the catalog as it is now): what a failed operation on a tenant
    /// that was dropped or renamed meanwhile reports instead of the server's error.
    pub(crate) fn gone(&self, conn: &mut PgConnection, tenant: &TenantId) -> Option<Error> {
        #[derive(QueryableByName)]
        struct State {
            #[diesel(sql_type = Bool)]
            registered: bool,
            #[diesel(sql_type = Bool)]
            schema: bool,
        }
        let state = own(conn, |conn| {
            diesel::sql_query(format!(
                "SELECT EXISTS (SELECT 1 FROM {reg} WHERE {col}::pg_catalog.text = $1) AS registered, \
                 pg_catalog.to_regnamespace(pg_catalog.quote_ident($1)) IS NOT NULL AS schema",
                col = self.registry.quoted_identifier_column(),
                reg = self.registry.qualified_table(),
            ))
            .bind::<Text, _>(tenant.as_str())
            .get_result::<State>(conn)
        })
        .ok()?;
        if !state.registered {
            Some(Error::TenantNotFound(tenant.clone()))
        } else if !state.schema {
            Some(Error::SchemaMissing(tenant.clone()))
        } else {
            None
        }
    }

    /// `result` of an operation on `tenant`, with a failure caused by the tenant being dropped
    /// or renamed meanwhile reported as [`Error::TenantNotFound`] or [`Error::SchemaMissing`].
    pub(crate) fn or_gone<T>(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
        result: Result<T>,
    ) -> Result<T> {
        match result {
            Err(e @ (Error::TenantNotFound(_) | Error::SchemaMissing(_))) => Err(e),
            Err(e) => match self.gone(conn, tenant) {
                Some(gone) => Err(gone),
                None => Err(e),
            },
            ok => ok,
        }
    }

    /// Refuses a name that cannot be a tenant (the registry's schema, a spare) and a tenant that is
    /// not in the registry, so that single-tenant calls never run tenant DDL in another schema.
    pub(crate) fn ensure_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        self.check_tenant_name(tenant)?;
        if own(conn, |conn| self.registered(conn, tenant))? {
            Ok(())
        } else {
            Err(Error::TenantNotFound(tenant.clone()))
        }
    }

    /// Rejects the registry's schema and the spares' prefix as tenant names.
    pub(crate) fn check_tenant_name(&self, tenant: &TenantId) -> Result<()> {
        if tenant.as_str() == self.registry.schema() {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "this schema is reserved for shared data",
            });
        }
        if tenant.as_str().starts_with(SPARE_PREFIX) {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "names starting with `_spare_` are reserved for spare schemas",
            });
        }
        Ok(())
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
