//! Embedded migrations: the shared set once, the tenant set once per tenant schema.

use std::sync::{Arc, OnceLock};

use diesel::connection::SimpleConnection;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness};

use crate::error::{Error, Result};
use crate::registry::{quote_ident, Registry};
use crate::tenant::TenantId;

/// The registry's own migrations (`migrations_shared/` of this repository), run before the
/// application's shared migrations.
pub const REGISTRY_MIGRATIONS: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations_shared");

/// First key of the advisory locks the library takes (`pg_advisory_xact_lock(key, hashtext(schema))`).
pub(crate) const LOCK_KEY: i32 = 0x5744_0001;
/// Key of the lock that serialises shared migrations.
pub(crate) const SHARED_LOCK_KEY: i32 = 0x5744_0002;

/// Runs the shared and tenant migrations, and provisions tenants.
///
/// Built with [`Migrator::builder`] from the application's two embedded migration sets.
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
/// let migrator = Migrator::builder(TENANT).shared(SHARED).build();
/// migrator.run_shared(conn)?;
/// migrator.create_tenant(conn, &TenantId::new("acme")?)?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Migrator {
    shared: Option<Arc<dyn MigrationSource<Pg> + Send + Sync>>,
    tenant: Arc<dyn MigrationSource<Pg> + Send + Sync>,
    /// The tenant set's versions, read once from `tenant` (shared by clones).
    tenant_versions: Arc<OnceLock<Vec<String>>>,
    registry: Registry,
}

impl std::fmt::Debug for Migrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrator")
            .field("shared", &self.shared.is_some())
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Migrator`].
#[must_use]
pub struct MigratorBuilder {
    inner: Migrator,
}

impl MigratorBuilder {
    /// The application's shared migrations, run once in the registry's schema after the registry's
    /// own. Defaults to none.
    ///
    /// Any Diesel migration source works: [`EmbeddedMigrations`] from `embed_migrations!`, or
    /// `diesel_migrations::FileBasedMigrations` read from a directory at run time.
    pub fn shared<S>(mut self, shared: S) -> Self
    where
        S: MigrationSource<Pg> + Send + Sync + 'static,
    {
        self.inner.shared = Some(Arc::new(shared));
        self
    }

    /// Where the registry lives. Defaults to [`Registry::default`] (`public.workspaces`).
    pub fn registry(mut self, registry: Registry) -> Self {
        self.inner.registry = registry;
        self
    }

    /// The migrator.
    pub fn build(self) -> Migrator {
        self.inner
    }
}

impl Migrator {
    /// Starts a migrator for the tenant migration set `tenant`: any Diesel migration source
    /// ([`EmbeddedMigrations`], or `diesel_migrations::FileBasedMigrations` read at run time).
    ///
    /// ```no_run
    /// use diesel_migrations::FileBasedMigrations;
    /// use diesel_workspace::Migrator;
    ///
    /// let tenant = FileBasedMigrations::from_path("migrations_tenant").expect("a directory");
    /// let shared = FileBasedMigrations::from_path("migrations_shared").expect("a directory");
    /// let migrator = Migrator::builder(tenant).shared(shared).build();
    /// # let _ = migrator;
    /// ```
    pub fn builder<S>(tenant: S) -> MigratorBuilder
    where
        S: MigrationSource<Pg> + Send + Sync + 'static,
    {
        MigratorBuilder {
            inner: Migrator {
                shared: None,
                tenant: Arc::new(tenant),
                tenant_versions: Arc::new(OnceLock::new()),
                registry: Registry::default(),
            },
        }
    }

    /// Where the registry lives.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The tenant migration set.
    pub fn tenant_migrations(&self) -> &(dyn MigrationSource<Pg> + Send + Sync) {
        &*self.tenant
    }

    /// The versions of the tenant migration set, sorted (as Diesel writes them to its ledger:
    /// `2024-01-01-000000_notes` is `20240101000000`). Read from the source once, then cached.
    ///
    /// # Errors
    /// [`Error::MigrationSource`] when the source cannot be read (a directory that vanished).
    pub fn tenant_versions(&self) -> Result<&[String]> {
        if let Some(v) = self.tenant_versions.get() {
            return Ok(v);
        }
        let versions = source_versions(&*self.tenant)?;
        Ok(self.tenant_versions.get_or_init(|| versions))
    }

    /// Runs the registry's migrations, then the application's shared migrations, in the shared
    /// schema, in one transaction under an advisory lock (several processes may start at once).
    ///
    /// Returns the versions applied.
    ///
    /// # Errors
    /// [`Error::SharedMigration`] when a migration fails; nothing of this run is kept.
    pub fn run_shared(&self, conn: &mut PgConnection) -> Result<Vec<String>> {
        conn.transaction::<_, Error, _>(|conn| {
            conn.batch_execute(&format!(
                "SELECT pg_catalog.pg_advisory_xact_lock({SHARED_LOCK_KEY}, 0); \
                 SET LOCAL search_path TO {}",
                quote_ident(self.registry.schema())
            ))?;
            let mut applied =
                run_pending(conn, &REGISTRY_MIGRATIONS).map_err(Error::SharedMigration)?;
            if let Some(shared) = &self.shared {
                applied.extend(run_pending(conn, &**shared).map_err(Error::SharedMigration)?);
            }
            Ok(applied)
        })
    }

    /// Creates a tenant: its registry row, its schema and all tenant migrations, in one
    /// transaction. A failure leaves no row, no schema and no table behind.
    ///
    /// # Errors
    /// - [`Error::InvalidTenantName`] when `tenant` is the registry's schema;
    /// - [`Error::TenantExists`] when the row or the schema already exists;
    /// - [`Error::TenantMigration`] when a tenant migration fails.
    pub fn create_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        if tenant.as_str() == self.registry.schema() {
            return Err(Error::InvalidTenantName {
                name: tenant.to_string(),
                reason: "this schema is reserved for shared data",
            });
        }
        conn.transaction::<_, Error, _>(|conn| {
            lock_tenant(conn, tenant)?;
            let inserted = diesel::sql_query(format!(
                "INSERT INTO {} ({}) VALUES ($1) ON CONFLICT DO NOTHING",
                self.registry.qualified_table(),
                self.registry.quoted_identifier_column()
            ))
            .bind::<Text, _>(tenant.as_str())
            .execute(conn)?;
            if inserted == 0 {
                return Err(Error::TenantExists(tenant.clone()));
            }
            match conn.batch_execute(&format!(
                "CREATE SCHEMA {0}; SET LOCAL search_path TO {0}",
                tenant.quoted()
            )) {
                Err(diesel::result::Error::DatabaseError(_, info))
                    if info.message().contains("already exists") =>
                {
                    return Err(Error::TenantExists(tenant.clone()));
                }
                other => other?,
            }
            self.apply_pending(conn, tenant)?;
            Ok(())
        })
    }

    /// Applies the pending tenant migrations to `tenant`'s schema; the caller holds a transaction
    /// with the tenant's lock taken and its schema alone on the `search_path`. Records each
    /// applied version centrally, in the same transaction.
    pub(crate) fn apply_pending(
        &self,
        conn: &mut PgConnection,
        tenant: &TenantId,
    ) -> Result<Vec<String>> {
        let applied =
            run_pending(conn, &*self.tenant).map_err(|source| Error::TenantMigration {
                tenant: tenant.clone(),
                source,
            })?;
        if !applied.is_empty() {
            diesel::sql_query(
                "INSERT INTO public.workspace_migrations (schema_name, version) \
                 SELECT $1, v FROM pg_catalog.unnest($2::pg_catalog.text[]) AS v \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(tenant.as_str())
            .bind::<diesel::sql_types::Array<Text>, _>(&applied)
            .execute(conn)?;
        }
        Ok(applied)
    }
}

/// Takes the per-tenant advisory transaction lock (first statement of every per-tenant
/// transaction, so concurrent migrators queue instead of racing).
pub(crate) fn lock_tenant(conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
    diesel::sql_query("SELECT pg_catalog.pg_advisory_xact_lock($1, pg_catalog.hashtext($2))")
        .bind::<diesel::sql_types::Integer, _>(LOCK_KEY)
        .bind::<Text, _>(tenant.as_str())
        .execute(conn)?;
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The sorted versions of a migration source.
pub(crate) fn source_versions<S: MigrationSource<Pg> + ?Sized>(source: &S) -> Result<Vec<String>> {
    let mut versions: Vec<String> = source
        .migrations()
        .map_err(Error::MigrationSource)?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    versions.sort();
    Ok(versions)
}

/// A migration source lent to Diesel's harness, which takes its source by value.
struct Lent<'a, S: ?Sized>(&'a S);

impl<S: MigrationSource<Pg> + ?Sized> MigrationSource<Pg> for Lent<'_, S> {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        self.0.migrations()
    }
}

/// Runs the pending migrations of `source` with Diesel's harness, returning their versions.
pub(crate) fn run_pending<S: MigrationSource<Pg> + ?Sized>(
    conn: &mut PgConnection,
    source: &S,
) -> std::result::Result<Vec<String>, BoxError> {
    let applied = conn.run_pending_migrations(Lent(source))?;
    Ok(applied.into_iter().map(|v| v.to_string()).collect())
}
