//! A pool that sends each tenant to the same few backends (feature `r2d2`): [`AffinePool`].
//!
//! PostgreSQL keeps, in every backend, a catalog cache entry for each relation the backend has
//! touched, and Diesel keeps a prepared statement per tenant and query shape on each connection.
//! A plain pool hands any idle connection to any tenant, so with thousands of tenants every
//! backend ends up touching every tenant: a request mostly reaches a backend that has never seen
//! its tenant, and pays for loading that tenant's catalog entries and planning its statements.
//!
//! An [`AffinePool`] is a set of [`TenantPool`]s, its *shards*; a tenant is hashed onto one
//! shard, and [`get_for`](AffinePool::get_for) checks a connection out of that shard. Each
//! backend then serves `tenants / shards` tenants: its catalog cache and its statements stay
//! warm, and its memory is bounded by that share of the fleet rather than the whole of it.
//!
//! A [`TenantPool`] does this by itself (one shard per connection by default, see
//! [`TenantPoolBuilder::shards`]); an `AffinePool` is for shards built apart, each with settings
//! of its own, and for a strict affinity: a tenant waits for its own shard's connection.
//!
//! ```no_run
//! use diesel::prelude::*;
//! use diesel_workspace::affinity::AffinePool;
//! use diesel_workspace::{pool, switch, TenantId};
//!
//! # fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Four shards of one connection each: each backend serves a quarter of the tenants.
//! let pool = AffinePool::build(4, "postgres://localhost/app", || {
//!     pool::builder()
//!         .max_size(1)
//!         .statement_cap(usize::MAX)
//!         .backend_memory_limit(Some(256 << 20))
//!         .memory_check_every(1_024)
//! })?;
//! let acme = TenantId::new("acme")?;
//! let mut conn = pool.get_for(&acme)?;
//! switch(&acme, || {
//!     diesel::sql_query("SELECT 1").execute(&mut conn)
//! })?;
//! # Ok(())
//! # }
//! ```
//!
//! A tenant waits for a connection of its own shard (up to the shard's connection timeout)
//! unless [`spill`](AffinePool::spill) is on: then, when its shard has no idle connection, it
//! takes an idle connection of another shard first. Spilling trades locality (that backend
//! touches one more tenant) for less waiting under a skewed load. The scale benchmark
//! (`tests/benches/scale.rs`) measures both against a plain pool.

use std::hash::{Hash, Hasher};

use crate::error::Result;
use crate::pool::{TenantPool, TenantPoolBuilder, TenantPooledConnection};
use crate::tenant::TenantId;

/// A set of [`TenantPool`] shards; each tenant is served by the shard its name hashes to.
///
/// Cloning is cheap (the shards are shared).
#[derive(Debug, Clone)]
pub struct AffinePool {
    shards: Vec<TenantPool>,
    spill: bool,
}

impl AffinePool {
    /// Builds `shards` pools, each from the builder `make` returns, on `database_url`.
    ///
    /// The pool's size is `shards × max_size` of the builder; one connection per shard gives
    /// each backend the smallest share of the tenants.
    ///
    /// ```no_run
    /// use diesel_workspace::{affinity::AffinePool, pool};
    ///
    /// let pool = AffinePool::build(8, "postgres://localhost/app", || pool::builder().max_size(1))?;
    /// assert_eq!(pool.shards().len(), 8);
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    ///
    /// # Errors
    /// What [`TenantPoolBuilder::build`] returns for any shard.
    ///
    /// # Panics
    /// When `shards` is 0.
    pub fn build(
        shards: usize,
        database_url: &str,
        make: impl Fn() -> TenantPoolBuilder,
    ) -> Result<Self> {
        assert!(shards > 0, "an affine pool needs at least one shard");
        let shards = (0..shards)
            .map(|_| make().build(database_url))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            shards,
            spill: false,
        })
    }

    /// An affine pool over pools built elsewhere (each may have its own settings).
    ///
    /// # Panics
    /// When `shards` is empty.
    pub fn from_pools(shards: Vec<TenantPool>) -> Self {
        assert!(
            !shards.is_empty(),
            "an affine pool needs at least one shard"
        );
        Self {
            shards,
            spill: false,
        }
    }

    /// Whether a tenant whose shard has no idle connection takes an idle connection of another
    /// shard before waiting for its own. Defaults to `false`.
    pub fn spill(mut self, spill: bool) -> Self {
        self.spill = spill;
        self
    }

    /// The shards, in hashing order.
    pub fn shards(&self) -> &[TenantPool] {
        &self.shards
    }

    /// The index of the shard that serves `tenant`: a hash of its name, the same for the life
    /// of the process.
    ///
    /// ```no_run
    /// # use diesel_workspace::{affinity::AffinePool, pool, TenantId};
    /// # let pool = AffinePool::build(4, "postgres://localhost/app", pool::builder)?;
    /// let acme = TenantId::new("acme")?;
    /// assert_eq!(pool.shard_of(&acme), pool.shard_of(&acme));
    /// # Ok::<(), diesel_workspace::Error>(())
    /// ```
    pub fn shard_of(&self, tenant: &TenantId) -> usize {
        shard_index(tenant.as_str(), self.shards.len())
    }

    /// Checks a connection out of `tenant`'s shard (with [`spill`](Self::spill), out of
    /// another shard when its own has no idle connection).
    ///
    /// The connection is a plain [`TenantPooledConnection`]: it does not make `tenant` active;
    /// [`switch`](crate::switch) does.
    ///
    /// # Errors
    /// r2d2's timeout error when the shard had no connection to give within its connection
    /// timeout.
    pub fn get_for(
        &self,
        tenant: &TenantId,
    ) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        let own = self.shard_of(tenant);
        if let Some(conn) = self.shards[own].try_get() {
            return Ok(conn);
        }
        if self.spill {
            let n = self.shards.len();
            if let Some(conn) = (1..n).find_map(|k| self.shards[(own + k) % n].try_get()) {
                return Ok(conn);
            }
        }
        self.shards[own].get()
    }

    /// Checks a connection out of the active tenant's shard ([`get_for`](Self::get_for) the
    /// active tenant); with no active tenant, out of the first shard with an idle connection
    /// (else the first shard).
    ///
    /// # Errors
    /// As [`get_for`](Self::get_for).
    pub fn get(&self) -> std::result::Result<TenantPooledConnection, r2d2::Error> {
        if let Some(tenant) = crate::context::current() {
            return self.get_for(&tenant);
        }
        match self.shards.iter().find_map(TenantPool::try_get) {
            Some(conn) => Ok(conn),
            None => self.shards[0].get(),
        }
    }
}

/// The shard of the tenant named `name` among `shards` (SipHash of the name with fixed keys).
fn shard_index(name: &str, shards: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % shards as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::shard_index;

    #[test]
    fn tenants_spread_over_the_shards() {
        let mut counts = [0usize; 4];
        for i in 0..10_000 {
            counts[shard_index(&format!("t{i:06}"), 4)] += 1;
        }
        assert!(
            counts.iter().all(|&c| (2_300..=2_700).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(shard_index("acme", 4), shard_index("acme", 4));
        assert_eq!(shard_index("acme", 1), 0);
    }
}
