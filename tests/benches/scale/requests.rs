//! The request side of the scale benchmark: the pools of each policy, one request and where its
//! time went, the requests of one case, and the memory of the pool's backends.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel_workspace::affinity::AffinePool;
use diesel_workspace::pool::{ShardPool, TenantPool};
use diesel_workspace::{pool, switch, TenantId};

use super::POOL_SIZE;

/// The `rare` policy's `memory_check_every`.
const RARE_CHECK: u32 = 1_024;
/// The `memory` policy's `backend_memory_limit`: 128 MiB per backend.
const MEMORY_LIMIT: u64 = 128 << 20;

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

/// Counts the connections the pool opens.
#[derive(Debug, Default)]
struct Opened(Arc<AtomicUsize>);

impl r2d2::HandleEvent for Opened {
    fn handle_acquire(&self, _: r2d2::event::AcquireEvent) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A small deterministic generator (xorshift), one per thread.
struct Draw(u64);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Where a request's connection comes from: a plain pool, or an affine pool by tenant.
#[derive(Clone)]
pub enum Pools {
    Plain(TenantPool),
    Affine(AffinePool),
}

impl Pools {
    fn get(&self, tenant: &TenantId) -> pool::TenantPooledConnection {
        match self {
            Pools::Plain(p) => p.get_for(tenant),
            Pools::Affine(p) => p.get_for(tenant),
        }
        .expect("checkout")
    }

    fn shards(&self) -> Vec<ShardPool> {
        match self {
            Pools::Plain(p) => p.shards().to_vec(),
            Pools::Affine(p) => p
                .shards()
                .iter()
                .flat_map(|t| t.shards().to_vec())
                .collect(),
        }
    }
}

/// One request, timed, and where its time went.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// The whole request: checkout, queries, check-in.
    pub total: Duration,
    /// The checkout (`get_for`: the shard choice and the checkout reset).
    pub checkout: Duration,
    /// The switch and the three queries.
    pub queries: Duration,
    /// The check-in (dropping the connection: the pool's check-in rules, its memory read).
    pub checkin: Duration,
    /// Whether the connection prepared a statement in this request: its backend had not served
    /// this tenant before (or a recycled connection started cold).
    pub cold: bool,
}

fn request(pool: &Pools, tenant: &TenantId) -> Sample {
    let start = Instant::now();
    let mut conn = pool.get(tenant);
    let checked_out = Instant::now();
    let held = pool::cached_statements(&mut conn);
    switch(tenant, || -> QueryResult<()> {
        notes::table
            .filter(notes::id.eq(1))
            .select(notes::title)
            .first::<String>(&mut conn)
            .optional()?;
        notes::table
            .order(notes::id.desc())
            .limit(10)
            .select(notes::title)
            .load::<String>(&mut conn)?;
        notes::table.count().get_result::<i64>(&mut conn)?;
        Ok(())
    })
    .expect("tenant queries");
    let cold = pool::cached_statements(&mut conn) != held;
    let queried = Instant::now();
    drop(conn);
    let end = Instant::now();
    Sample {
        total: end - start,
        checkout: checked_out - start,
        queries: queried - checked_out,
        checkin: end - queried,
        cold,
    }
}

/// The requests of `threads` threads, `requests` in all, each to a tenant drawn at random
/// (`sweep`: instead, every tenant once, in a shuffled order, split over the threads).
pub fn run_requests(
    pool: &Pools,
    ids: &[TenantId],
    threads: usize,
    requests: usize,
    sweep: bool,
) -> Vec<Sample> {
    let order: Vec<usize> = if sweep {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        let mut draw = Draw(0x2545_F491_4F6C_DD1D);
        for i in (1..order.len()).rev() {
            order.swap(i, draw.below(i + 1));
        }
        order
    } else {
        Vec::new()
    };
    let order = &order;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || {
                    let mut draw = Draw(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1));
                    let picks: Vec<usize> = if sweep {
                        order.iter().copied().skip(k).step_by(threads).collect()
                    } else {
                        (0..requests / threads)
                            .map(|_| draw.below(ids.len()))
                            .collect()
                    };
                    picks
                        .into_iter()
                        .map(|i| request(pool, &ids[i]))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a request thread"))
            .collect()
    })
}

/// The `p` quantile of `sorted`, in microseconds.
pub fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// The memory of each pooled connection's backend, in bytes (each shard's connections all
/// checked out at once).
pub fn backend_memory(pool: &Pools) -> Vec<i64> {
    let mut out = Vec::new();
    for shard in pool.shards() {
        let mut held: Vec<_> = (0..shard.max_size())
            .map(|_| shard.get().expect("checkout"))
            .collect();
        out.extend(held.iter_mut().map(|conn| {
            diesel::select(diesel::dsl::sql::<BigInt>(
                "(SELECT sum(total_bytes)::int8 FROM pg_catalog.pg_backend_memory_contexts)",
            ))
            .get_result::<i64>(&mut **conn)
            .expect("read pg_backend_memory_contexts")
        }));
    }
    out
}

/// The pool of one policy on `url`, counting the connections it opens in `opened`.
pub fn build_pool(policy: &str, url: &str, opened: &Arc<AtomicUsize>, affine_limit: u64) -> Pools {
    let make = || {
        let opened = opened.clone();
        let builder =
            pool::builder().r2d2(move |b| b.event_handler(Box::new(Opened(opened.clone()))));
        match policy {
            "default" => builder.max_size(POOL_SIZE),
            // No statement cap: the backend's memory bounds each connection instead.
            "memory" => builder
                .max_size(POOL_SIZE)
                .shards(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(MEMORY_LIMIT))
                .memory_check_every(32),
            "affine" | "spill" => builder
                .max_size(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(affine_limit))
                .memory_check_every(32),
            // The memory read walks every memory context of a large backend: rarely.
            "rare" => builder
                .max_size(1)
                .statement_cap(usize::MAX)
                .backend_memory_limit(Some(affine_limit))
                .memory_check_every(RARE_CHECK),
            // The default pool before it was sharded.
            _ => builder
                .max_size(POOL_SIZE)
                .shards(1)
                .statement_cap(256)
                .backend_memory_limit(None),
        }
    };
    match policy {
        "affine" | "spill" | "rare" => Pools::Affine(
            AffinePool::build(POOL_SIZE as usize, url, make)
                .expect("affine pool")
                .spill(policy == "spill"),
        ),
        _ => Pools::Plain(make().build(url).expect("tenant pool")),
    }
}
