//! `makemigrations_tenant`.

use super::*;

#[test]
fn makemigrations_tenant_writes_diesel_layout() {
    let db = test_db!("makemigrations_tenant_writes_diesel_layout");
    let w = Workdir::new();
    let out = w
        .run(&db, &["makemigrations_tenant", "add_invoices"])
        .ok()
        .to_owned();
    let created: Vec<&str> = out.lines().collect();
    assert_eq!(created.len(), 2, "{out}");
    let up = created[0].strip_prefix("Creating ").unwrap();
    let down = created[1].strip_prefix("Creating ").unwrap();
    assert!(
        up.starts_with("migrations_tenant/") && up.ends_with("_add_invoices/up.sql"),
        "{up}"
    );
    assert!(down.ends_with("_add_invoices/down.sql"), "{down}");
    let dir_name = up.split('/').nth(1).unwrap();
    let version = dir_name.strip_suffix("_add_invoices").unwrap();
    assert!(
        chrono::NaiveDateTime::parse_from_str(version, "%Y-%m-%d-%H%M%S").is_ok(),
        "{version}"
    );
    assert!(fs::read_to_string(w.path().join(up))
        .unwrap()
        .contains("tenant schema"));
    assert!(w.path().join(down).is_file());

    // The alias, with --shared, writes into the shared directory.
    let out = w
        .run(&db, &["m:m:t", "add_users", "--shared"])
        .ok()
        .to_owned();
    assert!(out.starts_with("Creating migrations_shared/"), "{out}");
    assert!(out.contains("_add_users/up.sql"), "{out}");

    // Filled in, the new migrations run: the shared one once, the tenant one in each tenant.
    fs::write(
        w.path().join(up),
        "CREATE TABLE invoices (id SERIAL PRIMARY KEY);",
    )
    .unwrap();
    let shared_up = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Creating ")
        .unwrap();
    fs::write(
        w.path().join(shared_up),
        "CREATE TABLE users (id SERIAL PRIMARY KEY);",
    )
    .unwrap();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert!(db.check("(SELECT count(*) FROM acme.__diesel_schema_migrations) = 2"));
    assert!(db.check("pg_catalog.to_regclass('acme.invoices') IS NOT NULL"));
    assert!(db.check("pg_catalog.to_regclass('public.users') IS NOT NULL"));
}

#[test]
fn makemigrations_tenant_rejects_bad_input() {
    let db = test_db!("makemigrations_tenant_rejects_bad_input");
    let w = Workdir::new();
    for bad in ["Add", "add-invoices", "../escape", "a b"] {
        w.run(&db, &["m:m:t", bad])
            .fails_usage(&format!("invalid migration name `{bad}`"));
    }
    w.run(&db, &["m:m:t", ""])
        .fails_usage("invalid migration name ``");
    w.run(&db, &["m:m:t", "create_notes"])
        .fails_with("a migration named `create_notes` already exists");
    w.run(&db, &["--migrations-dir", "nope", "m:m:t", "x"])
        .fails_with("the tenant migrations directory `nope` does not exist");
    w.run(
        &db,
        &["--shared-migrations-dir", "nope", "m:m:t", "x", "--shared"],
    )
    .fails_with("the shared migrations directory `nope` does not exist");
    // Nothing was written.
    assert_eq!(
        fs::read_dir(w.path().join("migrations_tenant"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn makemigrations_tenant_never_reuses_a_version() {
    let db = test_db!("makemigrations_tenant_never_reuses_a_version");
    let w = Workdir::new();
    w.run(&db, &["m:m:t", "one"]).ok();
    w.run(&db, &["m:m:t", "two"]).ok();
    w.run(&db, &["m:m:t", "three"]).ok();
    let mut versions: Vec<String> = fs::read_dir(w.path().join("migrations_tenant"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split_once('_').unwrap().0.to_owned()
        })
        .collect();
    let n = versions.len();
    versions.sort();
    versions.dedup();
    assert_eq!(versions.len(), n, "{versions:?}");
}

#[test]
fn the_tenant_template_agrees_with_the_readme() {
    let db = test_db!("the_tenant_template_agrees_with_the_readme");
    let w = Workdir::new();
    let out = w.run(&db, &["m:m:t", "add_x"]).ok().to_owned();
    let up = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Creating ")
        .unwrap();
    let template = fs::read_to_string(w.path().join(up)).unwrap();
    // The migrations guide's folder convention: the tenant schema is alone on the search_path.
    let readme = fs::read_to_string(support::repo_root().join("docs/migrations.md")).unwrap();
    assert!(
        readme.contains("with the tenant's schema alone on the `search_path`"),
        "docs/migrations.md"
    );
    assert!(
        template.contains("with that schema alone on the search_path"),
        "{template}"
    );
    assert!(!template.contains("first on the search_path"), "{template}");
}

#[test]
fn a_newline_in_a_migration_name_is_shown_escaped() {
    let db = test_db!("a_newline_in_a_migration_name_is_shown_escaped");
    let w = Workdir::new();
    w.run(&db, &["m:m:t", "add\nx"])
        .fails_usage("invalid migration name `add\\nx`: only lower-case ASCII letters");
}
