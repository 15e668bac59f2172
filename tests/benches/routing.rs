//! The routing benchmark: what a tenant table costs per query against stock Diesel with the
//! schema hard-coded in `table!`, on one connection with the statement cache on.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel --bench routing              # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel --bench routing  # a few seconds (CI)
//! ```
//!
//! The benchmark creates its own database `dw_bench_routing` (dropped `WITH (FORCE)` at the end),
//! runs the registry migrations, provisions 16 tenants `t0`..`t15` from `migrations_tenant/` with
//! `Migrator::create_tenant`, and seeds each with categories and notes. Every case runs the raw
//! and the routed side in alternating blocks (raw first in even rounds, routed first in odd
//! rounds), because the machine is shared and noisy: the µs columns are the medians of the
//! blocks, the ratio is the median of the per-round ratios routed / raw (each round's two blocks
//! ran back to back), with its quartiles. The measuring connection runs with
//! `synchronous_commit = off`, so WAL flushes on a shared disk do not swamp the write cases.
//!
//! Settings (environment): `BENCH_QUICK=1` for few iterations; `BENCH_ROUNDS` and `BENCH_ITERS`
//! to override the number of rounds and the queries per block. Run without `--bench` (as
//! `cargo test --benches` does), it only smoke-tests each case.

use std::hint::black_box;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{switch, Migrator, TenantId};

use workspace_diesel_tests::bench::Settings;
use workspace_diesel_tests::ScratchDb;

/// The example tenant schema.
const TENANT_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/tenant");

/// The benchmark's own database.
const DB_NAME: &str = "bench_routing";
/// Tenants provisioned (`t0`..`t15`); the raw side has one stock module per schema.
const TENANTS: usize = 16;
/// Notes seeded per tenant; queries look up ids `1..=NOTES`.
const NOTES: usize = 100;
/// Categories seeded per tenant.
const CATEGORIES: usize = 10;

/// The routed side: tenant tables, rendered `"<active tenant>"."<table>"`.
mod routed {
    diesel_workspace::tenant_table! {
        categories (id) {
            id -> Int4,
            name -> Text,
        }
    }

    diesel_workspace::tenant_table! {
        notes (id) {
            id -> Int4,
            category_id -> Nullable<Int4>,
            tag_id -> Nullable<Int4>,
            title -> Text,
            body -> Text,
            created_at -> Timestamptz,
        }
    }

    diesel::joinable!(notes -> categories (category_id));
    diesel::allow_tables_to_appear_in_same_query!(notes, categories);
}

/// Declares one module of stock `table!`s per schema, with the schema hard-coded.
macro_rules! raw_schemas {
    ($($module:ident => $schema:ident,)*) => {$(
        /// Stock `table!`s hard-coded to one tenant schema (the floor).
        pub(crate) mod $module {
            diesel::table! {
                $schema.categories (id) {
                    id -> Int4,
                    name -> Text,
                }
            }

            diesel::table! {
                $schema.notes (id) {
                    id -> Int4,
                    category_id -> Nullable<Int4>,
                    tag_id -> Nullable<Int4>,
                    title -> Text,
                    body -> Text,
                    created_at -> Timestamptz,
                }
            }

            diesel::joinable!(notes -> categories (category_id));
            diesel::allow_tables_to_appear_in_same_query!(notes, categories);
        }
    )*};
}

/// The raw side: `t0.notes` .. `t15.notes` as stock tables.
mod raw {
    raw_schemas! {
        r0 => t0, r1 => t1, r2 => t2, r3 => t3, r4 => t4, r5 => t5, r6 => t6, r7 => t7,
        r8 => t8, r9 => t9, r10 => t10, r11 => t11, r12 => t12, r13 => t13, r14 => t14,
        r15 => t15,
    }
}

/// Runs `$body` with `$m` naming the stock module of schema `t<$k>`.
macro_rules! with_raw {
    ($k:expr, $m:ident => $body:expr) => {
        match $k {
            0 => {
                use crate::raw::r0 as $m;
                $body
            }
            1 => {
                use crate::raw::r1 as $m;
                $body
            }
            2 => {
                use crate::raw::r2 as $m;
                $body
            }
            3 => {
                use crate::raw::r3 as $m;
                $body
            }
            4 => {
                use crate::raw::r4 as $m;
                $body
            }
            5 => {
                use crate::raw::r5 as $m;
                $body
            }
            6 => {
                use crate::raw::r6 as $m;
                $body
            }
            7 => {
                use crate::raw::r7 as $m;
                $body
            }
            8 => {
                use crate::raw::r8 as $m;
                $body
            }
            9 => {
                use crate::raw::r9 as $m;
                $body
            }
            10 => {
                use crate::raw::r10 as $m;
                $body
            }
            11 => {
                use crate::raw::r11 as $m;
                $body
            }
            12 => {
                use crate::raw::r12 as $m;
                $body
            }
            13 => {
                use crate::raw::r13 as $m;
                $body
            }
            14 => {
                use crate::raw::r14 as $m;
                $body
            }
            15 => {
                use crate::raw::r15 as $m;
                $body
            }
            k => unreachable!("no stock module for schema t{k}"),
        }
    };
}

/// A row of `SELECT title ...` through `sql_query`.
#[path = "routing/cases.rs"]
mod cases;

use cases::{cases, Case, Step};

#[derive(QueryableByName)]
struct Title {
    #[diesel(sql_type = Text)]
    title: String,
}

/// Runs the registry migrations, creates the tenants and seeds them.
fn provision(conn: &mut PgConnection) -> Vec<TenantId> {
    let migrator = Migrator::builder(TENANT_MIGRATIONS).build().unwrap();
    migrator.run_shared(conn).expect("shared migrations");
    let ids: Vec<TenantId> = (0..TENANTS)
        .map(|k| TenantId::new(format!("t{k}")).expect("valid tenant id"))
        .collect();
    for id in &ids {
        migrator.create_tenant(conn, id).expect("create tenant");
        switch(id, || -> QueryResult<()> {
            use routed::{categories, notes};
            let cats: Vec<_> = (0..CATEGORIES)
                .map(|c| categories::name.eq(format!("category {c} of {id}")))
                .collect();
            diesel::insert_into(categories::table)
                .values(&cats)
                .execute(conn)?;
            let rows: Vec<_> = (0..NOTES)
                .map(|n| {
                    (
                        notes::title.eq(format!("note {n} of {id}")),
                        notes::body.eq("lorem ipsum"),
                        notes::category_id.eq(Some(1 + (n % CATEGORIES) as i32)),
                    )
                })
                .collect();
            diesel::insert_into(notes::table)
                .values(&rows)
                .execute(conn)?;
            Ok(())
        })
        .expect("seed tenant");
    }
    conn.batch_execute("ANALYZE").expect("analyze");
    ids
}

/// Before measuring anything: the routed query, alternating tenants on one connection with the
/// statement cache on, reads each tenant's own row (trap 1 of DESIGN.md).
fn check_routing(conn: &mut PgConnection, ids: &[TenantId]) {
    use crate::routed::notes;
    for _ in 0..2 {
        for id in ids {
            let title: String = switch(id, || {
                notes::table
                    .filter(notes::id.eq(1))
                    .select(notes::title)
                    .first(conn)
            })
            .expect("routed select");
            assert_eq!(
                title,
                format!("note 0 of {id}"),
                "routed query read the wrong tenant"
            );
        }
    }
}

/// The note id looked up by query number `i`.
/// Runs `n` steps starting at query number `start`; returns µs per query.
fn block(conn: &mut PgConnection, step: &mut Step, start: usize, n: usize) -> f64 {
    let t = Instant::now();
    for i in start..start + n {
        step(conn, i);
    }
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// The median of `v`; of an even count, the mean of the two middle values (unlike
/// `support::median`, which takes the upper one).
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The measured figures of one case.
struct Row {
    name: &'static str,
    raw: f64,
    routed: f64,
    /// Median of the per-round ratios routed / raw (each round's two blocks ran back to back).
    ratio: f64,
    /// First and third quartiles of the per-round ratios.
    ratio_q1: f64,
    ratio_q3: f64,
}

fn measure(conn: &mut PgConnection, case: &mut Case, s: Settings) -> Row {
    // Warm up: prepare every statement both sides will use (all tenants, all shapes).
    let warm = (s.iters / 10).max(2 * TENANTS);
    block(conn, &mut case.raw, 0, warm);
    block(conn, &mut case.routed, 0, warm);
    let (mut raw, mut routed, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..s.rounds {
        let start = r * s.iters;
        let (a, b) = if r % 2 == 0 {
            let a = block(conn, &mut case.raw, start, s.iters);
            (a, block(conn, &mut case.routed, start, s.iters))
        } else {
            let b = block(conn, &mut case.routed, start, s.iters);
            (block(conn, &mut case.raw, start, s.iters), b)
        };
        raw.push(a);
        routed.push(b);
        ratios.push(b / a);
    }
    ratios.sort_by(|a, b| a.total_cmp(b));
    Row {
        name: case.name,
        raw: median(&mut raw),
        routed: median(&mut routed),
        ratio: median(&mut ratios),
        ratio_q1: ratios[(ratios.len() - 1) / 4],
        ratio_q3: ratios[(ratios.len() - 1) * 3 / 4],
    }
}

/// Median ns per call of `f`, over `rounds` blocks of `n` calls.
fn micro(rounds: usize, n: usize, mut f: impl FnMut(usize)) -> f64 {
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for i in 0..n {
                f(i);
            }
            t.elapsed().as_secs_f64() * 1e9 / n as f64
        })
        .collect();
    median(&mut v)
}

fn main() {
    let s = Settings::from_env((1, 20), (5, 200), (61, 1000));
    let db = ScratchDb::create(DB_NAME);
    let mut conn = PgConnection::establish(db.url()).expect("connect to the benchmark database");
    eprintln!("provisioning {TENANTS} tenants in {} ...", db.name());
    let ids = provision(&mut conn);
    let version: String = diesel::select(diesel::dsl::sql::<Text>(
        "current_setting('server_version')",
    ))
    .get_result(&mut conn)
    .expect("server version");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    // A fresh connection for the measurements, so provisioning leaves no statements behind,
    // opened as the library opens its own in the default mode (`connect`, `Pooler::Direct`: the
    // startup setting checked, the backend registered). Both sides run on it.
    drop(conn);
    let mut conn = diesel_workspace::connect(db.url(), diesel_workspace::pooler::Pooler::Direct)
        .expect("connect to the benchmark database");

    check_routing(&mut conn, &ids);
    // Commits wait for no WAL flush: the disk is shared with other work, and its stalls would
    // drown the difference between the two sides of the write cases.
    conn.batch_execute("SET synchronous_commit TO off")
        .expect("set synchronous_commit");

    let mut rows = Vec::new();
    for mut case in cases(&ids, db.url()) {
        eprintln!("measuring: {}", case.name);
        rows.push(measure(&mut conn, &mut case, s));
    }

    // In-process costs, no database.
    let (micro_rounds, micro_n) = if s.rounds * s.iters >= 10_000 {
        (21, 500_000)
    } else {
        (3, 20_000)
    };
    let acme = TenantId::new("acme").expect("valid tenant id");
    let switch_ns = micro(micro_rounds, micro_n, |i| {
        black_box(switch(&acme, || black_box(i)));
    });
    let new_ns = micro(micro_rounds, micro_n, |_| {
        black_box(TenantId::new(black_box("acme_corp_42")).is_ok());
    });

    println!(
        "\nrouting benchmark: {} mode, {} rounds x {} queries per side, one connection, \
         statement cache on, synchronous_commit off; PostgreSQL {version}, {cores} cores\n",
        s.mode, s.rounds, s.iters
    );
    println!("| case | raw µs/query | routed µs/query | ratio | ratio, quartiles over rounds |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in &rows {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {:.2}–{:.2} |",
            r.name, r.raw, r.routed, r.ratio, r.ratio_q1, r.ratio_q3
        );
    }
    println!();
    println!("| in-process | ns per call |");
    println!("| --- | ---: |");
    println!("| `switch(&id, \\|\\| ..)`, no listener | {switch_ns:.1} |");
    println!("| `TenantId::new(\"acme_corp_42\")` | {new_ns:.1} |");
    drop(conn);
    drop(db);
}
