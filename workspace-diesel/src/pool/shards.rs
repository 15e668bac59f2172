//! Which connection does a checkout take: the [`TenantPool`](super::TenantPool) and its shards, each tenant hashed
//! onto one ([`TenantPool::shard_of`](super::TenantPool::shard_of)), and what the pool holds ([`PoolState`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::manager::TenantConnectionManager;

/// One shard of a [`TenantPool`](super::TenantPool): a plain r2d2 pool of the same connections.
pub type ShardPool = r2d2::Pool<TenantConnectionManager>;

/// A connection checked out of a [`TenantPool`](super::TenantPool); it derefs to [`PgConnection`](diesel::PgConnection).
pub type TenantPooledConnection = r2d2::PooledConnection<TenantConnectionManager>;

/// A connection pool for tenant routing; build one with [`new`](super::new) or [`builder`](super::builder).
///
/// Its connections are split into shards ([`ShardPool`]s, one connection each by default), and
/// each tenant is hashed onto one: a checkout for a tenant ([`get`](Self::get) under
/// [`switch`](crate::switch), or [`get_for`](Self::get_for)) takes its shard's connection, so
/// each backend serves `tenants / shards` of the fleet and keeps their catalog entries and
/// prepared statements warm. When that connection is busy for longer than
/// [`affinity_wait`](super::TenantPoolBuilder::affinity_wait), the checkout takes any idle
/// connection, so a busy tenant still gets the whole pool. A checkout outside any tenant takes
/// the first idle connection. [`shards(1)`](super::TenantPoolBuilder::shards) makes it one plain r2d2
/// pool.
///
/// Cloning is cheap (the shards are shared).
#[derive(Clone)]
pub struct TenantPool {
    shards: Arc<[ShardPool]>,
    timeout: Duration,
    affinity_wait: Duration,
}

impl fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantPool")
            .field("shards", &self.shards.len())
            .field("max_size", &self.max_size())
            .field("affinity_wait", &self.affinity_wait)
            .finish_non_exhaustive()
    }
}

/// How many connections a [`TenantPool`](super::TenantPool) holds and how many of them are idle, over all its
/// shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolState {
    /// The connections the pool holds, in use or idle.
    pub connections: u32,
    /// The connections idle in the pool.
    pub idle_connections: u32,
}

/// How long one wait on a shard lasts before the other shards are looked at again.
const WAIT_SLICE: Duration = Duration::from_millis(2);

impl TenantPool {
    /// Checks a connection out: of the active tenant's shard under [`switch`](crate::switch)
    /// (see [`get_for`](Self::get_for)), otherwise the first idle one; waits up to the
    /// [`connection_timeout`](super::TenantPoolBuilder::connection_timeout).
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within the connection timeout.
    pub fn get(&self) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.get_timeout(self.timeout)
    }

    /// As [`get`](Self::get), waiting up to `timeout`.
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within `timeout`.
    pub fn get_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        let home = crate::context::with_current(|t| t.map(|t| self.shard_of(t)));
        self.checkout(home, timeout)
    }

    /// Checks a connection out of `tenant`'s shard; when its connection stays busy for
    /// [`affinity_wait`](super::TenantPoolBuilder::affinity_wait), any idle connection. It does not make
    /// `tenant` active: [`switch`](crate::switch) does.
    ///
    /// ```no_run
    /// # use diesel_workspace::{pool, switch, TenantId};
    /// let pool = pool::new("postgres://localhost/app")?;
    /// let acme = TenantId::new("acme")?;
    /// let mut conn = pool.get_for(&acme)?;
    /// # let _ = &mut conn;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within the connection timeout.
    pub fn get_for(
        &self,
        tenant: &crate::tenant::TenantId,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.checkout(Some(self.shard_of(tenant)), self.timeout)
    }

    /// As [`get_for`](Self::get_for), waiting up to `timeout`.
    ///
    /// # Errors
    /// r2d2's timeout error when no connection could be had within `timeout`.
    pub fn get_for_timeout(
        &self,
        tenant: &crate::tenant::TenantId,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        self.checkout(Some(self.shard_of(tenant)), timeout)
    }

    /// An idle connection, without waiting (the active tenant's shard first).
    pub fn try_get(&self) -> Option<TenantPooledConnection> {
        let n = self.shards.len();
        let home = crate::context::with_current(|t| t.map(|t| self.shard_of(t))).unwrap_or(0);
        (0..n).find_map(|k| self.shards[(home + k) % n].try_get())
    }

    /// The most connections the pool opens, over all its shards.
    pub fn max_size(&self) -> u32 {
        self.shards.iter().map(ShardPool::max_size).sum()
    }

    /// The connections held and idle, over all the shards.
    pub fn state(&self) -> PoolState {
        self.shards.iter().fold(
            PoolState {
                connections: 0,
                idle_connections: 0,
            },
            |sum, shard| {
                let s = shard.state();
                PoolState {
                    connections: sum.connections + s.connections,
                    idle_connections: sum.idle_connections + s.idle_connections,
                }
            },
        )
    }

    /// The shards, in hashing order.
    pub fn shards(&self) -> &[ShardPool] {
        &self.shards
    }

    /// The index of the shard that serves `tenant`: a hash of its name (SipHash with fixed keys),
    /// the same for the life of the process and across processes of one build.
    pub fn shard_of(&self, tenant: &crate::tenant::TenantId) -> usize {
        shard_index(tenant.as_str(), self.shards.len())
    }

    fn checkout(
        &self,
        home: Option<usize>,
        timeout: Duration,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        let n = self.shards.len();
        if n == 1 {
            return self.shards[0].get_timeout(timeout);
        }
        let start = std::time::Instant::now();
        let own = home.unwrap_or(0);
        if let Some(conn) = self.shards[own].try_get() {
            return Ok(conn);
        }
        if home.is_some() && !self.affinity_wait.is_zero() {
            if let Ok(conn) = self.shards[own].get_timeout(self.affinity_wait.min(timeout)) {
                return Ok(conn);
            }
        }
        loop {
            if let Some(conn) = (1..n).find_map(|k| self.shards[(own + k) % n].try_get()) {
                return Ok(conn);
            }
            let left = timeout.saturating_sub(start.elapsed());
            match self.shards[own].get_timeout(left.min(WAIT_SLICE).max(Duration::from_millis(1))) {
                Ok(conn) => return Ok(conn),
                Err(e) if left <= WAIT_SLICE => return Err(e),
                Err(_) => {}
            }
        }
    }
}

/// The shard of the tenant named `name` among `shards`.
fn shard_index(name: &str, shards: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

/// What a [`TenantPool`](super::TenantPool) keeps besides its shards.
pub(super) struct PoolSettings {
    pub(super) timeout: Duration,
    pub(super) affinity_wait: Duration,
}

impl PoolSettings {
    pub(super) fn pool(self, shards: Vec<ShardPool>) -> TenantPool {
        TenantPool {
            shards: shards.into(),
            timeout: self.timeout,
            affinity_wait: self.affinity_wait,
        }
    }
}
