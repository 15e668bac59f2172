//! The commands, one module per group, and the dispatcher: `context` holds what they share (the
//! connection, the migrator factories, the config file), `text` the helpers for people.

/// `println!` that returns an error instead of panicking when stdout is closed (`| head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod archive;
mod context;
mod generate;
mod lint;
mod migrate;
mod placement;
mod plan;
mod redo;
mod runs;
mod schema;
mod select;
mod setup;
mod spares;
mod status;
mod tenant;
mod text;

use anyhow::{bail, Context as _, Result};

use crate::cli::{Cli, Command, Format};
use crate::config::Config;

pub(crate) use self::context::{
    ensure_registered, registry_exists, tenant_id, Ctx, ReadOnly, DEFAULT_SHARED_DIR,
};
pub(crate) use self::plan::{Budget, OverBudget};
pub(crate) use self::text::{confirm, plural, shown};

/// Runs the command of `cli`.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    let config = Config::load(cli.config.as_deref(), &cwd)?.refusing_hazards(cli.refuse_hazards);
    if cli.format == Format::Json && !supports_json(&cli.command) {
        bail!(
            "`--format json` is not supported by `{}`: it prints human output only",
            command_name(&cli.command)
        );
    }
    let ctx = Ctx::new(
        cli.database_url,
        cli.migrations_dir,
        cli.shared_migrations_dir,
        cli.format,
        config,
        cli.pooler,
        cli.registry,
    )?;
    match cli.command {
        Command::Setup => setup::setup(&ctx),
        Command::CreateTenantSchema { identifier } => tenant::create(&ctx, &identifier),
        Command::MakemigrationsTenant { name, shared } => {
            generate::makemigrations(&ctx, &name, shared)
        }
        Command::MigrateTenant(args) => migrate::migrate_tenant(&ctx, &args),
        Command::MigrateAll(args) => migrate::migrate_all(&ctx, &args),
        Command::Plan(args) => plan::plan(&ctx, &args.select, &args.budget),
        Command::RevertTenant(args) => migrate::revert_tenant(&ctx, &args),
        Command::RedoTenant { identifier } => redo::redo(&ctx, &identifier),
        Command::ListTenants => tenant::list(&ctx),
        Command::Pending(select) => setup::pending(&ctx, &select),
        Command::Status(select) => status::status(&ctx, &select),
        Command::Runs { run } => runs::list(&ctx, run),
        Command::RevertRun { id, fleet } => runs::revert(&ctx, id, &fleet),
        Command::DropTenant { identifier, yes } => tenant::drop(&ctx, &identifier, yes),
        Command::RenameTenant { from, to } => tenant::rename(&ctx, &from, &to),
        Command::CloneTenant {
            template,
            identifier,
            schema_only,
        } => tenant::clone(&ctx, &template, &identifier, schema_only),
        Command::ExportTenant { identifier, file } => archive::export(&ctx, &identifier, &file),
        Command::ImportTenant { identifier, file } => archive::import(&ctx, &identifier, &file),
        Command::SetTenantStatus { identifier, status } => {
            tenant::set_status(&ctx, &identifier, status)
        }
        Command::FillSpares { target } => spares::fill(&ctx, &target),
        Command::ListSpares => spares::list(&ctx),
        Command::DrainSpares { yes } => spares::drain(&ctx, yes),
        Command::LintMigrations { deny_costs } => lint::lint(&ctx, deny_costs),
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
            | Command::CloneTenant { .. }
            | Command::ExportTenant { .. }
            | Command::ImportTenant { .. }
            | Command::MigrateTenant(_)
            | Command::MigrateAll(_)
            | Command::Plan(_)
            | Command::RevertTenant(_)
            | Command::RedoTenant { .. }
            | Command::ListTenants
            | Command::Pending(_)
            | Command::Status(_)
            | Command::Runs { .. }
            | Command::RevertRun { .. }
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
        Command::Plan(_) => "plan",
        Command::RevertTenant(_) => "revert_tenant",
        Command::RedoTenant { .. } => "redo_tenant",
        Command::ListTenants => "list_tenants",
        Command::Pending(_) => "pending",
        Command::Status(_) => "status",
        Command::Runs { .. } => "runs",
        Command::RevertRun { .. } => "revert_run",
        Command::DropTenant { .. } => "drop_tenant",
        Command::RenameTenant { .. } => "rename_tenant",
        Command::CloneTenant { .. } => "clone_tenant",
        Command::ExportTenant { .. } => "export_tenant",
        Command::ImportTenant { .. } => "import_tenant",
        Command::SetTenantStatus { .. } => "set_tenant_status",
        Command::LintMigrations { .. } => "lint_migrations",
        Command::MoveTenant { .. } => "move_tenant",
        Command::Rebalance { .. } => "rebalance",
        Command::FillSpares { .. } => "fill_spares",
        Command::ListSpares => "list_spares",
        Command::DrainSpares { .. } => "drain_spares",
        Command::PrintSchema(_) => "print-schema",
    }
}
