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
    let fleet = w.run(&db, &["m:a", "--snapshot", "--retain", "0s"]);
    assert!(
        fleet.ok().contains("\nkept 1 snapshot (see snapshots)\n"),
        "{}",
        fleet.ok()
    );
    assert!(!has_body(&db, "acme"));

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
