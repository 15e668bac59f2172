//! The printed tables of the scale benchmark, and where the slowest requests' time went.

use std::time::Duration;

use super::fleet::{CommandRow, FleetRow};
use super::requests::{percentile, Sample};

/// One case of requests: a policy, a size, a thread count, both sides measured.
pub struct RequestRow {
    pub policy: &'static str,
    pub tenants: usize,
    pub threads: usize,
    pub base_p50: f64,
    pub base_p99: f64,
    pub p50: f64,
    pub p99: f64,
    pub opened_per_10k: f64,
    pub max_backend: i64,
    pub pool_sum: i64,
    /// The baseline's slowest requests, then this size's.
    pub tails: [Tail; 2],
}

/// What happened in the slowest 1% of a side's requests (those at or above its p99).
pub struct Tail {
    /// How many requests the slowest 1% holds.
    slowest: usize,
    /// Of those, how many prepared a statement (a tenant new to its backend).
    cold: usize,
    /// Of those, how many spent 1 ms or more checking out or checking in.
    slow_checkout: usize,
    slow_checkin: usize,
    /// The medians of their phases, in microseconds: checkout, queries, check-in.
    phases: [f64; 3],
    /// The share of all the side's requests that prepared a statement.
    cold_share: f64,
    /// Of all the side's requests, how many spent 1 ms or more checking in (the pool's
    /// periodic memory read lands there), and the slowest check-in, in microseconds.
    checkins_over_ms: usize,
    max_checkin: f64,
}

impl Tail {
    /// The tail of `samples` (not empty).
    pub fn of(samples: &[Sample]) -> Tail {
        let mut by_total = samples.to_vec();
        by_total.sort_by_key(|s| s.total);
        let cut = by_total[((by_total.len() - 1) as f64 * 0.99).round() as usize].total;
        let slow: Vec<Sample> = by_total.into_iter().filter(|s| s.total >= cut).collect();
        let ms = Duration::from_millis(1);
        let median = |f: fn(&Sample) -> Duration| {
            let mut d: Vec<Duration> = slow.iter().map(f).collect();
            d.sort();
            percentile(&d, 0.5)
        };
        Tail {
            slowest: slow.len(),
            cold: slow.iter().filter(|s| s.cold).count(),
            slow_checkout: slow.iter().filter(|s| s.checkout >= ms).count(),
            slow_checkin: slow.iter().filter(|s| s.checkin >= ms).count(),
            phases: [
                median(|s| s.checkout),
                median(|s| s.queries),
                median(|s| s.checkin),
            ],
            cold_share: samples.iter().filter(|s| s.cold).count() as f64 / samples.len() as f64,
            checkins_over_ms: samples.iter().filter(|s| s.checkin >= ms).count(),
            max_checkin: samples
                .iter()
                .map(|s| s.checkin.as_secs_f64() * 1e6)
                .fold(0.0, f64::max),
        }
    }
}

fn mib(b: i64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Prints the request table, where the slowest requests' time went, the fleet table and the
/// commands.
pub fn print(requests: &[RequestRow], fleet: &[FleetRow], commands: &[CommandRow]) {
    println!(
        "  {:>7} {:>7} {:>7} {:>11} {:>11} {:>10} {:>10} {:>7} {:>7} {:>15} {:>12} {:>10}",
        "policy",
        "tenants",
        "threads",
        "base p50 us",
        "base p99 us",
        "p50 us",
        "p99 us",
        "p50 x",
        "p99 x",
        "reconnects/10k",
        "backend MiB",
        "pool MiB"
    );
    for r in requests {
        println!(
            "  {:>7} {:>7} {:>7} {:>11.0} {:>11.0} {:>10.0} {:>10.0} {:>7.2} {:>7.2} {:>15.0} {:>12.1} {:>10.1}",
            r.policy,
            r.tenants,
            r.threads,
            r.base_p50,
            r.base_p99,
            r.p50,
            r.p99,
            r.p50 / r.base_p50,
            r.p99 / r.base_p99,
            r.opened_per_10k,
            mib(r.max_backend),
            mib(r.pool_sum)
        );
    }
    println!(
        "  the slowest 1% of each side (at or above its p99): how many, how many prepared a \
         statement (cold: a tenant new to its backend), checked out or in in 1 ms or more, the \
         medians of their phases; cold % of all its requests, how many of all its requests checked \
         in in 1 ms or more, the slowest check-in"
    );
    println!(
        "  {:>7} {:>7} {:>7} {:>8} {:>7} {:>5} {:>9} {:>8} {:>12} {:>10} {:>11} {:>7} {:>12} {:>15}",
        "policy",
        "tenants",
        "threads",
        "side",
        "slowest",
        "cold",
        "checkout",
        "checkin",
        "checkout us",
        "queries us",
        "checkin us",
        "cold %",
        "checkin>1ms",
        "max checkin us"
    );
    for r in requests {
        for (side, t) in ["baseline", "this"].iter().zip(&r.tails) {
            println!(
                "  {:>7} {:>7} {:>7} {:>8} {:>7} {:>5} {:>9} {:>8} {:>12.0} {:>10.0} {:>11.0} {:>7.2} {:>12} {:>15.0}",
                r.policy,
                r.tenants,
                r.threads,
                side,
                t.slowest,
                t.cold,
                t.slow_checkout,
                t.slow_checkin,
                t.phases[0],
                t.phases[1],
                t.phases[2],
                t.cold_share * 100.0,
                t.checkins_over_ms,
                t.max_checkin
            );
        }
    }
    println!(
        "  {:>7} {:>18} {:>22} {:>20} {:>20}",
        "tenants",
        "status ms/tenant",
        "idle migrate ms/tenant",
        "additive ms/tenant",
        "create ms/tenant"
    );
    for f in fleet {
        println!(
            "  {:>7} {:>18.4} {:>22.4} {:>20} {:>20.3}",
            f.tenants,
            f.status,
            f.idle_migrate,
            f.additive.map_or("-".to_owned(), |a| format!("{a:.3}")),
            f.provision
        );
    }
    if !commands.is_empty() {
        println!(
            "  {:<40} {:>7} {:>12} {:>12}",
            "command", "tenants", "ms", "ms/tenant"
        );
        for c in commands {
            let ms = c.took.as_secs_f64() * 1e3;
            println!(
                "  {:<40} {:>7} {:>12.1} {:>12.4}",
                c.command,
                c.tenants,
                ms,
                ms / c.tenants as f64
            );
        }
    }
}
