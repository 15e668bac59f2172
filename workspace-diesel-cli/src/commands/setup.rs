//! `setup` (create the database when it is missing, then apply the shared migrations, as
//! `diesel setup` does) and `pending` (the tenants that are behind, from the central record).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use diesel::connection::SimpleConnection as _;
use diesel::prelude::*;
use diesel_workspace::statements::quote_ident;

use super::{plural, registry_exists, Ctx};
use crate::cli::SelectArgs;
use crate::output;

/// What `setup` sets up besides the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// `setup`: also the migration directories and a starter config file, where missing.
    Project,
    /// `database setup`, `database reset`: the database alone.
    Database,
}

/// `setup` (and `database setup`, `database reset`, named by `command`): creates the database
/// named in the URL when it does not exist (connecting to the server's `postgres` database for
/// that); for `setup`, writes a starter config file when none was found (at `--config-file`'s
/// path when given, else `workspace-diesel.toml` in the current directory) and creates the
/// migration directories that are missing; then applies the pending shared migrations (the
/// registry's included).
pub(crate) fn setup(
    ctx: &Ctx,
    scope: Scope,
    command: &'static str,
    config_target: Option<&Path>,
    dropped_database: Option<bool>,
) -> Result<()> {
    let url = ctx.database_url()?;
    let (database, maintenance_url) = split_database(&url)?;
    let mut created_database = false;
    // Through `--pooler`: a transaction pooler not declared is refused.
    let mut conn = match diesel_workspace::connect(&url, ctx.pooler) {
        Ok(conn) => conn,
        Err(diesel_workspace::Error::Connection(e)) if e.to_string().contains("does not exist") => {
            let mut admin = PgConnection::establish(&maintenance_url).with_context(|| {
                format!(
                    "database `{database}` does not exist, and the server's `postgres` database to create it from cannot be reached"
                )
            })?;
            admin
                .batch_execute(&format!("CREATE DATABASE {}", quote_ident(&database)))
                .with_context(|| format!("could not create database `{database}`"))?;
            created_database = true;
            ctx.connect()?
        }
        Err(diesel_workspace::Error::Connection(e)) => {
            return Err(anyhow::Error::new(e).context("could not connect to the database"))
        }
        Err(e) => return Err(anyhow::Error::new(e)),
    };
    let mut created_directories = Vec::new();
    let mut created_config = None;
    if scope == Scope::Project {
        let tenant_dir = ctx.tenant_dir_path();
        let shared_dir = ctx
            .shared_dir_setting()
            .unwrap_or_else(|| ctx.default_dir(super::DEFAULT_SHARED_DIR));
        for dir in [&tenant_dir, &shared_dir] {
            if !dir.is_dir() {
                create_dir(dir)?;
                created_directories.push(dir.display().to_string());
            }
        }
        if ctx.config().path().is_none() {
            let target = config_target
                .map(Path::to_path_buf)
                .unwrap_or_else(|| Path::new(crate::config::FILE_NAME).to_path_buf());
            write_starter_config(ctx, &target, &tenant_dir, &shared_dir)?;
            created_config = Some(target.display().to_string());
        }
    }
    let migrator = ctx.shared_migrator()?;
    let shared_applied = migrator.run_shared(&mut conn)?;
    if ctx.json() {
        return output::print(&output::Setup {
            command,
            ok: true,
            database,
            created_database,
            dropped_database,
            created_directories,
            created_config,
            shared_applied,
        });
    }
    if created_database {
        out!("created database `{database}`");
    } else {
        out!("database `{database}` exists");
    }
    for dir in &created_directories {
        out!("created directory {dir}");
    }
    if let Some(file) = &created_config {
        out!("created config file {file}");
    }
    if shared_applied.is_empty() {
        out!("shared migrations are up to date");
    } else {
        out!("shared: applied {}", shared_applied.join(", "));
    }
    Ok(())
}

/// Writes the starter config file at `target` (which does not exist): the database URL's
/// variable, the two migration directories (relative to the file), and `print_schema.file` as
/// `src/schema.rs` when a `src/` directory sits beside the file (a Cargo package), else
/// commented out.
fn write_starter_config(
    ctx: &Ctx,
    target: &Path,
    tenant_dir: &Path,
    shared_dir: &Path,
) -> Result<()> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let base = cwd.join(target);
    let base = base.parent().unwrap_or(&cwd);
    let relative = |dir: &Path| -> String {
        let absolute = cwd.join(dir);
        let shown = absolute.strip_prefix(base).unwrap_or(&absolute);
        toml_string(&shown.display().to_string())
    };
    let schema_line = if base.join("src").is_dir() {
        "file = \"src/schema.rs\""
    } else {
        "# file = \"src/schema.rs\""
    };
    let text = format!(
        "# The workspace-diesel CLI's configuration (its diesel.toml), written by `setup`.\n\
         # Relative paths are relative to this file; command-line flags override it.\n\
         \n\
         [database]\n\
         # The environment variable holding the database URL.\n\
         url_env = {}\n\
         \n\
         [migrations]\n\
         # Run once per tenant schema.\n\
         tenant_dir = {}\n\
         # Run once, in the shared schema.\n\
         shared_dir = {}\n\
         \n\
         [print_schema]\n\
         # Written by print-schema, and again after each command that applies or reverts migrations.\n\
         {schema_line}\n",
        toml_string(ctx.config().url_var()),
        relative(tenant_dir),
        relative(shared_dir),
    );
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .with_context(|| format!("could not create the config file `{}`", target.display()))?;
    use std::io::Write as _;
    file.write_all(text.as_bytes())
        .with_context(|| format!("could not write the config file `{}`", target.display()))
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("could not create `{}`", dir.display()))
}

/// `pending`: the tenants whose central record misses a tenant migration, with the versions.
/// One query over the central record; the tenants' own ledgers are not read (`status` does).
/// With `exit_code`, a run that finds tenants behind ends with status 3 (after printing them).
pub(crate) fn pending(ctx: &Ctx, select: &SelectArgs, exit_code: bool) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    if read.tenant_dir.is_none() {
        bail!(
            "the tenant migrations directory `{}` does not exist (see --migration-dir): what is pending cannot be known without it",
            ctx.tenant_dir_path().display()
        );
    }
    super::status::warn_unknown(ctx, &read);
    let migrator = &read.migrator;
    let mut conn = ctx.connect()?;
    let statuses = if registry_exists(&mut conn, migrator)? {
        let selection = super::select::selection(&mut conn, migrator, select)?;
        migrator.status_selected(&mut conn, &selection)?
    } else {
        Vec::new()
    };
    let total = statuses.len();
    let behind: Vec<_> = statuses
        .into_iter()
        .filter(|s| !s.pending.is_empty())
        .collect();
    let status = if exit_code && !behind.is_empty() {
        Err(anyhow::Error::new(crate::exit::Status(crate::exit::CHECK)))
    } else {
        Ok(())
    };
    if ctx.json() {
        let tenants = behind
            .iter()
            .map(|s| output::Tenant::from_status(s, true))
            .collect();
        output::print(&output::TenantList { tenants })?;
        return status;
    }
    if behind.is_empty() {
        match total {
            0 => out!("no tenants"),
            n => out!("no tenant is behind ({} up to date)", plural(n, "tenant")),
        }
        return status;
    }
    for s in &behind {
        out!(
            "{}: {} pending ({})",
            s.tenant,
            s.pending.len(),
            s.pending.join(", ")
        );
    }
    out!("{} of {total} behind", plural(behind.len(), "tenant"));
    status
}

/// The database named by a `postgres://` URL (percent-decoded), and the same URL naming the
/// server's `postgres` database instead.
pub(crate) fn split_database(url: &str) -> Result<(String, String)> {
    let Some((scheme, rest)) = url.split_once("://") else {
        bail!("the database URL must look like postgres://user@host:port/database");
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let Some((authority, path)) = rest.split_once('/') else {
        bail!("the database URL names no database: add /<database> after the host");
    };
    if path.is_empty() || path.contains('/') {
        bail!("the database URL names no database: add /<database> after the host");
    }
    let database = percent_decode(path)?;
    let mut maintenance = format!("{scheme}://{authority}/postgres");
    if let Some(q) = query {
        maintenance.push('?');
        maintenance.push_str(q);
    }
    Ok((database, maintenance))
}

fn percent_decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            let Some(byte) = hex else {
                bail!("the database name in the URL has an invalid %-escape");
            };
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("the database name in the URL is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            split_database("postgres://u:p@h:5432/app").unwrap(),
            (
                "app".to_owned(),
                "postgres://u:p@h:5432/postgres".to_owned()
            )
        );
        assert_eq!(
            split_database("postgresql://h/my%20db?sslmode=disable").unwrap(),
            (
                "my db".to_owned(),
                "postgresql://h/postgres?sslmode=disable".to_owned()
            )
        );
        for bad in [
            "postgres://h",
            "postgres://h/",
            "h/app",
            "postgres://h/a%zz",
        ] {
            assert!(split_database(bad).is_err(), "{bad}");
        }
    }
}
