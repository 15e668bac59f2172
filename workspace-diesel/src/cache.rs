//! A cache whose keys belong to the active tenant ([`TenantCache`], on moka), and the registry
//! listener that empties a tenant's entries in every process when the tenant changes
//! ([`listen_registry`]).

use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use diesel::prelude::*;

use crate::context::current;
use crate::error::{Error, NoActiveTenant, Result};
use crate::tenant::TenantId;

/// The notification channel the registry's notify trigger sends on: one notification naming
/// the tenant for every inserted, updated (the old and the new name on a rename) and deleted
/// registry row, and `''` on `TRUNCATE`. The trigger's SQL is the registry's
/// ([`Registry::notify_trigger_sql`](crate::registry::Registry::notify_trigger_sql) with this
/// channel); the web crate (`workspace-diesel-axum`) installs it (`install_notify_trigger`) and
/// listens on the same channel.
pub const NOTIFY_CHANNEL: &str = "workspace_diesel_registry";

/// How often the listener thread reads its connection's notifications.
const TICK: Duration = Duration::from_millis(50);

/// What a registry notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryChange {
    /// One tenant's row was inserted, updated (state, rename: both names are notified) or
    /// deleted.
    Tenant(TenantId),
    /// Anything may have changed: the table was truncated, a notification named no valid
    /// tenant, or the listener lost its connection (notifications may have been missed).
    All,
}

/// Starts a thread that `LISTEN`s on [`NOTIFY_CHANNEL`] on a connection of its own and calls
/// `on_change` for each notification, every 50 ms. When the connection is lost it calls
/// `on_change(RegistryChange::All)` and reconnects (every 500 ms). The thread stops when the
/// returned [`RegistryListener`] is dropped.
///
/// Needs the registry's notify trigger (see [`NOTIFY_CHANNEL`]) and a direct
/// or session-pooled connection: behind a transaction pooler, `LISTEN` does not deliver.
///
/// # Errors
/// [`Error::Connection`] or [`Error::Query`] when the first connection or its `LISTEN` fails.
///
/// # Panics
/// When the operating system cannot start a thread (as `std::thread::spawn`).
pub fn listen_registry(
    database_url: &str,
    on_change: impl Fn(RegistryChange) + Send + 'static,
) -> Result<RegistryListener> {
    let conn = listen_connection(database_url)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let url = database_url.to_owned();
    let thread = std::thread::Builder::new()
        .name("workspace-registry-listener".into())
        .spawn(move || listen_loop(conn, &url, &on_change, &thread_stop))
        .expect("start the registry listener thread");
    Ok(RegistryListener {
        stop,
        thread: Some(thread),
    })
}

fn listen_connection(url: &str) -> Result<PgConnection> {
    let mut conn = PgConnection::establish(url)?;
    diesel::sql_query(format!("LISTEN {NOTIFY_CHANNEL}"))
        .execute(&mut conn)
        .map_err(Error::Query)?;
    Ok(conn)
}

fn listen_loop(
    mut conn: PgConnection,
    url: &str,
    on_change: &dyn Fn(RegistryChange),
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Acquire) {
        let mut lost = false;
        for n in conn.notifications_iter() {
            match n {
                Ok(n) => on_change(match TenantId::new(&n.payload) {
                    Ok(tenant) => RegistryChange::Tenant(tenant),
                    Err(_) => RegistryChange::All,
                }),
                Err(e) => {
                    tracing::warn!(error = %e, "registry listener lost its connection");
                    lost = true;
                    break;
                }
            }
        }
        if lost {
            on_change(RegistryChange::All);
            loop {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
                if let Ok(c) = listen_connection(url) {
                    conn = c;
                    break;
                }
            }
            // Anything may have changed while the connection was down.
            on_change(RegistryChange::All);
        }
        std::thread::sleep(TICK);
    }
}

/// The thread of [`listen_registry`] (or [`TenantCache::listen`]); dropping it stops the thread.
#[derive(Debug)]
pub struct RegistryListener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RegistryListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A concurrent cache (moka's) whose keys belong to the tenant active when they are used: the
/// same key under two tenants is two entries, and every call outside a [`switch`](crate::switch)
/// fails with [`NoActiveTenant`] (there is no shared or default tenant to fall back to).
///
/// A tenant's entries go away with [`invalidate_tenant`](Self::invalidate_tenant), and, in every
/// process running [`listen`](Self::listen), when the tenant's registry row changes (dropped,
/// renamed, suspended, archived: any change of the row).
///
/// ```
/// use diesel_workspace::cache::TenantCache;
/// use diesel_workspace::{switch, TenantId};
///
/// let cache: TenantCache<&str, u32> = TenantCache::new(10_000);
/// let (acme, globex) = (TenantId::new("acme")?, TenantId::new("globex")?);
/// switch(&acme, || cache.insert("plan", 1))?;
/// switch(&globex, || cache.insert("plan", 2))?;
/// assert_eq!(switch(&acme, || cache.get(&"plan"))?, Some(1));
/// assert_eq!(switch(&globex, || cache.get(&"plan"))?, Some(2));
/// assert!(cache.get(&"plan").is_err()); // no tenant: an error, never another tenant's value
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct TenantCache<K, V> {
    inner: Inner<K, V>,
}

/// The moka cache under a [`TenantCache`]: keys are `(tenant, key)`.
type Inner<K, V> = moka::sync::Cache<(TenantId, K), V>;

impl<K, V> std::fmt::Debug for TenantCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantCache")
            .field("entries", &self.inner.entry_count())
            .finish_non_exhaustive()
    }
}

impl<K, V> TenantCache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A cache of at most `max_entries` entries (all tenants together), evicted by moka's
    /// TinyLFU policy.
    pub fn new(max_entries: u64) -> Self {
        Self::from_builder(moka::sync::Cache::builder().max_capacity(max_entries))
    }

    /// A cache from moka's builder (capacity, time to live, time to idle, eviction listener...),
    /// with the invalidation by tenant turned on.
    pub fn from_builder(builder: moka::sync::CacheBuilder<(TenantId, K), V, Inner<K, V>>) -> Self {
        Self {
            inner: builder.support_invalidation_closures().build(),
        }
    }

    fn tenant() -> std::result::Result<TenantId, NoActiveTenant> {
        current().ok_or_else(NoActiveTenant::operation)
    }

    /// The active tenant's value for `key`.
    ///
    /// # Errors
    /// [`NoActiveTenant`] outside any switch.
    pub fn get(&self, key: &K) -> std::result::Result<Option<V>, NoActiveTenant>
    where
        K: Clone,
    {
        let tenant = Self::tenant()?;
        Ok(self.inner.get(&(tenant, key.clone())))
    }

    /// Stores `value` for `key` in the active tenant.
    ///
    /// # Errors
    /// [`NoActiveTenant`] outside any switch.
    pub fn insert(&self, key: K, value: V) -> std::result::Result<(), NoActiveTenant> {
        let tenant = Self::tenant()?;
        self.inner.insert((tenant, key), value);
        Ok(())
    }

    /// The active tenant's value for `key`, computed by `init` (once, however many threads ask
    /// at the same time) when it is missing.
    ///
    /// # Errors
    /// [`NoActiveTenant`] outside any switch.
    pub fn get_with(
        &self,
        key: K,
        init: impl FnOnce() -> V,
    ) -> std::result::Result<V, NoActiveTenant> {
        let tenant = Self::tenant()?;
        Ok(self.inner.get_with((tenant, key), init))
    }

    /// Removes the active tenant's entry for `key`.
    ///
    /// # Errors
    /// [`NoActiveTenant`] outside any switch.
    pub fn invalidate(&self, key: &K) -> std::result::Result<(), NoActiveTenant>
    where
        K: Clone,
    {
        let tenant = Self::tenant()?;
        self.inner.invalidate(&(tenant, key.clone()));
        Ok(())
    }

    /// Removes every entry of `tenant` (whatever tenant is active): none of them is returned
    /// after this call.
    pub fn invalidate_tenant(&self, tenant: &TenantId) {
        let tenant = tenant.clone();
        // Only fails when the closures are not enabled, which `from_builder` always does.
        let _ = self
            .inner
            .invalidate_entries_if(move |(owner, _), _| *owner == tenant);
    }

    /// Removes every entry of every tenant.
    pub fn invalidate_all(&self) {
        self.inner.invalidate_all();
    }

    /// How many entries `tenant` holds (counts every entry: for tests and metrics).
    pub fn tenant_entries(&self, tenant: &TenantId) -> usize {
        self.inner.run_pending_tasks();
        self.inner.iter().filter(|(k, _)| k.0 == *tenant).count()
    }

    /// Empties a tenant's entries whenever its registry row changes in any process: a
    /// [`listen_registry`] thread that calls [`invalidate_tenant`](Self::invalidate_tenant) for
    /// each notified tenant and [`invalidate_all`](Self::invalidate_all) when it may have missed
    /// some. Entries of a changed tenant stop being returned within the listener's 50 ms tick
    /// after the change commits. The listener holds the cache weakly.
    ///
    /// # Errors
    /// As [`listen_registry`].
    pub fn listen(self: &Arc<Self>, database_url: &str) -> Result<RegistryListener> {
        let cache: Weak<Self> = Arc::downgrade(self);
        listen_registry(database_url, move |change| {
            if let Some(cache) = cache.upgrade() {
                match change {
                    RegistryChange::Tenant(tenant) => cache.invalidate_tenant(&tenant),
                    RegistryChange::All => cache.invalidate_all(),
                }
            }
        })
    }
}
