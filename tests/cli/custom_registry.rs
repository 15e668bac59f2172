//! `--registry` and the config file's `[registry]`: an application's own registry table drives
//! the tenant commands and `set_tenant_status`, and the built-in `public.workspaces` stays empty.

use super::*;

/// The application's registry table, after `setup` made the state type.
fn customers(db: &TestDb) {
    db.conn()
        .batch_execute(
            "CREATE SCHEMA app; CREATE TABLE app.customers (slug TEXT PRIMARY KEY, \
             state public.workspace_status NOT NULL DEFAULT 'active')",
        )
        .unwrap();
}

const FLAG: &str = "--registry=app.customers.slug.state";

#[test]
fn the_registry_flag_drives_the_tenant_commands() {
    let db = test_db!("the_registry_flag_drives_the_tenant_commands");
    let w = Workdir::new();
    w.run(&db, &["setup"]).ok();
    customers(&db);
    w.run(&db, &[FLAG, "c:t:s", "acme"]).ok();
    assert!(db.check("EXISTS (SELECT 1 FROM app.customers WHERE slug = 'acme')"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces)"));
    assert!(db.schema_exists("acme"));
    assert!(w.run(&db, &[FLAG, "list_tenants"]).ok().contains("acme"));
    // Negative control: the built-in registry does not know the tenant.
    assert!(!w.run(&db, &["list_tenants"]).ok().contains("acme"));
    w.run(&db, &["set_tenant_status", "acme", "suspended"])
        .fails_with("tenant `acme` does not exist");

    assert_eq!(
        w.run(&db, &[FLAG, "set_tenant_status", "acme", "suspended"])
            .ok(),
        "tenant `acme`: active -> suspended\n"
    );
    assert!(db.check("(SELECT state::text FROM app.customers WHERE slug = 'acme') = 'suspended'"));
    w.run(&db, &[FLAG, "rename_tenant", "acme", "acme_corp"])
        .ok();
    assert!(db.check("EXISTS (SELECT 1 FROM app.customers WHERE slug = 'acme_corp')"));
    w.run(&db, &[FLAG, "drop_tenant", "acme_corp", "--yes"])
        .ok();
    assert!(db.check("NOT EXISTS (SELECT 1 FROM app.customers)"));
    assert!(!db.schema_exists("acme_corp"));

    // Without a state column, the state cannot be changed; a malformed name is refused.
    w.run(&db, &["--registry=app.customers.slug", "c:t:s", "globex"])
        .ok();
    w.run(
        &db,
        &[
            "--registry=app.customers.slug",
            "set_tenant_status",
            "globex",
            "archived",
        ],
    )
    .fails_with("keeps no life-cycle state");
    w.run(&db, &["--registry=customers", "list_tenants"])
        .fails_with("invalid registry `customers`");
}

#[test]
fn the_config_file_names_the_registry() {
    let db = test_db!("the_config_file_names_the_registry");
    let w = Workdir::new();
    w.run(&db, &["setup"]).ok();
    customers(&db);
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[registry]\ntable = \"app.customers\"\nidentifier_column = \"slug\"\nstatus_column = \"state\"\n",
    )
    .unwrap();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert!(db.check("EXISTS (SELECT 1 FROM app.customers WHERE slug = 'acme')"));
    assert!(db.check("NOT EXISTS (SELECT 1 FROM public.workspaces)"));
    assert_eq!(
        w.run(&db, &["set_tenant_status", "acme", "archived"]).ok(),
        "tenant `acme`: active -> archived\n"
    );
    // The flag wins over the file: the built-in registry does not know acme.
    w.run(
        &db,
        &[
            "--registry=public.workspaces",
            "set_tenant_status",
            "acme",
            "active",
        ],
    )
    .fails_with("tenant `acme` does not exist");
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[registry]\ntable = \"customers\"\n",
    )
    .unwrap();
    w.run(&db, &["list_tenants"])
        .fails_with("expected \"SCHEMA.TABLE\"");
}
