//! `--pooler` / `WORKSPACE_DIESEL_POOLER`: every command through a real PgBouncer in transaction
//! pooling mode, and the refusal without the flag.

use super::*;

use workspace_diesel_tests::pgbouncer::{Config, PgBouncer};

fn through(w: &Workdir, db: &TestDb, bouncer: &PgBouncer, args: &[&str]) -> Run {
    Run::from(
        w.cmd(db)
            .env("DATABASE_URL", bouncer.url(db.url()))
            .env_remove("WORKSPACE_DIESEL_POOLER")
            .args(args)
            .output()
            .expect("run the binary"),
    )
}

#[test]
fn commands_work_through_pgbouncer_with_the_pooler_flag() {
    let db = test_db!("commands_work_through_pgbouncer_with_the_pooler_flag");
    let w = Workdir::new();
    let bouncer = PgBouncer::start(Config::transaction(2));
    let p = ["--pooler", "transaction"];
    let run = |args: &[&str]| {
        let mut all = p.to_vec();
        all.extend_from_slice(args);
        through(&w, &db, &bouncer, &all)
    };
    run(&["create_tenant_schema", "acme"]).ok();
    run(&["c:t:s", "globex"]).ok();
    run(&["fill_spares", "2"]).ok();
    assert_eq!(run(&["list_spares"]).ok().lines().count(), 2);
    add_column_migration(&w);
    let out = run(&["migrate_all", "--parallel", "2"]);
    assert!(out.ok().contains("2 tenants"), "{out:#?}");
    assert!(has_x(&db, "acme") && has_x(&db, "globex"));
    run(&["revert_tenant", "acme"]).ok();
    assert!(!has_x(&db, "acme"));
    run(&["migrate_tenant", "acme"]).ok();
    assert!(has_x(&db, "acme"));
    run(&["rename_tenant", "globex", "initech"]).ok();
    run(&["drop_tenant", "acme", "--yes"]).ok();
    let listed = run(&["list_tenants"]);
    assert!(
        listed.ok().contains("initech") && !listed.ok().contains("acme"),
        "{listed:#?}"
    );
    let status = run(&["status"]);
    assert!(
        status.ok().contains("tenants: 1 (1 up to date"),
        "{status:#?}"
    );
    run(&["drain_spares", "--yes"]).ok();
    // The environment variable does what the flag does.
    let out = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", bouncer.url(db.url()))
            .env("WORKSPACE_DIESEL_POOLER", "transaction")
            .args(["c:t:s", "hooli"])
            .output()
            .unwrap(),
    );
    out.ok();
    assert!(db.schema_exists("hooli") && db.schema_exists("initech"));
}

#[test]
fn commands_through_pgbouncer_without_the_flag_are_refused() {
    let db = test_db!("commands_through_pgbouncer_without_the_flag_are_refused");
    let w = Workdir::new();
    let bouncer = PgBouncer::start(Config::transaction(1));
    for args in [
        &["create_tenant_schema", "acme"][..],
        &["migrate_all"],
        &["list_tenants"],
        &["fill_spares", "1"],
    ] {
        through(&w, &db, &bouncer, args)
            .fails_with("transaction pooler")
            .contains("--pooler transaction")
            .then_some(())
            .expect("the error names the flag");
    }
    assert!(!db.schema_exists("acme"));
    assert!(!db.registry_exists());
}

/// Through PgBouncer in statement pooling mode, every command that needs a transaction fails
/// with an error that names statement pooling, with or without `--pooler transaction`.
#[test]
fn statement_pooling_is_refused_by_name() {
    let db = test_db!("cli_statement_pooling");
    db.provision(&["acme"]);
    let bouncer = PgBouncer::start(Config::statement(2));
    let w = Workdir::new();
    for args in [
        &["--pooler", "transaction", "create_tenant_schema", "globex"][..],
        &["--pooler", "transaction", "status"][..],
        &["create_tenant_schema", "globex"][..],
    ] {
        through(&w, &db, &bouncer, args).fails_with("statement pooling");
    }
    assert!(!db.schema_exists("globex"));
}

/// Through PgBouncer (one server connection) whose server connection holds another client's
/// temporary `__diesel_schema_migrations` claiming the registry migration, a temporary `notes`
/// and a session `search_path`: `setup --pooler transaction` on a database without a registry
/// applies the registry migration (never "up to date"), and `status` reports the tenant made
/// next. The negative control: Diesel's harness on the bare shared path, through the same
/// server connection, believes nothing is pending.
#[test]
fn setup_and_status_through_pgbouncer_ignore_a_temporary_ledger() {
    use diesel::migration::MigrationSource;
    use diesel_migrations::MigrationHarness;
    let db = test_db!("cli_setup_temporary_ledger_pgbouncer");
    let bouncer = PgBouncer::start(Config::transaction(1));
    let url = bouncer.url(db.url());
    let mut other = PgConnection::establish(&url).unwrap();
    other.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    other
        .batch_execute(
            "CREATE TEMP TABLE __diesel_schema_migrations \
             (version varchar(50) PRIMARY KEY, run_on timestamp NOT NULL DEFAULT now()); \
             INSERT INTO __diesel_schema_migrations (version) VALUES ('00000000000000'), \
             ('00000000000001'), ('00000000000002'); \
             CREATE TEMP TABLE notes (id int4, title text); \
             SET search_path TO pg_temp, public",
        )
        .unwrap();
    // Negative control: on the bare path the harness reads the temporary ledger.
    let registry = diesel_migrations::FileBasedMigrations::from_path(
        support::repo_root().join("workspace-diesel/migrations"),
    )
    .unwrap();
    assert_eq!(
        MigrationSource::<diesel::pg::Pg>::migrations(&registry)
            .unwrap()
            .len(),
        3
    );
    other
        .batch_execute("BEGIN; SET LOCAL search_path TO public")
        .unwrap();
    let fooled = other.pending_migrations(registry).unwrap().len();
    other.batch_execute("ROLLBACK").unwrap();
    assert_eq!(fooled, 0, "the harness must see the temporary ledger here");
    drop(other);

    let w = Workdir::new();
    fs::remove_dir_all(w.path().join("migrations_shared")).unwrap();
    let setup = through(&w, &db, &bouncer, &["--pooler", "transaction", "setup"]);
    let out = setup.ok();
    assert!(out.contains("shared: applied 00000000000000"), "{setup:#?}");
    assert!(!out.contains("up to date"), "{setup:#?}");
    assert!(db.registry_exists());
    through(
        &w,
        &db,
        &bouncer,
        &["--pooler", "transaction", "c:t:s", "acme"],
    )
    .ok();
    let status = through(&w, &db, &bouncer, &["--pooler", "transaction", "status"]);
    assert!(
        status.ok().contains("tenants: 1 (1 up to date"),
        "{status:#?}"
    );
}
