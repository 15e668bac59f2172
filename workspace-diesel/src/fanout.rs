//! Reading across tenants from the application: one query run in each selected tenant, a
//! bounded number at a time, every row labelled with its tenant and every tenant that failed
//! reported ([`fan_out`], [`FanOut`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use diesel::prelude::*;

use crate::connection::TenantConnectionExt;
use crate::error::Error;
use crate::pool::TenantPool;
use crate::registry::model::{LifecycleState, Registry};
use crate::tenant::TenantId;

/// What a [`fan_out`] returned: the rows of the tenants that answered, each with its tenant,
/// and the tenants that did not, each with its error. A result with failures is partial, and
/// says so: [`is_partial`](Self::is_partial), and [`complete`](Self::complete) refuses it.
#[derive(Debug)]
#[must_use = "a fan-out's failures are part of its result"]
pub struct FanOut<R> {
    /// `(tenant, row)` for every row of every tenant that answered, in the order of the
    /// tenants given (and each tenant's rows in the order its query returned them).
    pub rows: Vec<(TenantId, R)>,
    /// Every tenant whose query failed (or that could get no connection), with the error; its
    /// rows are not in [`rows`](Self::rows) (its transaction was rolled back).
    pub failed: Vec<(TenantId, Error)>,
    /// How many tenants answered.
    pub answered: usize,
}

impl<R> FanOut<R> {
    /// Whether some tenant failed, so that [`rows`](Self::rows) holds only part of the answer.
    pub fn is_partial(&self) -> bool {
        !self.failed.is_empty()
    }

    /// The rows, when every tenant answered.
    ///
    /// # Errors
    /// [`PartialFanOut`] with the whole result when one failed.
    pub fn complete(self) -> Result<Vec<(TenantId, R)>, PartialFanOut<R>> {
        if self.failed.is_empty() {
            Ok(self.rows)
        } else {
            Err(PartialFanOut(self))
        }
    }
}

/// A [`FanOut`] that some tenants did not answer: the error of [`FanOut::complete`], holding the
/// whole result.
#[derive(Debug)]
pub struct PartialFanOut<R>(pub FanOut<R>);

impl<R> std::fmt::Display for PartialFanOut<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let failed = &self.0.failed;
        write!(
            f,
            "{} of {} tenants failed (first: `{}`)",
            failed.len(),
            failed.len() + self.0.answered,
            failed.first().map_or("", |(t, _)| t.as_str())
        )
    }
}

impl<R: std::fmt::Debug> std::error::Error for PartialFanOut<R> {}

/// Runs `query` in each of `tenants` (a tenant transaction each, with the tenant active, so
/// tenant tables and raw SQL reach it), at most `parallel` at a time, each worker on one
/// connection from `pool`; returns every row with its tenant and every failure with its tenant.
///
/// A tenant that fails (dropped meanwhile, a statement error, no connection) does not stop the
/// others, and is reported in [`FanOut::failed`]. Selecting the tenants is the caller's: a list,
/// or [`active_tenants`] (the registry's `active` ones). Cost: one transaction per tenant, so
/// `tenants / parallel` round-trip sequences; against one query over the reporting views of
/// the `reporting` module, it costs more per tenant but plans nothing large.
///
/// ```no_run
/// use diesel::prelude::*;
/// use diesel::sql_types::BigInt;
/// use diesel_workspace::fanout::{active_tenants, fan_out};
///
/// # fn run(pool: &diesel_workspace::pool::TenantPool) -> Result<(), Box<dyn std::error::Error>> {
/// #[derive(QueryableByName, Debug)]
/// struct Count {
///     #[diesel(sql_type = BigInt)]
///     n: i64,
/// }
/// let mut conn = pool.get()?;
/// let tenants = active_tenants(&mut conn)?;
/// let counts = fan_out(pool, &tenants, 4, |conn| {
///     diesel::sql_query("SELECT count(*) AS n FROM notes").load::<Count>(conn)
/// });
/// for (tenant, error) in &counts.failed {
///     eprintln!("{tenant}: {error}");
/// }
/// let total: i64 = counts.complete()?.iter().map(|(_, c)| c.n).sum();
/// # Ok(())
/// # }
/// ```
pub fn fan_out<R, F>(
    pool: &TenantPool,
    tenants: &[TenantId],
    parallel: usize,
    query: F,
) -> FanOut<R>
where
    R: Send,
    F: Fn(&mut PgConnection) -> QueryResult<Vec<R>> + Sync,
{
    let next = AtomicUsize::new(0);
    let results: Results<R> = Mutex::new((0..tenants.len()).map(|_| None).collect());
    let workers = parallel.clamp(1, tenants.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                let mut conn = None;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(tenant) = tenants.get(i) else {
                        return;
                    };
                    if conn.is_none() {
                        conn = pool
                            .get()
                            .map_err(Error::Pool)
                            .map(Some)
                            .unwrap_or_else(|e| {
                                store(&results, i, Err(e));
                                None
                            });
                        if conn.is_none() {
                            continue;
                        }
                    }
                    let c = conn.as_mut().expect("a connection");
                    let result = c.transaction_in(tenant, |c| query(c)).map_err(Error::from);
                    if matches!(
                        &result,
                        Err(Error::Query(diesel::result::Error::DatabaseError(
                            diesel::result::DatabaseErrorKind::ClosedConnection,
                            _
                        )))
                    ) {
                        conn = None;
                    }
                    store(&results, i, result);
                }
            });
        }
    });
    let mut out = FanOut {
        rows: Vec::new(),
        failed: Vec::new(),
        answered: 0,
    };
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    for (tenant, result) in tenants.iter().zip(results) {
        match result.expect("every tenant was run") {
            Ok(rows) => {
                out.answered += 1;
                out.rows
                    .extend(rows.into_iter().map(|r| (tenant.clone(), r)));
            }
            Err(e) => out.failed.push((tenant.clone(), e)),
        }
    }
    out
}

/// Each tenant's outcome, by its index in the list, once run.
type Results<R> = Mutex<Vec<Option<Result<Vec<R>, Error>>>>;

fn store<R>(results: &Results<R>, i: usize, r: Result<Vec<R>, Error>) {
    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
}

/// The tenants of the built-in registry whose state is `active`, sorted: what a report over
/// "every tenant" usually means (suspended and archived tenants left out).
///
/// # Errors
/// [`Error::Query`] when the registry cannot be read.
pub fn active_tenants(conn: &mut PgConnection) -> Result<Vec<TenantId>, Error> {
    let mut tenants: Vec<TenantId> = Registry::default()
        .lifecycle_states(conn)?
        .into_iter()
        .filter(|(_, state)| *state == LifecycleState::Active)
        .map(|(tenant, _)| tenant)
        .collect();
    tenants.sort();
    Ok(tenants)
}
