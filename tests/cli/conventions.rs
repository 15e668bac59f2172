//! diesel_cli's spellings: the `migration` and `database` groups, `--migration-dir`,
//! `--config-file`, `print-schema -o/-e`, `completions`, `--version` after a command, several
//! tenants created at once, schema.rs written again after a run, the starter config.

use super::*;

fn applied(db: &TestDb, tenant: &str) -> i64 {
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query(format!(
        "SELECT count(*) AS n FROM public.workspace_migrations WHERE schema_name = '{tenant}'"
    ))
    .get_result::<Count>(&mut db.conn())
    .unwrap()
    .n
}

#[test]
fn migration_run_revert_redo_and_list_work_on_every_tenant() {
    let db = test_db!("migration_run_revert_redo_and_list_work_on_every_tenant");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme", "globex"]).ok();
    add_column_migration(&w);
    assert_eq!(
        w.run(&db, &["migration", "list"]).ok(),
        "Shared migrations:\n  [X] 00000000000000\n  [X] 00000000000001\n  \
         [X] 00000000000002\n  [X] 2026-01-01-000001_create_plans\n\
         Tenant migrations (2 tenants):\n  [X] 2026-01-01-000001_create_notes (2/2)\n  \
         [ ] 2026-02-01-000000_add_x (0/2; pending: acme, globex)\n"
    );
    w.run(&db, &["m:t", "acme"]).ok();
    assert!(w
        .run(&db, &["migration", "list"])
        .ok()
        .contains("  [~] 2026-02-01-000000_add_x (1/2; pending: globex)\n"));
    // `--tenants` narrows the marks to the tenants it names.
    assert!(w
        .run(&db, &["migration", "list", "--tenants", "acme"])
        .ok()
        .contains("  [X] 2026-02-01-000000_add_x (1/1)\n"));

    let out = w.run(&db, &["migration", "run"]).ok().to_owned();
    assert!(
        out.contains("migrated 2 tenants in ") && out.contains("1 applied, 1 up to date"),
        "{out}"
    );
    assert!(has_x(&db, "acme") && has_x(&db, "globex"));

    // revert: the last migration of every tenant; -n 2 the last two; --all everything.
    let out = w.run(&db, &["migration", "revert"]).ok().to_owned();
    assert!(
        out.contains("tenant `acme`: reverted 20260201000000\n"),
        "{out}"
    );
    assert!(
        out.contains("tenant `globex`: reverted 20260201000000\n"),
        "{out}"
    );
    assert!(!has_x(&db, "acme") && !has_x(&db, "globex"));
    assert_eq!((applied(&db, "acme"), applied(&db, "globex")), (1, 1));
    w.run(&db, &["migration", "run"]).ok();
    let out = w
        .run(
            &db,
            &["migration", "revert", "-n", "2", "--tenants", "acme"],
        )
        .ok()
        .to_owned();
    assert!(
        out.contains("tenant `acme`: reverted 20260201000000, 20260101000001\n"),
        "{out}"
    );
    assert!(!out.contains("globex"), "{out}");
    assert_eq!((applied(&db, "acme"), applied(&db, "globex")), (0, 2));
    assert!(!db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
    w.run(&db, &["migration", "run"]).ok();
    w.run(&db, &["migration", "revert", "--all"]).ok();
    assert_eq!((applied(&db, "acme"), applied(&db, "globex")), (0, 0));
    // Nothing left: a further revert reverts nothing and succeeds.
    assert!(w
        .run(&db, &["migration", "revert"])
        .ok()
        .contains("2 tenants in "));

    // redo: revert, then apply again; the data in the redone column is gone.
    w.run(&db, &["migration", "run"]).ok();
    db.conn()
        .batch_execute("INSERT INTO acme.notes (title, body, x) VALUES ('t', 'b', 7)")
        .unwrap();
    let out = w.run(&db, &["migration", "redo"]).ok().to_owned();
    assert!(
        out.contains("tenant `acme`: reverted 20260201000000, applied 20260201000000\n"),
        "{out}"
    );
    assert!(db.check("(SELECT x IS NULL FROM acme.notes WHERE title = 't')"));
    assert_eq!((applied(&db, "acme"), applied(&db, "globex")), (2, 2));
    let out = w
        .run(&db, &["migration", "redo", "-n", "2"])
        .ok()
        .to_owned();
    assert!(
        out.contains(
            "tenant `globex`: reverted 20260201000000, 20260101000001, applied 20260101000001, 20260201000000\n"
        ),
        "{out}"
    );
    // -n and --all exclude each other; -n 0 is out of range.
    for args in [
        &["migration", "revert", "--all", "-n", "2"][..],
        &["migration", "redo", "-n", "0"],
    ] {
        assert_eq!(w.run(&db, args).code, 2, "{args:?}");
    }
    assert_eq!((applied(&db, "acme"), applied(&db, "globex")), (2, 2));
}

#[test]
fn a_failing_revert_stops_and_names_the_tenant() {
    let db = test_db!("a_failing_revert_stops_and_names_the_tenant");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.add_migration(
        false,
        "2026-02-01-000000_add_y",
        "ALTER TABLE notes ADD COLUMN y INT;",
        "ALTER TABLE no_such_table DROP COLUMN y;",
    );
    w.run(&db, &["migration", "run"]).ok();
    let run = w.run(&db, &["migration", "revert", "--all"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stdout.contains("tenant `acme`: failed: migration 20260201000000 failed with sqlstate 42P01: relation \"no_such_table\""),
        "{run:#?}"
    );
    assert_eq!(
        run.stderr,
        "error: migration failed for 1 of 1 tenants: `acme`\n"
    );
    // Nothing was reverted.
    assert_eq!(applied(&db, "acme"), 2);
}

#[test]
fn migration_generate_and_the_version_flag() {
    let db = test_db!("migration_generate_and_the_version_flag");
    let w = Workdir::new();
    // `--version` after a command is the migration's version, not the tool's.
    let out = w
        .run(&db, &["m:m:t", "add_x", "--version", "2026-03-01-120000"])
        .ok()
        .to_owned();
    assert!(out.contains("2026-03-01-120000_add_x/up.sql"), "{out}");
    assert!(w
        .path()
        .join("migrations_tenant/2026-03-01-120000_add_x/down.sql")
        .is_file());
    w.run(
        &db,
        &[
            "migration",
            "generate",
            "add_y",
            "--version",
            "20260401000000",
        ],
    )
    .ok();
    assert!(w
        .path()
        .join("migrations_tenant/20260401000000_add_y/up.sql")
        .is_file());
    // A version in use (with or without dashes) and a malformed one are refused; nothing written.
    w.run(
        &db,
        &[
            "migration",
            "generate",
            "add_z",
            "--version",
            "20260301120000",
        ],
    )
    .fails_with("version 20260301120000 is taken: `");
    for bad in ["v1", "2026_03", "-1"] {
        w.run(&db, &["m:m:t", "add_z", &format!("--version={bad}")])
            .fails_usage("invalid migration version `");
    }
    assert!(!fs::read_dir(w.path().join("migrations_tenant"))
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with("add_z")));
    // The generated migrations run (after they get SQL).
    fs::write(
        w.path()
            .join("migrations_tenant/2026-03-01-120000_add_x/up.sql"),
        "ALTER TABLE notes ADD COLUMN x INT;",
    )
    .unwrap();
    fs::write(
        w.path()
            .join("migrations_tenant/20260401000000_add_y/up.sql"),
        "ALTER TABLE notes ADD COLUMN y INT;",
    )
    .unwrap();
    w.run(&db, &["c:t:s", "acme"]).ok();
    assert!(has_x(&db, "acme"));
    // The tool's own version: at the top level only; a command without the flag refuses it.
    assert!(w
        .run(&db, &["--version"])
        .ok()
        .starts_with("workspace-diesel "));
    assert_eq!(w.run(&db, &["list_tenants", "--version"]).code, 2);
}

#[test]
fn database_setup_reset_and_drop() {
    let db = test_db!("database_setup_reset_and_drop");
    let w = Workdir::new();
    let scratch = support::ScratchDb::create("cli_database");
    let run = |args: &[&str]| {
        Run::from(
            w.cmd(&db)
                .env("DATABASE_URL", scratch.url())
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let exists = |name: &str| {
        db.check(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = '{name}')"
        ))
    };
    assert!(run(&["database", "setup"]).ok().contains(
        "shared: applied 00000000000000, 00000000000001, 00000000000002, 20260101000001"
    ));
    // `database setup` writes no config file.
    assert!(!w.path().join("workspace-diesel.toml").exists());
    run(&["c:t:s", "acme"]).ok();
    // Without a terminal, reset and drop want --yes; nothing is dropped.
    run(&["database", "reset"]).fails_with("without confirmation: pass --yes");
    run(&["database", "drop"]).fails_with("without confirmation: pass --yes");
    assert!(exists(scratch.name()));
    let out = run(&["database", "reset", "--yes"]).ok().to_owned();
    assert!(
        out.starts_with(&format!(
            "dropped database `{0}`\ncreated database `{0}`\n",
            scratch.name()
        )),
        "{out}"
    );
    assert_eq!(run(&["list_tenants"]).ok(), "no tenants\n");
    assert_eq!(
        run(&["database", "drop", "-y"]).ok(),
        format!("dropped database `{}`\n", scratch.name())
    );
    assert!(!exists(scratch.name()));
    // As diesel_cli's: dropping a database that is not there is not an error.
    assert_eq!(
        run(&["database", "drop", "-y"]).ok(),
        format!("database `{}` does not exist\n", scratch.name())
    );
}

#[test]
fn several_tenants_at_once_from_the_command_line_or_a_file() {
    let db = test_db!("several_tenants_at_once_from_the_command_line_or_a_file");
    let w = Workdir::new();
    let out = w
        .run(&db, &["c:t:s", "aa", "bb", "cc", "--parallel", "2"])
        .ok()
        .to_owned();
    assert!(
        out.contains("created 3 tenants in ") && out.contains(": 3 created, "),
        "{out}"
    );
    fs::write(
        w.path().join("names.txt"),
        "# the second batch\ndd\n\nee  # trailing comment\n",
    )
    .unwrap();
    w.run(&db, &["create_tenant_schema", "--file", "names.txt", "ff"])
        .ok();
    for t in ["aa", "bb", "cc", "dd", "ee", "ff"] {
        assert!(db.schema_exists(t), "{t}");
        assert_eq!(applied(&db, t), 1, "{t}");
    }
    // An existing tenant fails, and is named; the others are created with --continue-on-error.
    let run = w.run(&db, &["c:t:s", "aa", "gg", "--continue-on-error"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("`aa`"), "{run:#?}");
    assert!(
        run.stdout.contains("tenant `aa` already exists"),
        "{run:#?}"
    );
    assert!(db.schema_exists("gg"));
    // Bad input is refused before anything is created.
    w.run(&db, &["c:t:s", "hh", "hh"])
        .fails_usage("tenant `hh` is named twice");
    w.run(&db, &["c:t:s", "ii", "Bad"])
        .fails_with("invalid tenant name `Bad`");
    fs::write(w.path().join("empty.txt"), "# nobody\n").unwrap();
    w.run(&db, &["c:t:s", "--file", "empty.txt"])
        .fails_usage("name a tenant to create");
    w.run(&db, &["c:t:s", "--file", "missing.txt"])
        .fails_with("could not read `missing.txt`");
    assert!(!db.schema_exists("hh") && !db.schema_exists("ii"));
    assert_eq!(w.run(&db, &["c:t:s"]).code, 2);
}

#[test]
fn schema_rs_is_written_again_after_a_run() {
    let db = test_db!("schema_rs_is_written_again_after_a_run");
    let w = Workdir::new();
    fs::create_dir_all(w.path().join("src")).unwrap();
    // `setup` writes the starter config; with src/ beside it, print_schema.file is on.
    let out = w.run(&db, &["setup"]).ok().to_owned();
    assert!(
        out.contains("created config file workspace-diesel.toml\n"),
        "{out}"
    );
    let config = fs::read_to_string(w.path().join("workspace-diesel.toml")).unwrap();
    assert!(config.contains("\nfile = \"src/schema.rs\"\n"), "{config}");
    assert!(
        config.contains("tenant_dir = \"migrations_tenant\""),
        "{config}"
    );
    // A second setup leaves the file alone.
    fs::write(
        w.path().join("workspace-diesel.toml"),
        config.clone() + "# mine\n",
    )
    .unwrap();
    assert!(!w.run(&db, &["setup"]).ok().contains("config file"));
    assert!(fs::read_to_string(w.path().join("workspace-diesel.toml"))
        .unwrap()
        .ends_with("# mine\n"));

    w.run(&db, &["c:t:s", "acme"]).ok();
    let schema = w.path().join("src/schema.rs");
    assert!(!schema.exists(), "creating a tenant changes no table");
    add_column_migration(&w);
    let out = w.run(&db, &["migration", "run"]).ok().to_owned();
    assert!(
        out.ends_with("src/schema.rs\n") && out.contains("schema: wrote "),
        "{out}"
    );
    let text = fs::read_to_string(&schema).unwrap();
    assert!(text.contains("        x -> Nullable<Int4>,"), "{text}");
    w.run(&db, &["revert_tenant", "acme"]).ok();
    assert!(!fs::read_to_string(&schema).unwrap().contains("x -> "));
    w.run(&db, &["migrate_all"]).ok();
    assert!(fs::read_to_string(&schema).unwrap().contains("x -> "));
    // A failed run leaves the file as it was.
    fs::write(&schema, "// old\n").unwrap();
    w.add_migration(
        false,
        "2026-03-01-000000_broken",
        "ALTER TABLE no_such_table ADD COLUMN y INT;",
        "",
    );
    assert_eq!(w.run(&db, &["migration", "run"]).code, 1);
    assert_eq!(fs::read_to_string(&schema).unwrap(), "// old\n");
}

#[test]
fn diesel_flag_names_and_print_schema_filters() {
    let db = test_db!("diesel_flag_names_and_print_schema_filters");
    let w = Workdir::new();
    fs::rename(
        w.path().join("migrations_tenant"),
        w.path().join("tenant_set"),
    )
    .unwrap();
    // --migration-dir (diesel's) and --migrations-dir (ours) name the same directory.
    w.run(&db, &["--migration-dir", "tenant_set", "c:t:s", "acme"])
        .ok();
    w.run(&db, &["--migrations-dir", "tenant_set", "c:t:s", "globex"])
        .ok();
    w.run(&db, &["c:t:s", "initech"]).fails_with(
        "the tenant migrations directory `migrations_tenant` does not exist (see --migration-dir)",
    );
    // --config-file (diesel's) and --config (ours).
    fs::write(
        w.path().join("other.toml"),
        "[migrations]\ntenant_dir = \"tenant_set\"\n",
    )
    .unwrap();
    w.run(&db, &["--config-file", "other.toml", "c:t:s", "initech"])
        .ok();
    w.run(&db, &["--config", "other.toml", "c:t:s", "umbrella"])
        .ok();
    w.run(&db, &["--config-file", "missing.toml", "list_tenants"])
        .fails_with("the config file `missing.toml` does not exist");

    // -o is --only-tables and -e --except-tables, as in diesel; the file is --output-file.
    let only = w.run(&db, &["print-schema", "-o", "notes"]).ok().to_owned();
    assert!(
        only.contains("    notes (id) {") && !only.contains("tags (id)"),
        "{only}"
    );
    assert!(!w.path().join("notes").exists(), "-o is not an output file");
    let except = w
        .run(&db, &["print-schema", "-e", "notes", "plans"])
        .ok()
        .to_owned();
    assert!(
        except.contains("    tags (id) {")
            && !except.contains("notes (id)")
            && !except.contains("plans (id)"),
        "{except}"
    );
    w.run(
        &db,
        &["print-schema", "-o", "notes", "--output-file", "out.rs"],
    )
    .ok();
    assert_eq!(fs::read_to_string(w.path().join("out.rs")).unwrap(), only);
    assert_eq!(
        w.run(&db, &["print-schema", "-o", "notes", "-e", "tags"])
            .code,
        2
    );
}

#[test]
fn completions_for_each_shell() {
    let db = test_db!("completions_for_each_shell");
    let w = Workdir::new();
    for (shell, marker) in [
        ("bash", "complete -F _workspace__diesel"),
        ("zsh", "#compdef workspace-diesel"),
        ("fish", "complete -c workspace-diesel"),
        ("elvish", "workspace-diesel"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = w.run(&db, &["completions", shell]).ok().to_owned();
        assert!(out.contains(marker), "{shell}: {out}");
        for name in ["migrate_all", "migration", "print-schema"] {
            assert!(out.contains(name), "{shell} lacks {name}");
        }
    }
    // The script needs no database and no config file.
    let run = Run::from(
        w.cmd(&db)
            .env_remove("DATABASE_URL")
            .args(["completions", "bash"])
            .output()
            .unwrap(),
    );
    run.ok();
    assert_eq!(w.run(&db, &["completions", "tcsh"]).code, 2);
}
