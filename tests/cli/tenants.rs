//! `drop_tenant`, `rename_tenant`, `clone_tenant`, `export_tenant`, `import_tenant`.

use super::*;

#[test]
fn drop_tenant_needs_confirmation() {
    let db = test_db!("drop_tenant_needs_confirmation");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    w.run(&db, &["drop_tenant", "acme"])
        .fails_with("refusing to drop tenant `acme` without confirmation: pass --yes");
    assert!(db.schema_exists("acme"));
    assert_eq!(
        w.run(&db, &["drop_tenant", "acme", "--yes"]).ok(),
        "dropped tenant `acme`\n"
    );
    assert!(!db.schema_exists("acme"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = 'acme')"));
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM public.workspace_migrations WHERE schema_name = 'acme')"
    ));
    assert!(db.schema_exists("globex"));
    w.run(&db, &["drop_tenant", "acme", "-y"])
        .fails_with("tenant `acme` does not exist");
    w.run(&db, &["drop_tenant", "public", "-y"])
        .fails_with("invalid tenant name `public`");
}

#[test]
fn rename_tenant_moves_schema_and_records() {
    let db = test_db!("rename_tenant_moves_schema_and_records");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["c:t:s", "globex"]).ok();
    assert_eq!(
        w.run(&db, &["rename_tenant", "acme", "acme_corp"]).ok(),
        "renamed tenant `acme` to `acme_corp`\n"
    );
    assert!(!db.schema_exists("acme"));
    assert!(db.check("pg_catalog.to_regclass('acme_corp.notes') IS NOT NULL"));
    let list = w.run(&db, &["list_tenants"]).ok().to_owned();
    assert!(
        list.lines()
            .any(|l| l.starts_with("acme_corp ") && l.ends_with(" 1        0  up to date")),
        "{list}"
    );
    w.run(&db, &["rename_tenant", "acme", "x"])
        .fails_with("tenant `acme` does not exist");
    w.run(&db, &["rename_tenant", "acme_corp", "globex"])
        .fails_with("tenant `globex` already exists");
    w.run(&db, &["rename_tenant", "acme_corp", "Bad"])
        .fails_with("invalid tenant name `Bad`");
    assert!(db.schema_exists("acme_corp") && db.schema_exists("globex"));
}

#[test]
fn set_tenant_status_changes_the_registry_state() {
    let db = test_db!("set_tenant_status_changes_the_registry_state");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "suspended"]).ok(),
        "tenant `acme`: active -> suspended\n"
    );
    assert!(db.check(
        "(SELECT status::text FROM public.workspaces WHERE schema_name = 'acme') = 'suspended'"
    ));
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "archived"]).ok(),
        "tenant `acme`: suspended -> archived\n"
    );
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "active"]).ok(),
        "tenant `acme`: archived -> active\n"
    );
    w.run(&db, &["set_tenant_status", "nobody", "active"])
        .fails_with("tenant `nobody` does not exist");
    w.run(&db, &["set_tenant_status", "Bad", "active"])
        .fails_with("invalid tenant name `Bad`");
    let run = w.run(&db, &["set_tenant_status", "acme", "paused"]);
    assert_eq!(run.code, 2, "{run:#?}");
}

#[test]
fn clone_tenant_copies_a_template() {
    let db = test_db!("clone_tenant_copies_a_template");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "template_basic"]).ok();
    db.conn()
        .batch_execute("INSERT INTO template_basic.categories (name) VALUES ('inbox'), ('done')")
        .unwrap();
    let out = w
        .run(&db, &["clone_tenant", "template_basic", "acme"])
        .ok()
        .to_owned();
    assert!(
        out.starts_with("cloned tenant `template_basic` as `acme` (with data, "),
        "{out}"
    );
    assert!(db.check("(SELECT count(*) FROM acme.categories) = 2"));
    w.run(&db, &["c:t", "template_basic", "bare", "--schema-only"])
        .ok();
    assert!(db.check("(SELECT count(*) FROM bare.categories) = 0"));
    assert!(db.check("(SELECT count(*) FROM bare.__diesel_schema_migrations) = 1"));
    let json = w
        .run(
            &db,
            &[
                "--format",
                "json",
                "clone_tenant",
                "template_basic",
                "globex",
            ],
        )
        .ok()
        .to_owned();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["command"], "clone_tenant");
    assert_eq!(doc["tenants"][0]["tenant"], "globex");
    assert_eq!(doc["tenants"][0]["outcome"], "cloned");
    w.run(&db, &["clone_tenant", "nobody", "x"])
        .fails_with("tenant `nobody` does not exist");
    w.run(&db, &["clone_tenant", "template_basic", "acme"])
        .fails_with("tenant `acme` already exists");
    assert!(!db.schema_exists("x"));
}

#[test]
fn export_tenant_and_import_tenant_move_a_tenant_through_a_file() {
    let db = test_db!("export_tenant_and_import_tenant_move_a_tenant_through_a_file");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    db.conn()
        .batch_execute(
            "INSERT INTO acme.categories (name) VALUES ('inbox'), ('done'); \
             INSERT INTO acme.notes (category_id, title) SELECT 1, 'acme ' || i FROM generate_series(1, 50) i",
        )
        .unwrap();
    let file = w.path().join("acme.wdt");
    let file = file.to_str().unwrap();
    let out = w.run(&db, &["export_tenant", "acme", file]).ok().to_owned();
    assert!(
        out.starts_with("exported tenant `acme` (3 tables, 52 rows, "),
        "{out}"
    );
    w.run(&db, &["export_tenant", "acme", file])
        .fails_with("exists: the archive is not written over a file");
    let json = w
        .run(
            &db,
            &["--format", "json", "import_tenant", "acme_copy", file],
        )
        .ok()
        .to_owned();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["command"], "import_tenant");
    assert_eq!(doc["tenant"], "acme_copy");
    assert_eq!(doc["exported_as"], "acme");
    assert_eq!(doc["tables"][2]["name"], "notes");
    assert_eq!(doc["tables"][2]["rows"], 50);
    assert!(db.check("(SELECT count(*) FROM acme_copy.notes WHERE title LIKE 'acme %') = 50"));
    // A corrupted archive: refused, nothing created.
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - 30;
    bytes[at] ^= 0x01;
    let bad = w.path().join("bad.wdt");
    std::fs::write(&bad, bytes).unwrap();
    w.run(&db, &["import_tenant", "other", bad.to_str().unwrap()])
        .fails_with("tenant archive refused for `other`");
    assert!(!db.schema_exists("other"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces WHERE schema_name = 'other')"));
    w.run(&db, &["import_tenant", "acme_copy", file])
        .fails_with("tenant `acme_copy` already exists");
}
