//! The registry check's cache: tenant states by name, bounded in size and age.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_workspace::registry::{LifecycleState, Registry, TenantRecord};
use diesel_workspace::TenantId;

/// The notification channel registry changes are sent on (see [`install_notify_trigger`]).
pub const NOTIFY_CHANNEL: &str = "workspace_diesel_registry";

/// Tenant states read from the registry, each with the tenant's latest applied migration version
/// ([`TenantRecord`], read in the same statement), kept for at most a time-to-live and at most
/// `capacity` entries. Unknown names are cached too (as `None`), so a flood of requests for a
/// tenant that does not exist costs one query per TTL.
///
/// While [`listen`](Self::listen) runs and the registry has the trigger of
/// [`install_notify_trigger`], the cache also holds every registered name and its
/// record, read on the listener's own connection and kept current by the notifications (of
/// registry changes and of the central record of applied migrations): every
/// name, registered or not, is then answered from memory (a flood of distinct random names
/// costs no query, and the check takes no pooled connection). When the listener loses its
/// connection, the per-name entries and their TTL take over until it has reconnected and read
/// the registry again.
///
/// Entries go away when they expire, when [`invalidate`](Self::invalidate) or
/// [`clear`](Self::clear) is called (the [`Routing`](crate::Routing) calls for dropping,
/// renaming and changing the state of a tenant do it at once, in-process), and, across
/// processes, when a notification arrives on [`NOTIFY_CHANNEL`] while
/// [`listen`](Self::listen) runs. Behind a transaction-pooling proxy, where `LISTEN` does not
/// work, the TTL alone bounds how long another process's change goes unseen.
///
/// ```
/// use std::time::Duration;
/// use diesel_workspace::{TenantId, registry::LifecycleState};
/// use diesel_workspace_axum::RegistryCache;
///
/// let cache = RegistryCache::new(1024, Duration::from_secs(5));
/// let acme = TenantId::new("acme")?;
/// assert_eq!(cache.get(&acme), None); // a miss
/// let generation = cache.generation();
/// cache.insert(acme.clone(), Some(LifecycleState::Active), generation);
/// assert_eq!(cache.get(&acme), Some(Some(LifecycleState::Active)));
/// cache.invalidate(&acme);
/// assert_eq!(cache.get(&acme), None);
/// # Ok::<(), diesel_workspace::Error>(())
/// ```
#[derive(Debug)]
pub struct RegistryCache {
    entries: Mutex<HashMap<TenantId, Entry>>,
    capacity: usize,
    ttl: Duration,
    /// Bumped by every invalidation: a lookup that started before one does not store its result.
    generation: AtomicU64,
    /// Every registered name, while a listener keeps it current.
    names: Mutex<Names>,
    /// The registry the listener reads.
    registry: Registry,
}

/// The registered names, as the listener read them.
#[derive(Debug, Default)]
struct Names {
    /// The listener has read the whole registry and hears every change.
    live: bool,
    /// The listener should read the whole registry again (after [`RegistryCache::clear`]).
    reload: bool,
    records: HashMap<TenantId, TenantRecord>,
    /// Invalidated in-process and not yet read again by the listener: asked on the pool.
    stale: HashSet<TenantId>,
}

#[derive(Debug, Clone)]
struct Entry {
    record: Option<TenantRecord>,
    expires: Instant,
}

impl RegistryCache {
    /// A cache of at most `capacity` tenants (at least 1), each kept for at most `ttl`. A zero
    /// `ttl` caches nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
            generation: AtomicU64::new(0),
            names: Mutex::new(Names::default()),
            registry: Registry::default(),
        }
    }

    /// The registry the listener ([`listen`](Self::listen)) reads, when it is not the built-in
    /// `public.workspaces`: the one the routing checks ([`RoutingBuilder::registry`]).
    ///
    /// [`RoutingBuilder::registry`]: crate::RoutingBuilder::registry
    pub fn for_registry(mut self, registry: Registry) -> Self {
        self.registry = registry;
        self
    }

    /// Whether every name is answered from memory (a listener has read the whole registry and
    /// keeps it current).
    pub fn is_live(&self) -> bool {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).live
    }

    /// The time-to-live of an entry.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The cached state of `tenant`: `Some(None)` for a cached "not registered", `None` on a
    /// miss (never cached, expired or invalidated).
    pub fn get(&self, tenant: &TenantId) -> Option<Option<LifecycleState>> {
        self.lookup(tenant, |record| record.map(|r| r.state))
    }

    /// The cached [`TenantRecord`] of `tenant` (state and latest applied version), as
    /// [`get`](Self::get).
    pub fn get_record(&self, tenant: &TenantId) -> Option<Option<TenantRecord>> {
        self.lookup(tenant, |record| record.cloned())
    }

    /// `f` of the cached record of `tenant` (`None` inside: not registered), called under the
    /// cache's lock; `None` on a miss.
    pub(crate) fn lookup<T>(
        &self,
        tenant: &TenantId,
        f: impl FnOnce(Option<&TenantRecord>) -> T,
    ) -> Option<T> {
        {
            let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.live && !names.stale.contains(tenant) {
                return Some(f(names.records.get(tenant)));
            }
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.get(tenant) {
            Some(e) if e.expires > Instant::now() => Some(f(e.record.as_ref())),
            _ => None,
        }
    }

    /// The current generation: read it before querying the registry and pass it to
    /// [`insert`](Self::insert).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Stores what the registry said about `tenant`'s state, with no version known (a routing
    /// with a [version gate](crate::RoutingBuilder::expect_version) treats the tenant as
    /// behind: use [`insert_record`](Self::insert_record) there), unless an invalidation
    /// happened since `generation` was read.
    pub fn insert(&self, tenant: TenantId, status: Option<LifecycleState>, generation: u64) {
        let record = status.map(|state| TenantRecord {
            state,
            version: None,
        });
        self.insert_record(tenant, record, generation);
    }

    /// Stores what the registry said about `tenant` ([`Registry::tenant_record`]), unless an
    /// invalidation happened since `generation` was read (the answer may predate it). When
    /// full, expired entries are dropped first, then the entry closest to expiry.
    pub fn insert_record(&self, tenant: TenantId, record: Option<TenantRecord>, generation: u64) {
        if self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity && !entries.contains_key(&tenant) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            tenant,
            Entry {
                record,
                expires: now + self.ttl,
            },
        );
    }

    /// Forgets `tenant` (and makes lookups in flight not store their answer).
    pub fn invalidate(&self, tenant: &TenantId) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.remove(tenant);
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if names.live {
            names.stale.insert(tenant.clone());
        }
    }

    /// Forgets every tenant.
    pub fn clear(&self) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::AcqRel);
        entries.clear();
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        *names = Names {
            reload: true,
            ..Names::default()
        };
    }

    /// Stores the listener's reading of some tenants (those of `tenants` missing from `read`
    /// are not registered), unless an invalidation happened since `generation` was read (then
    /// they stay asked on the pool until their next notification).
    fn learn(
        &self,
        tenants: Vec<TenantId>,
        mut read: HashMap<TenantId, TenantRecord>,
        generation: u64,
    ) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.live {
            return;
        }
        let current = self.generation.load(Ordering::Acquire) == generation;
        for tenant in tenants {
            match read.remove(&tenant) {
                Some(r) => names.records.insert(tenant.clone(), r),
                None => names.records.remove(&tenant),
            };
            if current {
                names.stale.remove(&tenant);
            }
        }
    }

    /// Stores the listener's reading of the whole registry.
    fn learn_all(&self, records: HashMap<TenantId, TenantRecord>, generation: u64) -> bool {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if self.generation.load(Ordering::Acquire) != generation {
            names.reload = true;
            return false;
        }
        *names = Names {
            live: true,
            reload: false,
            records,
            stale: HashSet::new(),
        };
        true
    }

    fn go_dark(&self) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        *names = Names {
            reload: true,
            ..Names::default()
        };
    }

    fn wants_reload(&self) -> bool {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).reload
    }

    /// How many entries are held (expired ones included until they are pushed out).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Invalidates entries when another process changes the registry: a thread holding one
    /// connection of its own that `LISTEN`s on [`NOTIFY_CHANNEL`] and reads again each tenant
    /// named in a notification (the triggers of [`install_notify_trigger`] send one on every
    /// insert, update and delete of a registry row and of a row of the central record of
    /// applied migrations; `''` clears everything). It checks for
    /// notifications every 50 ms. When the connection is lost it clears the cache and
    /// reconnects (notifications may have been missed meanwhile); the TTL still bounds
    /// staleness.
    ///
    /// Needs a direct (or session-pooled) connection: behind a transaction-pooling proxy
    /// `LISTEN` does not deliver. The thread stops when the returned [`Listener`] is dropped.
    ///
    /// # Errors
    /// The first connection or the `LISTEN` failed.
    ///
    /// # Panics
    /// When the operating system cannot start a thread (as `std::thread::spawn`).
    pub fn listen(self: &Arc<Self>, database_url: &str) -> diesel_workspace::Result<Listener> {
        let mut conn = listen_connection(database_url)?;
        // The whole registry now, so the check is answered from memory once this returns.
        load_all(&mut conn, self).map_err(diesel_workspace::Error::Query)?;
        let stop = Arc::new(AtomicBool::new(false));
        let cache = Arc::downgrade(self);
        let url = database_url.to_owned();
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("registry-listener".into())
            .spawn(move || listen_loop(conn, &url, &cache, &thread_stop))
            .expect("start the registry listener thread");
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }
}

/// A library error as the Diesel error it carries (the listener's reads fail with queries only).
fn into_query(e: diesel_workspace::Error) -> diesel::result::Error {
    match e {
        diesel_workspace::Error::Query(e) => e,
        other => diesel::result::Error::QueryBuilderError(Box::new(other)),
    }
}

fn listen_connection(url: &str) -> diesel_workspace::Result<PgConnection> {
    let mut conn = PgConnection::establish(url)?;
    diesel::sql_query(format!("LISTEN {NOTIFY_CHANNEL}"))
        .execute(&mut conn)
        .map_err(diesel_workspace::Error::Query)?;
    Ok(conn)
}

/// Reads every registered name and its state (after `LISTEN`, so no change falls in between).
/// Without the notify trigger nothing would keep the names current: they are not held then, and
/// the per-name entries with their TTL answer.
fn load_all(conn: &mut PgConnection, cache: &RegistryCache) -> QueryResult<()> {
    let triggered = cache
        .registry
        .has_notify_trigger(conn)
        .map_err(into_query)?;
    if !triggered {
        tracing::warn!(
            "the registry has no notify trigger (install_notify_trigger): names are not held in \
             memory, the cache's TTL bounds what another process's changes go unseen"
        );
        cache.names.lock().unwrap_or_else(|e| e.into_inner()).reload = false;
        return Ok(());
    }
    let generation = cache.generation();
    let records = cache
        .registry
        .tenant_records(conn)
        .map_err(into_query)?
        .into_iter()
        .collect();
    cache.learn_all(records, generation);
    Ok(())
}

/// Applies the pending notifications; `false` when the connection failed.
fn apply_notifications(conn: &mut PgConnection, cache: &RegistryCache) -> bool {
    let mut changed = Vec::new();
    for n in conn.notifications_iter() {
        match n {
            Ok(n) if n.payload.is_empty() => cache.clear(),
            Ok(n) => match TenantId::new(&n.payload) {
                Ok(id) => {
                    tracing::debug!(tenant = id.as_str(), "registry change notified");
                    cache.invalidate(&id);
                    changed.push(id);
                }
                Err(_) => cache.clear(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "registry listener lost its connection");
                return false;
            }
        }
    }
    if cache.wants_reload() {
        return load_all(conn, cache).is_ok();
    }
    if changed.is_empty() {
        return true;
    }
    // Every tenant named since the last tick, in one statement (a fleet run names many).
    changed.sort_unstable();
    changed.dedup();
    let generation = cache.generation();
    match cache.registry.tenant_records_of(conn, &changed) {
        Ok(read) => {
            cache.learn(changed, read.into_iter().collect(), generation);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "registry listener could not read the tenants named");
            false
        }
    }
}

fn listen_loop(
    mut conn: PgConnection,
    url: &str,
    cache: &std::sync::Weak<RegistryCache>,
    stop: &AtomicBool,
) {
    const TICK: Duration = Duration::from_millis(50);
    while !stop.load(Ordering::Acquire) {
        let Some(strong) = cache.upgrade() else {
            return;
        };
        let lost = !apply_notifications(&mut conn, &strong);
        if lost {
            strong.go_dark();
        }
        drop(strong);
        if lost {
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
            if let Some(cache) = cache.upgrade() {
                cache.clear();
            }
        }
        std::thread::sleep(TICK);
    }
}

/// The background thread started by [`RegistryCache::listen`]; dropping it stops the thread.
#[derive(Debug)]
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Installs (once; idempotent, safe to call from several processes at start-up) a trigger on
/// the built-in registry `public.workspaces` that sends a notification on [`NOTIFY_CHANNEL`]
/// naming the tenant whenever a row is inserted, updated (both names on a rename) or deleted,
/// and `''` on `TRUNCATE`, and the same trigger on the central record of applied tenant
/// migrations (`public.workspace_migrations`), so each tenant's version is pushed too (what the
/// [version gate](crate::RoutingBuilder::expect_version) reads). The notification is sent when
/// the transaction commits, so a listener never invalidates before the change is visible. Call
/// it at every start-up: on a database installed by an older release it adds the central
/// record's trigger.
///
/// ```no_run
/// # fn run(conn: &mut diesel::PgConnection) -> diesel_workspace::Result<()> {
/// diesel_workspace_axum::install_notify_trigger(conn)?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Query`](diesel_workspace::Error::Query) when the registry does not exist yet (run
/// the shared migrations first) or the role may not create triggers on it.
pub fn install_notify_trigger(conn: &mut PgConnection) -> diesel_workspace::Result<()> {
    install_notify_trigger_for(conn, &Registry::default())
}

/// [`install_notify_trigger`] on `registry` (a custom registry table, [`Registry::new`]): the
/// notification carries the row's identifier column. The SQL is the registry's own
/// ([`Registry::notify_trigger_sql`]).
///
/// # Errors
/// As [`install_notify_trigger`].
pub fn install_notify_trigger_for(
    conn: &mut PgConnection,
    registry: &Registry,
) -> diesel_workspace::Result<()> {
    use diesel::connection::SimpleConnection;
    let sql = registry.notify_trigger_sql(NOTIFY_CHANNEL);
    conn.transaction(|conn| conn.batch_execute(&sql))
        .map_err(diesel_workspace::Error::Query)
}
