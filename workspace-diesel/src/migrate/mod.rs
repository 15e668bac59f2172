//! The migration engine: the [`Migrator`], its builder and its operations.
//!
//! Each file answers one question: `set` (the migration sets, read once), `engine` (one tenant,
//! both directions), `failure` (classifying what failed), `tenants` (create, drop, rename,
//! list), `clone` (a tenant copied from a template tenant; `blueprint`: its schema rebuilt from the
//! template's catalog), `export` and `import`
//! (a tenant to an archive and back, `archive` its format), `snapshot` and `restore` (snapshots before a migration, and
//! restoring one), `spares` (the warm pool), `fleet`
//! (every tenant, or a selection, in parallel), `workers` (the worker threads and the waves),
//! `runs` (the record of fleet runs, and reverting a run), `plan` (the dry-run plan of a fleet
//! run) and `status` (status and drift).
//!
//! `migrator` holds the [`Migrator`] and its builder; `door` is the preamble every public
//! operation enters by; `tx` plans and sends one tenant transaction (`split`: statement by
//! statement); `shared` runs the shared migrations, the lint and the audit. This file only
//! declares them and re-exports their public items.

#[cfg(feature = "archive")]
mod archive;
mod blueprint;
mod clone;
pub(crate) mod door;
mod engine;
#[cfg(feature = "archive")]
mod export;
mod failure;
mod fleet;
#[cfg(feature = "archive")]
mod import;
pub(crate) mod migrator;
mod plan;
mod restore;
mod runs;
mod set;
mod shared;
mod snapshot;
mod spares;
mod split;
mod status;
mod tenants;
mod tx;
mod workers;

#[cfg(feature = "archive")]
pub use self::archive::{ArchiveSummary, TableSummary};
pub use self::migrator::{Migrator, MigratorBuilder};
pub use self::plan::{
    LockOverBudget, MigrationPlan, PlannedMigration, PlannedStatement, TableSize, TenantPlan,
};
pub use self::set::REGISTRY_MIGRATIONS;
pub use self::snapshot::{Snapshot, SnapshotTable};
pub use self::status::SharedMigrations;
