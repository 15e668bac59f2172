//! How a command that walks the fleet of tenants runs (parallelism, waves, snapshots), which
//! tenants it takes, and the lock budget of `plan` and `migrate_all`.

use std::path::PathBuf;

use clap::Args;

use crate::cli::tenant::TenantState;

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
    /// Keep a snapshot of each tenant the run changes, taken in the transaction of its first
    /// pending migration, so restore_tenant can bring it back (see snapshots)
    #[arg(long)]
    pub(crate) snapshot: bool,
    /// How long the snapshots are kept before prune_snapshots removes them: N followed by s, m,
    /// h or d (30m, 12h, 7d) [default: 7d]
    #[arg(long, value_name = "AGE", requires = "snapshot", value_parser = duration)]
    pub(crate) retain: Option<std::time::Duration>,
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
    /// Take the tenants in this state: provisioning, active, suspended, archived or restoring
    /// (repeatable)
    /// [default for a fleet run: active; for a status view: every state]
    #[arg(long, value_enum, value_name = "STATE", hide_possible_values = true)]
    pub(crate) state: Vec<TenantState>,
    /// Only the tenants placed on this node of a Citus cluster
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) node: Option<String>,
}

/// An age or a retention: a whole number followed by `s`, `m`, `h` or `d`.
pub(crate) fn duration(text: &str) -> Result<std::time::Duration, String> {
    let invalid = || format!("invalid duration `{text}`: expected N followed by s, m, h or d (7d)");
    let unit = text.chars().last().ok_or_else(invalid)?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(invalid()),
    };
    let n: u64 = text[..text.len() - 1].parse().map_err(|_| invalid())?;
    n.checked_mul(seconds)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(invalid)
}
