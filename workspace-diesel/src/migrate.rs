//! Embedded migrations: the shared set once, the tenant set once per tenant schema.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use diesel::connection::{
    AnsiTransactionManager, BoxableConnection, SimpleConnection, TransactionManager,
};
use diesel::migration::{Migration, MigrationSource, CREATE_MIGRATIONS_TABLE};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::result::DatabaseErrorKind;
use diesel::sql_types::Text;
use diesel_migrations::{EmbeddedMigrations, MigrationError, MigrationHarness};

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::tenant::TenantId;

/// The registry's own migrations (`migrations_shared/` of this repository), run before the
/// application's shared migrations.
pub const REGISTRY_MIGRATIONS: EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations_shared");

/// First key of the advisory locks the library takes (`pg_advisory_xact_lock(key, hashtext(schema))`).
pub(crate) const LOCK_KEY: i32 = 0x5744_0001;
/// The shared schema: the library's tables and the shared migrations live here.
pub(crate) const SHARED_SCHEMA: &str = "public";
/// Key of the lock that serialises shared migrations.
pub(crate) const SHARED_LOCK_KEY: i32 = 0x5744_0002;
/// Key of the session lock that serialises [`Migrator::fill_spares`] (second key 0).
pub(crate) const SPARES_LOCK_KEY: i32 = 0x5744_0003;

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
    /// The tenant set, read once from `tenant` (shared by clones).
    compiled: Arc<OnceLock<CompiledSet>>,
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
                compiled: Arc::new(OnceLock::new()),
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
        Ok(&self.compiled()?.versions)
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
        conn.transaction::<_, Error, _>(|conn| {
            conn.batch_execute(&format!(
                "SELECT pg_catalog.pg_advisory_xact_lock({SHARED_LOCK_KEY}, 0); \
                 SET LOCAL search_path TO {SHARED_SCHEMA}"
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
    /// One round trip: `BEGIN`, the tenant's lock, then either the claim of a warm spare or the
    /// full provisioning, `COMMIT`. When the warm pool holds a spare schema that is current (see
    /// [`fill_spares`](Self::fill_spares)), it is claimed: renamed to the tenant, registered and
    /// its central record moved, with no table DDL. Otherwise: the registry row, `CREATE SCHEMA`,
    /// Diesel's ledger, the migrations, the ledger and central record rows. When that fails in a
    /// way a migration can fail (not a tenant that exists, not a lost connection), it is retried
    /// once with each migration wrapped so the error names its version and SQLSTATE.
    ///
    /// # Errors
    /// - [`Error::InvalidTenantName`] when `tenant` is the registry's schema or a spare's name;
    /// - [`Error::TenantExists`] when the row or the schema already exists;
    /// - [`Error::TenantMigration`] when a tenant migration fails (its source is a
    ///   [`MigrationFailure`] with the version and SQLSTATE).
    pub fn create_tenant(&self, conn: &mut PgConnection, tenant: &TenantId) -> Result<()> {
        self.check_tenant_name(tenant)?;
        let set = self.compiled()?;
        no_outer_transaction(conn)?;
        let t = quote_literal(tenant.as_str());
        // One round trip either way: claim a current spare, or provision from scratch.
        self.provision_with_retry(conn, tenant, |wrapped| {
            let (body, all) = self.provision_body(tenant, Provision::Tenant, wrapped)?;
            let [inner, outer] = dollar_tags(["wd_p", "wd_claim"], &body);
            let sql = format!(
                "BEGIN; {lock}; DO {outer} DECLARE spare text; BEGIN \
                 SELECT sp.schema_name INTO spare FROM public.workspace_spares sp \
                 WHERE pg_catalog.to_regnamespace(pg_catalog.quote_ident(sp.schema_name)) IS NOT NULL \
                   AND (SELECT pg_catalog.count(*) FROM public.workspace_migrations m \
                        WHERE m.schema_name = sp.schema_name AND m.version = ANY ({versions}::pg_catalog.text[])) = {n} \
                   AND (SELECT pg_catalog.count(*) FROM public.workspace_migrations m \
                        WHERE m.schema_name = sp.schema_name) = {n} \
                 ORDER BY sp.created_at, sp.schema_name LIMIT 1 FOR UPDATE OF sp SKIP LOCKED; \
                 IF spare IS NULL THEN EXECUTE {inner}{body}{inner}; ELSE \
                 INSERT INTO {reg} ({col}) VALUES ({t}); \
                 EXECUTE pg_catalog.format('ALTER SCHEMA %I RENAME TO %I', spare, {t}); \
                 UPDATE public.workspace_migrations SET schema_name = {t} WHERE schema_name = spare; \
                 DELETE FROM public.workspace_spares WHERE schema_name = spare; \
                 END IF; END {outer}; COMMIT",
                lock = lock_sql(tenant),
                versions = quote_literal(&array_literal(&set.versions)),
                n = set.versions.len(),
                reg = self.registry.qualified_table(),
                col = self.registry.quoted_identifier_column(),
            );
            Ok((sql, all))
        })
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

    /// Creates `schema` with every tenant migration, in one transaction sent as one batch, and
    /// records it as a tenant (registry row) or as a spare (`public.workspace_spares`).
    pub(crate) fn provision(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        as_: Provision,
    ) -> Result<()> {
        no_outer_transaction(conn)?;
        self.provision_with_retry(conn, schema, |wrapped| {
            let (body, all) = self.provision_body(schema, as_, wrapped)?;
            Ok((format!("BEGIN; {}; {body}COMMIT", lock_sql(schema)), all))
        })
    }

    /// Sends the provisioning batch `batch(wrapped)` of `schema` unwrapped and, when that fails
    /// in a way a migration can fail, once more with each migration wrapped so the error names
    /// its version and SQLSTATE. A tenant that already exists or a lost connection is reported
    /// at once. Runs the migrations left for their own path (`run_in_transaction = false`)
    /// afterwards.
    fn provision_with_retry(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        batch: impl Fn(bool) -> Result<(String, bool)>,
    ) -> Result<()> {
        let mut complete = true;
        for wrapped in [false, true] {
            let (sql, all) = batch(wrapped)?;
            complete = all;
            match conn.batch_execute(&sql) {
                Ok(()) => break,
                Err(e) => {
                    rollback(conn);
                    if wrapped || connection_lost(&e) || self.is_tenant_exists(schema, &e) {
                        return Err(classify_create_error(schema, e));
                    }
                }
            }
        }
        if !complete {
            self.migrate_schema(conn, schema, None, &MigrateParams::default())?;
        }
        Ok(())
    }

    /// Whether a provisioning batch failed because `schema` is already taken: a unique violation
    /// on the registry or the spares table, or `CREATE SCHEMA` of a schema that exists. Not a
    /// migration's error, so the wrapped attempt would fail the same way.
    fn is_tenant_exists(&self, schema: &TenantId, e: &diesel::result::Error) -> bool {
        let diesel::result::Error::DatabaseError(kind, info) = e else {
            return false;
        };
        if matches!(kind, DatabaseErrorKind::UniqueViolation) {
            if let Some(table) = info.table_name() {
                let registry = self.registry.qualified_table();
                let own = format!(
                    "{}.{}",
                    crate::registry::quote_ident(self.registry.schema()),
                    crate::registry::quote_ident(table)
                );
                return own == registry || table == "workspace_spares";
            }
        }
        info.message() == format!("schema \"{}\" already exists", schema.as_str())
    }

    /// The statements that provision `schema` inside an open transaction holding its lock: the
    /// registry (or spares) row, `CREATE SCHEMA`, the ledger, the migrations, the ledger and
    /// central record rows. Atomic for the transactional prefix of the set; `false` when
    /// migrations marked `run_in_transaction = false` remain, to run afterwards on their own path.
    fn provision_body(
        &self,
        schema: &TenantId,
        as_: Provision,
        wrapped: bool,
    ) -> Result<(String, bool)> {
        let set = self.compiled()?;
        let lit = quote_literal(schema.as_str());
        let mut sql = match as_ {
            Provision::Tenant => format!(
                "INSERT INTO {} ({}) VALUES ({lit}); ",
                self.registry.qualified_table(),
                self.registry.quoted_identifier_column()
            ),
            Provision::Spare => {
                format!("INSERT INTO public.workspace_spares (schema_name) VALUES ({lit}); ")
            }
        };
        sql.push_str(&format!(
            "CREATE SCHEMA {q}; SET LOCAL search_path TO {q}; {CREATE_MIGRATIONS_TABLE}; ",
            q = schema.quoted()
        ));
        let in_tx: Vec<&Compiled> = set.migrations.iter().take_while(|m| m.in_tx).collect();
        push_apply(&mut sql, schema, &in_tx, wrapped);
        Ok((sql, in_tx.len() == set.migrations.len()))
    }

    /// Applies the pending tenant migrations to `schema` and returns their versions.
    ///
    /// `plan` is what the central record says is pending: with it (and only transactional
    /// migrations in it), everything is one round trip whose ledger rows come first (a version
    /// already recorded fails on the ledger's primary key, after the lock). When that fails, or
    /// without a plan, the checked path runs: the ledger is read after the lock and decides, and
    /// each migration is wrapped so a failure reports its version and SQLSTATE. Lock timeouts
    /// (SQLSTATE 55P03) are retried `params.retries` times.
    pub(crate) fn migrate_schema(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        plan: Option<&[String]>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        no_outer_transaction(conn)?;
        let mut attempt = 0;
        // Versions committed by earlier attempts (before a non-transactional migration hit the
        // lock timeout): part of what this call applied.
        let mut committed = Vec::new();
        loop {
            match self.migrate_schema_once(conn, schema, plan, params) {
                Err(Error::TenantMigration { tenant, mut source })
                    if attempt < params.retries
                        && source
                            .downcast_ref::<MigrationFailure>()
                            .is_some_and(|f| f.sqlstate() == Some(LOCK_NOT_AVAILABLE)) =>
                {
                    let _ = tenant;
                    if let Some(f) = source.downcast_mut::<MigrationFailure>() {
                        committed.append(&mut f.committed);
                    }
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                }
                Ok(applied) => {
                    committed.extend(applied);
                    return Ok(committed);
                }
                Err(e) => return Err(with_committed(schema, e, committed)),
            }
        }
    }

    fn migrate_schema_once(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        plan: Option<&[String]>,
        params: &MigrateParams,
    ) -> Result<Vec<String>> {
        let set = self.compiled()?;
        if let Some(plan) = plan {
            let planned: Option<Vec<&Compiled>> = plan
                .iter()
                .map(|v| set.migrations.iter().find(|m| &m.version == v && m.in_tx))
                .collect();
            if let Some(planned) = planned.filter(|p| !p.is_empty()) {
                // The fast path: the same statements as the plain DDL, plus the lock and the two
                // record rows, unwrapped. A failure (a version already in the ledger, a missing
                // schema or ledger, a failing migration) rolls back and falls through to the
                // checked path, which reads the ledger after the lock and reports the failing
                // version and SQLSTATE. A lost connection is reported as it is, and a lock
                // timeout goes to the caller's retries without waiting for it a second time.
                let mut sql = begin_tenant_sql(schema, params);
                push_apply(&mut sql, schema, &planned, false);
                sql.push_str("COMMIT");
                match conn.batch_execute(&sql) {
                    Ok(()) => return Ok(plan.to_vec()),
                    Err(e) => {
                        rollback(conn);
                        if connection_lost(&e) {
                            return Err(classify_migrate_error(schema, e));
                        }
                        if db_message(&e) == LOCK_TIMEOUT_MESSAGE {
                            return Err(Error::TenantMigration {
                                tenant: schema.clone(),
                                source: Box::new(MigrationFailure::new(
                                    None,
                                    Some(LOCK_NOT_AVAILABLE.to_owned()),
                                    db_message(&e),
                                )),
                            });
                        }
                    }
                }
            }
        }
        let mut applied = Vec::new();
        match self.migrate_checked(conn, schema, set, params, &mut applied) {
            Ok(()) => Ok(applied),
            Err(e) => Err(with_committed(schema, e, applied)),
        }
    }

    /// The checked path of [`migrate_schema`](Self::migrate_schema): pushes each version it
    /// commits to `applied` (also when a later step fails).
    fn migrate_checked(
        &self,
        conn: &mut PgConnection,
        schema: &TenantId,
        set: &CompiledSet,
        params: &MigrateParams,
        applied: &mut Vec<String>,
    ) -> Result<()> {
        loop {
            let mut sql = begin_tenant_sql(schema, params);
            sql.push_str(&check_ledger_sql(schema));
            if let Err(e) = conn.batch_execute(&sql) {
                rollback(conn);
                return Err(classify_migrate_error(schema, e));
            }
            let ledger = match read_ledger(conn, schema) {
                Ok(l) => l,
                Err(e) => {
                    rollback(conn);
                    return Err(e.into());
                }
            };
            let pending: Vec<&Compiled> = set
                .migrations
                .iter()
                .filter(|m| !ledger.contains(&m.version))
                .collect();
            let batch: Vec<&Compiled> = pending.iter().copied().take_while(|m| m.in_tx).collect();
            let mut sql = String::new();
            push_apply(&mut sql, schema, &batch, true);
            sql.push_str("COMMIT");
            if let Err(e) = conn.batch_execute(&sql) {
                rollback(conn);
                return Err(classify_migrate_error(schema, e));
            }
            applied.extend(batch.iter().map(|m| m.version.clone()));
            match pending.get(batch.len()) {
                None => return Ok(()),
                Some(m) => {
                    if run_outside_transaction(conn, schema, m)? {
                        applied.push(m.version.clone());
                    }
                }
            }
        }
    }

    /// The tenant migration set, read from its source once.
    pub(crate) fn compiled(&self) -> Result<&CompiledSet> {
        if let Some(set) = self.compiled.get() {
            return Ok(set);
        }
        let set = CompiledSet::read(&*self.tenant)?;
        Ok(self.compiled.get_or_init(|| set))
    }
}

/// Whether [`Migrator::provision`] registers a tenant or a spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provision {
    Tenant,
    Spare,
}

/// Knobs of one tenant's migration.
#[derive(Debug, Clone)]
pub(crate) struct MigrateParams {
    pub(crate) lock_timeout: Duration,
    pub(crate) retries: u32,
}

impl Default for MigrateParams {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retries: DEFAULT_RETRIES,
        }
    }
}

/// Default of [`MigrateOptions::lock_timeout`](crate::MigrateOptions).
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`MigrateOptions::retries`](crate::MigrateOptions).
pub(crate) const DEFAULT_RETRIES: u32 = 3;
/// SQLSTATE `lock_not_available`.
pub(crate) const LOCK_NOT_AVAILABLE: &str = "55P03";
/// Schema names of warm spares start with this.
pub(crate) const SPARE_PREFIX: &str = "_spare_";

pub(crate) const SCHEMA_MISSING: &str = "workspace-diesel: schema missing";
/// PostgreSQL's message for SQLSTATE 55P03 raised by `lock_timeout` (the server's default
/// `lc_messages`; Diesel does not expose the SQLSTATE of an error).
const LOCK_TIMEOUT_MESSAGE: &str = "canceling statement due to lock timeout";
const MIGRATION_FAILED: &str = "workspace-diesel: migration ";

#[derive(QueryableByName)]
struct VersionRow {
    #[diesel(sql_type = Text)]
    version: String,
}

/// One tenant migration, read from the source: its SQL and whether it runs in a transaction.
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub(crate) version: String,
    pub(crate) up: String,
    pub(crate) down: Option<String>,
    pub(crate) in_tx: bool,
}

/// The tenant migration set, in version order.
#[derive(Debug)]
pub(crate) struct CompiledSet {
    pub(crate) migrations: Vec<Compiled>,
    pub(crate) versions: Vec<String>,
}

impl CompiledSet {
    fn read<S: MigrationSource<Pg> + ?Sized>(source: &S) -> Result<Self> {
        let mut migrations = Vec::new();
        for m in source.migrations().map_err(Error::MigrationSource)? {
            let mut up = Capture::default();
            m.run(&mut up).map_err(Error::MigrationSource)?;
            let mut down = Capture::default();
            // No `down.sql`, or an empty one: the migration cannot be reverted (reverting it
            // fails then). Any other error (I/O, a malformed file) is the source's.
            let down = match m.revert(&mut down) {
                Ok(()) => Some(down.0),
                Err(e)
                    if matches!(
                        e.downcast_ref::<MigrationError>(),
                        Some(MigrationError::NoMigrationRevertFile)
                    ) || e
                        .to_string()
                        .ends_with("Attempted to run an empty migration.") =>
                {
                    None
                }
                Err(e) => return Err(Error::MigrationSource(e)),
            };
            if !has_statement(&up.0) {
                return Err(Error::MigrationSource(
                    format!(
                        "migration {} has no SQL statement in its up.sql (only comments or \
                         nothing): write the migration before running it",
                        m.name()
                    )
                    .into(),
                ));
            }
            migrations.push(Compiled {
                version: m.name().version().to_string(),
                up: up.0,
                down,
                in_tx: m.metadata().run_in_transaction(),
            });
        }
        migrations.sort_by(|a, b| a.version.cmp(&b.version));
        let versions = migrations.iter().map(|m| m.version.clone()).collect();
        Ok(Self {
            migrations,
            versions,
        })
    }
}

/// Whether `sql` holds anything but comments, white space and semicolons. A migration without a
/// statement would otherwise be recorded as applied and never run once it is written.
fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(after) = rest.strip_prefix("/*") {
            rest = after.split_once("*/").map_or("", |(_, r)| r);
        } else {
            return !rest.is_empty();
        }
    }
}

/// A stand-in connection that records the SQL a migration sends, so the library can batch it.
#[derive(Default)]
struct Capture(String);

impl SimpleConnection for Capture {
    fn batch_execute(&mut self, query: &str) -> QueryResult<()> {
        self.0.push_str(query);
        Ok(())
    }
}

impl BoxableConnection<Pg> for Capture {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Why one tenant migration failed: the source of [`Error::TenantMigration`].
///
/// ```
/// use diesel_workspace::MigrationFailure;
///
/// let f = MigrationFailure::new(Some("20260101000002".into()), Some("42701".into()), "column \"x\" already exists");
/// assert_eq!(f.to_string(), "migration 20260101000002 failed with sqlstate 42701: column \"x\" already exists");
/// assert_eq!(f.sqlstate(), Some("42701"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationFailure {
    version: Option<String>,
    sqlstate: Option<String>,
    message: String,
    committed: Vec<String>,
}

impl MigrationFailure {
    /// A failure of migration `version` with PostgreSQL's SQLSTATE and message.
    pub fn new(
        version: Option<String>,
        sqlstate: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            version,
            sqlstate,
            message: message.into(),
            committed: Vec::new(),
        }
    }

    /// The same failure, after `committed` were applied and committed by the same call (earlier
    /// transactions of the tenant: they stay applied).
    pub fn with_committed(mut self, committed: Vec<String>) -> Self {
        self.committed = committed;
        self
    }

    /// Versions the failing call applied and committed before the failure (they stay applied;
    /// the tenant's ledger and the central record list them). Empty when nothing was kept.
    pub fn committed(&self) -> &[String] {
        &self.committed
    }

    /// The version of the failing migration, when known.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// PostgreSQL's SQLSTATE (`42701` for a duplicate column), when known: it is known for
    /// every error raised by a transactional migration's SQL, not for a lost connection.
    pub fn sqlstate(&self) -> Option<&str> {
        self.sqlstate.as_deref()
    }

    /// PostgreSQL's message (or the client's, for a lost connection).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for MigrationFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "migration {v} failed")?,
            None => f.write_str("migration failed")?,
        }
        if let Some(s) = &self.sqlstate {
            write!(f, " with sqlstate {s}")?;
        }
        write!(f, ": {}", self.message)?;
        if !self.committed.is_empty() {
            write!(
                f,
                " (committed before the failure: {})",
                self.committed.join(", ")
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for MigrationFailure {}

/// `SELECT pg_advisory_xact_lock(key, hashtext('<schema>'))`, as one statement: the per-tenant
/// lock, first statement of every per-tenant transaction, so concurrent migrators queue instead
/// of racing.
pub(crate) fn lock_sql(schema: &TenantId) -> String {
    format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({LOCK_KEY}, pg_catalog.hashtext({}))",
        quote_literal(schema.as_str())
    )
}

/// `BEGIN`, the lock (first), then the lock timeout for DDL and the tenant alone on the path.
fn begin_tenant_sql(schema: &TenantId, params: &MigrateParams) -> String {
    format!(
        "BEGIN; {}; SET LOCAL lock_timeout = '{}ms'; SET LOCAL search_path TO {}; ",
        lock_sql(schema),
        params.lock_timeout.as_millis(),
        schema.quoted()
    )
}

/// Fails with [`SCHEMA_MISSING`] when the schema is gone (nothing is created anywhere) and
/// creates the ledger when it is missing.
fn check_ledger_sql(schema: &TenantId) -> String {
    let ledger = format!("{}.__diesel_schema_migrations", schema.quoted());
    format!(
        "DO $wd_check$ BEGIN {} \
         IF pg_catalog.to_regclass({ledger_lit}) IS NULL THEN \
         CREATE TABLE {ledger} (version VARCHAR(50) PRIMARY KEY NOT NULL, \
         run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP); \
         END IF; END $wd_check$; ",
        raise_if_schema_missing(schema),
        ledger_lit = quote_literal(&ledger),
    )
}

/// PL/pgSQL that raises [`SCHEMA_MISSING`] (SQLSTATE 3F000) when `schema` does not exist; see
/// [`classify_migrate_error`].
pub(crate) fn raise_if_schema_missing(schema: &TenantId) -> String {
    format!(
        "IF pg_catalog.to_regnamespace({}) IS NULL THEN \
         RAISE EXCEPTION '{SCHEMA_MISSING}' USING ERRCODE = 'invalid_schema_name'; END IF;",
        quote_literal(&schema.quoted())
    )
}

/// Appends the ledger rows and central record rows of `migrations`, then each migration's SQL
/// (wrapped, when asked, so a failure names its version and SQLSTATE).
fn push_apply(sql: &mut String, schema: &TenantId, migrations: &[&Compiled], wrapped: bool) {
    if migrations.is_empty() {
        return;
    }
    // The ledger rows go first: a version another migrator already recorded fails the batch
    // (primary key) before any DDL runs.
    let lit = quote_literal(schema.as_str());
    let versions: Vec<String> = migrations
        .iter()
        .map(|m| quote_literal(&m.version))
        .collect();
    sql.push_str(&format!(
        "INSERT INTO {}.__diesel_schema_migrations (version) VALUES ({}); ",
        schema.quoted(),
        versions.join("), (")
    ));
    let central: Vec<String> = versions.iter().map(|v| format!("({lit}, {v})")).collect();
    sql.push_str(&format!(
        "INSERT INTO public.workspace_migrations (schema_name, version) VALUES {} \
         ON CONFLICT DO NOTHING; ",
        central.join(", ")
    ));
    for m in migrations {
        if wrapped {
            sql.push_str(&wrap(&m.version, &m.up));
        } else {
            sql.push_str(&m.up);
        }
        sql.push_str(";\n");
    }
}

/// Dollar-quote tags `$<prefix><n>$`, one per prefix with the same `n`, none of which occurs
/// in `body` (distinct prefixes: one tag may quote a text that holds the others).
fn dollar_tags<const N: usize>(prefixes: [&str; N], body: &str) -> [String; N] {
    (0..)
        .map(|n| prefixes.map(|p| format!("${p}{n}$")))
        .find(|tags| tags.iter().all(|t| !body.contains(t.as_str())))
        .expect("some tag is free")
}

/// Runs `body` through PL/pgSQL's `EXECUTE` in a `DO` block whose handler re-raises any error
/// with the same SQLSTATE and a message naming the version and the SQLSTATE (Diesel does not
/// expose the SQLSTATE of an error).
pub(crate) fn wrap(version: &str, body: &str) -> String {
    let [inner, outer] = dollar_tags(["wd_sql", "wd_do"], body);
    format!(
        "DO {outer} DECLARE wd_state text; wd_message text; BEGIN EXECUTE {inner}{body}{inner}; \
         EXCEPTION WHEN OTHERS THEN \
         GET STACKED DIAGNOSTICS wd_state = RETURNED_SQLSTATE, wd_message = MESSAGE_TEXT; \
         RAISE EXCEPTION USING ERRCODE = wd_state, \
         MESSAGE = '{MIGRATION_FAILED}' || {v} || ' sqlstate ' || wd_state || ': ' || wd_message; \
         END {outer}",
        v = quote_literal(version)
    )
}

/// Reads the tenant's ledger (its own `__diesel_schema_migrations`).
pub(crate) fn read_ledger(conn: &mut PgConnection, schema: &TenantId) -> QueryResult<Vec<String>> {
    Ok(diesel::sql_query(format!(
        "SELECT version::pg_catalog.text AS version FROM {}.__diesel_schema_migrations \
         ORDER BY version::pg_catalog.text COLLATE \"C\"",
        schema.quoted()
    ))
    .load::<VersionRow>(conn)?
    .into_iter()
    .map(|r| r.version)
    .collect())
}

/// The `run_in_transaction = false` path: a session-level advisory lock, the ledger checked
/// after it, the migration's SQL sent on its own with the tenant alone on a session
/// `search_path` (restored afterwards), then the ledger and central rows in a transaction.
/// Returns whether the migration ran (false: another migrator ran it meanwhile).
fn run_outside_transaction(
    conn: &mut PgConnection,
    schema: &TenantId,
    m: &Compiled,
) -> Result<bool> {
    let v = quote_literal(&m.version);
    let lit = quote_literal(schema.as_str());
    outside_transaction(
        conn,
        schema,
        &m.version,
        &m.up,
        |ledger| !ledger.contains(&m.version),
        &format!(
            "INSERT INTO {}.__diesel_schema_migrations (version) VALUES ({v}); \
             INSERT INTO public.workspace_migrations (schema_name, version) VALUES ({lit}, {v}) \
             ON CONFLICT DO NOTHING",
            schema.quoted()
        ),
    )
}

/// [`run_outside_transaction`] for a revert: runs `down` when `version` is still the last
/// applied migration, then deletes its ledger and central rows.
pub(crate) fn revert_outside_transaction(
    conn: &mut PgConnection,
    schema: &TenantId,
    version: &str,
    down: &str,
) -> Result<bool> {
    let v = quote_literal(version);
    outside_transaction(
        conn,
        schema,
        version,
        down,
        |ledger| ledger.last().map(String::as_str) == Some(version),
        &format!(
            "DELETE FROM {}.__diesel_schema_migrations WHERE version = {v}; \
             DELETE FROM public.workspace_migrations WHERE schema_name = {} AND version = {v}",
            schema.quoted(),
            quote_literal(schema.as_str())
        ),
    )
}

fn outside_transaction(
    conn: &mut PgConnection,
    schema: &TenantId,
    version: &str,
    sql: &str,
    still_needed: impl FnOnce(&[String]) -> bool,
    record: &str,
) -> Result<bool> {
    let lit = quote_literal(schema.as_str());
    conn.batch_execute(&format!(
        "SELECT pg_catalog.pg_advisory_lock({LOCK_KEY}, pg_catalog.hashtext({lit}))"
    ))?;
    let result = (|| -> Result<bool> {
        if !still_needed(&read_ledger(conn, schema)?) {
            return Ok(false);
        }
        #[derive(QueryableByName)]
        struct Path {
            #[diesel(sql_type = Text)]
            path: String,
        }
        let saved = diesel::sql_query("SELECT pg_catalog.current_setting('search_path') AS path")
            .get_result::<Path>(conn)?
            .path;
        conn.batch_execute(&format!("SET search_path TO {}", schema.quoted()))?;
        let ran = conn.batch_execute(sql);
        let failure = |message: String| Error::TenantMigration {
            tenant: schema.clone(),
            source: Box::new(MigrationFailure::new(
                Some(version.to_owned()),
                None,
                message,
            )),
        };
        if let Err(restore) = restore_search_path(conn, &saved) {
            // The session may still have the tenant alone on its path: mark the connection
            // broken so a pool discards it (`has_broken`) and Diesel refuses transactions on it.
            AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
            let outcome = match &ran {
                Ok(()) => "the migration ran but is not recorded".to_owned(),
                Err(e) => format!("the migration failed: {}", db_message(e)),
            };
            return Err(failure(format!(
                "could not restore the session search_path ({}): the connection must not be \
                 reused; {outcome}",
                db_message(&restore)
            )));
        }
        ran.map_err(|e| failure(db_message(&e)))?;
        if let Err(e) = conn.batch_execute(&format!("BEGIN; {record}; COMMIT")) {
            rollback(conn);
            return Err(e.into());
        }
        Ok(true)
    })();
    let unlocked = conn.batch_execute(&format!(
        "SELECT pg_catalog.pg_advisory_unlock({LOCK_KEY}, pg_catalog.hashtext({lit}))"
    ));
    let ran = result?;
    unlocked?;
    Ok(ran)
}

/// Sets the session `search_path` back to `saved`, or to the server's default (`RESET`) when
/// that fails.
fn restore_search_path(conn: &mut PgConnection, saved: &str) -> QueryResult<()> {
    let restored = diesel::sql_query("SELECT pg_catalog.set_config('search_path', $1, false)")
        .bind::<Text, _>(saved)
        .execute(conn);
    match restored {
        Ok(_) => Ok(()),
        Err(_) => conn.batch_execute("RESET search_path"),
    }
}

/// Fails when `conn` is inside a Diesel transaction: the library's batches carry their own
/// `BEGIN` and `COMMIT`.
pub(crate) fn no_outer_transaction(conn: &mut PgConnection) -> Result<()> {
    match AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth() {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(Error::Query(diesel::result::Error::AlreadyInTransaction)),
        Err(e) => Err(e.into()),
    }
}

/// Runs `f`, which sends its own `BEGIN` and `COMMIT`; rolls back when it fails.
pub(crate) fn in_raw_transaction<T>(
    conn: &mut PgConnection,
    f: impl FnOnce(&mut PgConnection) -> QueryResult<T>,
) -> QueryResult<T> {
    let res = f(conn);
    if res.is_err() {
        rollback(conn);
    }
    res
}

/// Ends a failed raw transaction (a no-op warning when none is open; ignored when the
/// connection is gone).
pub(crate) fn rollback(conn: &mut PgConnection) {
    let _ = conn.batch_execute("ROLLBACK");
}

fn is_marker(e: &diesel::result::Error, marker: &str) -> bool {
    matches!(e, diesel::result::Error::DatabaseError(_, info) if info.message() == marker)
}

/// The server's message of a database error, or the error's text.
pub(crate) fn db_message(e: &diesel::result::Error) -> String {
    match e {
        diesel::result::Error::DatabaseError(_, info) => info.message().to_owned(),
        e => e.to_string(),
    }
}

/// Turns the error of a migration batch into the crate's error.
pub(crate) fn classify_migrate_error(schema: &TenantId, e: diesel::result::Error) -> Error {
    if is_marker(&e, SCHEMA_MISSING) {
        return Error::SchemaMissing(schema.clone());
    }
    Error::TenantMigration {
        tenant: schema.clone(),
        source: Box::new(failure_of(&e)),
    }
}

/// Adds the versions `committed` before `e` to its [`MigrationFailure`] (an error without one
/// becomes a [`Error::TenantMigration`] naming them), so a report tells what was kept.
fn with_committed(schema: &TenantId, e: Error, mut committed: Vec<String>) -> Error {
    if committed.is_empty() {
        return e;
    }
    match e {
        Error::TenantMigration { tenant, mut source } => {
            if let Some(f) = source.downcast_mut::<MigrationFailure>() {
                committed.append(&mut f.committed);
                f.committed = committed;
                return Error::TenantMigration { tenant, source };
            }
            let failure =
                MigrationFailure::new(None, None, source.to_string()).with_committed(committed);
            Error::TenantMigration {
                tenant,
                source: Box::new(failure),
            }
        }
        e => {
            let message = match &e {
                Error::Query(q) => format!("{e}: {}", db_message(q)),
                e => e.to_string(),
            };
            Error::TenantMigration {
                tenant: schema.clone(),
                source: Box::new(
                    MigrationFailure::new(None, None, message).with_committed(committed),
                ),
            }
        }
    }
}

/// Whether `e` means the connection is gone (a retry on it cannot succeed).
pub(crate) fn connection_lost(e: &diesel::result::Error) -> bool {
    matches!(
        e,
        diesel::result::Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)
            | diesel::result::Error::BrokenTransactionManager
    )
}

/// Turns the error of a provisioning batch into the crate's error.
fn classify_create_error(schema: &TenantId, e: diesel::result::Error) -> Error {
    if let diesel::result::Error::DatabaseError(kind, info) = &e {
        let msg = info.message();
        if !msg.starts_with(MIGRATION_FAILED)
            && (matches!(kind, DatabaseErrorKind::UniqueViolation)
                || msg.contains("already exists"))
        {
            return Error::TenantExists(schema.clone());
        }
        if msg.starts_with(MIGRATION_FAILED) {
            return Error::TenantMigration {
                tenant: schema.clone(),
                source: Box::new(failure_of(&e)),
            };
        }
    }
    e.into()
}

/// Parses the message raised by [`wrap`]'s handler.
pub(crate) fn failure_of(e: &diesel::result::Error) -> MigrationFailure {
    let msg = db_message(e);
    if let Some(rest) = msg.strip_prefix(MIGRATION_FAILED) {
        if let Some((version, rest)) = rest.split_once(" sqlstate ") {
            if let Some((state, message)) = rest.split_once(": ") {
                return MigrationFailure::new(
                    Some(version.to_owned()),
                    Some(state.to_owned()),
                    message,
                );
            }
        }
    }
    MigrationFailure::new(None, None, msg)
}

/// Quotes an SQL string literal (standard_conforming_strings, the default since PostgreSQL 9.1).
pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A PostgreSQL array literal of text values (`{"a","b"}`).
fn array_literal(values: &[String]) -> String {
    let items: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", items.join(","))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
