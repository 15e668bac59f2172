//! The commands, one module per group, and what they share: the connection and the migrator.

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod generate;
mod migrate;
mod schema;
mod spares;
mod tenant;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::{Migrator, MigratorBuilder, TenantId};

use crate::cli::{Cli, Command};

/// The default shared migrations directory, used only when it exists.
const DEFAULT_SHARED_DIR: &str = "migrations_shared";

/// Runs the command of `cli`.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        database_url: cli.database_url,
        migrations_dir: cli.migrations_dir,
        shared_migrations_dir: cli.shared_migrations_dir,
    };
    match cli.command {
        Command::CreateTenantSchema { identifier } => tenant::create(&ctx, &identifier),
        Command::MakemigrationsTenant { name, shared } => {
            generate::makemigrations(&ctx, &name, shared)
        }
        Command::MigrateTenant(args) => migrate::migrate_tenant(&ctx, &args),
        Command::MigrateAll(fleet) => migrate::migrate_all(&ctx, &fleet),
        Command::RevertTenant(args) => migrate::revert_tenant(&ctx, &args),
        Command::ListTenants => tenant::list(&ctx),
        Command::Status => migrate::status(&ctx),
        Command::DropTenant { identifier, yes } => tenant::drop(&ctx, &identifier, yes),
        Command::RenameTenant { from, to } => tenant::rename(&ctx, &from, &to),
        Command::SetTenantStatus { identifier, status } => {
            tenant::set_status(&ctx, &identifier, status)
        }
        Command::FillSpares { target } => spares::fill(&ctx, &target),
        Command::ListSpares => spares::list(&ctx),
        Command::DrainSpares { yes } => spares::drain(&ctx, yes),
        Command::PrintSchema(args) => schema::print_schema(&ctx, &args),
    }
}

/// The global options, shared by every command.
pub(crate) struct Ctx {
    database_url: Option<String>,
    migrations_dir: PathBuf,
    shared_migrations_dir: Option<PathBuf>,
}

impl Ctx {
    /// The database URL, from `--database-url` or `DATABASE_URL`.
    pub(crate) fn database_url(&self) -> Result<&str> {
        match self.database_url.as_deref() {
            Some(url) if !url.is_empty() => Ok(url),
            _ => bail!("no database given: pass --database-url or set DATABASE_URL"),
        }
    }

    /// A new connection to the database.
    /// A connection whose session `search_path` is `pg_catalog, pg_temp`: the command's own SQL
    /// (which qualifies every table) resolves functions, operators and types in `pg_catalog`
    /// only, whatever another role planted elsewhere (CVE-2018-1058). The library sets its own
    /// transaction-local paths.
    pub(crate) fn connect(&self) -> Result<PgConnection> {
        let url = self.database_url()?;
        let mut conn = PgConnection::establish(url).context("could not connect to the database")?;
        conn.batch_execute("SET search_path TO pg_catalog, pg_temp")
            .context("could not set the search_path")?;
        Ok(conn)
    }

    /// The tenant migrations directory; it must exist.
    pub(crate) fn tenant_dir(&self) -> Result<&Path> {
        let dir = self.migrations_dir.as_path();
        if !dir.is_dir() {
            bail!(
                "the tenant migrations directory `{}` does not exist (see --migrations-dir)",
                dir.display()
            );
        }
        Ok(dir)
    }

    /// The shared migrations directory: the one given (which must exist), or the default one
    /// when it exists.
    pub(crate) fn shared_dir(&self) -> Result<Option<&Path>> {
        match &self.shared_migrations_dir {
            Some(dir) if dir.is_dir() => Ok(Some(dir)),
            Some(dir) => bail!(
                "the shared migrations directory `{}` does not exist (see --shared-migrations-dir)",
                dir.display()
            ),
            None => {
                let dir = Path::new(DEFAULT_SHARED_DIR);
                Ok(dir.is_dir().then_some(dir))
            }
        }
    }

    /// The migrator for the two directories, read (and checked) at run time.
    pub(crate) fn migrator(&self) -> Result<Migrator> {
        let tenant_dir = self.tenant_dir()?;
        let tenant = FileBasedMigrations::from_path(tenant_dir).with_context(|| {
            format!(
                "could not read the tenant migrations in `{}`",
                tenant_dir.display()
            )
        })?;
        self.with_shared(Migrator::builder(tenant))
    }

    /// A migrator for the shared migrations alone (no tenant set): for print-schema's scratch
    /// copy, whose tenant migrations run through Diesel's own harness.
    pub(crate) fn shared_migrator(&self) -> Result<Migrator> {
        self.with_shared(Migrator::builder(EmbeddedMigrations::new(&[])))
    }

    /// `builder` with the shared migrations directory, when there is one, built.
    fn with_shared(&self, mut builder: MigratorBuilder) -> Result<Migrator> {
        if let Some(dir) = self.shared_dir()? {
            let shared = FileBasedMigrations::from_path(dir).with_context(|| {
                format!(
                    "could not read the shared migrations in `{}`",
                    dir.display()
                )
            })?;
            builder = builder.shared(shared);
        }
        Ok(builder.build()?)
    }

    /// A migrator for the registry alone, with no migrations: for the commands that never run a
    /// migration (drop, rename, the warm pool's list and drain, print-schema's tenant check), so
    /// a half-written migration does not stop them.
    pub(crate) fn registry_migrator(&self) -> Result<Migrator> {
        Ok(Migrator::builder(EmbeddedMigrations::new(&[])).build()?)
    }
}

/// Validates a tenant identifier given on the command line.
pub(crate) fn tenant_id(identifier: &str) -> Result<TenantId> {
    Ok(TenantId::new(identifier)?)
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

/// Asks `question` on the terminal; the answer must be `expected`. Without a terminal, refuses
/// to `action`.
pub(crate) fn confirm(question: &str, expected: &str, action: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("refusing to {action} without confirmation: pass --yes (standard input is not a terminal)");
    }
    eprint!("{question}");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .context("could not read the answer")?;
    Ok(answer.trim() == expected)
}

/// Pluralises `word` for `n`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
