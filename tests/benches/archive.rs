//! The archive benchmark: one tenant of the example schema (notes of about 200 bytes each)
//! exported with `export_tenant` and imported under a new name with `import_tenant`, against
//! `pg_dump -n <schema> -Fc -Z0` and `pg_restore` (into a database of its own) of the same schema.
//!
//! ```text
//! export DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres
//! cargo bench -p workspace-diesel-tests --bench archive               # 500,000 notes
//! BENCH_QUICK=1 cargo bench -p workspace-diesel-tests --bench archive # 50,000 notes
//! ```
//!
//! It creates its own scratch databases (dropped at the end) and prints a markdown table: each
//! way's median time and its rate in MB/s of the tenant's `COPY` text (the archive's size, the
//! same numerator for every way). Run without `--bench` (as `cargo test --benches` does), it runs
//! 2,000 notes once.

use std::process::Command;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::TenantId;

use workspace_diesel_tests::bench::{median, Mode, Settings};
use workspace_diesel_tests::{example_migrator, ScratchDb};

fn run(command: &mut Command) {
    let out = command.output().expect("pg_dump / pg_restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn main() {
    let settings = Settings::from_env((1, 1), (3, 1), (3, 1));
    let notes = match settings.mode {
        Mode::Smoke => 2_000,
        Mode::Quick => 50_000,
        Mode::Full => 500_000,
    };
    let db = ScratchDb::create("bench_archive");
    let migrator = example_migrator();
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    migrator.run_shared(&mut conn).expect("shared migrations");
    let acme = TenantId::new("acme").unwrap();
    migrator.create_tenant(&mut conn, &acme).unwrap();
    conn.batch_execute(&format!(
        "INSERT INTO acme.categories (name) SELECT 'category ' || i FROM generate_series(1, 20) i; \
         INSERT INTO acme.tags (label) SELECT 'tag ' || i FROM generate_series(1, 10) i; \
         INSERT INTO acme.notes (category_id, tag_id, title, body) \
         SELECT 1 + i % 20, 1 + i % 10, 'note ' || i, repeat(md5(i::text), 5) \
         FROM generate_series(1, {notes}) i"
    ))
    .unwrap();
    conn.batch_execute("VACUUM ANALYZE acme.notes").unwrap();
    let dir = std::env::temp_dir().join(format!("wd-bench-archive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("acme.wdt");
    let dump = dir.join("acme.dump");

    let (mut export, mut import, mut dump_t, mut restore_t) = (vec![], vec![], vec![], vec![]);
    let mut bytes = 0;
    for round in 0..settings.rounds {
        let started = Instant::now();
        let file = std::fs::File::create(&archive).unwrap();
        let mut out = std::io::BufWriter::new(file);
        let summary = migrator
            .export_tenant(&mut conn, db.url(), &acme, &mut out)
            .unwrap();
        drop(out);
        export.push(started.elapsed());
        bytes = summary.bytes;

        let started = Instant::now();
        let mut input = std::io::BufReader::new(std::fs::File::open(&archive).unwrap());
        let copy = TenantId::new(format!("acme_{round}")).unwrap();
        migrator
            .import_tenant(&mut conn, db.url(), &copy, &mut input)
            .unwrap();
        import.push(started.elapsed());

        let started = Instant::now();
        let _ = std::fs::remove_file(&dump);
        run(Command::new("pg_dump")
            .args(["-d", db.url(), "-n", "acme", "-Fc", "-Z0", "-f"])
            .arg(&dump));
        dump_t.push(started.elapsed());

        let target = ScratchDb::create("bench_archive_restore");
        let started = Instant::now();
        run(Command::new("pg_restore")
            .args(["-d", target.url()])
            .arg(&dump));
        restore_t.push(started.elapsed());
    }
    let dump_size = std::fs::metadata(&dump).unwrap().len();
    std::fs::remove_dir_all(&dir).unwrap();
    drop(conn);
    drop(db);

    let mb = bytes as f64 / 1e6;
    println!();
    println!(
        "archive benchmark ({}): {notes} notes, archive {mb:.1} MB, pg_dump -Fc -Z0 {:.1} MB, \
         median of {} rounds",
        settings.mode,
        dump_size as f64 / 1e6,
        settings.rounds
    );
    println!();
    println!("| way | seconds | MB/s |");
    println!("| --- | ---: | ---: |");
    for (way, times) in [
        ("export_tenant", &mut export),
        ("pg_dump -n acme -Fc -Z0", &mut dump_t),
        ("import_tenant (new name)", &mut import),
        ("pg_restore (new database)", &mut restore_t),
    ] {
        let d: Duration = median(times);
        println!(
            "| {way} | {:.2} | {:.1} |",
            d.as_secs_f64(),
            mb / d.as_secs_f64()
        );
    }
}
