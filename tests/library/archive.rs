//! A tenant exported to an archive and imported from one: under a new name on a second server
//! (rows, ledger and sequences equal), refusals with nothing created (an archive of a newer
//! migration set, a changed migration, a corrupted or truncated archive), and archives that hold
//! only their own tenant's rows while other tenants are written meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::FileBasedMigrations;
use diesel_workspace::{Error, Migrator, TenantId};

use crate::mobility::{fingerprint, seed};
use crate::support::throwaway::Throwaway;

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn export(migrator: &Migrator, url: &str, tenant: &TenantId) -> Vec<u8> {
    let mut conn = PgConnection::establish(url).unwrap();
    let mut out = Vec::new();
    migrator
        .export_tenant(&mut conn, url, tenant, &mut out)
        .unwrap();
    out
}

/// The registry rows, schemas and central record rows named `schema` on the server of `url`.
pub(crate) fn traces(url: &str, schema: &str) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(format!(
        "SELECT (SELECT count(*) FROM public.workspaces WHERE schema_name = '{schema}') \
         + (SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}') \
         + (SELECT count(*) FROM public.workspace_migrations WHERE schema_name = '{schema}') AS n"
    ))
    .get_result::<N>(&mut conn)
    .unwrap()
    .n
}

#[test]
fn an_export_imports_under_a_new_name_on_another_server() {
    let db = crate::test_db!("an_export_imports_under_a_new_name_on_another_server");
    let acme = &db.provision(&["acme"])[0];
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "acme", 700);
    // Values whose text depends on the session's settings travel unchanged.
    conn.batch_execute(
        "SET TimeZone = 'Asia/Kolkata'; \
         INSERT INTO acme.notes (title, body, created_at) \
         VALUES ('acme', E'tab\\there\\nnewline \\\\ backslash', '2026-03-01 10:00:00.123456+05:30')",
    )
    .unwrap();
    // The fingerprints compare the rows' text under one time zone.
    conn.batch_execute("SET TimeZone = 'UTC'").unwrap();
    let before = fingerprint(&mut conn, "acme");
    let archive = export(&migrator, db.url(), acme);

    let second = Throwaway::start("archive");
    let url = second.url();
    let mut target = PgConnection::establish(&url).unwrap();
    target
        .batch_execute("SET TimeZone = 'America/New_York'")
        .unwrap();
    migrator.run_shared(&mut target).unwrap();
    let moved = id("acme_moved");
    let summary = migrator
        .import_tenant(&mut target, &url, &moved, &mut archive.as_slice())
        .unwrap();
    assert_eq!(summary.exported_as, "acme");
    assert_eq!(summary.bytes, archive.len() as u64);
    target.batch_execute("SET TimeZone = 'UTC'").unwrap();
    assert_eq!(
        fingerprint(&mut target, "acme_moved"),
        before,
        "rows and ledger equal"
    );
    assert!(migrator.is_registered(&mut target, &moved).unwrap());
    assert_eq!(traces(&url, "acme_moved"), 3);
    // The summaries of both sides agree, and the source is unchanged.
    let exported = export(&migrator, db.url(), acme);
    let mut source_conn = db.conn();
    let mut sink = Vec::new();
    let source_summary = migrator
        .export_tenant(&mut source_conn, db.url(), acme, &mut sink)
        .unwrap();
    assert_eq!(source_summary.tables, summary.tables);
    assert_eq!(exported.len(), archive.len());
    assert_eq!(fingerprint(&mut conn, "acme"), before);
    // Sequences stand past the imported rows.
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Integer)]
        id: i32,
    }
    let max: Id = diesel::sql_query("SELECT max(id) AS id FROM acme_moved.notes")
        .get_result(&mut target)
        .unwrap();
    let next: Id =
        diesel::sql_query("INSERT INTO acme_moved.notes (title) VALUES ('x') RETURNING id")
            .get_result(&mut target)
            .unwrap();
    assert_eq!(next.id, max.id + 1);
    // The imported tenant is a tenant like any other: migrated by the fleet, up to date.
    let outcome = migrator.migrate_tenant(&mut target, &moved).unwrap();
    assert_eq!(outcome, diesel_workspace::TenantOutcome::UpToDate);

    // The name is taken now: refused, nothing changed.
    let again = migrator.import_tenant(&mut target, &url, &moved, &mut archive.as_slice());
    assert!(matches!(again, Err(Error::TenantExists(_))), "{again:?}");
}

#[test]
fn archives_that_do_not_match_are_refused_with_nothing_created() {
    let db = crate::test_db!("archives_that_do_not_match_are_refused_with_nothing_created");
    let acme = &db.provision(&["acme"])[0];
    let migrator = db.migrator();
    let mut conn = db.conn();
    seed(&mut conn, "acme", 300);
    let archive = export(&migrator, db.url(), acme);

    let second = Throwaway::start("archive-refusals");
    let url = second.url();
    let mut target = PgConnection::establish(&url).unwrap();
    migrator.run_shared(&mut target).unwrap();
    let refused = |migrator: &Migrator, bytes: &[u8], what: &str| {
        let mut target = PgConnection::establish(&url).unwrap();
        let got = migrator.import_tenant(&mut target, &url, &id("acme_moved"), &mut &bytes[..]);
        match got {
            Err(Error::ArchiveRefused { reason, .. }) => {
                assert!(reason.contains(what), "{what:?} not in {reason:?}")
            }
            other => panic!("expected a refusal ({what}), got {other:?}"),
        }
        assert_eq!(traces(&url, "acme_moved"), 0, "nothing created ({what})");
    };

    // An archive of a newer migration set: a version this set does not know.
    let newer = Migrator::builder(crate::fleet::ADDITIVE).build().unwrap();
    newer.migrate_tenant(&mut conn, acme).unwrap();
    refused(&migrator, &export(&newer, db.url(), acme), "does not know");

    // A migration whose SQL changed since the export.
    let dir = std::env::temp_dir().join(format!("wd-archive-changed-{}", std::process::id()));
    let version = dir.join("2026-01-01-000001_create_notes");
    std::fs::create_dir_all(&version).unwrap();
    let up = std::fs::read_to_string("../migrations_tenant/2026-01-01-000001_create_notes/up.sql")
        .unwrap();
    std::fs::write(version.join("up.sql"), format!("{up}\n-- changed\n")).unwrap();
    std::fs::write(
        version.join("down.sql"),
        std::fs::read_to_string("../migrations_tenant/2026-01-01-000001_create_notes/down.sql")
            .unwrap(),
    )
    .unwrap();
    let changed = Migrator::builder(FileBasedMigrations::from_path(&dir).unwrap())
        .build()
        .unwrap();
    refused(&changed, &archive, "differs");
    std::fs::remove_dir_all(&dir).unwrap();

    // One byte of the rows flipped (a digit, so the COPY text still parses), near the end.
    let mut corrupt = archive.clone();
    let at = corrupt.len()
        - 200
        - corrupt[..corrupt.len() - 200]
            .iter()
            .rev()
            .position(u8::is_ascii_digit)
            .unwrap()
        - 1;
    corrupt[at] = if corrupt[at] == b'9' {
        b'8'
    } else {
        corrupt[at] + 1
    };
    refused(&migrator, &corrupt, "corrupted");
    // The manifest changed.
    let mut manifest = archive.clone();
    let pos = manifest.windows(4).position(|w| w == b"acme").unwrap();
    manifest[pos] = b'A';
    refused(&migrator, &manifest, "corrupted");
    // Truncated, and not an archive at all.
    refused(&migrator, &archive[..archive.len() - 10], "truncated");
    refused(
        &migrator,
        b"PGDMP not ours, not ours at all",
        "not a workspace-diesel",
    );

    // The same archive, whole, imports.
    migrator
        .import_tenant(
            &mut target,
            &url,
            &id("acme_moved"),
            &mut archive.as_slice(),
        )
        .unwrap();
    assert_eq!(traces(&url, "acme_moved"), 3);
}

/// Every `arc_NNN` sentinel in `bytes` that is not `own`.
fn foreign_sentinels(bytes: &[u8], own: &str) -> usize {
    bytes
        .windows(7)
        .filter(|w| w.starts_with(b"arc_") && w[4..].iter().all(u8::is_ascii_digit))
        .filter(|w| *w != own.as_bytes())
        .count()
}

#[test]
fn archives_hold_only_their_tenants_rows_while_others_are_written() {
    let db = crate::test_db!("archives_hold_only_their_tenants_rows_while_others_are_written");
    let names: Vec<String> = (0..200).map(|i| format!("arc_{i:03}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let tenants = db.provision(&refs);
    let migrator = db.migrator();
    let mut conn = db.conn();
    for name in &names {
        seed(&mut conn, name, 20);
    }
    // The negative control: a row of another tenant's sentinel is found by the scan.
    let control = Throwaway::start("archive-control");
    let mut control_conn = PgConnection::establish(&control.url()).unwrap();
    migrator.run_shared(&mut control_conn).unwrap();
    let planted = id("arc_999");
    migrator.create_tenant(&mut control_conn, &planted).unwrap();
    control_conn
        .batch_execute("INSERT INTO arc_999.notes (title) VALUES ('arc_123')")
        .unwrap();
    let planted_archive = export(&migrator, &control.url(), &planted);
    assert_eq!(foreign_sentinels(&planted_archive, "arc_999"), 1);

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let stop = Arc::clone(&stop);
            let url = db.url().to_owned();
            let names = names.clone();
            std::thread::spawn(move || {
                let mut conn = PgConnection::establish(&url).unwrap();
                let mut written = 0u64;
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let name = &names[i % names.len()];
                    conn.batch_execute(&format!(
                        "INSERT INTO \"{name}\".notes (title, body) VALUES ('{name}', 'w{w}')"
                    ))
                    .unwrap();
                    written += 1;
                    i += 7;
                }
                written
            })
        })
        .collect();
    let mut imported = 0;
    for (tenant, name) in tenants.iter().zip(&names) {
        let archive = export(&migrator, db.url(), tenant);
        assert_eq!(foreign_sentinels(&archive, name), 0, "{name}'s archive");
        let copy = id(&format!("copy_{name}"));
        let summary = migrator
            .import_tenant(&mut conn, db.url(), &copy, &mut archive.as_slice())
            .unwrap();
        assert!(summary
            .tables
            .iter()
            .any(|t| t.name == "notes" && t.rows > 0));
        imported += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(written > 0, "the writers wrote meanwhile");
    assert_eq!(imported, 200);
    // Every imported row carries its tenant's sentinel.
    for name in &names {
        for (table, column) in [
            ("categories", "name"),
            ("tags", "label"),
            ("notes", "title"),
        ] {
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            let n: N = diesel::sql_query(format!(
                "SELECT count(*) AS n FROM \"copy_{name}\".{table} WHERE {column} NOT LIKE '{name}%'"
            ))
            .get_result(&mut conn)
            .unwrap();
            assert_eq!(n.n, 0, "copy_{name}.{table}");
        }
    }
}

/// Sets `settings` as the defaults of every new session of the database of `url`.
fn session_defaults(url: &str, settings: &[(&str, &str)]) {
    let mut conn = PgConnection::establish(url).unwrap();
    for (name, value) in settings {
        conn.batch_execute(&format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET {name} = %L', \
             current_database(), '{value}'); END $$"
        ))
        .unwrap();
    }
}

/// One value of every type whose text depends on the session, as a new session of `url`
/// reads it.
fn values_as_read(url: &str, schema: &str) -> String {
    #[derive(QueryableByName)]
    struct Text {
        #[diesel(sql_type = diesel::sql_types::Text)]
        t: String,
    }
    let mut conn = PgConnection::establish(url).unwrap();
    diesel::sql_query(format!(
        "SELECT string_agg(r::text, ';' ORDER BY id) AS t FROM \"{schema}\".readings r"
    ))
    .get_result::<Text>(&mut conn)
    .unwrap()
    .t
}

/// The definitions of the indexes and constraints of `schema`'s tables, its name left out.
fn definitions(conn: &mut PgConnection, schema: &str) -> Vec<String> {
    #[derive(QueryableByName)]
    struct Def {
        #[diesel(sql_type = diesel::sql_types::Text)]
        d: String,
    }
    diesel::sql_query(format!(
        "SELECT replace(d, '{schema}.', '') AS d FROM ( \
         SELECT indexdef AS d FROM pg_indexes WHERE schemaname = '{schema}' UNION ALL \
         SELECT conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid) \
         FROM pg_constraint WHERE connamespace = '{schema}'::regnamespace) s ORDER BY 1"
    ))
    .load::<Def>(conn)
    .unwrap()
    .into_iter()
    .map(|d| d.d)
    .collect()
}

#[test]
fn an_export_under_some_session_settings_imports_under_others_with_equal_checksums() {
    // The example schema and a table of every type whose text depends on the session.
    let dir = std::env::temp_dir().join(format!("wd-archive-settings-{}", std::process::id()));
    let notes = dir.join("2026-01-01-000001_create_notes");
    let readings = dir.join("2026-01-02-000001_create_readings");
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::create_dir_all(&readings).unwrap();
    for file in ["up.sql", "down.sql"] {
        let from = format!("../migrations_tenant/2026-01-01-000001_create_notes/{file}");
        std::fs::copy(from, notes.join(file)).unwrap();
    }
    std::fs::write(
        readings.join("up.sql"),
        "CREATE TABLE readings (id SERIAL PRIMARY KEY, note_id INTEGER REFERENCES notes (id), \
         f8 FLOAT8, f4 REAL, d DATE, ts TIMESTAMP, tz TIMESTAMPTZ, iv INTERVAL, b BYTEA, \
         m MONEY);\nCREATE INDEX readings_tz_idx ON readings (tz);\n",
    )
    .unwrap();
    std::fs::write(readings.join("down.sql"), "DROP TABLE readings;\n").unwrap();
    let migrator = || {
        Migrator::builder(FileBasedMigrations::from_path(&dir).unwrap())
            .shared(workspace_diesel_tests::SHARED_MIGRATIONS)
            .build()
            .unwrap()
    };
    let source = crate::test_db!("an_export_under_some_session_settings_imports_source");
    let target = crate::test_db!("an_export_under_some_session_settings_imports_target");
    let acme = id("acme");
    let mut conn = source.conn();
    migrator().run_shared(&mut conn).unwrap();
    migrator().create_tenant(&mut conn, &acme).unwrap();
    seed(&mut conn, "acme", 50);
    conn.batch_execute(
        "SET TimeZone = 'UTC'; \
         INSERT INTO acme.readings (note_id, f8, f4, d, ts, tz, iv, b, m) VALUES \
         (1, 0.1, 0.1, '2026-03-01', '2026-03-01 10:00:00.123456', \
          '2026-03-01 10:00:00.123456+05:30', '1 year 2 mons 3 days 04:05:06.789', \
          '\\x005c0aff', 12.34), \
         (2, 1e-300, 3.4028235e38, '0044-03-15 BC', '1999-12-31 23:59:59', \
          '1999-12-31 23:59:59-08', '-1 day +02:00:00', '\\x', -0.5), \
         (NULL, 'NaN', '-Infinity', 'infinity', '-infinity', 'infinity', '0', NULL, NULL)",
    )
    .unwrap();

    let exporting = [
        ("TimeZone", "Pacific/Chatham"),
        ("DateStyle", "SQL, DMY"),
        ("IntervalStyle", "sql_standard"),
        ("extra_float_digits", "-3"),
        ("bytea_output", "escape"),
    ];
    let importing = [
        ("TimeZone", "America/St_Johns"),
        ("DateStyle", "German, YMD"),
        ("IntervalStyle", "iso_8601"),
        ("extra_float_digits", "0"),
        ("bytea_output", "hex"),
    ];
    let plain = values_as_read(source.url(), "acme");
    session_defaults(source.url(), &exporting);
    let exported_text = values_as_read(source.url(), "acme");
    let archive = export(&migrator(), source.url(), &acme);
    let exported = migrator()
        .export_tenant(&mut source.conn(), source.url(), &acme, &mut Vec::new())
        .unwrap();

    let mut target_conn = target.conn();
    migrator().run_shared(&mut target_conn).unwrap();
    session_defaults(target.url(), &importing);
    let moved = id("acme_moved");
    let imported = migrator()
        .import_tenant(
            &mut target.conn(),
            target.url(),
            &moved,
            &mut archive.as_slice(),
        )
        .unwrap();
    assert_eq!(imported.tables, exported.tables, "equal checksums");
    assert_eq!(imported.tables.len(), 4);
    let again = migrator()
        .export_tenant(&mut target.conn(), target.url(), &moved, &mut Vec::new())
        .unwrap();
    assert_eq!(again.tables, exported.tables, "exported again, the same");
    let imported_text = values_as_read(target.url(), "acme_moved");
    // The values themselves, read under one set of settings, are equal.
    session_defaults(target.url(), &exporting);
    assert_eq!(values_as_read(target.url(), "acme_moved"), exported_text);
    // The foreign keys and indexes set aside during the load are the migrations' again.
    assert_eq!(
        definitions(&mut target.conn(), "acme_moved"),
        definitions(&mut conn, "acme")
    );
    assert!(definitions(&mut conn, "acme").len() >= 10);
    // Negative control: the settings do change the text a session reads.
    assert_ne!(plain, exported_text);
    assert_ne!(exported_text, imported_text);

    // Rows whose parent is gone (foreign-key checks bypassed on the source) are refused on
    // import when the foreign keys are put back, with nothing created.
    conn.batch_execute(
        "SET session_replication_role = replica; DELETE FROM acme.notes WHERE id = 1; \
         RESET session_replication_role",
    )
    .unwrap();
    let orphans = export(&migrator(), source.url(), &acme);
    let got = migrator().import_tenant(
        &mut target.conn(),
        target.url(),
        &id("acme_orphans"),
        &mut orphans.as_slice(),
    );
    match got {
        Err(Error::ArchiveFailed { reason, .. }) => assert!(reason.contains("23503"), "{reason}"),
        other => panic!("expected a foreign-key violation, got {other:?}"),
    }
    assert_eq!(traces(target.url(), "acme_orphans"), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}
