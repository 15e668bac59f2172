//! The library's `tracing` instrumentation: the spans of its operations and the event that closes
//! each one, with the outcome and the duration (`elapsed_ms`) recorded on the span. The names and
//! fields are listed in the repository's tracing guide (`docs/tracing.md`). Nothing here runs on
//! the `switch` path.

use std::cell::RefCell;
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::report::{MigrationReport, TenantOutcome};

/// How many operation spans of one thread may be timed at once (an operation refused before its
/// closing event leaves its start behind; the oldest is forgotten past this).
const TIMED: usize = 32;

thread_local! {
    /// The start of each open operation span of this thread, by span id.
    static STARTS: RefCell<Vec<(tracing::Id, Instant)>> = const { RefCell::new(Vec::new()) };
}

/// Notes when `span` started (only a span some subscriber records has an id: without one,
/// nothing is kept).
pub(crate) fn started(span: tracing::Span) -> tracing::Span {
    if let Some(id) = span.id() {
        STARTS.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() >= TIMED {
                s.remove(0);
            }
            s.push((id, Instant::now()));
        });
    }
    span
}

/// How long ago `span` started, forgetting it.
fn elapsed(span: &tracing::Span) -> Option<Duration> {
    let id = span.id()?;
    STARTS.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().rposition(|(x, _)| *x == id)?;
        Some(s.remove(i).1.elapsed())
    })
}

/// Records `elapsed_ms` on `span`.
pub(crate) fn record_elapsed(span: &tracing::Span, took: Duration) {
    span.record(
        "elapsed_ms",
        u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
    );
}

/// An info span for one library operation, with the caller's fields plus `applied`, `error` and
/// `elapsed_ms`, filled in by [`finish`] / [`finish_with`].
macro_rules! op_span {
    ($name:literal $(, $($fields:tt)+)?) => {
        crate::trace::started(::tracing::info_span!(
            $name,
            $($($fields)+,)?
            applied = ::tracing::field::Empty,
            error = ::tracing::field::Empty,
            elapsed_ms = ::tracing::field::Empty
        ))
    };
}
pub(crate) use op_span;

/// An info span for a fleet run: `tenants`, `applied`, `up_to_date`, `failed` and `elapsed_ms`,
/// filled in by [`finish_fleet`].
macro_rules! fleet_span {
    ($name:literal) => {
        ::tracing::info_span!(
            $name,
            tenants = ::tracing::field::Empty,
            applied = ::tracing::field::Empty,
            up_to_date = ::tracing::field::Empty,
            failed = ::tracing::field::Empty,
            elapsed_ms = ::tracing::field::Empty
        )
    };
}
pub(crate) use fleet_span;

/// The span of one tenant of a fleet run, a child of the run's span (`run`, captured on the
/// caller's thread) although it lives on a worker thread.
macro_rules! fleet_tenant_span {
    ($run:expr, $tenant:expr) => {
        ::tracing::info_span!(
            parent: $run,
            "fleet.tenant",
            tenant = %$tenant,
            applied = ::tracing::field::Empty,
            sqlstate = ::tracing::field::Empty,
            error = ::tracing::field::Empty,
            elapsed_ms = ::tracing::field::Empty
        )
    };
}
pub(crate) use fleet_tenant_span;

/// [`finish_with`] for an operation with no count to record.
pub(crate) fn finish<T>(result: Result<T>) -> Result<T> {
    finish_with(result, |_| None)
}

/// Records how the operation of the current span ended (`applied` from `applied` on success,
/// `error` on failure) and emits its closing info event, `done` or `failed`.
pub(crate) fn finish_with<T>(
    result: Result<T>,
    applied: impl FnOnce(&T) -> Option<usize>,
) -> Result<T> {
    let span = tracing::Span::current();
    if let Some(took) = elapsed(&span) {
        record_elapsed(&span, took);
    }
    match &result {
        Ok(value) => {
            if let Some(n) = applied(value) {
                span.record("applied", n);
            }
            tracing::info!("done");
        }
        Err(e) => {
            span.record("error", tracing::field::display(e));
            tracing::info!("failed");
        }
    }
    result
}

/// Records one tenant's outcome and duration on the current `fleet.tenant` span and emits its
/// closing event.
pub(crate) fn finish_tenant(outcome: &TenantOutcome, took: Duration) {
    let span = tracing::Span::current();
    record_elapsed(&span, took);
    match outcome {
        TenantOutcome::Applied(versions) => {
            span.record("applied", versions.len());
            tracing::info!("done");
        }
        TenantOutcome::UpToDate => tracing::info!("up to date"),
        TenantOutcome::Failed { sqlstate, message } => {
            if let Some(code) = sqlstate {
                span.record("sqlstate", code.as_str());
            }
            span.record("error", message.as_str());
            tracing::info!("failed");
        }
        TenantOutcome::Skipped => tracing::info!("skipped"),
    }
}

/// Records a fleet run's counts on the current fleet span and emits its closing event.
pub(crate) fn finish_fleet(report: &MigrationReport) {
    let span = tracing::Span::current();
    span.record("tenants", report.tenants.len());
    span.record("applied", report.applied().count());
    span.record("up_to_date", report.up_to_date().count());
    span.record("failed", report.failed().count());
    record_elapsed(&span, report.elapsed);
    if report.is_success() {
        tracing::info!("done");
    } else {
        tracing::info!("failed");
    }
}
