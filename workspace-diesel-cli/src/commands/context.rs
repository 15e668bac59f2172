//! What every command shares: the global options and the config file ([`Ctx`]), the
//! connection, the migrator factories, and the checks on a tenant given on the command line.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use diesel::connection::SimpleConnection as _;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::registry::{Registry, SPARE_PREFIX};
use diesel_workspace::statements::split_statements;
use diesel_workspace::{Error, Migrator, TenantId};

use crate::cli::Format;
use crate::config::Config;

/// The default tenant migrations directory.
const DEFAULT_TENANT_DIR: &str = "migrations_tenant";

/// The default shared migrations directory, used only when it exists.
pub(crate) const DEFAULT_SHARED_DIR: &str = "migrations_shared";

/// The global options and the config file, shared by every command.
pub(crate) struct Ctx {
    database_url: Option<String>,
    migrations_dir: Option<PathBuf>,
    shared_migrations_dir: Option<PathBuf>,
    format: Format,
    config: Config,
    pub(crate) pooler: diesel_workspace::pooler::Pooler,
    registry: Registry,
}

impl Ctx {
    /// The context of a command: the global options, the config file, and the registry they
    /// name (`--registry`, else the config file's `[registry]`, else the built-in one).
    pub(crate) fn new(
        database_url: Option<String>,
        migrations_dir: Option<PathBuf>,
        shared_migrations_dir: Option<PathBuf>,
        format: Format,
        config: Config,
        pooler: diesel_workspace::pooler::Pooler,
        registry: Option<String>,
    ) -> Result<Self> {
        let registry = match registry.as_deref() {
            Some(text) => registry_named(text)?,
            None => config.registry()?,
        };
        Ok(Self {
            database_url,
            migrations_dir,
            shared_migrations_dir,
            format,
            config,
            pooler,
            registry,
        })
    }

    /// The registry the commands read and write.
    pub(crate) fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Whether the output is JSON.
    pub(crate) fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// The config file.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// The database URL: `--database-url`, else the environment variable the config file names
    /// (`DATABASE_URL` by default).
    pub(crate) fn database_url(&self) -> Result<String> {
        if let Some(url) = self.database_url.as_deref().filter(|u| !u.is_empty()) {
            return Ok(url.to_owned());
        }
        let var = self.config.url_var();
        match std::env::var(var) {
            Ok(url) if !url.is_empty() => Ok(url),
            _ => match self.config.path() {
                Some(path) if var != crate::config::DEFAULT_URL_VAR => bail!(
                    "no database given: pass --database-url or set {var} (named by `{}`)",
                    path.display()
                ),
                _ => bail!("no database given: pass --database-url or set {var}"),
            },
        }
    }

    /// A new connection to the database, opened for `--pooler` (a transaction pooler not
    /// declared is refused). On a direct connection its session `search_path` is
    /// `pg_catalog, pg_temp`: the command's own SQL (which qualifies every table) resolves
    /// functions, operators and types in `pg_catalog` only, whatever another role planted
    /// elsewhere (CVE-2018-1058). Behind a transaction pooler a session setting would reach other
    /// clients, so none is made; the library sets its own transaction-local paths either way.
    pub(crate) fn connect(&self) -> Result<PgConnection> {
        let url = self.database_url()?;
        let mut conn = diesel_workspace::connect(&url, self.pooler).map_err(|e| match e {
            diesel_workspace::Error::Connection(e) => {
                anyhow::Error::new(e).context("could not connect to the database")
            }
            e => anyhow::Error::new(e),
        })?;
        if !self.pooler.is_transaction() {
            conn.batch_execute("SET search_path TO pg_catalog, pg_temp")
                .context("could not set the search_path")?;
        }
        Ok(conn)
    }

    /// The tenant migrations directory: `--migrations-dir`, else the config file's, else
    /// `migrations_tenant` (next to the config file when there is one). It may not exist.
    pub(crate) fn tenant_dir_path(&self) -> PathBuf {
        match (&self.migrations_dir, self.config.tenant_dir()) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => dir,
            (None, None) => self.default_dir(DEFAULT_TENANT_DIR),
        }
    }

    /// The tenant migrations directory; it must exist.
    pub(crate) fn tenant_dir(&self) -> Result<PathBuf> {
        let dir = self.tenant_dir_path();
        if !dir.is_dir() {
            bail!(
                "the tenant migrations directory `{}` does not exist (see --migration-dir)",
                dir.display()
            );
        }
        Ok(dir)
    }

    /// The shared migrations directory: the one given or configured (which must exist), or the
    /// default one when it exists.
    pub(crate) fn shared_dir(&self) -> Result<Option<PathBuf>> {
        match self.shared_dir_setting() {
            Some(dir) if dir.is_dir() => Ok(Some(dir)),
            Some(dir) => bail!(
                "the shared migrations directory `{}` does not exist (see --shared-migrations-dir)",
                dir.display()
            ),
            None => {
                let dir = self.default_dir(DEFAULT_SHARED_DIR);
                Ok(dir.is_dir().then_some(dir))
            }
        }
    }

    /// The shared migrations directory named by a flag or the config file, if any.
    pub(crate) fn shared_dir_setting(&self) -> Option<PathBuf> {
        self.shared_migrations_dir
            .clone()
            .or_else(|| self.config.shared_dir())
    }

    /// `name` next to the config file, or in the current directory without one.
    pub(crate) fn default_dir(&self, name: &str) -> PathBuf {
        match self.config.path().and_then(Path::parent) {
            Some(base) => base.join(name),
            None => PathBuf::from(name),
        }
    }

    /// The migrator for the two directories, read (and checked) at run time.
    pub(crate) fn migrator(&self) -> Result<Migrator> {
        let tenant_dir = self.tenant_dir()?;
        let tenant = read_dir_migrations(&tenant_dir, "tenant")?;
        self.build_migrator(tenant)
    }

    /// The migrator for read-only commands: the tenant migrations directory when it exists (with
    /// the migrations whose up.sql is still empty left out), else none. Also returns the
    /// placeholders left out and whether the directory was read.
    pub(crate) fn read_only_migrator(&self) -> Result<ReadOnly> {
        let dir = self.tenant_dir_path();
        if !dir.is_dir() {
            return Ok(ReadOnly {
                migrator: self.build_migrator(EmbeddedMigrations::new(&[]))?,
                tenant_dir: None,
                placeholders: Vec::new(),
            });
        }
        let placeholders = placeholders(&dir)?;
        let source = WithoutPlaceholders {
            inner: read_dir_migrations(&dir, "tenant")?,
            skip: placeholders.iter().cloned().collect(),
        };
        Ok(ReadOnly {
            migrator: self.build_migrator(source)?,
            tenant_dir: Some(dir),
            placeholders,
        })
    }

    /// A migrator for the shared migrations alone (no tenant set): for print-schema's scratch
    /// copy, whose tenant migrations run through Diesel's own harness, and for `setup`.
    pub(crate) fn shared_migrator(&self) -> Result<Migrator> {
        self.build_migrator(EmbeddedMigrations::new(&[]))
    }

    fn build_migrator<S>(&self, tenant: S) -> Result<Migrator>
    where
        S: MigrationSource<Pg> + Send + Sync + 'static,
    {
        let mut builder = Migrator::builder(tenant);
        if let Some(dir) = self.shared_dir()? {
            builder = builder.shared(read_dir_migrations(&dir, "shared")?);
        }
        if let Some(roles) = self.config.tenant_roles()? {
            builder = builder.tenant_roles(roles);
        }
        // One clone per run: a template's blueprint would be learned and thrown away.
        Ok(builder
            .pooler(self.pooler)
            .registry(self.registry.clone())
            .refuse_hijack_hazards(self.config.refuse_hazards())
            .blueprints(false)
            .build()?)
    }

    /// A migrator for the registry alone, with no migrations: for the commands that never run a
    /// migration (drop, rename, the warm pool's list and drain, print-schema's tenant check), so
    /// a half-written migration does not stop them.
    pub(crate) fn registry_migrator(&self) -> Result<Migrator> {
        let mut builder = Migrator::builder(EmbeddedMigrations::new(&[]));
        if let Some(roles) = self.config.tenant_roles()? {
            builder = builder.tenant_roles(roles);
        }
        Ok(builder
            .pooler(self.pooler)
            .registry(self.registry.clone())
            .refuse_hijack_hazards(self.config.refuse_hazards())
            .build()?)
    }
}

/// The registry `SCHEMA.TABLE[.IDENTIFIER[.STATUS]]` names: its table, its identifier column
/// (default `schema_name`) and its life-cycle state column (default none; `public.workspaces`
/// alone is the built-in registry, with its `status`).
pub(crate) fn registry_named(text: &str) -> Result<Registry> {
    let parts: Vec<&str> = text.split('.').collect();
    if !(2..=4).contains(&parts.len()) || parts.iter().any(|p| p.trim().is_empty()) {
        bail!(
            "invalid registry `{}`: expected SCHEMA.TABLE, SCHEMA.TABLE.IDENTIFIER or \
             SCHEMA.TABLE.IDENTIFIER.STATUS",
            crate::commands::shown(text)
        );
    }
    if parts[..] == ["public", "workspaces"] {
        return Ok(Registry::default());
    }
    let mut registry = Registry::new(parts[0], parts[1]);
    if let Some(identifier) = parts.get(2) {
        registry = registry.identifier_column(*identifier);
    }
    if let Some(status) = parts.get(3) {
        registry = registry.status_column(*status);
    }
    Ok(registry)
}

/// A migrator for a read-only command, and what it could not read.
pub(crate) struct ReadOnly {
    pub(crate) migrator: Migrator,
    /// The tenant migrations directory, when it exists (else nothing is known to be pending).
    pub(crate) tenant_dir: Option<PathBuf>,
    /// The tenant migrations whose up.sql holds no statement yet (directory names), left out.
    pub(crate) placeholders: Vec<String>,
}

fn read_dir_migrations(dir: &Path, what: &str) -> Result<FileBasedMigrations> {
    FileBasedMigrations::from_path(dir).with_context(|| {
        format!(
            "could not read the {what} migrations in `{}`",
            dir.display()
        )
    })
}

/// The migration directories in `dir` whose `up.sql` holds no SQL statement yet (only comments
/// and white space, as `makemigrations_tenant` writes it), sorted.
pub(crate) fn placeholders(dir: &Path) -> Result<Vec<String>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("could not read `{}`", dir.display()))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("could not read `{}`", dir.display()))?;
        let up = entry.path().join("up.sql");
        if !up.is_file() {
            continue;
        }
        let sql = std::fs::read_to_string(&up)
            .with_context(|| format!("could not read `{}`", up.display()))?;
        if !has_statement(&sql) {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `sql` holds a statement (not only comments, white space and `;`), as the library
/// splits it; an unterminated string or comment counts as one (the migration then fails where
/// it is read or run, with the reason).
fn has_statement(sql: &str) -> bool {
    split_statements(sql).map_or(true, |statements| !statements.is_empty())
}

/// A directory's migrations without the placeholders (by directory name).
struct WithoutPlaceholders {
    inner: FileBasedMigrations,
    skip: BTreeSet<String>,
}

impl MigrationSource<Pg> for WithoutPlaceholders {
    fn migrations(&self) -> diesel::migration::Result<Vec<Box<dyn Migration<Pg>>>> {
        let all = MigrationSource::<Pg>::migrations(&self.inner)?;
        Ok(all
            .into_iter()
            .filter(|m| !self.skip.contains(&m.name().to_string()))
            .collect())
    }
}

/// Validates a tenant identifier given on the command line. The warm pool's `_spare_` names are
/// refused by every command, with the reason the library gives when creating one.
pub(crate) fn tenant_id(identifier: &str) -> Result<TenantId> {
    let tenant = TenantId::new(identifier)?;
    if tenant.as_str().starts_with(SPARE_PREFIX) {
        return Err(Error::InvalidTenantName {
            name: identifier.to_owned(),
            reason: "names starting with `_spare_` are reserved for spare schemas",
        }
        .into());
    }
    Ok(tenant)
}

/// Fails with "tenant `x` does not exist" unless `tenant` is registered.
pub(crate) fn ensure_registered(
    conn: &mut PgConnection,
    migrator: &Migrator,
    tenant: &TenantId,
) -> Result<()> {
    let registered = migrator
        .is_registered(conn, tenant)
        .with_context(|| format!("could not look up tenant `{tenant}` in the registry"))?;
    if !registered {
        bail!("tenant `{tenant}` does not exist");
    }
    Ok(())
}

/// Whether the registry table exists (the shared migrations have run).
pub(crate) fn registry_exists(conn: &mut PgConnection, migrator: &Migrator) -> Result<bool> {
    migrator
        .is_registry_installed(conn)
        .context("could not look for the registry table")
}
