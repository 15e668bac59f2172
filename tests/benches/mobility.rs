//! The mobility benchmark: a new tenant cloned from a template tenant against the same tenant
//! provisioned from its migrations, for two sets of 20 migrations, with and without seed data
//! (the template holds the seed rows; provisioning inserts them afterwards, in a transaction of
//! their own, as sign-up code does):
//!
//! - `tests/migrations/twenty/`: a history that only adds (the example schema, nine tables each
//!   created and then extended, an added column), so replaying it builds each object once. Each
//!   way runs twice: with the warm pool of spare schemas empty and with it filled beforehand
//!   (`fill_spares`, not timed: `create_tenant` and `clone_tenant` claim a spare).
//! - `tests/migrations/history/`: a history as a year of product work leaves it (ids grown to
//!   bigint, a flag replaced by a status, indexes swapped, a table replaced), with the pool empty.
//!
//! Without a spare, the first clone of a template replays the migrations and learns the
//! template's blueprint; the next ones are built from it (timed separately: "first clone").
//! The ways take turns tenant by tenant, so a load that comes and goes weighs on each alike.
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

/// Twenty tenant migrations that only add.
const TWENTY: EmbeddedMigrations = embed_migrations!("migrations/twenty");
/// Twenty tenant migrations with a history of changes.
const HISTORY: EmbeddedMigrations = embed_migrations!("migrations/history");

/// The seed rows a new tenant of the history set starts with (1,260 rows).
fn history_seed_sql(schema: &str) -> String {
    format!(
        "INSERT INTO \"{schema}\".accounts (email, name) SELECT 'a' || i || '@x', 'account ' || i FROM generate_series(1, 20) i; \
         INSERT INTO \"{schema}\".projects (owner_id, name) SELECT 1 + i % 20, 'project ' || i FROM generate_series(1, 40) i; \
         INSERT INTO \"{schema}\".tasks (project_id, name, priority) SELECT 1 + i % 40, 'task ' || i, i % 3 FROM generate_series(1, 600) i; \
         INSERT INTO \"{schema}\".comments (task_id, author_id, body) SELECT 1 + i % 600, 1 + i % 20, repeat('text ', 20) FROM generate_series(1, 600) i; "
    )
}
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

fn main() {
    let settings = Settings::from_env((1, 3), (1, 20), (1, 100));
    let n = settings.iters;
    println!();
    println!(
        "mobility benchmark ({}): {n} tenants per way, median per tenant",
        settings.mode
    );
    let twenty = measure("twenty", TWENTY, seed_sql, n, true);
    let history = measure("history", HISTORY, history_seed_sql, n, false);
    for (set, rows) in [
        (
            "`twenty` (20 migrations that only add; 1,680 seed rows)",
            twenty,
        ),
        (
            "`history` (20 migrations with a history of changes; 1,260 seed rows)",
            history,
        ),
    ] {
        println!();
        println!("{set}:");
        println!();
        println!("| way | ms per tenant | vs provisioning | vs the warm pool |");
        println!("| --- | ---: | ---: | ---: |");
        for row in rows {
            println!("{row}");
        }
    }
}

/// Runs every way for the migration set `set` (seeded by `seed`), `n` tenants each, the warm
/// ways too with `warm`; the table's rows.
fn measure(
    name: &str,
    set: EmbeddedMigrations,
    seed: fn(&str) -> String,
    n: usize,
    warm: bool,
) -> Vec<String> {
    let db = ScratchDb::create(&format!("bench_mobility_{name}"));
    let migrator = Migrator::builder(set).build().expect("the migrations");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    migrator.run_shared(&mut conn).expect("shared migrations");
    let template = TenantId::new("template_seeded").unwrap();
    let bare = TenantId::new("template_bare").unwrap();
    migrator.create_tenant(&mut conn, &template).unwrap();
    migrator.create_tenant(&mut conn, &bare).unwrap();
    conn.batch_execute(&format!("BEGIN; {}COMMIT", seed("template_seeded")))
        .unwrap();
    let id = |prefix: &str, i: usize| TenantId::new(format!("{prefix}_{i:04}")).unwrap();

    // The first clone of each template replays the migrations and learns its blueprint.
    let mut first = Vec::new();
    for (prefix, template, data) in [
        ("fs", &bare, CloneData::SchemaOnly),
        ("fd", &template, CloneData::WithData),
    ] {
        let started = Instant::now();
        migrator
            .clone_tenant(&mut conn, template, &id(prefix, 0), data)
            .unwrap();
        first.push(started.elapsed());
    }

    // The ways, in the order of the table; `true`: from the warm pool.
    let ways: [(&str, &str, bool); 8] = [
        ("p", "provision (`create_tenant`)", false),
        ("cs", "clone, schema only", false),
        ("ps", "provision + seed rows (a second transaction)", false),
        ("cd", "clone with data (the same rows)", false),
        ("wp", "provision from the warm pool", true),
        ("wcs", "clone, schema only, from the warm pool", true),
        ("wps", "provision from the warm pool + seed rows", true),
        ("wcd", "clone with data, from the warm pool", true),
    ];
    let ways = if warm { &ways[..] } else { &ways[..4] };
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); ways.len()];
    for i in 0..n {
        // The ways without spares run with the pool empty; then it is filled with one spare
        // per way that claims one.
        let mut order: Vec<usize> = (0..ways.len()).collect();
        if i % 2 == 1 {
            order[..4].reverse();
            if warm {
                order[4..].reverse();
            }
        }
        for (k, &w) in order.iter().enumerate() {
            if k == 4 {
                migrator.fill_spares(&mut conn, 4).expect("fill the pool");
            }
            let (prefix, _, _) = ways[w];
            let t = id(prefix, i);
            let started = Instant::now();
            match prefix {
                "p" | "wp" => migrator.create_tenant(&mut conn, &t).unwrap(),
                "ps" | "wps" => {
                    migrator.create_tenant(&mut conn, &t).unwrap();
                    conn.batch_execute(&format!("BEGIN; {}COMMIT", seed(t.as_str())))
                        .unwrap();
                }
                "cs" | "wcs" => migrator
                    .clone_tenant(&mut conn, &bare, &t, CloneData::SchemaOnly)
                    .unwrap(),
                _ => migrator
                    .clone_tenant(&mut conn, &template, &t, CloneData::WithData)
                    .unwrap(),
            }
            times[w].push(started.elapsed());
        }
        assert!(
            migrator.spares(&mut conn).unwrap().is_empty(),
            "every warm way claimed its spare"
        );
    }
    drop(conn);
    drop(db);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let medians: Vec<f64> = times.iter_mut().map(|t| ms(median(t))).collect();
    let warm_base = medians.get(4).copied();
    let row = |way: &str, v: f64| {
        let vs_warm = warm_base.map_or("—".to_owned(), |w| format!("{:.2}×", v / w));
        format!("| {way} | {v:.1} | {:.2}× | {vs_warm} |", v / medians[0])
    };
    let mut rows: Vec<String> = ways
        .iter()
        .zip(&medians)
        .map(|((_, way, _), &v)| row(way, v))
        .collect();
    rows.insert(
        2,
        row(
            "first clone, schema only (replays, learns the blueprint)",
            ms(first[0]),
        ),
    );
    rows.insert(
        5,
        row(
            "first clone with data (replays, learns the blueprint)",
            ms(first[1]),
        ),
    );
    rows
}
