//! The mobility benchmark: a new tenant cloned from a template tenant against the same tenant
//! provisioned from its migrations, for a set of 20 migrations (`tests/migrations/twenty/`: the
//! example schema, nine tables each created and then extended, an added column), with and
//! without seed data (the template holds the seed rows; provisioning inserts them afterwards,
//! in a transaction of their own, as sign-up code does).
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench mobility               # full run
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench mobility # a short run
//! ```
//!
//! It creates its own scratch database (dropped at the end) and prints a markdown table: the
//! median time per tenant of each way, and its ratio to provisioning. Run without `--bench` (as
//! `cargo test --benches` does), it runs the smallest sizes.

use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{CloneData, Migrator, TenantId};

use workspace_diesel_tests::bench::{median, Settings};
use workspace_diesel_tests::ScratchDb;

/// Twenty tenant migrations.
const TWENTY: EmbeddedMigrations = embed_migrations!("migrations/twenty");

/// The seed rows a new tenant starts with: categories, tags, notes and rows in every items table.
fn seed_sql(schema: &str) -> String {
    let mut sql = format!(
        "INSERT INTO \"{schema}\".categories (name) SELECT 'category ' || i FROM generate_series(1, 20) i; \
         INSERT INTO \"{schema}\".tags (label) SELECT 'tag ' || i FROM generate_series(1, 10) i; \
         INSERT INTO \"{schema}\".notes (category_id, tag_id, title, body) \
         SELECT 1 + i % 20, 1 + i % 10, 'welcome ' || i, repeat('text ', 40) FROM generate_series(1, 200) i; "
    );
    for k in 1..=9 {
        sql.push_str(&format!(
            "INSERT INTO \"{schema}\".items_{k} (note_id, label, amount) \
             SELECT 1 + i % 200, 'item ' || i, i FROM generate_series(1, 50) i; "
        ));
    }
    sql
}

fn per_tenant(mut run: impl FnMut(usize), n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let started = Instant::now();
            run(i);
            started.elapsed()
        })
        .collect();
    median(&mut times)
}

fn main() {
    let settings = Settings::from_env((1, 3), (1, 20), (1, 100));
    let n = settings.iters;
    let db = ScratchDb::create("bench_mobility");
    let migrator = Migrator::builder(TWENTY)
        .build()
        .expect("the twenty migrations");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    migrator.run_shared(&mut conn).expect("shared migrations");
    let template = TenantId::new("template_seeded").unwrap();
    let bare = TenantId::new("template_bare").unwrap();
    migrator.create_tenant(&mut conn, &template).unwrap();
    migrator.create_tenant(&mut conn, &bare).unwrap();
    conn.batch_execute(&format!("BEGIN; {}COMMIT", seed_sql("template_seeded")))
        .unwrap();
    let id = |prefix: &str, i: usize| TenantId::new(format!("{prefix}_{i:04}")).unwrap();

    let provision = per_tenant(
        |i| migrator.create_tenant(&mut conn, &id("p", i)).unwrap(),
        n,
    );
    let provision_seed = per_tenant(
        |i| {
            let t = id("ps", i);
            migrator.create_tenant(&mut conn, &t).unwrap();
            conn.batch_execute(&format!("BEGIN; {}COMMIT", seed_sql(t.as_str())))
                .unwrap();
        },
        n,
    );
    let clone_schema = per_tenant(
        |i| {
            migrator
                .clone_tenant(&mut conn, &bare, &id("cs", i), CloneData::SchemaOnly)
                .unwrap()
        },
        n,
    );
    let clone_data = per_tenant(
        |i| {
            migrator
                .clone_tenant(&mut conn, &template, &id("cd", i), CloneData::WithData)
                .unwrap()
        },
        n,
    );
    drop(conn);
    drop(db);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!(
        "mobility benchmark ({}): 20 tenant migrations, {n} tenants per way, median per tenant",
        settings.mode
    );
    println!();
    println!("| way | ms per tenant | vs provisioning |");
    println!("| --- | ---: | ---: |");
    for (way, d) in [
        ("provision (create_tenant)", provision),
        ("clone, schema only", clone_schema),
        ("provision + seed rows (1,680 rows)", provision_seed),
        ("clone with data (the same rows)", clone_data),
    ] {
        println!("| {way} | {:.1} | {:.2}× |", ms(d), ms(d) / ms(provision));
    }
}
