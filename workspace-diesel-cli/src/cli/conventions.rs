//! diesel_cli's command groups, `migration ...` and `database ...`, and how many migrations
//! `migration revert` and `migration redo` take back.

use clap::{Args, Subcommand};

use crate::cli::files::GenerateArgs;
use crate::cli::fleet::{FleetArgs, MigrateAllArgs, SelectArgs};

/// `migration ...`, as diesel_cli spells it, mapped onto the fleet commands.
#[derive(Debug, Subcommand)]
pub(crate) enum MigrationCommand {
    /// Apply the shared migrations, then the pending tenant migrations to every tenant (as
    /// migrate_all, with its --dry-run and lock budget); writes the config file's
    /// print_schema.file again
    Run(MigrateAllArgs),
    /// Revert the last tenant migration of every tenant (-n N: the last N; --all: all of them)
    Revert(StepArgs),
    /// Revert the last tenant migration of every tenant (-n N, --all as for revert), then apply
    /// the pending migrations again
    Redo(StepArgs),
    /// List the shared and tenant migrations, each marked `[X]` (applied), `[~]` (applied on some
    /// tenants) or `[ ]` (pending)
    List {
        #[command(flatten)]
        select: SelectArgs,
    },
    /// Write a new, empty migration (as makemigrations_tenant)
    Generate(GenerateArgs),
}

/// `database ...`, as diesel_cli spells it.
#[derive(Debug, Subcommand)]
pub(crate) enum DatabaseCommand {
    /// Create the database if it does not exist, then apply the shared migrations (as setup,
    /// without writing a config file or directories)
    Setup,
    /// Drop the database, then set it up again (every tenant and its data is lost)
    Reset {
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Drop the database (every tenant and its data is lost)
    Drop {
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

/// How many migrations `migration revert` and `migration redo` take back.
#[derive(Debug, Args)]
pub(crate) struct StepArgs {
    /// Every applied tenant migration
    #[arg(long, conflicts_with = "number")]
    pub(crate) all: bool,
    /// How many of the last applied tenant migrations [default: 1]
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) number: Option<u32>,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}
