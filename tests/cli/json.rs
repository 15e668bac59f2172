//! `--format json`: one JSON document on stdout, with the documented fields and the format
//! version, for `list_tenants`, `status`, `pending` and the create, migrate, revert and redo
//! reports (the other commands' documents: `scripting.rs`).

use serde_json::{json, Value};

use super::*;

/// The document on stdout, checked for its format version, which is then taken out (the rest
/// is compared whole).
fn doc(run: &Run) -> Value {
    let out = run.ok();
    assert_eq!(out.lines().count(), 1, "one line of JSON: {out}");
    let mut v: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["format"], 1, "{v}");
    v.as_object_mut().unwrap().remove("format");
    v
}

/// `elapsed_seconds` varies; everything else is checked whole.
fn without_elapsed(mut v: Value) -> Value {
    let elapsed = v["elapsed_seconds"].take();
    assert!(elapsed.as_f64().is_some_and(|s| s >= 0.0), "{v}");
    v.as_object_mut().unwrap().remove("elapsed_seconds");
    v
}

#[test]
fn create_migrate_revert_and_redo_reports() {
    let db = test_db!("create_migrate_revert_and_redo_reports");
    let w = Workdir::new();
    let created = doc(&w.run(&db, &["--format", "json", "c:t:s", "acme"]));
    assert_eq!(
        without_elapsed(created),
        json!({
            "command": "create_tenant_schema",
            "ok": true,
            "shared_applied": ["00000000000000", "00000000000001", "00000000000002", "20260101000001"],
            "tenants": [{"tenant": "acme", "outcome": "created", "versions": ["20260101000001"]}],
            "summary": {"total": 1, "changed": 1, "unchanged": 0, "failed": 0, "skipped": 0},
        })
    );
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);

    let one = doc(&w.run(&db, &["m:t", "acme", "--format", "json"]));
    assert_eq!(
        without_elapsed(one),
        json!({
            "command": "migrate_tenant",
            "ok": true,
            "shared_applied": [],
            "tenants": [{"tenant": "acme", "outcome": "applied", "versions": ["20260201000000"]}],
            "summary": {"total": 1, "changed": 1, "unchanged": 0, "failed": 0, "skipped": 0},
        })
    );
    // The fleet run prints no progress lines: stdout is the report alone.
    let all = doc(&w.run(&db, &["--format", "json", "migrate_all"]));
    assert_eq!(
        without_elapsed(all),
        json!({
            "command": "migrate_all",
            "ok": true,
            "run": 1,
            "shared_applied": [],
            "tenants": [
                {"tenant": "acme", "outcome": "up_to_date", "versions": []},
                {"tenant": "globex", "outcome": "applied", "versions": ["20260201000000"]},
            ],
            "summary": {"total": 2, "changed": 1, "unchanged": 1, "failed": 0, "skipped": 0},
        })
    );
    let redo = doc(&w.run(&db, &["--format", "json", "redo_tenant", "acme"]));
    assert_eq!(
        without_elapsed(redo),
        json!({
            "command": "redo_tenant",
            "ok": true,
            "shared_applied": [],
            "tenants": [{
                "tenant": "acme", "outcome": "redone", "versions": ["20260201000000"],
                "reverted": "20260201000000",
            }],
            "summary": {"total": 1, "changed": 1, "unchanged": 0, "failed": 0, "skipped": 0},
        })
    );
    assert!(has_x(&db, "acme"));
    let reverted = doc(&w.run(&db, &["--format", "json", "revert_tenant", "acme"]));
    assert_eq!(reverted["tenants"][0]["outcome"], "reverted");
    assert_eq!(
        reverted["tenants"][0]["versions"],
        json!(["20260201000000"])
    );
    let all = doc(&w.run(&db, &["--format", "json", "revert_tenant", "--all"]));
    assert_eq!(all["command"], "revert_tenant");
    assert_eq!(
        all["tenants"],
        json!([
            {"tenant": "acme", "outcome": "reverted", "versions": ["20260101000001"]},
            {"tenant": "globex", "outcome": "reverted", "versions": ["20260201000000"]},
        ])
    );
    assert!(!has_x(&db, "globex"));
}

#[test]
fn a_failed_fleet_run_reports_then_exits_1() {
    let db = test_db!("a_failed_fleet_run_reports_then_exits_1");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    db.conn()
        .batch_execute("ALTER TABLE globex.notes ADD COLUMN x INT")
        .unwrap();
    let run = w.run(
        &db,
        &["--format", "json", "migrate_all", "--continue-on-error"],
    );
    // The report on stdout, the error as a JSON document on stderr.
    let error = run.json_error(1);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("migration failed for 1 of 2 tenants"),
        "{error}"
    );
    let v: Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(v["format"], 1);
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["summary"],
        json!({"total": 2, "changed": 1, "unchanged": 0, "failed": 1, "skipped": 0})
    );
    let failed = &v["tenants"][1];
    assert_eq!(failed["tenant"], "globex");
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["sqlstate"], "42701");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("20260201000000"),
        "{failed}"
    );
}

#[test]
fn list_tenants_status_and_pending() {
    let db = test_db!("list_tenants_status_and_pending");
    let w = Workdir::new();
    assert_eq!(
        doc(&w.run(&db, &["--format", "json", "list_tenants"])),
        json!({"tenants": []})
    );
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    add_column_migration(&w);
    w.run(&db, &["m:t", "acme"]).ok();
    assert_eq!(
        doc(&w.run(&db, &["--format", "json", "list_tenants"])),
        json!({"tenants": [
            {"tenant": "acme", "applied": ["20260101000001", "20260201000000"], "pending": [],
             "drift": null, "state": "up_to_date"},
            {"tenant": "globex", "applied": ["20260101000001"], "pending": ["20260201000000"],
             "drift": null, "state": "pending"},
        ]})
    );
    assert_eq!(
        doc(&w.run(&db, &["--format", "json", "pending"])),
        json!({"tenants": [
            {"tenant": "globex", "applied": ["20260101000001"], "pending": ["20260201000000"],
             "drift": null, "state": "pending"},
        ]})
    );
    let run = w.run(&db, &["--format", "json", "status"]);
    let status = doc(&run);
    // The hazards are in the document and, as in human mode, on stderr.
    let warnings = status["warnings"].as_array().unwrap().clone();
    assert!(!warnings.is_empty(), "the tests connect as a superuser");
    assert_eq!(run.stderr.lines().count(), warnings.len(), "{run:#?}");
    let mut status = status;
    status.as_object_mut().unwrap().remove("warnings");
    // The catalog's size: counts that depend on the server, and the estimate drawn from them.
    let catalog = status.as_object_mut().unwrap().remove("catalog").unwrap();
    let relations = catalog["relations"].as_u64().unwrap();
    assert!(catalog["schemas"].as_u64().unwrap() >= 4, "{catalog}");
    assert!(
        catalog["attributes"].as_u64().unwrap() > relations,
        "{catalog}"
    );
    assert_eq!(
        catalog["backend_bytes"].as_u64().unwrap(),
        relations * diesel_workspace::CATALOG_BYTES_PER_RELATION
    );
    assert_eq!(
        status,
        json!({
            "shared": {"applied": ["00000000000000", "00000000000001", "00000000000002", "20260101000001"], "pending": []},
            "tenant_migrations": {
                "directory": "migrations_tenant",
                "versions": ["20260101000001", "20260201000000"],
                "latest": "20260201000000",
                "empty": [],
            },
            "tenants": {
                "total": 2, "up_to_date": 1, "with_pending": 1, "drifted": 0,
                "attention": [
                    {"tenant": "globex", "applied": ["20260101000001"],
                     "pending": ["20260201000000"], "drift": null, "state": "pending"},
                ],
            },
            "snapshots": [],
        })
    );
}
