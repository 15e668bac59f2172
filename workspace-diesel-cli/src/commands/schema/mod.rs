//! `print-schema`: Rust declarations of the shared and tenant tables, read from the database.
//!
//! Shared tables become stock `diesel::table!` blocks qualified with the shared schema
//! (`public.plans`), so they resolve whatever the `search_path`; tenant tables, read from one
//! tenant's schema, become `diesel_workspace::tenant_table!` blocks; foreign keys become
//! `diesel::joinable!`, and every table goes into one `allow_tables_to_appear_in_same_query!`.
//! Everything runs in a transaction that is rolled back: a scratch schema built when no tenant is
//! registered leaves nothing behind.
//!
//! [`catalog`] reads the database, [`filter`] picks the tables (`--only-tables`,
//! `--except-tables`), [`render`](mod@render) writes the Rust file; this module picks the schemas
//! and holds the transaction.

mod catalog;
mod filter;
mod render;

use std::fs;

use anyhow::{bail, Context as _, Result};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel_migrations::MigrationHarness;
use diesel_workspace::{registry::Registry, registry::LIBRARY_TABLES, Migrator, TenantId};

use self::catalog::{read_foreign_keys, read_tables, schema_exists, Table};
use self::filter::{warn_views, TableFilter};
use self::render::{render, Schema};
use super::{tenant_id, Ctx};
use crate::cli::PrintSchemaArgs;

/// The scratch schema built from the tenant migrations when no tenant is registered.
const SCRATCH_SCHEMA: &str = "__workspace_diesel_print_schema";

/// Diesel's migration ledger, never printed.
const LEDGER: &str = "__diesel_schema_migrations";

/// Runs `print-schema`.
pub(crate) fn print_schema(ctx: &Ctx, args: &PrintSchemaArgs) -> Result<()> {
    let tenant = args.tenant.as_deref().map(tenant_id).transpose()?;
    let config = ctx.config();
    let filter = TableFilter::new(
        &args.only_tables,
        &args.except_tables,
        config.only_tables(),
        config.except_tables(),
    )?;
    let with_registry = args.with_registry || config.with_registry();
    let output = args
        .output_file
        .clone()
        .or_else(|| config.print_schema_file());
    let text = schema_text(ctx, tenant.as_ref(), with_registry, &filter)?;
    match &output {
        Some(path) => fs::write(path, &text)
            .with_context(|| format!("could not write `{}`", path.display()))?,
        None if ctx.json() => {}
        None => {
            use std::io::Write as _;
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
    }
    if ctx.json() {
        return crate::output::done(
            "print-schema",
            match &output {
                Some(path) => serde_json::json!({"file": path.display().to_string()}),
                None => serde_json::json!({"file": null, "schema": text}),
            },
        );
    }
    Ok(())
}

/// After a command applied or reverted migrations: writes the config file's
/// `print_schema.file` again, as `print-schema` would (its tables, filters and first tenant), as
/// diesel_cli's `migration run` does. Returns the file written, if one is configured.
pub(crate) fn regenerate(ctx: &Ctx) -> Result<Option<String>> {
    let config = ctx.config();
    let Some(path) = config.print_schema_file() else {
        return Ok(None);
    };
    let filter = TableFilter::new(&[], &[], config.only_tables(), config.except_tables())?;
    schema_text(ctx, None, config.with_registry(), &filter)
        .and_then(|text| {
            fs::write(&path, text).with_context(|| format!("could not write `{}`", path.display()))
        })
        .with_context(|| {
            format!(
                "the migrations ran, but the schema file `{}` (print_schema.file) was not written again",
                path.display()
            )
        })?;
    Ok(Some(path.display().to_string()))
}

/// The Rust declarations, read in a transaction that is rolled back.
fn schema_text(
    ctx: &Ctx,
    tenant: Option<&TenantId>,
    with_registry: bool,
    filter: &TableFilter,
) -> Result<String> {
    let mut conn = ctx.connect()?;
    AnsiTransactionManager::begin_transaction(&mut conn).context("could not open a transaction")?;
    let result = read_and_render(ctx, &mut conn, tenant, with_registry, filter);
    // Always roll back: the scratch schema (if any) goes away with the transaction.
    let rolled_back = AnsiTransactionManager::rollback_transaction(&mut conn);
    let text = result?;
    rolled_back.context("could not roll back the transaction")?;
    Ok(text)
}

fn read_and_render(
    ctx: &Ctx,
    conn: &mut PgConnection,
    tenant: Option<&TenantId>,
    with_registry: bool,
    filter: &TableFilter,
) -> Result<String> {
    let registry = Registry::default();
    let shared_schema = registry.schema().to_owned();
    let registry_only = ctx.registry_migrator()?;
    let tenant_schema = match tenant {
        Some(tenant) => {
            super::ensure_registered(conn, &registry_only, tenant)?;
            if !schema_exists(conn, tenant.as_str())? {
                bail!("the schema of tenant `{tenant}` does not exist");
            }
            tenant.as_str().to_owned()
        }
        None => match first_tenant(conn, &registry_only)? {
            Some(first) => first,
            None => {
                build_scratch(ctx, conn)?;
                SCRATCH_SCHEMA.to_owned()
            }
        },
    };

    let mut exclude: Vec<&str> = vec![LEDGER];
    if !with_registry {
        exclude.extend(LIBRARY_TABLES);
    }
    let shared = filtered(
        read_tables(conn, &shared_schema, &exclude)?,
        &shared_schema,
        filter,
    );
    let tenant_tables = filtered(
        read_tables(conn, &tenant_schema, &[LEDGER])?,
        &tenant_schema,
        filter,
    );
    warn_views(conn, &shared_schema)?;
    warn_views(conn, &tenant_schema)?;
    for t in &tenant_tables {
        if shared.iter().any(|s| s.name == t.name) {
            bail!(
                "table `{}` exists both in the shared schema `{shared_schema}` and in the tenant \
                 schema `{tenant_schema}`; one module cannot declare both",
                t.name
            );
        }
    }
    let foreign_keys = read_foreign_keys(conn, &[&shared_schema, &tenant_schema])?;
    Ok(render(&Schema {
        shared_schema: &shared_schema,
        tenant_schema: &tenant_schema,
        shared,
        tenant: tenant_tables,
        foreign_keys,
    }))
}

/// The tables `filter` keeps; a `warning:` naming each one it drops.
fn filtered(tables: Vec<Table>, schema: &str, filter: &TableFilter) -> Vec<Table> {
    tables
        .into_iter()
        .filter(|t| {
            let keep = filter.keeps(&t.name);
            if !keep {
                eprintln!(
                    "warning: skipping table `{schema}.{}`: {}",
                    t.name,
                    filter.reason()
                );
            }
            keep
        })
        .collect()
}

/// Inside the caller's transaction (rolled back later): the pending shared migrations, then a
/// scratch schema with every tenant migration, the scratch schema alone on the `search_path` (as
/// when a tenant is provisioned).
fn build_scratch(ctx: &Ctx, conn: &mut PgConnection) -> Result<()> {
    let tenant_dir = ctx.tenant_dir()?;
    let migrator = ctx.shared_migrator()?;
    migrator
        .run_shared(conn)
        .context("could not apply the shared migrations to a scratch copy")?;
    conn.batch_execute(&format!(
        "CREATE SCHEMA \"{SCRATCH_SCHEMA}\"; SET LOCAL search_path TO \"{SCRATCH_SCHEMA}\", pg_temp"
    ))
    .context("could not create a scratch schema")?;
    let tenant =
        diesel_migrations::FileBasedMigrations::from_path(&tenant_dir).with_context(|| {
            format!(
                "could not read the tenant migrations in `{}`",
                tenant_dir.display()
            )
        })?;
    conn.run_pending_migrations(tenant)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("could not build a scratch schema from the tenant migrations")?;
    Ok(())
}

/// The first registered tenant (by identifier) whose schema exists.
fn first_tenant(conn: &mut PgConnection, migrator: &Migrator) -> Result<Option<String>> {
    let installed = migrator
        .is_registry_installed(conn)
        .context("could not look for the registry table")?;
    if !installed {
        return Ok(None);
    }
    let tenants = migrator
        .list_tenants(conn)
        .context("could not read the registry")?;
    for tenant in tenants {
        if schema_exists(conn, tenant.as_str())? {
            return Ok(Some(tenant.as_str().to_owned()));
        }
    }
    Ok(None)
}
