//! The options of the engine's calls, plain data below it: [`MigrateOptions`] (with
//! [`FailurePolicy`] and the [`Progress`] callback) as the caller sets them, and the knobs one
//! tenant's migration runs with (`MigrateParams`) with their defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::report::TenantOutcome;
use crate::tenant::TenantId;

/// Default of [`MigrateOptions::lock_timeout`].
pub(crate) const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// Default of [`MigrateOptions::retries`].
pub(crate) const DEFAULT_RETRIES: u32 = 3;
/// The retention of a snapshot when none is given: 7 days.
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Knobs of one tenant's migration, from the caller's
/// [`MigrateOptions`] (or their defaults).
#[derive(Debug, Clone)]
pub(crate) struct MigrateParams {
    pub(crate) lock_timeout: Duration,
    pub(crate) retries: u32,
    /// The schema is a spare: each transaction also locks its `workspace_spares` row (skipping
    /// it when a claim holds it), and fails with [`Error::SchemaMissing`] when it is not a spare
    /// any more, so an upgrade and a claim never interleave.
    pub(crate) spare: bool,
    /// Keep a snapshot of the tenant, for this long, in the transaction that changes it.
    pub(crate) snapshot: Option<Duration>,
}

impl Default for MigrateParams {
    fn default() -> Self {
        Self {
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retries: DEFAULT_RETRIES,
            spare: false,
            snapshot: None,
        }
    }
}

/// What a fleet operation does after a tenant fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailurePolicy {
    /// Start no further tenant; tenants already in flight on other workers finish. The tenants
    /// never started are reported as [`TenantOutcome::Skipped`]. The default.
    #[default]
    Stop,
    /// Go on with every other tenant.
    Continue,
}

/// A progress callback, called after each tenant a fleet operation worked on.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// Options of the fleet operations ([`Migrator::migrate_all`](crate::Migrator::migrate_all) and friends), set with the
/// builder-style setters below; each documents its default.
///
/// ```
/// use std::time::Duration;
/// use diesel_workspace::{FailurePolicy, MigrateOptions};
///
/// let opts = MigrateOptions::default()
///     .parallel(4)
///     .on_failure(FailurePolicy::Continue)
///     .lock_timeout(Duration::from_secs(2))
///     .retries(5)
///     .progress(|p| eprintln!("{}/{} ({} failed)", p.done, p.total, p.failed));
/// # let _ = opts;
/// ```
#[derive(Clone)]
pub struct MigrateOptions {
    pub(crate) parallel: usize,
    pub(crate) on_failure: FailurePolicy,
    lock_timeout: Duration,
    retries: u32,
    pub(crate) progress: Option<ProgressFn>,
    pub(crate) waves: Vec<Wave>,
    pub(crate) budget: Option<Budget>,
    pub(crate) pause: Duration,
    pub(crate) check: Option<CheckFn>,
    pub(crate) record: bool,
    snapshot: Option<Duration>,
}

/// One stage of a fleet run in waves (see [`MigrateOptions::waves`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Wave {
    /// These tenants (a canary set), those of them that need work.
    Tenants(Vec<TenantId>),
    /// This share of all the tenants that need work (0 to 100 %, rounded up), from those not
    /// run yet.
    Percent(u8),
    /// Every tenant not run yet.
    Rest,
}

/// How many failures a run in waves tolerates before it starts no further wave (see
/// [`MigrateOptions::failure_budget`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// At most this many failed tenants.
    Count(usize),
    /// At most this share (0.0 to 1.0) of the tenants run so far failed.
    Share(f64),
}

impl Budget {
    /// Whether `failed` failures among `ran` tenants are within the budget.
    pub fn allows(self, failed: usize, ran: usize) -> bool {
        match self {
            Budget::Count(n) => failed <= n,
            Budget::Share(share) => ran == 0 || (failed as f64) <= share * ran as f64,
        }
    }
}

/// Where a run in waves stands at the end of a wave, passed to [`MigrateOptions::check`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WaveEnd {
    /// The wave that just ended (0 for the first).
    pub wave: usize,
    /// How many waves the run has.
    pub waves: usize,
    /// Tenants run so far.
    pub ran: usize,
    /// Tenants failed so far.
    pub failed: usize,
}

/// A check called between two waves: `false` stops the run (see [`MigrateOptions::check`]).
pub type CheckFn = Arc<dyn Fn(&WaveEnd) -> bool + Send + Sync>;

impl Default for MigrateOptions {
    fn default() -> Self {
        Self {
            parallel: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            on_failure: FailurePolicy::Stop,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            retries: DEFAULT_RETRIES,
            progress: None,
            waves: Vec::new(),
            budget: None,
            pause: Duration::ZERO,
            check: None,
            record: true,
            snapshot: None,
        }
    }
}

impl fmt::Debug for MigrateOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MigrateOptions")
            .field("parallel", &self.parallel)
            .field("on_failure", &self.on_failure)
            .field("lock_timeout", &self.lock_timeout)
            .field("retries", &self.retries)
            .field("progress", &self.progress.is_some())
            .field("waves", &self.waves)
            .field("budget", &self.budget)
            .field("pause", &self.pause)
            .field("check", &self.check.is_some())
            .field("record", &self.record)
            .field("snapshot", &self.snapshot)
            .finish()
    }
}

impl MigrateOptions {
    /// Worker threads, each with its own connection (0 is taken as 1). Defaults to the number of
    /// CPUs (at least 1).
    pub fn parallel(mut self, workers: usize) -> Self {
        self.parallel = workers.max(1);
        self
    }

    /// What to do after a tenant fails. Defaults to [`FailurePolicy::Stop`].
    pub fn on_failure(mut self, policy: FailurePolicy) -> Self {
        self.on_failure = policy;
        self
    }

    /// `SET LOCAL lock_timeout` for each tenant's DDL (applying and reverting), so a migration
    /// waiting behind application traffic gives up instead of queueing every query behind it.
    /// Defaults to 5 s.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// How often a tenant whose DDL hit the lock timeout (SQLSTATE 55P03) is retried, with a
    /// short back-off. Defaults to 3.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Called after each tenant that needed work (not for tenants already up to date). Defaults
    /// to none.
    pub fn progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Runs the tenants that need work in stages, each starting only when the failures so far
    /// are within the [`failure_budget`](Self::failure_budget) (and after the
    /// [`pause`](Self::pause) and the [`check`](Self::check)); tenants left over after the last
    /// wave form one more. When a wave spends the budget, no further wave starts: its tenants are
    /// reported as [`TenantOutcome::Skipped`] (not started). Defaults to one stage.
    ///
    /// ```
    /// use diesel_workspace::{Budget, FailurePolicy, MigrateOptions, TenantId, Wave};
    ///
    /// let opts = MigrateOptions::default()
    ///     .on_failure(FailurePolicy::Continue)
    ///     .waves([Wave::Tenants(vec![TenantId::new("canary")?]), Wave::Percent(10), Wave::Rest])
    ///     .failure_budget(Budget::Count(2));
    /// # let _ = opts;
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn waves(mut self, waves: impl IntoIterator<Item = Wave>) -> Self {
        self.waves = waves.into_iter().collect();
        self
    }

    /// The failures a run in [`waves`](Self::waves) tolerates before it starts no further wave.
    /// Defaults to none (every wave starts).
    pub fn failure_budget(mut self, budget: Budget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// How long to wait between two waves. Defaults to none.
    pub fn pause(mut self, pause: Duration) -> Self {
        self.pause = pause;
        self
    }

    /// Called between two waves (after the pause); `false` stops the run as a spent budget
    /// does. Defaults to none.
    pub fn check(mut self, f: impl Fn(&WaveEnd) -> bool + Send + Sync + 'static) -> Self {
        self.check = Some(Arc::new(f));
        self
    }

    /// Whether `migrate_all` and the selected runs keep a record of the run in the library's
    /// tables (see [`Migrator::runs`](crate::Migrator::runs)). Defaults to `true`.
    pub fn record(mut self, record: bool) -> Self {
        self.record = record;
        self
    }

    /// Keeps a snapshot of each tenant the call migrates, taken in the transaction that applies
    /// its first pending migration (so no tenant is changed without its snapshot) and kept for
    /// `retain` ([`DEFAULT_SNAPSHOT_RETENTION`] is 7 days): a schema `_snap_<hex>` holding a
    /// copy of its tables, recorded with its versions, row counts, checksums and size (see
    /// [`Migrator::snapshots`](crate::Migrator::snapshots),
    /// [`Migrator::restore_snapshot`](crate::Migrator::restore_snapshot) and
    /// [`Migrator::prune_snapshots`](crate::Migrator::prune_snapshots)). Tenants with nothing
    /// pending get none. Applies to migrating only (not to reverting). Defaults to no snapshot.
    ///
    /// ```
    /// use std::time::Duration;
    /// use diesel_workspace::MigrateOptions;
    ///
    /// let opts = MigrateOptions::default().snapshot(Duration::from_secs(3 * 24 * 3600));
    /// # let _ = opts;
    /// ```
    pub fn snapshot(mut self, retain: Duration) -> Self {
        self.snapshot = Some(retain);
        self
    }

    pub(crate) fn params(&self) -> MigrateParams {
        MigrateParams {
            lock_timeout: self.lock_timeout,
            retries: self.retries,
            spare: false,
            snapshot: self.snapshot,
        }
    }
}

/// Where a fleet operation is, passed to [`MigrateOptions::progress`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Progress {
    /// Tenants finished so far (of those that needed work).
    pub done: usize,
    /// Tenants that need work in this run.
    pub total: usize,
    /// Tenants failed so far.
    pub failed: usize,
    /// Time since the operation started.
    pub elapsed: Duration,
    /// The tenant just finished.
    pub tenant: TenantId,
    /// What happened to it.
    pub outcome: TenantOutcome,
}

/// What [`Migrator::clone_tenant`](crate::Migrator::clone_tenant) copies from its template
/// besides the tables, their indexes and constraints, and the ledger (always copied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CloneData {
    /// Empty tables, sequences at their start.
    SchemaOnly,
    /// Every row of every table, and each sequence set where the template's stands (past the
    /// copied rows).
    #[default]
    WithData,
}
