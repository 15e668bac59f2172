//! Metrics through the [`metrics`](https://docs.rs/metrics) facade (feature `metrics`): the
//! library records, the application picks the exporter (Prometheus, StatsD, ...) by installing a
//! recorder. Without a recorder every call is a no-op.
//!
//! | name | kind | labels | recorded |
//! | --- | --- | --- | --- |
//! | `workspace_diesel_queries_total` | counter | `tenant`, `outcome` (`ok`, `error`) | each query a connection with [`query_instrumentation`] finishes |
//! | `workspace_diesel_pool_connections` | gauge | `pool`, `state` (`in_use`, `idle`) | [`record_pool_state`] |
//! | `workspace_diesel_migration_duration_seconds` | histogram | `scope` (`tenant`, `fleet`), `outcome` | each tenant migrated or reverted, alone (`migrate_tenant`, the reverts) or by a worker of a fleet run |
//! | `workspace_diesel_fleet_tenants_total` | counter | `outcome` (`applied`, `up_to_date`, `failed`, `skipped`) | each tenant a fleet run finishes: a run's progress |
//!
//! **Label cardinality.** A `tenant` label makes one series per tenant. The first
//! [`tenant_label_limit`] tenants seen (1,000 unless [`set_tenant_label_limit`] says otherwise)
//! get their own value; every later one is counted under `_other`, and work outside any tenant
//! under `_none`. `set_tenant_label_limit(0)` puts every tenant under `_other`.
//!
//! ```no_run
//! # #[cfg(feature = "r2d2")] {
//! use diesel_workspace::metrics::{query_instrumentation, record_pool_state, set_tenant_label_limit};
//!
//! set_tenant_label_limit(200);
//! let pool = diesel_workspace::pool::builder()
//!     .instrumentation(|| Some(query_instrumentation()))
//!     .build("postgres://localhost/app")?;
//! // Before each scrape (or on a timer):
//! record_pool_state("app", &pool);
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use diesel::connection::{Instrumentation, InstrumentationEvent};

use crate::context::with_current;
use crate::report::TenantOutcome;

/// The label of tenants past the limit.
pub const OTHER_TENANTS: &str = "_other";
/// The label of work outside any tenant.
pub const NO_TENANT: &str = "_none";

static LIMIT: AtomicUsize = AtomicUsize::new(1_000);

fn seen() -> &'static Mutex<HashSet<String>> {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

/// How many distinct tenants get a `tenant` label of their own (see the module docs).
///
/// ```
/// diesel_workspace::metrics::set_tenant_label_limit(50);
/// assert_eq!(diesel_workspace::metrics::tenant_label_limit(), 50);
/// ```
pub fn set_tenant_label_limit(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
}

/// The current limit of distinct `tenant` label values.
///
/// ```
/// assert!(diesel_workspace::metrics::tenant_label_limit() <= 1_000);
/// ```
pub fn tenant_label_limit() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// The `tenant` label value for `tenant`: its name while within the limit, else `_other`;
/// `_none` for no tenant.
///
/// ```
/// use diesel_workspace::metrics::{tenant_label, NO_TENANT};
/// assert_eq!(tenant_label(None), NO_TENANT);
/// ```
pub fn tenant_label(tenant: Option<&str>) -> String {
    let Some(tenant) = tenant else {
        return NO_TENANT.to_owned();
    };
    let mut seen = seen().lock().unwrap_or_else(|e| e.into_inner());
    if seen.contains(tenant) {
        return tenant.to_owned();
    }
    if seen.len() < tenant_label_limit() {
        seen.insert(tenant.to_owned());
        return tenant.to_owned();
    }
    OTHER_TENANTS.to_owned()
}

/// A Diesel [`Instrumentation`] counting each finished query under the active tenant
/// (`workspace_diesel_queries_total`); for [`TenantPoolBuilder::instrumentation`] or
/// [`Connection::set_instrumentation`](diesel::Connection::set_instrumentation).
///
/// [`TenantPoolBuilder::instrumentation`]: crate::pool::TenantPoolBuilder::instrumentation
///
/// ```
/// let _counting = diesel_workspace::metrics::query_instrumentation();
/// ```
pub fn query_instrumentation() -> Box<dyn Instrumentation> {
    Box::new(QueryCounter)
}

struct QueryCounter;

impl Instrumentation for QueryCounter {
    fn on_connection_event(&mut self, event: InstrumentationEvent<'_>) {
        if let InstrumentationEvent::FinishQuery { error, .. } = event {
            let tenant = with_current(|t| tenant_label(t.map(|t| t.as_str())));
            let outcome = if error.is_some() { "error" } else { "ok" };
            metrics::counter!("workspace_diesel_queries_total", "tenant" => tenant, "outcome" => outcome)
                .increment(1);
        }
    }
}

/// Sets `workspace_diesel_pool_connections{pool, state}` from the pool's state: connections
/// checked out (`in_use`) and waiting in the pool (`idle`).
///
/// ```no_run
/// let pool = diesel_workspace::pool::builder().build("postgres://localhost/app")?;
/// diesel_workspace::metrics::record_pool_state("app", &pool);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[cfg(feature = "r2d2")]
pub fn record_pool_state(pool_name: &str, pool: &crate::pool::TenantPool) {
    let state = pool.state();
    let idle = state.idle_connections;
    let in_use = state.connections.saturating_sub(idle);
    let name = pool_name.to_owned();
    metrics::gauge!("workspace_diesel_pool_connections", "pool" => name.clone(), "state" => "in_use")
        .set(f64::from(in_use));
    metrics::gauge!("workspace_diesel_pool_connections", "pool" => name, "state" => "idle")
        .set(f64::from(idle));
}

/// The `outcome` label of a tenant's outcome.
fn outcome_label(outcome: &TenantOutcome) -> &'static str {
    match outcome {
        TenantOutcome::Applied(_) => "applied",
        TenantOutcome::UpToDate => "up_to_date",
        TenantOutcome::Failed { .. } => "failed",
        TenantOutcome::Skipped => "skipped",
    }
}

/// One tenant of a fleet run finished: its duration and the run's progress.
pub(crate) fn fleet_tenant(outcome: &TenantOutcome, took: Duration) {
    let outcome = outcome_label(outcome);
    metrics::histogram!("workspace_diesel_migration_duration_seconds", "scope" => "fleet", "outcome" => outcome)
        .record(took.as_secs_f64());
    metrics::counter!("workspace_diesel_fleet_tenants_total", "outcome" => outcome).increment(1);
}

/// One tenant of a fleet run that no worker ran (up to date without a job, or not started): the
/// run's progress only.
pub(crate) fn fleet_tenant_not_run(outcome: &TenantOutcome) {
    metrics::counter!("workspace_diesel_fleet_tenants_total", "outcome" => outcome_label(outcome))
        .increment(1);
}

/// One tenant migrated or reverted alone, `ok` or not.
pub(crate) fn tenant_migration(ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "failed" };
    metrics::histogram!("workspace_diesel_migration_duration_seconds", "scope" => "tenant", "outcome" => outcome)
        .record(took.as_secs_f64());
}
