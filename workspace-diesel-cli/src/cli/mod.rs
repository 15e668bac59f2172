//! The command line: every clap-derive type of the tool. The top level and the commands here;
//! the arguments by command group in `fleet.rs` (fleet runs and tenant selection), `tenant.rs`
//! (named tenants, life-cycle states), `files.rs` (new migrations, the Rust schema) and
//! `conventions.rs` (diesel_cli's `migration` and `database` groups).

mod conventions;
mod files;
mod fleet;
mod tenant;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

pub(crate) use self::conventions::{DatabaseCommand, MigrationCommand, StepArgs};
pub(crate) use self::files::{GenerateArgs, PrintSchemaArgs};
pub(crate) use self::fleet::{
    duration, BudgetArgs, FleetArgs, MigrateAllArgs, PlanArgs, SelectArgs,
};
pub(crate) use self::tenant::{CreateArgs, RevertArgs, TenantOrAll, TenantState};

/// Schema-per-tenant migrations for Diesel and PostgreSQL: create, migrate, list, rename and drop
/// tenants, write new migrations, and print the Rust schema of the shared and tenant tables.
#[derive(Debug, Parser)]
#[command(
    name = "workspace-diesel",
    version,
    after_help = "Every command also answers to its kebab-case spelling (create-tenant-schema).\n\
                  Exit status: 0 success, 1 failure, 2 usage error, 3 `pending --exit-code` with \
                  tenants behind."
)]
pub(crate) struct Cli {
    /// The database to connect to (postgres://user:password@host:port/database) [env:
    /// DATABASE_URL, or the variable the config file names]
    #[arg(long, global = true, value_name = "URL")]
    pub(crate) database_url: Option<String>,

    /// The tenant migrations directory, run once per tenant schema [default: the config file's,
    /// else migrations_tenant]
    #[arg(
        long = "migration-dir",
        visible_alias = "migrations-dir",
        global = true,
        value_name = "DIR"
    )]
    pub(crate) migrations_dir: Option<PathBuf>,

    /// The shared migrations directory, run once in the shared schema [default: the config
    /// file's, else migrations_shared, skipped when it does not exist]
    #[arg(long, global = true, value_name = "DIR")]
    pub(crate) shared_migrations_dir: Option<PathBuf>,

    /// The config file [default: workspace-diesel.toml in the current directory or the nearest
    /// parent directory that has one]
    #[arg(
        long = "config-file",
        visible_alias = "config",
        global = true,
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,

    /// How results are printed on stdout: human lines, or json (one document per run, with a
    /// `format` version field; an error is a JSON document on stderr)
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub(crate) format: Format,
    /// What sits between the tool and PostgreSQL: `direct`, `session` behind PgBouncer in session
    /// pooling mode, or `transaction` behind PgBouncer in transaction pooling mode (statement
    /// cache off, transaction-scoped locks only)
    #[arg(
        long,
        env = "WORKSPACE_DIESEL_POOLER",
        global = true,
        hide_env_values = true,
        value_name = "MODE",
        default_value = "direct"
    )]
    pub(crate) pooler: diesel_workspace::pooler::Pooler,
    /// The registry table, when it is not the built-in public.workspaces:
    /// SCHEMA.TABLE[.IDENTIFIER[.STATUS]] (identifier column, default schema_name; life-cycle
    /// state column, default none) [default: the config file's `[registry]`, else
    /// public.workspaces]
    #[arg(long, global = true, value_name = "SCHEMA.TABLE")]
    pub(crate) registry: Option<String>,

    /// Refuse to change the database when `audit` finds a hijack hazard (also
    /// `refuse_hazards = true` in the config file's `[database]` table)
    #[arg(long, global = true)]
    pub(crate) refuse_hazards: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The output format: lines for people, or one JSON document for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Human,
    Json,
}

/// The commands, each with its snake_case name, a short alias and a (hidden) kebab-case alias.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create the database if it does not exist, then apply the shared migrations
    #[command(name = "setup", visible_alias = "s:u")]
    Setup,

    /// Register a tenant and create its schema, with every tenant migration applied
    #[command(
        name = "create_tenant_schema",
        visible_alias = "c:t:s",
        alias = "create-tenant-schema"
    )]
    CreateTenantSchema(CreateArgs),

    /// Write a new, empty migration (up.sql and down.sql) into the tenant migrations directory
    #[command(
        name = "makemigrations_tenant",
        visible_alias = "m:m:t",
        alias = "makemigrations-tenant"
    )]
    MakemigrationsTenant(GenerateArgs),

    /// Apply the pending tenant migrations to one tenant, or to every tenant with --all
    #[command(
        name = "migrate_tenant",
        visible_alias = "m:t",
        alias = "migrate-tenant"
    )]
    MigrateTenant(TenantOrAll),

    /// Apply the shared migrations, then the pending tenant migrations to every tenant
    #[command(name = "migrate_all", visible_alias = "m:a", alias = "migrate-all")]
    MigrateAll(MigrateAllArgs),

    /// Show what migrate_all would do, changing nothing: per tenant the pending migrations, each
    /// statement with the lock it takes on which table and that table's size, and the
    /// statements whose cost grows with the table or the fleet
    #[command(name = "plan", visible_alias = "p:l")]
    Plan(PlanArgs),

    /// Revert the last applied tenant migration of one tenant, or of every tenant with --all
    #[command(name = "revert_tenant", visible_alias = "r:t", alias = "revert-tenant")]
    RevertTenant(RevertArgs),

    /// Revert the last applied tenant migration of one tenant and apply it again (with any other
    /// pending migration)
    #[command(name = "redo_tenant", visible_alias = "r:d:t", alias = "redo-tenant")]
    RedoTenant {
        /// The tenant
        identifier: String,
    },

    /// List the registered tenants with their migration state
    #[command(name = "list_tenants", visible_alias = "l:t", alias = "list-tenants")]
    ListTenants,

    /// List the tenants that are behind: tenant migrations missing from the central record
    #[command(name = "pending", visible_alias = "p:t")]
    Pending {
        /// Exit with status 3 when a tenant is behind (0 when none is)
        #[arg(long)]
        exit_code: bool,
        #[command(flatten)]
        select: SelectArgs,
    },

    /// List the recorded fleet runs, newest first, or one run's tenants with --run
    #[command(name = "runs", visible_alias = "r:s")]
    Runs {
        /// Show this run's tenants: versions before, versions applied, duration, outcome
        #[arg(long, value_name = "ID")]
        run: Option<i64>,
    },

    /// Revert a recorded fleet run: each tenant it advanced back to its versions before the run;
    /// tenants that moved on since are reported and left alone; safe to rerun
    #[command(name = "revert_run", visible_alias = "r:r", alias = "revert-run")]
    RevertRun {
        /// The run's id (see runs)
        id: i64,
        #[command(flatten)]
        fleet: FleetArgs,
    },

    /// Show the migration state: shared migrations and a summary of the tenants
    #[command(name = "status", visible_alias = "s:t")]
    Status(SelectArgs),

    /// Drop a tenant: its schema with all its data, its registry row and its migration records
    #[command(name = "drop_tenant", visible_alias = "d:t", alias = "drop-tenant")]
    DropTenant {
        /// The tenant to drop
        identifier: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Rename a tenant: its schema, its registry row and its migration records
    #[command(
        name = "rename_tenant",
        visible_alias = "rn:t",
        alias = "rename-tenant"
    )]
    RenameTenant {
        /// The tenant's current identifier
        from: String,
        /// The new identifier
        to: String,
    },

    /// Create a tenant as a copy of a template tenant: its tables, indexes, ledger and (unless
    /// --schema-only) its rows and sequences, in one transaction
    #[command(name = "clone_tenant", visible_alias = "c:t", alias = "clone-tenant")]
    CloneTenant {
        /// The template tenant (kept current like any tenant)
        template: String,
        /// The new tenant's identifier
        identifier: String,
        /// Copy the tables empty, with sequences at their start
        #[arg(long)]
        schema_only: bool,
    },

    /// Write a tenant to an archive: its ledger, a manifest (migration checksums, row counts and
    /// checksums) and its rows through COPY, as of one snapshot
    #[command(name = "export_tenant", visible_alias = "e:t", alias = "export-tenant")]
    ExportTenant {
        /// The tenant
        identifier: String,
        /// The archive to write (`-`: stdout); an existing file is refused
        file: String,
    },

    /// Create a tenant from an archive (of this or another database or server), in one
    /// transaction, refused with nothing created when a version or a checksum does not match
    #[command(name = "import_tenant", visible_alias = "i:t", alias = "import-tenant")]
    ImportTenant {
        /// The new tenant's identifier (any name: not necessarily the exported one)
        identifier: String,
        /// The archive to read (`-`: stdin)
        file: String,
    },

    /// List the snapshots kept by `--snapshot` runs, oldest first, with their size and expiry
    #[command(name = "snapshots", visible_alias = "l:sn", alias = "list_snapshots")]
    Snapshots {
        /// Only this tenant's snapshots
        #[arg(long, value_name = "IDENTIFIER")]
        tenant: Option<String>,
    },

    /// Bring a tenant back to a snapshot, row for row (schema, data, sequences, ledger), checked
    /// by checksums; its requests are refused (state `restoring`) meanwhile; atomic
    #[command(
        name = "restore_tenant",
        visible_alias = "rs:t",
        alias = "restore-tenant"
    )]
    RestoreTenant {
        /// The snapshot (see snapshots); its tenant is the one restored
        snapshot: String,
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Remove the expired snapshots (or, with --older-than, those taken longer ago than that)
    #[command(
        name = "prune_snapshots",
        visible_alias = "p:sn",
        alias = "prune-snapshots"
    )]
    PruneSnapshots {
        /// Remove the snapshots taken longer ago than this, expired or not: N followed by s, m,
        /// h or d (30m, 12h, 7d)
        #[arg(long, value_name = "AGE", value_parser = duration)]
        older_than: Option<std::time::Duration>,
    },

    /// Set a tenant's state in the registry; web services serve only active tenants
    #[command(
        name = "set_tenant_status",
        visible_alias = "s:t:s",
        alias = "set-tenant-status"
    )]
    SetTenantStatus {
        /// The tenant
        identifier: String,
        /// The new state
        status: TenantState,
    },

    /// Top the warm pool up to N spare schemas with every tenant migration applied, which
    /// create_tenant_schema claims instead of provisioning from scratch
    #[command(name = "fill_spares", visible_alias = "f:s", alias = "fill-spares")]
    FillSpares {
        /// How many spare schemas the pool should hold (0 to 1000); spares made before new tenant
        /// migrations were added are brought up to date first
        #[arg(value_name = "N", allow_negative_numbers = true)]
        target: String,
    },

    /// List the spare schemas of the warm pool, oldest (claimed first) first
    #[command(name = "list_spares", visible_alias = "l:s", alias = "list-spares")]
    ListSpares,

    /// Drop every spare schema of the warm pool (tenants are not touched)
    #[command(name = "drain_spares", visible_alias = "d:s", alias = "drain-spares")]
    DrainSpares {
        /// Do not ask for confirmation
        #[arg(long, short = 'y')]
        yes: bool,
    },

    /// Check the tenant migrations: the statements whose cost grows with the table or the fleet
    /// (rewrites, full scans under a strong lock, index builds that block writes), each with its
    /// safe rewrite; and what a Citus distributed schema cannot hold (triggers, ADD COLUMN ...
    /// serial, foreign keys to other schemas or to shared tables that are not reference tables,
    /// tables without a primary key), which fails; run before applying on Citus
    #[command(
        name = "lint_migrations",
        visible_alias = "l:m",
        alias = "lint-migrations"
    )]
    LintMigrations {
        /// Also fail (exit status 1) when a statement's cost grows with the table or the fleet
        #[arg(long)]
        deny_costs: bool,
    },

    /// Move a tenant to another node of a Citus cluster (citus_schema_move)
    #[command(name = "move_tenant", visible_alias = "mv:t", alias = "move-tenant")]
    MoveTenant {
        /// The tenant to move
        identifier: String,
        /// The node to move it to, as the cluster knows it (see status)
        #[arg(value_name = "HOST:PORT")]
        to: String,
    },

    /// Start Citus's rebalancer, which spreads the tenants over the nodes, and watch it
    #[command(name = "rebalance", visible_alias = "r:b")]
    Rebalance {
        /// Start it and return; `rebalance --status` shows how far it got
        #[arg(long, conflicts_with = "status")]
        no_wait: bool,
        /// Show the latest rebalance's progress instead of starting one
        #[arg(long)]
        status: bool,
    },

    /// Print Rust declarations of the shared tables (diesel::table!) and the tenant tables
    /// (tenant_table!), read from the live database
    #[command(name = "print-schema", visible_alias = "p:s", alias = "print_schema")]
    PrintSchema(PrintSchemaArgs),

    /// diesel_cli's `migration` commands, run on every tenant (the shared migrations first)
    #[command(name = "migration", subcommand)]
    Migration(MigrationCommand),

    /// diesel_cli's `database` commands: create, reset or drop the database
    #[command(name = "database", subcommand)]
    Database(DatabaseCommand),

    /// Print a shell completion script (bash, elvish, fish, powershell or zsh) on stdout
    #[command(name = "completions")]
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}
