//! Every command on a database with trojans (CVE-2018-1058) planted in `public` and in a tenant
//! schema: none of them runs, and every command prints what it prints on a clean database.

use super::*;
use support::trojan;

/// Runs every command against `db`, planting with `plant` once a tenant exists, and returns the
/// commands' output (spare names, which are random, replaced by their count).
fn run_commands(db: &TestDb, plant: impl FnOnce(&mut PgConnection)) -> Vec<String> {
    let w = Workdir::new();
    add_column_migration(&w);
    let mut out = Vec::new();
    out.push(
        w.run(db, &["create_tenant_schema", "victim"])
            .ok()
            .to_owned(),
    );
    plant(&mut db.conn());
    let script: &[&[&str]] = &[
        &["status"],
        &["fill_spares", "2"],
        &["create_tenant_schema", "acme"],
        &["create_tenant_schema", "globex"],
        &["create_tenant_schema", "initech"],
        &["list_tenants"],
        &["revert_tenant", "victim"],
        &["revert_tenant", "--all", "--parallel", "2"],
        &["status"],
        &["migrate_tenant", "victim"],
        &["migrate_tenant", "--all", "--parallel", "2"],
        &["revert_tenant", "acme"],
        &["migrate_all", "--parallel", "2"],
        &["set_tenant_status", "globex", "suspended"],
        &["set_tenant_status", "globex", "active"],
        &["rename_tenant", "initech", "initrode"],
        &["drop_tenant", "--yes", "initrode"],
        &["print-schema", "--tenant", "victim"],
        &["print-schema", "--with-registry"],
        &["drain_spares", "--yes"],
        &["list_spares"],
        &["status"],
    ];
    // Rates, durations and the order of parallel progress lines differ from run to run; the
    // catalog's size differs by the planted objects themselves.
    let timing =
        regex::Regex::new(r"[0-9.]+ tenants/s| in [0-9.]+ s|\[[0-9]+/[0-9]+\]|catalog: .*")
            .unwrap();
    for args in script {
        let run = w.run(db, args);
        let stdout = timing.replace_all(run.ok(), "<n>");
        let mut lines: Vec<&str> = stdout.lines().collect();
        lines.sort_unstable();
        out.push(format!("{args:?}: {}", lines.join("\n")));
    }
    let spares = w.run(db, &["list_spares"]);
    out.push(format!("spares: {}", spares.ok().lines().count()));
    out
}

#[test]
fn planted_objects_never_run_from_any_command() {
    let clean = test_db!("cli_trojans_clean");
    let expected = run_commands(&clean, |_| {});

    let db = test_db!("cli_trojans_planted");
    let got = run_commands(&db, |conn| {
        trojan::create_log(conn);
        trojan::plant(conn, "public");
        trojan::plant(conn, "victim");
    });
    let mut conn = db.conn();
    conn.batch_execute("SET search_path TO pg_catalog").unwrap();
    assert_eq!(trojan::calls(&mut conn), (0, Vec::new()), "trojans ran");
    assert_eq!(got, expected);

    // `status` names them on stderr.
    let w = Workdir::new();
    let status = w.run(&db, &["status"]);
    status.ok();
    assert!(
        status.stderr.contains(
            "warning: operator `public.=(character varying,text)` overloads a pg_catalog name"
        ),
        "{}",
        status.stderr
    );
    assert_eq!(trojan::calls(&mut conn).0, 0, "status ran a trojan");
}

/// `--refuse-hazards` (and `refuse_hazards = true` under `[database]` in the config file) makes
/// the commands that change the database refuse on a planted hijack hazard, naming it; without
/// either they run. Nothing is created by a refused command.
#[test]
fn refuse_hazards_flag_and_config_key() {
    let db = test_db!("cli_refuse_hazards");
    let w = Workdir::new();
    w.run(&db, &["create_tenant_schema", "victim"]).ok();
    trojan::create_log(&mut db.conn());
    trojan::plant(&mut db.conn(), "public");

    let line = w
        .run(&db, &["--refuse-hazards", "create_tenant_schema", "acme"])
        .fails_with("refusing to run")
        .to_owned();
    assert!(line.contains("overloads a pg_catalog name"), "{line}");
    assert!(!db.schema_exists("acme"));
    w.run(&db, &["--refuse-hazards", "migrate_all"])
        .fails_with("refusing to run");

    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[database]\nrefuse_hazards = true\n",
    )
    .unwrap();
    w.run(&db, &["create_tenant_schema", "acme"])
        .fails_with("refusing to run");
    assert!(!db.schema_exists("acme"));
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[database]\nrefuse_hazards = false\n",
    )
    .unwrap();
    w.run(&db, &["create_tenant_schema", "acme"]).ok();
    assert!(db.schema_exists("acme"));
    let mut conn = db.conn();
    conn.batch_execute("SET search_path TO pg_catalog").unwrap();
    assert_eq!(trojan::calls(&mut conn).0, 0, "a trojan ran");
}
