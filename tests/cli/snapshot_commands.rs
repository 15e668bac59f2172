//! `migrate_tenant --snapshot`, `migrate_all --snapshot --retain`, `snapshots`,
//! `restore_tenant`, `prune_snapshots`: text and JSON.

use super::*;

/// A destructive tenant migration: `notes.body` dropped.
fn drop_body_migration(w: &Workdir) {
    w.add_migration(
        false,
        "2026-06-01-000001_drop_body",
        "ALTER TABLE notes DROP COLUMN body;",
        "ALTER TABLE notes ADD COLUMN body TEXT NOT NULL DEFAULT '';",
    );
}

fn has_body(db: &TestDb, tenant: &str) -> bool {
    db.check(&format!(
        "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{tenant}' \
         AND table_name = 'notes' AND column_name = 'body')"
    ))
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(run.ok()).unwrap_or_else(|e| panic!("{e}: {}", run.ok()))
}

#[test]
fn snapshot_migrate_restore_and_prune_from_the_command_line() {
    let db = test_db!("snapshot_migrate_restore_and_prune_from_the_command_line");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["c:t:s", "current"]).ok();
    db.conn()
        .batch_execute(
            "INSERT INTO acme.notes (title, body) SELECT 'n' || i, 'body ' || i \
             FROM generate_series(1, 25) i",
        )
        .unwrap();
    assert_eq!(w.run(&db, &["snapshots"]).ok(), "no snapshots\n");
    drop_body_migration(&w);
    // `current` is migrated first without a snapshot: the fleet run has nothing to do there.
    w.run(&db, &["m:t", "current"]).ok();

    let one = w.run(&db, &["m:t", "acme", "--snapshot", "--retain", "2h"]);
    assert!(one.ok().contains("snapshot _snap_"), "{}", one.ok());
    let fleet = json(&w.run(
        &db,
        &["--format", "json", "m:a", "--snapshot", "--retain", "0s"],
    ));
    let by_tenant: Vec<(&str, &str, Option<&str>)> = fleet["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap(),
                t["outcome"].as_str().unwrap(),
                t["snapshot"].as_str(),
            )
        })
        .collect();
    assert_eq!(by_tenant.len(), 3, "{fleet}");
    for (tenant, outcome, snapshot) in &by_tenant {
        match *tenant {
            "globex" => {
                assert_eq!(*outcome, "applied");
                assert!(snapshot.is_some_and(|s| s.starts_with("_snap_")), "{fleet}");
            }
            _ => assert_eq!((*outcome, *snapshot), ("up_to_date", None), "{fleet}"),
        }
    }
    assert!(!has_body(&db, "acme"));

    // `status` lists each tenant's snapshots with their size, in text and JSON.
    let status = json(&w.run(&db, &["--format", "json", "status"]));
    let listed: Vec<(&str, &str, i64)> = status["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["tenant"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
                s["size_bytes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2, "{status}");
    assert_eq!((listed[0].0, listed[1].0), ("acme", "globex"));
    assert_eq!(
        Some(listed[1].1),
        by_tenant.iter().find(|t| t.0 == "globex").unwrap().2
    );
    assert!(listed.iter().all(|s| s.2 > 0), "{status}");
    let text = w.run(&db, &["status"]);
    assert!(text.ok().contains("\nsnapshots: 2 ("), "{}", text.ok());
    for (tenant, name, _) in &listed {
        assert!(
            text.ok().contains(&format!("  {tenant}: {name} taken ")),
            "{}",
            text.ok()
        );
    }

    let listed = json(&w.run(&db, &["--format", "json", "snapshots"]));
    let snaps = listed["snapshots"].as_array().unwrap();
    let tenants: Vec<&str> = snaps
        .iter()
        .map(|s| s["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme", "globex"], "{listed}");
    let acme = &snaps[0];
    assert_eq!(acme["versions"], serde_json::json!(["20260101000001"]));
    assert!(acme["size_bytes"].as_i64().unwrap() > 0);
    let notes = acme["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "notes")
        .unwrap();
    assert_eq!(notes["rows"], 25);
    let name = acme["name"].as_str().unwrap().to_owned();
    let text = w.run(&db, &["snapshots", "--tenant", "acme"]);
    assert!(
        text.ok().contains(&name) && text.ok().contains("tenant `acme`"),
        "{}",
        text.ok()
    );
    let last = text.ok().lines().last().unwrap_or_default();
    assert!(last.starts_with("1 snapshot, "), "{last}");

    // Refused: a revert takes no snapshot; an unknown snapshot; --retain without --snapshot.
    w.run(&db, &["r:t", "acme", "--snapshot"])
        .fails_with("takes no snapshot");
    w.run(&db, &["restore_tenant", "_snap_nothing", "-y"])
        .fails_with("does not exist");
    for (args, needle) in [
        (&["m:a", "--retain", "1d"][..], "--snapshot"),
        (
            &["prune_snapshots", "--older-than", "7w"][..],
            "invalid duration `7w`",
        ),
    ] {
        let run = w.run(&db, args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(needle), "{args:?}: {run:#?}");
    }

    let restored = json(&w.run(&db, &["--format", "json", "restore_tenant", &name, "--yes"]));
    assert_eq!(restored["command"], "restore_tenant");
    assert_eq!(restored["restored"]["name"], name.as_str());
    assert!(has_body(&db, "acme"));
    assert!(db.check(
        "(SELECT count(*) FROM acme.notes WHERE body LIKE 'body %') = 25 \
         AND (SELECT version FROM acme.__diesel_schema_migrations) = '20260101000001'"
    ));

    // Only globex's snapshot (retained 0 s) has expired.
    let pruned = json(&w.run(&db, &["--format", "json", "prune_snapshots"]));
    let removed: Vec<&str> = pruned["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["globex"]);
    let pruned = w.run(&db, &["prune_snapshots", "--older-than", "0s"]);
    assert!(pruned.ok().contains(&name), "{}", pruned.ok());
    assert_eq!(w.run(&db, &["snapshots"]).ok(), "no snapshots\n");
}

#[test]
fn a_restore_killed_after_marking_the_tenant_is_completed_by_running_it_again() {
    use std::time::{Duration, Instant};

    let db = test_db!("a_restore_killed_after_marking_the_tenant_is_completed_by_running_it_again");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    db.conn()
        .batch_execute(
            "INSERT INTO acme.notes (title, body) SELECT 'n' || i, 'body ' || i \
             FROM generate_series(1, 30) i; \
             UPDATE public.workspaces SET status = 'suspended' WHERE schema_name = 'acme'",
        )
        .unwrap();
    drop_body_migration(&w);
    w.run(&db, &["m:t", "acme", "--snapshot"]).ok();
    let listed = json(&w.run(&db, &["--format", "json", "snapshots"]));
    let name = listed["snapshots"][0]["name"].as_str().unwrap().to_owned();
    // Written after the snapshot: what the interrupted restore must not lose.
    db.conn()
        .batch_execute("INSERT INTO acme.notes (title) VALUES ('after the snapshot')")
        .unwrap();
    let state = |db: &TestDb| -> String {
        #[derive(QueryableByName)]
        struct S {
            #[diesel(sql_type = diesel::sql_types::Text)]
            s: String,
        }
        diesel::sql_query(
            "SELECT status::text AS s FROM public.workspaces WHERE schema_name = 'acme'",
        )
        .get_result::<S>(&mut db.conn())
        .unwrap()
        .s
    };

    // A reader holds acme's notes: the restore marks the tenant, then waits in its transaction.
    let mut holder = db.conn();
    holder
        .batch_execute("BEGIN; LOCK TABLE acme.notes IN ACCESS SHARE MODE")
        .unwrap();
    let mut restore = w
        .cmd(&db)
        .args(["restore_tenant", &name, "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let waiting = "FROM pg_stat_activity WHERE datname = current_database() \
                   AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()";
    let deadline = Instant::now() + Duration::from_secs(60);
    while !db.check(&format!("EXISTS (SELECT 1 {waiting})")) {
        assert!(Instant::now() < deadline, "the restore never waited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(state(&db), "restoring");
    // The process is killed, and its server session with it (nothing reaches the server's
    // commit), then the reader goes.
    restore.kill().unwrap();
    restore.wait().unwrap();
    assert!(db.check(&format!(
        "(SELECT bool_and(pg_terminate_backend(pid)) {waiting})"
    )));
    holder.batch_execute("ROLLBACK").unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while db.check(&format!("EXISTS (SELECT 1 {waiting})")) {
        assert!(Instant::now() < deadline, "the killed session stays");
        std::thread::sleep(Duration::from_millis(20));
    }

    // Left as it was, but `restoring`: nothing lost.
    assert_eq!(state(&db), "restoring");
    assert!(!has_body(&db, "acme"));
    assert!(db.check(
        "(SELECT count(*) FROM acme.notes) = 31 \
         AND EXISTS (SELECT 1 FROM acme.notes WHERE title = 'after the snapshot')"
    ));

    // Run again: it completes, and the tenant gets its state before the first run back.
    let restored = json(&w.run(&db, &["--format", "json", "restore_tenant", &name, "--yes"]));
    assert_eq!(restored["restored"]["name"], name.as_str());
    assert_eq!(state(&db), "suspended");
    assert!(has_body(&db, "acme"));
    assert!(db.check(
        "(SELECT count(*) FROM acme.notes WHERE body LIKE 'body %') = 30 \
         AND NOT EXISTS (SELECT 1 FROM acme.notes WHERE title = 'after the snapshot') \
         AND obj_description('acme'::regnamespace, 'pg_namespace') IS NULL"
    ));
}
