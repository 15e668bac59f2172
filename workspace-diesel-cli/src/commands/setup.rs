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

/// `setup`: creates the database named in the URL when it does not exist (connecting to the
/// server's `postgres` database for that), creates the migration directories that are missing,
/// then applies the pending shared migrations (the registry's included).
pub(crate) fn setup(ctx: &Ctx) -> Result<()> {
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
    let migrator = ctx.shared_migrator()?;
    let shared_applied = migrator.run_shared(&mut conn)?;
    if ctx.json() {
        return output::print(&output::Setup {
            command: "setup",
            ok: true,
            database,
            created_database,
            created_directories,
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
    if shared_applied.is_empty() {
        out!("shared migrations are up to date");
    } else {
        out!("shared: applied {}", shared_applied.join(", "));
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("could not create `{}`", dir.display()))
}

/// `pending`: the tenants whose central record misses a tenant migration, with the versions.
/// One query over the central record; the tenants' own ledgers are not read (`status` does).
pub(crate) fn pending(ctx: &Ctx, select: &SelectArgs) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    if read.tenant_dir.is_none() {
        bail!(
            "the tenant migrations directory `{}` does not exist (see --migrations-dir): what is pending cannot be known without it",
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
    if ctx.json() {
        let tenants = behind
            .iter()
            .map(|s| output::Tenant::from_status(s, true))
            .collect();
        return output::print(&output::TenantList { tenants });
    }
    if behind.is_empty() {
        match total {
            0 => out!("no tenants"),
            n => out!("no tenant is behind ({} up to date)", plural(n, "tenant")),
        }
        return Ok(());
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
    Ok(())
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
