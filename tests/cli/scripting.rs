//! For scripts: a JSON document from every command (errors included, on stderr), each with its
//! format version; the documented exit statuses; `NO_COLOR` / `CLICOLOR` / `CLICOLOR_FORCE`.

use serde_json::{json, Value};

use super::*;

/// Runs `args` with `--format json`; asserts success and one line on stdout, a JSON document
/// with `"format": 1`; returns it.
#[track_caller]
fn json_doc(w: &Workdir, db: &TestDb, args: &[&str]) -> Value {
    let mut full = vec!["--format", "json"];
    full.extend_from_slice(args);
    let run = w.run(db, &full);
    let out = run.ok();
    assert_eq!(
        out.lines().count(),
        1,
        "{args:?}: one line of JSON: {run:#?}"
    );
    let doc: Value = serde_json::from_str(out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"));
    assert_eq!(doc["format"], 1, "{args:?}: {doc}");
    doc
}

#[test]
fn every_command_prints_a_versioned_json_document() {
    let db = test_db!("every_command_prints_a_versioned_json_document");
    let w = Workdir::new();
    let setup = json_doc(&w, &db, &["setup"]);
    assert_eq!(setup["command"], "setup");
    assert_eq!(setup["created_config"], "workspace-diesel.toml");
    assert_eq!(
        json_doc(&w, &db, &["database", "setup"])["command"],
        "database setup"
    );

    let created = json_doc(&w, &db, &["c:t:s", "acme"]);
    assert_eq!(created["tenants"][0]["outcome"], "created");
    let bulk = json_doc(&w, &db, &["c:t:s", "globex", "initech", "umbrella"]);
    assert_eq!(bulk["command"], "create_tenant_schema");
    assert_eq!(
        bulk["summary"],
        json!({"total": 3, "changed": 3, "unchanged": 0, "failed": 0, "skipped": 0})
    );
    assert!(bulk["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t["outcome"] == "created" && t["versions"] == json!(["20260101000001"])));

    let generated = json_doc(
        &w,
        &db,
        &["m:m:t", "add_x", "--version", "2026-02-01-000000"],
    );
    assert_eq!(generated["command"], "makemigrations_tenant");
    assert_eq!(generated["version"], "20260201000000");
    assert_eq!(generated["files"].as_array().unwrap().len(), 2);
    fs::write(
        w.path()
            .join("migrations_tenant/2026-02-01-000000_add_x/up.sql"),
        "ALTER TABLE notes ADD COLUMN x INT;",
    )
    .unwrap();
    fs::write(
        w.path()
            .join("migrations_tenant/2026-02-01-000000_add_x/down.sql"),
        "ALTER TABLE notes DROP COLUMN x;",
    )
    .unwrap();
    let g = json_doc(&w, &db, &["migration", "generate", "add_y", "--shared"]);
    assert_eq!(g["command"], "migration generate");
    fs::remove_dir_all(g["directory"].as_str().unwrap()).unwrap();

    let list = json_doc(&w, &db, &["migration", "list"]);
    assert_eq!(list["tenants"], 4);
    assert_eq!(
        list["tenant"][1],
        json!({"version": "20260201000000", "name": "2026-02-01-000000_add_x", "state": "pending",
               "applied": [], "pending": ["acme", "globex", "initech", "umbrella"]})
    );
    assert_eq!(
        list["shared"][0],
        json!({"version": "00000000000000", "applied": true})
    );
    let pending = json_doc(&w, &db, &["pending"]);
    assert_eq!(pending["tenants"].as_array().unwrap().len(), 4);

    let one = json_doc(&w, &db, &["m:t", "acme"]);
    assert_eq!(one["tenants"][0]["outcome"], "applied");
    let run = json_doc(&w, &db, &["migration", "run"]);
    assert_eq!(run["command"], "migration run");
    assert_eq!(run["summary"]["changed"], 3);
    let revert = json_doc(
        &w,
        &db,
        &["migration", "revert", "--tenants", "acme,globex"],
    );
    assert_eq!(revert["command"], "migration revert");
    assert_eq!(
        revert["tenants"],
        json!([
            {"tenant": "acme", "outcome": "reverted", "versions": ["20260201000000"]},
            {"tenant": "globex", "outcome": "reverted", "versions": ["20260201000000"]},
        ])
    );
    let redo = json_doc(&w, &db, &["migration", "redo", "--tenants", "initech"]);
    assert_eq!(
        redo["tenants"],
        json!([{"tenant": "initech", "outcome": "redone", "versions": ["20260201000000"],
                "reverted": "20260201000000", "reverted_versions": ["20260201000000"]}])
    );
    json_doc(&w, &db, &["migrate_all"]);
    for args in [
        &["redo_tenant", "acme"][..],
        &["revert_tenant", "acme"],
        &["list_tenants"],
        &["status"],
        &["runs"],
        &["runs", "--run", "1"],
    ] {
        json_doc(&w, &db, args);
    }
    let runs = json_doc(&w, &db, &["runs"]);
    let last = runs["runs"][0]["id"].as_i64().unwrap();
    assert_eq!(
        json_doc(&w, &db, &["revert_run", &last.to_string()])["command"],
        "revert_run"
    );

    assert_eq!(
        json_doc(&w, &db, &["set_tenant_status", "acme", "suspended"]),
        json!({"format": 1, "command": "set_tenant_status", "ok": true, "tenant": "acme",
               "before": "active", "status": "suspended"})
    );
    assert_eq!(
        json_doc(&w, &db, &["rename_tenant", "umbrella", "umbrella2"]),
        json!({"format": 1, "command": "rename_tenant", "ok": true, "from": "umbrella", "to": "umbrella2"})
    );
    assert_eq!(
        json_doc(&w, &db, &["clone_tenant", "initech", "initech2"])["tenants"][0]["outcome"],
        "cloned"
    );
    let archive = w.path().join("g.wdt");
    let archive = archive.to_str().unwrap();
    assert_eq!(
        json_doc(&w, &db, &["export_tenant", "initech2", archive])["command"],
        "export_tenant"
    );
    assert_eq!(
        json_doc(&w, &db, &["import_tenant", "initech3", archive])["tenant"],
        "initech3"
    );
    assert_eq!(
        json_doc(&w, &db, &["drop_tenant", "initech3", "--yes"]),
        json!({"format": 1, "command": "drop_tenant", "ok": true, "tenant": "initech3"})
    );
    assert_eq!(
        json_doc(&w, &db, &["fill_spares", "2"]),
        json!({"format": 1, "command": "fill_spares", "ok": true, "created": 2, "spares": 2})
    );
    assert_eq!(
        json_doc(&w, &db, &["list_spares"])["spares"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        json_doc(&w, &db, &["drain_spares", "--yes"]),
        json!({"format": 1, "command": "drain_spares", "ok": true, "dropped": 2})
    );
    assert_eq!(
        json_doc(&w, &db, &["lint_migrations"]),
        json!({"format": 1, "command": "lint_migrations", "ok": true, "checked": 2,
               "costs": [], "findings": []})
    );
    let schema = json_doc(&w, &db, &["print-schema", "-o", "notes"]);
    assert_eq!(schema["file"], Value::Null);
    assert!(schema["schema"].as_str().unwrap().contains("notes (id)"));
    let written = json_doc(&w, &db, &["print-schema", "--output-file", "s.rs"]);
    assert_eq!(written["file"], "s.rs");
    let completions = json_doc(&w, &db, &["completions", "bash"]);
    assert_eq!(completions["shell"], "bash");
    assert!(completions["script"]
        .as_str()
        .unwrap()
        .contains("migrate_all"));

    // Citus-only commands on PostgreSQL: their error, as a JSON document on stderr.
    for args in [
        &["move_tenant", "acme", "127.0.0.1:9701"][..],
        &["rebalance", "--status"],
    ] {
        let mut full = vec!["--format", "json"];
        full.extend_from_slice(args);
        let run = w.run(&db, &full);
        assert_eq!(run.stdout, "", "{args:?}");
        let error = run.json_error(1);
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Citus"),
            "{error}"
        );
    }

    // The database group, on a database of its own.
    let scratch = support::ScratchDb::create("cli_json_database");
    let on_scratch = |args: &[&str]| -> Value {
        let run = Run::from(
            w.cmd(&db)
                .env("DATABASE_URL", scratch.url())
                .args(["--format", "json"])
                .args(args)
                .output()
                .unwrap(),
        );
        let doc: Value = serde_json::from_str(run.ok()).unwrap();
        assert_eq!(doc["format"], 1, "{doc}");
        doc
    };
    let reset = on_scratch(&["database", "reset", "-y"]);
    assert_eq!(reset["command"], "database reset");
    assert_eq!(reset["dropped_database"], true);
    assert_eq!(reset["created_database"], true);
    assert_eq!(
        on_scratch(&["database", "drop", "-y"]),
        json!({"format": 1, "command": "database drop", "ok": true,
               "database": scratch.name(), "dropped": true})
    );
    assert_eq!(on_scratch(&["database", "drop", "-y"])["dropped"], false);
}

#[test]
fn errors_are_json_documents_on_stderr_with_their_causes() {
    let db = test_db!("errors_are_json_documents_on_stderr_with_their_causes");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    // A failure inside the library: the whole chain, one cause at a time.
    w.add_migration(
        false,
        "2026-02-01-000000_broken",
        "ALTER TABLE no_such_table ADD COLUMN y INT;",
        "",
    );
    let run = w.run(&db, &["--format", "json", "m:t", "acme"]);
    assert_eq!(run.stdout, "");
    let doc = run.json_error(1);
    assert_eq!(
        doc["error"]["causes"],
        json!([
            "migration failed for tenant `acme`",
            "migration 20260201000000 failed with sqlstate 42P01: relation \"no_such_table\" does not exist",
        ])
    );
    assert_eq!(
        doc["error"]["message"],
        "migration failed for tenant `acme`: migration 20260201000000 failed with sqlstate 42P01: \
         relation \"no_such_table\" does not exist"
    );
    // The same chain, on one line, for people.
    w.run(&db, &["m:t", "acme"]).fails_with(
        "error: migration failed for tenant `acme`: migration 20260201000000 failed with sqlstate 42P01",
    );
    // A query error names its cause (PostgreSQL's message), not only `database query failed`.
    let reader = format!("cli_reader_{}", std::process::id());
    db.conn()
        .batch_execute(&format!(
            "CREATE ROLE {reader} LOGIN; REVOKE ALL ON public.workspaces FROM PUBLIC"
        ))
        .unwrap();
    let url = db.url().replacen("postgres@", &format!("{reader}@"), 1);
    let run = Run::from(
        w.cmd(&db)
            .env("DATABASE_URL", &url)
            .args(["c:t:s", "globex"])
            .output()
            .unwrap(),
    );
    run.fails_with(
        "error: could not look up tenant `globex` in the registry: database query failed: \
         permission denied for table workspaces",
    );
    db.conn()
        .batch_execute(&format!("DROP ROLE {reader}"))
        .unwrap();
    // Usage errors, from clap or from the command, as JSON documents with exit status 2.
    for (args, needle) in [
        (
            &["--format", "json", "no_such_command"][..],
            "unrecognized subcommand",
        ),
        (
            &["--format=json", "fill_spares", "-1"],
            "invalid spare count `-1`",
        ),
        (
            &[
                "--format",
                "json",
                "migration",
                "revert",
                "--all",
                "-n",
                "2",
            ],
            "cannot be used with",
        ),
        (
            &["--format", "json", "export_tenant", "acme", "-"],
            "needs an archive file",
        ),
    ] {
        let run = w.run(&db, args);
        assert_eq!(run.stdout, "", "{args:?}");
        let doc = run.json_error(2);
        assert!(
            doc["error"]["message"].as_str().unwrap().contains(needle),
            "{args:?}: {doc}"
        );
    }
}

#[test]
fn exit_statuses_are_the_documented_ones() {
    let db = test_db!("exit_statuses_are_the_documented_ones");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme", "globex"]).ok();
    // 0, and with --exit-code 0 while no tenant is behind.
    assert_eq!(w.run(&db, &["pending", "--exit-code"]).code, 0);
    add_column_migration(&w);
    // Behind: 0 without --exit-code, 3 with it (the list is printed either way).
    assert_eq!(w.run(&db, &["pending"]).code, 0);
    let run = w.run(&db, &["pending", "--exit-code"]);
    assert_eq!(run.code, 3, "{run:#?}");
    assert!(run.stdout.ends_with("2 tenants of 2 behind\n"), "{run:#?}");
    assert_eq!(run.stderr, "");
    let run = w.run(&db, &["--format", "json", "pending", "--exit-code"]);
    assert_eq!(run.code, 3, "{run:#?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(run.stderr, "");
    // Selection narrows what counts.
    w.run(&db, &["m:t", "acme"]).ok();
    assert_eq!(
        w.run(&db, &["pending", "--exit-code", "--tenants", "acme"])
            .code,
        0
    );
    assert_eq!(
        w.run(&db, &["pending", "--exit-code", "--tenants", "globex"])
            .code,
        3
    );

    // 2: usage errors, nothing done.
    for (args, needle) in [
        (&["fill_spares", "1001"][..], "invalid spare count"),
        (&["m:m:t", "Bad-Name"], "invalid migration name"),
        (&["m:t", "acme", "--tenants", "globex"], "need --all"),
        (&["migrate_all", "--wave", "half"], "invalid --wave"),
        (
            &["revert_run", "1", "--tenants", "acme"],
            "no selection or waves",
        ),
    ] {
        w.run(&db, args).fails_usage(needle);
    }
    for args in [
        &["no_such_command"][..],
        &["list_tenants", "--version"],
        &["fill_spares"],
        &["print-schema", "-o"],
    ] {
        assert_eq!(w.run(&db, args).code, 2, "{args:?}");
    }
    assert!(db.check("(SELECT count(*) FROM public.workspace_spares) = 0"));
    // 1: failures.
    w.run(&db, &["c:t:s", "acme"])
        .fails_with("tenant `acme` already exists");
    // The help lists the statuses.
    assert!(w
        .run(&db, &["--help"])
        .ok()
        .contains("Exit status: 0 success, 1 failure, 2 usage error, 3 `pending --exit-code`"));
}

#[test]
fn colours_follow_no_color_and_clicolor() {
    let db = test_db!("colours_follow_no_color_and_clicolor");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    let sgr = regex::Regex::new("\x1b\\[[0-9;]*m").unwrap();
    let logs = |env: &[(&str, &str)]| {
        let mut cmd = w.cmd(&db);
        cmd.env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .args(["migrate_all"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let run = Run::from(cmd.output().unwrap());
        run.ok();
        assert!(run.stderr.contains("INFO"), "{run:#?}");
        run.stderr
    };
    // Not a terminal: plain; CLICOLOR_FORCE colours anyway, unless NO_COLOR.
    assert!(!sgr.is_match(&logs(&[])));
    assert!(sgr.is_match(&logs(&[("CLICOLOR_FORCE", "1")])));
    assert!(!sgr.is_match(&logs(&[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])));

    // On a terminal (script(1) gives it one): colours, unless NO_COLOR or CLICOLOR=0.
    let help = |env: &str| -> String {
        let bin = support::binary().display();
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!("{env} '{bin}' migrate_all --help"),
                "/dev/null",
            ])
            .current_dir(w.path())
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR")
            .env_remove("CLICOLOR_FORCE")
            .env("TERM", "xterm-256color")
            .output()
            .expect("script(1) from util-linux runs the binary on a terminal");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = help("");
    assert!(coloured.contains("--parallel"), "{coloured}");
    assert!(
        sgr.is_match(&coloured),
        "a terminal gets colours: {coloured:?}"
    );
    for env in ["NO_COLOR=1", "CLICOLOR=0"] {
        let plain = help(&format!("env {env}"));
        assert!(plain.contains("--parallel"), "{plain}");
        assert!(!sgr.is_match(&plain), "{env}: {plain:?}");
    }
}
