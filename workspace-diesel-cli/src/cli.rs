//! The command line: every clap-derive type of the tool.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

/// `create_tenant_schema`'s arguments: one or several names, or a file of names.
#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The tenants' identifiers, which are also their schema names: lower-case ASCII letters,
    /// digits and _, not starting with a digit, at most 63 bytes
    #[arg(value_name = "IDENTIFIER", required_unless_present = "file")]
    pub(crate) identifiers: Vec<String>,
    /// Also create the tenants named in this file, one per line (blank lines and # comments
    /// ignored)
    #[arg(long, value_name = "FILE")]
    pub(crate) file: Option<PathBuf>,
    /// How many tenants to create at once, one connection each, when creating several [default:
    /// the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) parallel: Option<u16>,
    /// Go on with the other tenants when one cannot be created (default: stop starting new ones)
    #[arg(long)]
    pub(crate) continue_on_error: bool,
}

/// `makemigrations_tenant` and `migration generate`.
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The migration's name: lower-case ASCII letters, digits and _ (e.g. add_invoices)
    pub(crate) name: String,
    /// Write into the shared migrations directory instead
    #[arg(long)]
    pub(crate) shared: bool,
    /// The migration's version, the directory name's prefix (digits and -, e.g.
    /// 2026-03-01-120000 or 20260301120000) [default: the current time, as diesel_cli]
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
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

/// One tenant, or `--all` of them.
#[derive(Debug, Args)]
pub(crate) struct TenantOrAll {
    /// The tenant
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub(crate) identifier: Option<String>,
    /// Every registered tenant
    #[arg(long)]
    pub(crate) all: bool,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
}

/// `revert_tenant`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct RevertArgs {
    #[command(flatten)]
    pub(crate) target: TenantOrAll,
    /// Revert this version only, and only where it is the last applied migration; where it is not applied, do nothing (so a rerun after an interruption reverts nothing twice)
    #[arg(long, value_name = "VERSION")]
    pub(crate) version: Option<String>,
}

/// How a command that walks the fleet of tenants runs.
#[derive(Debug, Args)]
pub(crate) struct FleetArgs {
    /// How many tenants to work on at once, one connection each [default: the number of CPUs]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) parallel: Option<u16>,
    /// How long a tenant's DDL may wait for a table lock before it gives up and is retried, 1 to
    /// 3600 (0, which PostgreSQL takes as "wait for ever", is rejected) [default: 5]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) lock_timeout: Option<u64>,
    /// Go on with the other tenants when one fails (default: stop starting new ones)
    #[arg(long)]
    pub(crate) continue_on_error: bool,
    /// Run in stages, in order (repeatable): `tenants:a,b` (a canary set), `10%` (a share of the
    /// tenants that need work), `rest`; a wave starts only within --failure-budget
    #[arg(long, value_name = "WAVE")]
    pub(crate) wave: Vec<String>,
    /// How many failures (N) or what share of the tenants run so far (N%) the waves tolerate
    /// before the next wave is not started [default: no limit]
    #[arg(long, value_name = "N|N%")]
    pub(crate) failure_budget: Option<String>,
    /// Seconds to wait between two waves [default: 0]
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=86400))]
    pub(crate) pause: Option<u64>,
    /// Keep no record of this run (see runs)
    #[arg(long)]
    pub(crate) no_record: bool,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
}

/// `migrate_all`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct MigrateAllArgs {
    /// Print the plan (as the plan command) and apply nothing
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) fleet: FleetArgs,
    #[command(flatten)]
    pub(crate) budget: BudgetArgs,
}

/// `plan`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    pub(crate) budget: BudgetArgs,
    #[command(flatten)]
    pub(crate) select: SelectArgs,
}

/// The lock budget of `plan` and `migrate_all`.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Lock budget")]
pub(crate) struct BudgetArgs {
    /// Exit with status 3, applying nothing, when a statement would take a lock of
    /// --strong-lock or stronger on a table larger than SIZE (bytes, or with a unit: kB, MB,
    /// GB, TB, 1024-based as PostgreSQL counts)
    #[arg(long, value_name = "SIZE")]
    pub(crate) max_lock_table_size: Option<String>,
    /// The weakest lock --max-lock-table-size counts [default: share, the weakest that blocks
    /// writes; access_exclusive: only the locks that block reads too]
    #[arg(long, value_name = "LEVEL", requires = "max_lock_table_size")]
    pub(crate) strong_lock: Option<String>,
}

/// Which tenants a fleet command or a status view takes (default: every registered tenant; a
/// fleet run works on the active ones, reports suspended and provisioning ones as held and
/// leaves archived ones out).
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "Tenant selection")]
pub(crate) struct SelectArgs {
    /// Only these tenants (comma-separated, repeatable); each must be registered
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) tenants: Vec<String>,
    /// Only the tenants named in this file, one per line (blank lines and # comments ignored)
    #[arg(long, value_name = "FILE")]
    pub(crate) tenants_file: Option<PathBuf>,
    /// Only tenants whose name matches this glob (*, ?, [a-z]; repeatable: any of them)
    #[arg(long, value_name = "GLOB")]
    pub(crate) pattern: Vec<String>,
    /// Leave these tenants out (comma-separated, repeatable)
    #[arg(long, value_name = "NAMES", value_delimiter = ',')]
    pub(crate) except: Vec<String>,
    /// Take the tenants in this state: provisioning, active, suspended or archived (repeatable)
    /// [default for a fleet run: active; for a status view: every state]
    #[arg(long, value_enum, value_name = "STATE", hide_possible_values = true)]
    pub(crate) state: Vec<TenantState>,
    /// Only the tenants placed on this node of a Citus cluster
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) node: Option<String>,
}

/// Options of `print-schema`.
#[derive(Debug, Args)]
pub(crate) struct PrintSchemaArgs {
    /// The tenant whose schema holds the tenant tables [default: the first registered tenant, or a
    /// scratch schema built from the tenant migrations and rolled back]
    #[arg(long, value_name = "IDENTIFIER")]
    pub(crate) tenant: Option<String>,
    /// Write to this file instead of stdout [default: the config file's print_schema.file, else
    /// stdout]
    #[arg(long, alias = "output", value_name = "FILE")]
    pub(crate) output_file: Option<PathBuf>,
    /// Print only the tables whose name matches one of these regular expressions (matched
    /// against the bare table name, anywhere in it unless anchored with ^ and $)
    #[arg(
        long,
        short = 'o',
        value_name = "REGEX",
        num_args = 1..,
        conflicts_with = "except_tables"
    )]
    pub(crate) only_tables: Vec<String>,
    /// Leave out the tables whose name matches one of these regular expressions
    #[arg(long, short = 'e', value_name = "REGEX", num_args = 1..)]
    pub(crate) except_tables: Vec<String>,
    /// Also print the registry's own tables (public.workspaces, public.workspace_migrations),
    /// which the library already declares
    #[arg(long)]
    pub(crate) with_registry: bool,
}

/// A tenant's life-cycle state, as `set_tenant_status` and `--state` take it.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum TenantState {
    /// Being created: web requests get 503
    Provisioning,
    /// Served
    Active,
    /// Kept, not served: web requests get 403
    Suspended,
    /// Kept for the record: web requests get 410
    Archived,
}
