//! Tenant commands: `create_tenant_schema`, `list_tenants` (with each tenant's node and size on
//! Citus), `drop_tenant`, `rename_tenant`, `clone_tenant`, `set_tenant_status`.

use anyhow::{bail, Context as _, Result};

use std::time::Instant;

use diesel_workspace::CloneData;

use super::{confirm, plural, tenant_id, Ctx};
use crate::cli::{CreateArgs, TenantState};
use crate::exit::usage;
use crate::output::{self, Verb};

/// `create_tenant_schema <identifier>...` or `--file FILE`: one tenant as [`create_one`]; several
/// through the library's `create_tenants`, `--parallel` at a time, each in its own transaction.
pub(crate) fn create(ctx: &Ctx, args: &CreateArgs) -> Result<()> {
    let mut names = args.identifiers.clone();
    if let Some(file) = &args.file {
        names.extend(names_in_file(file)?);
    }
    if let ([one], None) = (names.as_slice(), &args.file) {
        if args.parallel.is_some() || args.continue_on_error {
            usage!("--parallel and --continue-on-error take several tenants");
        }
        return create_one(ctx, one);
    }
    let tenants = names
        .iter()
        .map(|n| tenant_id(n))
        .collect::<Result<Vec<_>>>()?;
    if tenants.is_empty() {
        usage!("name a tenant to create: the file names none");
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = tenants.iter().find(|t| !seen.insert(t.as_str())) {
        usage!("tenant `{twice}` is named twice");
    }
    let migrator = ctx.migrator()?;
    let url = ctx.database_url()?;
    let mut conn = ctx.connect()?;
    let shared = migrator.run_shared(&mut conn)?;
    super::lint::before_applying(&mut conn, &migrator)?;
    std::mem::drop(conn);
    if !ctx.json() && !shared.is_empty() {
        out!("shared: applied {}", shared.join(", "));
    }
    let display = super::migrate::Display::new("created", ctx.json());
    let mut opts = diesel_workspace::MigrateOptions::default()
        .on_failure(if args.continue_on_error {
            diesel_workspace::FailurePolicy::Continue
        } else {
            diesel_workspace::FailurePolicy::Stop
        })
        .progress(display.callback());
    if let Some(n) = args.parallel {
        opts = opts.parallel(usize::from(n));
    }
    let result = migrator.create_tenants(&url, &tenants, &opts);
    display.finish();
    super::migrate::finish_fleet(ctx, "create_tenant_schema", shared, result, Verb::Create)
}

/// The names in a file, one per line; blank lines and `#` comments are skipped.
fn names_in_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("could not read `{}`", path.display()))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// `create_tenant_schema <identifier>`: applies pending shared migrations (the registry table
/// comes with them), then registers the tenant and creates its schema with every tenant
/// migration, in one transaction.
fn create_one(ctx: &Ctx, identifier: &str) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let versions = migrator.tenant_versions().to_vec();
    let mut conn = ctx.connect()?;
    let registered = migrator
        .is_registered(&mut conn, &tenant)
        .with_context(|| format!("could not look up tenant `{tenant}` in the registry"))?;
    if registered {
        bail!("tenant `{tenant}` already exists");
    }
    let shared = migrator.run_shared(&mut conn)?;
    super::lint::before_applying(&mut conn, &migrator)?;
    let started = Instant::now();
    migrator.create_tenant(&mut conn, &tenant)?;
    if ctx.json() {
        let created = output::TenantResult::new(&tenant, "created", versions);
        let report = output::Report::new(
            "create_tenant_schema",
            shared,
            vec![created],
            started.elapsed().as_secs_f64(),
        );
        return output::print(&report);
    }
    let versions = versions.len();
    out!(
        "created tenant `{tenant}` (schema {}, {} applied)",
        tenant.quoted(),
        plural(versions, "migration")
    );
    Ok(())
}

/// `list_tenants`: one line per tenant with its migration state. Without the tenant migrations
/// directory, the applied migrations and drift still come from the database, and the pending
/// ones are unknown (a `warning:` on stderr says why).
pub(crate) fn list(ctx: &Ctx) -> Result<()> {
    let read = ctx.read_only_migrator()?;
    let mut conn = ctx.connect()?;
    let statuses = super::status::statuses(&mut conn, &read.migrator)?;
    super::status::warn_unknown(ctx, &read);
    let known = read.tenant_dir.is_some();
    if ctx.json() {
        let tenants = statuses
            .iter()
            .map(|s| output::Tenant::from_status(s, known))
            .collect();
        return output::print(&output::TenantList { tenants });
    }
    if statuses.is_empty() {
        out!("no tenants");
        return Ok(());
    }
    let width = statuses
        .iter()
        .map(|s| s.tenant.as_str().len())
        .max()
        .unwrap_or(0)
        .max("TENANT".len());
    // On Citus, where each tenant lives and its size.
    if super::placement::citus(&mut conn)?.is_some() {
        let placements = super::placement::placements(&mut conn, &read.migrator)?;
        let place = |t: &str| {
            placements.get(t).map_or(("-".to_owned(), 0), |p| {
                (
                    p.node.clone().unwrap_or_else(|| "-".to_owned()),
                    p.size_bytes,
                )
            })
        };
        let node_width = placements
            .values()
            .filter_map(|p| p.node.as_ref().map(String::len))
            .max()
            .unwrap_or(0)
            .max("NODE".len());
        out!(
            "{:<width$}  {:>7}  {:>7}  {:<node_width$}  {:>9}  STATE",
            "TENANT",
            "APPLIED",
            "PENDING",
            "NODE",
            "SIZE"
        );
        for s in &statuses {
            let (node, bytes) = place(s.tenant.as_str());
            out!(
                "{:<width$}  {:>7}  {:>7}  {:<node_width$}  {:>9}  {}",
                s.tenant.as_str(),
                s.applied.len(),
                s.pending.len(),
                node,
                super::placement::size(bytes),
                super::status::state(s, known)
            );
        }
        return Ok(());
    }
    out!(
        "{:<width$}  {:>7}  {:>7}  STATE",
        "TENANT",
        "APPLIED",
        "PENDING"
    );
    for s in &statuses {
        let pending = if known {
            s.pending.len().to_string()
        } else {
            "?".to_owned()
        };
        out!(
            "{:<width$}  {:>7}  {:>7}  {}",
            s.tenant.as_str(),
            s.applied.len(),
            pending,
            super::status::state(s, known)
        );
    }
    Ok(())
}

/// `drop_tenant <identifier>`: asks first unless `--yes`.
pub(crate) fn drop(ctx: &Ctx, identifier: &str, yes: bool) -> Result<()> {
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    super::ensure_registered(&mut conn, &migrator, &tenant)?;
    if !yes
        && !confirm(
            &format!(
        "Drop tenant `{tenant}`, its schema and all its data? Type the tenant's name to confirm: "
    ),
            tenant.as_str(),
            &format!("drop tenant `{tenant}`"),
        )?
    {
        bail!("tenant `{tenant}` was not dropped: not confirmed (pass --yes to skip the question)");
    }
    migrator.drop_tenant(&mut conn, &tenant)?;
    if ctx.json() {
        return output::done(
            "drop_tenant",
            serde_json::json!({"tenant": tenant.as_str()}),
        );
    }
    out!("dropped tenant `{tenant}`");
    Ok(())
}

/// `rename_tenant <from> <to>`.
pub(crate) fn rename(ctx: &Ctx, from: &str, to: &str) -> Result<()> {
    let from = tenant_id(from)?;
    let to = tenant_id(to)?;
    let migrator = ctx.registry_migrator()?;
    let mut conn = ctx.connect()?;
    super::ensure_registered(&mut conn, &migrator, &from)?;
    migrator.rename_tenant(&mut conn, &from, &to)?;
    if ctx.json() {
        return output::done(
            "rename_tenant",
            serde_json::json!({"from": from.as_str(), "to": to.as_str()}),
        );
    }
    out!("renamed tenant `{from}` to `{to}`");
    Ok(())
}

/// `clone_tenant <template> <identifier> [--schema-only]`.
pub(crate) fn clone(ctx: &Ctx, template: &str, identifier: &str, schema_only: bool) -> Result<()> {
    let template = tenant_id(template)?;
    let tenant = tenant_id(identifier)?;
    let migrator = ctx.migrator()?;
    let versions = migrator.tenant_versions().to_vec();
    let mut conn = ctx.connect()?;
    let data = if schema_only {
        CloneData::SchemaOnly
    } else {
        CloneData::WithData
    };
    let started = Instant::now();
    migrator.clone_tenant(&mut conn, &template, &tenant, data)?;
    if ctx.json() {
        let cloned = output::TenantResult::new(&tenant, "cloned", versions);
        let report = output::Report::new(
            "clone_tenant",
            Vec::new(),
            vec![cloned],
            started.elapsed().as_secs_f64(),
        );
        return output::print(&report);
    }
    out!(
        "cloned tenant `{template}` as `{tenant}` ({}, {:.2}s)",
        if schema_only {
            "schema only"
        } else {
            "with data"
        },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `set_tenant_status <identifier> <status>`.
pub(crate) fn set_status(ctx: &Ctx, identifier: &str, status: TenantState) -> Result<()> {
    use diesel_workspace::registry::LifecycleState;
    let tenant = tenant_id(identifier)?;
    let status = match status {
        TenantState::Provisioning => LifecycleState::Provisioning,
        TenantState::Active => LifecycleState::Active,
        TenantState::Suspended => LifecycleState::Suspended,
        TenantState::Archived => LifecycleState::Archived,
    };
    let mut conn = ctx.connect()?;
    let before = ctx
        .registry()
        .set_lifecycle_state(&mut conn, &tenant, status)?;
    if ctx.json() {
        return output::done(
            "set_tenant_status",
            serde_json::json!({
                "tenant": tenant.as_str(),
                "before": state_name(before),
                "status": state_name(status),
            }),
        );
    }
    out!(
        "tenant `{tenant}`: {} -> {}",
        state_name(before),
        state_name(status)
    );
    Ok(())
}

fn state_name(s: diesel_workspace::registry::LifecycleState) -> &'static str {
    use diesel_workspace::registry::LifecycleState::*;
    match s {
        Provisioning => "provisioning",
        Active => "active",
        Suspended => "suspended",
        Archived => "archived",
    }
}
