//! What every command shares: an unreachable database, a closed stdout, the progress bar.

use super::*;

#[test]
fn every_database_command_reports_an_unreachable_database_in_one_line() {
    let db = test_db!("every_database_command_reports_an_unreachable_database_in_one_line");
    let w = Workdir::new();
    for args in [
        &["c:t:s", "acme"][..],
        &["m:t", "acme"],
        &["m:t", "--all"],
        &["migrate_all"],
        &["revert_tenant", "acme"],
        &["revert_tenant", "--all"],
        &["list_tenants"],
        &["status"],
        &["drop_tenant", "acme", "--yes"],
        &["rename_tenant", "acme", "globex"],
        &["fill_spares", "3"],
        &["list_spares"],
        &["drain_spares", "--yes"],
        &["print-schema"],
        &["setup"],
        &["pending"],
        &["redo_tenant", "acme"],
        &["--format", "json", "status"],
        &["--format", "json", "migrate_all"],
    ] {
        let run = Run::from(
            w.cmd(&db)
                .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")
                .args(args)
                .output()
                .unwrap(),
        );
        let line = if args[0] == "--format" {
            // The error is a JSON document on stderr; stdout holds nothing.
            assert_eq!(run.stdout, "", "{args:?}");
            let doc = run.json_error(1);
            assert_eq!(
                doc["error"]["causes"][0],
                "could not connect to the database"
            );
            doc["error"]["message"].as_str().unwrap().to_owned()
        } else {
            run.fails_with("could not connect to the database")
                .to_owned()
        };
        assert!(line.contains("127.0.0.1"), "{args:?}: {line}");
    }
}

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let db = test_db!("a_closed_stdout_ends_the_command_quietly");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["fill_spares", "1"]).ok();
    for args in [
        &["list_tenants"][..],
        &["print-schema"],
        &["status"],
        &["list_spares"],
        &["pending"],
        &["--format", "json", "list_tenants"],
        &["--format", "json", "status"],
    ] {
        let mut child = w
            .cmd(&db)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes (as `| head -0` would).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "{args:?}");
    }
}

/// On a terminal, fleet progress is a bar on stderr (failures printed above it), not one line per
/// tenant. Runs the binary under `script` (util-linux) for a pseudo-terminal; skipped without it.
#[test]
fn fleet_progress_is_a_bar_on_a_terminal() {
    let db = test_db!("fleet_progress_is_a_bar_on_a_terminal");
    let w = Workdir::new();
    for t in ["acme", "globex"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    add_column_migration(&w);
    db.conn()
        .batch_execute("ALTER TABLE acme.notes ADD COLUMN x INT")
        .unwrap();
    let bin = support::binary().display();
    let run = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("'{bin}' migrate_all --continue-on-error --parallel 1"),
            "/dev/null",
        ])
        .current_dir(w.path())
        .env("DATABASE_URL", db.url())
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .output();
    let out = match run {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("`script` is not available: skipped");
            return;
        }
        Err(e) => panic!("run script: {e}"),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("acme: FAILED: migration 20260201000000"),
        "{text}"
    );
    assert!(text.contains("/2 tenants, "), "no progress bar: {text}");
    assert!(
        !text.contains("[1/2]"),
        "plain progress lines on a terminal: {text}"
    );
    assert!(
        text.contains("1 applied, 0 up to date, 1 failed, 0 skipped"),
        "{text}"
    );
    assert!(
        text.contains("error: migration failed for 1 of 2 tenants: `acme`"),
        "{text}"
    );
}

#[test]
fn a_zero_lock_timeout_is_rejected() {
    let db = test_db!("a_zero_lock_timeout_is_rejected");
    let w = Workdir::new();
    for args in [
        &["migrate_all", "--lock-timeout", "0"][..],
        &["m:t", "--all", "--lock-timeout", "0"],
        &["revert_tenant", "--all", "--lock-timeout", "0"],
    ] {
        let run = w.run(&db, args);
        assert_eq!(run.code, 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains("--lock-timeout <SECONDS>"), "{run:#?}");
        assert!(run.stderr.contains("0 is not in 1..=3600"), "{run:#?}");
    }
    w.run(&db, &["migrate_all", "--lock-timeout", "1"]).ok();
}

#[test]
fn spare_names_are_reserved_for_every_command() {
    let db = test_db!("spare_names_are_reserved_for_every_command");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    w.run(&db, &["fill_spares", "1"]).ok();
    let spare = w.run(&db, &["list_spares"]).ok().trim().to_owned();
    assert!(spare.starts_with("_spare_"), "{spare}");
    for name in ["_spare_x", spare.as_str()] {
        for args in [
            &["c:t:s", name][..],
            &["m:t", name],
            &["revert_tenant", name],
            &["redo_tenant", name],
            &["drop_tenant", name, "--yes"],
            &["rename_tenant", name, "globex"],
            &["rename_tenant", "acme", name],
            &["print-schema", "--tenant", name],
        ] {
            w.run(&db, args).fails_with(&format!(
                "error: invalid tenant name `{name}`: names starting with `_spare_` are reserved for spare schemas"
            ));
        }
    }
    // The spare is untouched.
    assert!(db.schema_exists(&spare));
    assert!(db.schema_exists("acme"));
}

#[test]
fn a_newline_in_a_tenant_name_is_shown_escaped() {
    let db = test_db!("a_newline_in_a_tenant_name_is_shown_escaped");
    let w = Workdir::new();
    for args in [
        &["c:t:s", "acme\nglobex"][..],
        &["m:t", "acme\nglobex"],
        &["drop_tenant", "acme\nglobex", "-y"],
        &["rename_tenant", "acme", "a\tb"],
    ] {
        let run = w.run(&db, args);
        let line = run.fails_with("invalid tenant name `");
        assert!(
            line.contains("`acme\\nglobex`") || line.contains("`a\\tb`"),
            "{args:?}: {line}"
        );
    }
}
