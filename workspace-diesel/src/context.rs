//! The active tenant: a scoped thread-local, and helpers that carry it across threads and `.await`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use crate::tenant::TenantId;

scoped_tls::scoped_thread_local!(static ACTIVE: TenantId);

/// Makes `tenant` the active tenant for the duration of `f`, then restores the previous one.
///
/// Queries on [tenant tables](crate::tenant_table) built and run inside `f` go to `tenant`'s
/// schema. Switches nest: an inner switch shadows the outer one until it returns. The previous
/// tenant is restored even when `f` panics.
///
/// The tenant lives in a thread-local: it does not follow work to other threads or across an
/// `.await` on its own. Use [`spawn`], [`bind`] and [`TenantFuture`] for that.
///
/// ```
/// use diesel_workspace::{current, switch, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let globex = TenantId::new("globex")?;
/// assert_eq!(current(), None);
/// switch(&acme, || {
///     assert_eq!(current().as_ref(), Some(&acme));
///     switch(&globex, || assert_eq!(current().as_ref(), Some(&globex)));
///     assert_eq!(current().as_ref(), Some(&acme));
/// });
/// assert_eq!(current(), None);
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn switch<R>(tenant: &TenantId, f: impl FnOnce() -> R) -> R {
    if HAS_LISTENERS.load(Ordering::Acquire) {
        notify(tenant);
    }
    ACTIVE.set(tenant, f)
}

/// The active tenant, if any (a cheap clone).
///
/// ```
/// assert_eq!(diesel_workspace::current(), None);
/// ```
pub fn current() -> Option<TenantId> {
    with_current(|t| t.cloned())
}

/// Calls `f` with the active tenant, without cloning it.
///
/// ```
/// let name = diesel_workspace::with_current(|t| t.map(|t| t.as_str().len()));
/// assert_eq!(name, None);
/// ```
pub fn with_current<R>(f: impl FnOnce(Option<&TenantId>) -> R) -> R {
    if ACTIVE.is_set() {
        ACTIVE.with(|t| f(Some(t)))
    } else {
        f(None)
    }
}

/// A function called on every [`switch`], before the closure runs.
pub type SwitchListener = Arc<dyn Fn(&TenantId) + Send + Sync>;

static HAS_LISTENERS: AtomicBool = AtomicBool::new(false);
static LISTENERS: RwLock<Vec<SwitchListener>> = RwLock::new(Vec::new());

/// Registers `listener` to be called, process-wide, each time a tenant is switched to (the
/// counterpart of a "tenant switched" signal: logging, metrics, tracing fields).
///
/// Listeners run on the switching thread before the closure; keep them short. A process without
/// listeners pays one atomic load per switch.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::sync::Arc;
/// use diesel_workspace::{on_switch, switch, TenantId};
///
/// let seen = Arc::new(AtomicUsize::new(0));
/// let counter = Arc::clone(&seen);
/// on_switch(move |tenant: &TenantId| {
///     if tenant.as_str() == "listened" {
///         counter.fetch_add(1, Ordering::Relaxed);
///     }
/// });
/// switch(&TenantId::new("listened")?, || ());
/// assert_eq!(seen.load(Ordering::Relaxed), 1);
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn on_switch(listener: impl Fn(&TenantId) + Send + Sync + 'static) {
    let mut listeners = LISTENERS.write().unwrap_or_else(|e| e.into_inner());
    listeners.push(Arc::new(listener));
    HAS_LISTENERS.store(true, Ordering::Release);
}

fn notify(tenant: &TenantId) {
    let listeners = LISTENERS.read().unwrap_or_else(|e| e.into_inner()).clone();
    for listener in listeners {
        listener(tenant);
    }
}

/// Runs `f` under `tenant` if there is one, as is otherwise.
fn enter<R>(tenant: Option<&TenantId>, f: impl FnOnce() -> R) -> R {
    match tenant {
        Some(t) => switch(t, f),
        None => f(),
    }
}

/// Wraps `f` so that it runs under the tenant active *now*, wherever it is called later.
///
/// This is the building block for thread pools and executors (rayon's `spawn`/`join`, a
/// `ThreadPool::execute`, a callback queue). When no tenant is active now, `f` runs with none.
///
/// ```
/// use diesel_workspace::{bind, current, switch, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let job = switch(&acme, || bind(|| current()));
/// // Runs on another thread, still in `acme`.
/// let seen = std::thread::spawn(job).join().unwrap();
/// assert_eq!(seen, Some(acme));
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn bind<R>(f: impl FnOnce() -> R) -> impl FnOnce() -> R {
    let tenant = current();
    move || enter(tenant.as_ref(), f)
}

/// Like [`bind`] for a closure called many times, such as the `map` of a parallel iterator.
///
/// ```
/// use diesel_workspace::{bind_fn, current, switch, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let f = switch(&acme, || bind_fn(|x: u32| (x, current())));
/// let handles: Vec<_> = (0..2)
///     .map(|i| {
///         let f = f.clone();
///         std::thread::spawn(move || f(i))
///     })
///     .collect();
/// for h in handles {
///     assert_eq!(h.join().unwrap().1, Some(acme.clone()));
/// }
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn bind_fn<A, R>(f: impl Fn(A) -> R + Clone) -> impl Fn(A) -> R + Clone {
    let tenant = current();
    move |a| enter(tenant.as_ref(), || f(a))
}

/// [`std::thread::spawn`], with the new thread running under the tenant active now.
///
/// A plain `std::thread::spawn` starts with no tenant, so tenant queries there fail closed.
///
/// ```
/// use diesel_workspace::{current, spawn, switch, TenantId};
///
/// let acme = TenantId::new("acme")?;
/// let handle = switch(&acme, || spawn(current));
/// assert_eq!(handle.join().unwrap(), Some(acme));
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
pub fn spawn<F, R>(f: F) -> std::thread::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    std::thread::spawn(bind(f))
}

pin_project_lite::pin_project! {
    /// A future that runs every poll of the inner future under one tenant.
    ///
    /// Thread-locals do not survive an `.await`: a task may resume on another worker thread, and
    /// other tasks run on this one in between. `TenantFuture` re-enters its tenant around each
    /// `poll`, the way `tracing::Instrumented` re-enters its span. Build one with
    /// [`TenantFuture::new`] or [`TenantFuture::current`].
    ///
    /// ```
    /// use diesel_workspace::{current, TenantFuture, TenantId};
    ///
    /// let acme = TenantId::new("acme")?;
    /// let fut = TenantFuture::new(acme.clone(), async { current() });
    /// assert_eq!(futures_executor::block_on(fut), Some(acme));
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    #[must_use = "futures do nothing unless polled"]
    pub struct TenantFuture<F> {
        tenant: Option<TenantId>,
        #[pin]
        inner: F,
    }
}

impl<F> TenantFuture<F> {
    /// Runs `inner` under `tenant`.
    pub fn new(tenant: TenantId, inner: F) -> Self {
        Self {
            tenant: Some(tenant),
            inner,
        }
    }

    /// Runs `inner` under the tenant active now (or none, if none is).
    pub fn current(inner: F) -> Self {
        Self {
            tenant: current(),
            inner,
        }
    }

    /// The tenant the future runs under.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }
}

impl<F: Future> Future for TenantFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        enter(this.tenant.as_ref(), || inner.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_restores_outer_tenant() {
        let a = TenantId::new("a").unwrap();
        let b = TenantId::new("b").unwrap();
        switch(&a, || {
            let r = std::panic::catch_unwind(|| switch(&b, || panic!("boom")));
            assert!(r.is_err());
            assert_eq!(current().as_ref(), Some(&a));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn plain_thread_sees_no_tenant() {
        let a = TenantId::new("a").unwrap();
        let seen = switch(&a, || std::thread::spawn(current).join().unwrap());
        assert_eq!(seen, None);
    }
}
