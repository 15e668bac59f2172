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
mod conventions;
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

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use crate::cli::{Cli, Command, DatabaseCommand, MigrationCommand};
use crate::config::Config;

pub(crate) use self::context::{
    ensure_registered, registry_exists, tenant_id, Ctx, ReadOnly, DEFAULT_SHARED_DIR,
};
pub(crate) use self::plan::{Budget, OverBudget};
pub(crate) use self::text::{confirm, plural, shown};

/// Runs the command of `cli`.
pub(crate) fn run(cli: Cli) -> Result<()> {
    let cwd = std::env::current_dir().context("could not read the current directory")?;
    if let Command::Completions { shell } = cli.command {
        return completions(shell, cli.format == crate::cli::Format::Json);
    }
    // `setup --config-file FILE` writes FILE when it does not exist yet.
    let config_target = match (&cli.command, &cli.config) {
        (Command::Setup, Some(path)) if !path.exists() => Some(path.clone()),
        _ => None,
    };
    let explicit = cli.config.as_deref().filter(|_| config_target.is_none());
    let config = Config::load(explicit, &cwd)?.refusing_hazards(cli.refuse_hazards);
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
        Command::Setup => setup::setup(
            &ctx,
            setup::Scope::Project,
            "setup",
            config_target.as_deref(),
            None,
        ),
        Command::CreateTenantSchema(args) => tenant::create(&ctx, &args),
        Command::MakemigrationsTenant(args) => {
            generate::makemigrations(&ctx, &args, "makemigrations_tenant")
        }
        Command::MigrateTenant(args) => migrate::migrate_tenant(&ctx, &args),
        Command::MigrateAll(args) => migrate::migrate_all(&ctx, &args, "migrate_all"),
        Command::Plan(args) => plan::plan(&ctx, &args.select, &args.budget),
        Command::RevertTenant(args) => migrate::revert_tenant(&ctx, &args),
        Command::RedoTenant { identifier } => redo::redo(&ctx, &identifier),
        Command::ListTenants => tenant::list(&ctx),
        Command::Pending { exit_code, select } => setup::pending(&ctx, &select, exit_code),
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
        Command::Migration(MigrationCommand::Run(args)) => {
            migrate::migrate_all(&ctx, &args, "migration run")
        }
        Command::Migration(MigrationCommand::Revert(args)) => conventions::revert(&ctx, &args),
        Command::Migration(MigrationCommand::Redo(args)) => conventions::redo(&ctx, &args),
        Command::Migration(MigrationCommand::List { select }) => conventions::list(&ctx, &select),
        Command::Migration(MigrationCommand::Generate(args)) => {
            generate::makemigrations(&ctx, &args, "migration generate")
        }
        Command::Database(DatabaseCommand::Setup) => {
            setup::setup(&ctx, setup::Scope::Database, "database setup", None, None)
        }
        Command::Database(DatabaseCommand::Reset { yes }) => {
            let (_, existed) = conventions::drop_database(&ctx, yes)?;
            setup::setup(
                &ctx,
                setup::Scope::Database,
                "database reset",
                None,
                Some(existed),
            )
        }
        Command::Database(DatabaseCommand::Drop { yes }) => {
            let (database, dropped) = conventions::drop_database(&ctx, yes)?;
            if ctx.json() {
                return crate::output::done(
                    "database drop",
                    serde_json::json!({"database": database, "dropped": dropped}),
                );
            }
            Ok(())
        }
        Command::Completions { .. } => unreachable!("handled before the config file is read"),
    }
}

/// `completions <shell>`: clap_complete's script for the tool, on stdout (in a JSON document's
/// `script` field with `--format json`).
fn completions(shell: clap_complete::Shell, json: bool) -> Result<()> {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "workspace-diesel", &mut script);
    if json {
        return crate::output::done(
            "completions",
            serde_json::json!({
                "shell": shell.to_string(),
                "script": String::from_utf8_lossy(&script),
            }),
        );
    }
    use std::io::Write as _;
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}
