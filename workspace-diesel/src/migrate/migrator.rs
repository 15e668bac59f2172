//! What a [`Migrator`] is: its builder, the migration sets it reads once, and its accessors
//! (the registry, the pooler), and the engines it has met: the one a tenant transaction assumes,
//! checked by that transaction's first batch, and the retry on the right one when it was wrong.

use std::sync::{Arc, Mutex};

use diesel::migration::MigrationSource;
use diesel::pg::Pg;
use diesel::prelude::*;

use crate::dialect::Dialect;
use crate::error::{Error, Result};
use crate::migrate::blueprint::Blueprints;
use crate::migrate::set::{CompiledSet, SharedSet, REGISTRY_MIGRATIONS};
use crate::pooler::Pooler;
use crate::registry::model::Registry;
use crate::roles::TenantRoles;

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
/// const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
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
    pub(super) tenant: Arc<dyn MigrationSource<Pg> + Send + Sync>,
    /// The tenant set, read from `tenant` once.
    pub(super) set: Arc<CompiledSet>,
    /// The registry's own migrations, read once.
    pub(super) registry_set: Arc<SharedSet>,
    /// The application's shared migrations, read once.
    pub(super) shared: Option<Arc<SharedSet>>,
    pub(super) registry: Registry,
    /// The engines met so far, the last one first ([`Migrator::with_dialect`]).
    pub(super) dialects: Arc<Mutex<Vec<Arc<Dialect>>>>,
    pub(super) pooler: Pooler,
    /// Per-tenant roles, when enabled.
    pub(super) tenant_roles: Option<TenantRoles>,
    /// Whether to refuse to run on hijack hazards.
    pub(super) refuse_hijack_hazards: bool,
    /// What clones learned of their templates' schemas.
    pub(super) blueprints: Blueprints,
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
    blueprints: bool,
}

impl MigratorBuilder {
    /// Whether [`Migrator::clone_tenant`] learns each template's *blueprint* (its final schema
    /// as statements, read after the template's first clone and tried once in a schema rolled
    /// back) and builds the next clones of that template from it instead of replaying the
    /// migrations. The blueprints live in the migrator (and its clones): a process that clones
    /// once and exits, such as the CLI, gains nothing and pays the learning, so it turns them
    /// off. Defaults to `true`.
    ///
    /// ```
    /// use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// let migrator = Migrator::builder(TENANT).blueprints(false).build()?;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn blueprints(mut self, learn: bool) -> Self {
        self.blueprints = learn;
        self
    }

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
    /// use diesel_workspace::{Migrator, pooler::Pooler};
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
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
            dialects: Arc::new(Mutex::new(Vec::new())),
            pooler: self.pooler,
            tenant_roles: self.tenant_roles,
            refuse_hijack_hazards: self.refuse_hijack_hazards,
            blueprints: Blueprints::new(self.blueprints),
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
            blueprints: true,
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

    /// Opens a connection for the migrator's own work (see [`open`](crate::connect::open)).
    pub(crate) fn open(&self, database_url: &str) -> Result<PgConnection> {
        crate::connect::open(database_url, self.pooler)
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

    /// The engine of the database behind `conn`, detected now: one query on PostgreSQL, three
    /// on Citus (see [`Dialect::detect`]). A migrator may be used with connections to several
    /// servers (an export from PostgreSQL imported into a Citus cluster, a fleet across
    /// servers): every call detects the engine of the connection it is given.
    ///
    /// ```no_run
    /// # use diesel_migrations::{embed_migrations, EmbeddedMigrations};
    /// use diesel_workspace::Migrator;
    /// # const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
    ///
    /// # fn run(conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
    /// let migrator = Migrator::builder(TENANT).build()?;
    /// if migrator.dialect(conn)?.distributes_schemas() {
    ///     println!("tenants become distributed schemas");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::UnsupportedEngine`] on CockroachDB and YugabyteDB; [`Error::Query`] when the
    /// catalog cannot be read.
    pub fn dialect(&self, conn: &mut PgConnection) -> Result<Dialect> {
        Ok((*self.detect(conn)?).clone())
    }

    /// Detects the engine behind `conn` and makes it the last one met.
    pub(crate) fn detect(&self, conn: &mut PgConnection) -> Result<Arc<Dialect>> {
        let detected = Arc::new(Dialect::detect_supported(conn)?);
        self.remember(&detected);
        Ok(detected)
    }

    /// The engine a tenant transaction assumes: the last one this migrator met, detected on the
    /// first use. Whatever is sent with it must start with its [`guard`](Dialect::guard), so a
    /// transaction on another engine fails in its first batch with [`Error::EngineChanged`];
    /// [`with_dialect`](Self::with_dialect) then sends it again with the right one.
    ///
    /// # Errors
    /// As [`dialect`](Self::dialect), on the first use.
    pub(crate) fn assumed_dialect(&self, conn: &mut PgConnection) -> Result<Arc<Dialect>> {
        if let Some(last) = self.known().first() {
            return Ok(Arc::clone(last));
        }
        self.detect(conn)
    }

    /// Runs `body` with the [`assumed_dialect`](Self::assumed_dialect); when its first batch
    /// finds another engine behind `conn` ([`Error::EngineChanged`], nothing done), runs it once
    /// more with that engine: one this migrator met before with the same identity (`version()`
    /// and the Citus extension's version), or else detected on `conn`. No query is added while
    /// the engine stays the same; a switch costs the failed batch (and a detection the first
    /// time). `body` must send the dialect's guard before anything that depends on the engine.
    ///
    /// # Errors
    /// `body`'s; [`Error::EngineChanged`] when the engine changes again between the detection
    /// and the second attempt.
    pub(crate) fn with_dialect<T>(
        &self,
        conn: &mut PgConnection,
        body: impl FnMut(&mut PgConnection, &Dialect) -> Result<T>,
    ) -> Result<T> {
        let assumed = self.assumed_dialect(conn)?;
        self.with_dialect_from(conn, assumed, body)
    }

    /// [`with_dialect`](Self::with_dialect) starting from `first`.
    fn with_dialect_from<T>(
        &self,
        conn: &mut PgConnection,
        first: Arc<Dialect>,
        mut body: impl FnMut(&mut PgConnection, &Dialect) -> Result<T>,
    ) -> Result<T> {
        match body(conn, &first) {
            Err(Error::EngineChanged { found }) => {
                let actual = match self.known().iter().find(|d| d.identity() == found) {
                    Some(known) => Arc::clone(known),
                    None => Arc::new(Dialect::detect_supported(conn)?),
                };
                self.remember(&actual);
                body(conn, &actual)
            }
            result => result,
        }
    }

    /// The engines met so far, the last one first.
    fn known(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Dialect>>> {
        self.dialects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `dialect` the last engine met (the one of its identity before is replaced); keeps
    /// the last [`KNOWN_ENGINES`].
    fn remember(&self, dialect: &Arc<Dialect>) {
        let mut known = self.known();
        known.retain(|d| d.identity() != dialect.identity());
        known.insert(0, Arc::clone(dialect));
        known.truncate(KNOWN_ENGINES);
    }
}

/// How many engines a migrator remembers ([`Migrator::with_dialect`]).
const KNOWN_ENGINES: usize = 8;
