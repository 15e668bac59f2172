//! The commands, one module per group, and what they share: the connection, the migrator and the
//! config file.

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod generate;
mod lint;
mod migrate;
mod placement;
mod redo;
mod schema;
mod setup;
mod spares;
mod status;
mod tenant;

use std::collections::BTreeSet;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use diesel::connection::SimpleConnection as _;
use diesel::migration::{Migration, MigrationSource};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_migrations::{EmbeddedMigrations, FileBasedMigrations};
use diesel_workspace::{Error, Migrator, TenantId};

use crate::cli::{Cli, Command, Format};
use crate::config::Config;

/// The default tenant migrations directory.
const DEFAULT_TENANT_DIR: &str = "migrations_tenant";

/// The default shared migrations directory, used only when it exists.
const DEFAULT_SHARED_DIR: &str = "migrations_shared";

/// The prefix of the warm pool's spare schemas, which no tenant may take.
const SPARE_PREFIX: &str = "_spare_";

/// Runs the command of `cli`.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let config = Config::load(cli.config.as_deref(), &cwd)?;
    if cli.format == Format::Json && !supports_json(&cli.command) {
        bail!(
            "`--format json` is not supported by `{}`: it prints human output only",
            command_name(&cli.command)
        );
    }
    let ctx = Ctx {
        database_url: cli.database_url,
        migrations_dir: cli.migrations_dir,
        shared_migrations_dir: cli.shared_migrations_dir,
        format: cli.format,
        refuse_hazards: cli.refuse_hazards || config.refuse_hazards(),
        config,
        pooler: cli.pooler,
    };
    match cli.command {
        Command::Setup => setup::setup(&ctx),
        Command::CreateTenantSchema { identifier } => tenant::create(&ctx, &identifier),
        Command::MakemigrationsTenant { name, shared } => {
            generate::makemigrations(&ctx, &name, shared)
        }
        Command::MigrateTenant(args) => migrate::migrate_tenant(&ctx, &args),
        Command::MigrateAll(fleet) => migrate::migrate_all(&ctx, &fleet),
        Command::RevertTenant(args) => migrate::revert_tenant(&ctx, &args),
        Command::RedoTenant { identifier } => redo::redo(&ctx, &identifier),
        Command::ListTenants => tenant::list(&ctx),
        Command::Pending => setup::pending(&ctx),
        Command::Status => status::status(&ctx),
        Command::DropTenant { identifier, yes } => tenant::drop(&ctx, &identifier, yes),
        Command::RenameTenant { from, to } => tenant::rename(&ctx, &from, &to),
        Command::SetTenantStatus { identifier, status } => {
            tenant::set_status(&ctx, &identifier, status)
        }
        Command::FillSpares { target } => spares::fill(&ctx, &target),
        Command::ListSpares => spares::list(&ctx),
        Command::DrainSpares { yes } => spares::drain(&ctx, yes),
        Command::LintMigrations => lint::lint(&ctx),
        Command::MoveTenant { identifier, to } => placement::move_tenant(&ctx, &identifier, &to),
        Command::Rebalance { no_wait, status } => placement::rebalance(&ctx, no_wait, status),
        Command::PrintSchema(args) => schema::print_schema(&ctx, &args),
    }
}

/// Whether `command` prints a JSON document with `--format json`.
fn supports_json(command: &Command) -> bool {
    matches!(
        command,
        Command::Setup
            | Command::CreateTenantSchema { .. }
            | Command::MigrateTenant(_)
            | Command::MigrateAll(_)
            | Command::RevertTenant(_)
            | Command::RedoTenant { .. }
            | Command::ListTenants
            | Command::Pending
            | Command::Status
    )
}

/// The snake_case name of `command`, for messages.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Setup => "setup",
        Command::CreateTenantSchema { .. } => "create_tenant_schema",
        Command::MakemigrationsTenant { .. } => "makemigrations_tenant",
        Command::MigrateTenant(_) => "migrate_tenant",
        Command::MigrateAll(_) => "migrate_all",
        Command::RevertTenant(_) => "revert_tenant",
        Command::RedoTenant { .. } => "redo_tenant",
        Command::ListTenants => "list_tenants",
        Command::Pending => "pending",
        Command::Status => "status",
        Command::DropTenant { .. } => "drop_tenant",
        Command::RenameTenant { .. } => "rename_tenant",
        Command::SetTenantStatus { .. } => "set_tenant_status",
        Command::LintMigrations => "lint_migrations",
        Command::MoveTenant { .. } => "move_tenant",
        Command::Rebalance { .. } => "rebalance",
        Command::FillSpares { .. } => "fill_spares",
        Command::ListSpares => "list_spares",
        Command::DrainSpares { .. } => "drain_spares",
        Command::PrintSchema(_) => "print-schema",
    }
}

/// The global options and the config file, shared by every command.
pub(crate) struct Ctx {
    database_url: Option<String>,
    migrations_dir: Option<PathBuf>,
    shared_migrations_dir: Option<PathBuf>,
    format: Format,
    config: Config,
    pooler: diesel_workspace::Pooler,
    /// `--refuse-hazards`, or `refuse_hazards = true` in the config file.
    refuse_hazards: bool,
}

impl Ctx {
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
                "the tenant migrations directory `{}` does not exist (see --migrations-dir)",
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
        Ok(builder
            .pooler(self.pooler)
            .refuse_hijack_hazards(self.refuse_hazards)
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
            .refuse_hijack_hazards(self.refuse_hazards)
            .build()?)
    }
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

/// Whether `sql` holds anything but comments, white space and `;`.
fn has_statement(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(after) = rest.strip_prefix("--") {
            rest = after.split_once('\n').map_or("", |(_, next)| next);
        } else if let Some(after) = rest.strip_prefix("/*") {
            // PostgreSQL's block comments nest.
            let mut depth = 1;
            let mut chars = after.char_indices();
            let mut end = after.len();
            while let Some((i, c)) = chars.next() {
                let next = after[i + c.len_utf8()..].chars().next();
                match (c, next) {
                    ('/', Some('*')) => {
                        depth += 1;
                        chars.next();
                    }
                    ('*', Some('/')) => {
                        depth -= 1;
                        chars.next();
                        if depth == 0 {
                            end = i + 2;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            rest = &after[end.min(after.len())..];
        } else {
            return !rest.is_empty();
        }
    }
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

/// `text` with its control characters escaped (a newline as `\n`), for error messages that
/// quote user input and must stay on one line.
pub(crate) fn shown(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_debug().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Pluralises `word` for `n`.
pub(crate) fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}
