//! `--help`, aliases and usage errors.

use super::*;

#[test]
fn help_is_pinned() {
    let db = test_db!("help_is_pinned");
    let w = Workdir::new();
    insta::assert_snapshot!("help", w.run(&db, &["--help"]).ok());
    for command in [
        "setup",
        "create_tenant_schema",
        "makemigrations_tenant",
        "migrate_tenant",
        "migrate_all",
        "plan",
        "revert_tenant",
        "redo_tenant",
        "list_tenants",
        "pending",
        "status",
        "drop_tenant",
        "rename_tenant",
        "set_tenant_status",
        "fill_spares",
        "list_spares",
        "drain_spares",
        "lint_migrations",
        "move_tenant",
        "rebalance",
        "print-schema",
        "completions",
    ] {
        let run = w.run(&db, &[command, "--help"]);
        insta::assert_snapshot!(format!("help_{command}"), run.ok());
    }
    for (group, commands) in [
        (
            "migration",
            &["run", "revert", "redo", "list", "generate"][..],
        ),
        ("database", &["setup", "reset", "drop"]),
    ] {
        insta::assert_snapshot!(format!("help_{group}"), w.run(&db, &[group, "--help"]).ok());
        for command in commands {
            let run = w.run(&db, &[group, command, "--help"]);
            insta::assert_snapshot!(format!("help_{group}_{command}"), run.ok());
        }
    }
}

/// Every command: its snake_case name, its short alias and its kebab-case spelling.
const SPELLINGS: &[(&str, &str, &str)] = &[
    ("setup", "s:u", "setup"),
    ("create_tenant_schema", "c:t:s", "create-tenant-schema"),
    ("makemigrations_tenant", "m:m:t", "makemigrations-tenant"),
    ("migrate_tenant", "m:t", "migrate-tenant"),
    ("migrate_all", "m:a", "migrate-all"),
    ("plan", "p:l", "plan"),
    ("revert_tenant", "r:t", "revert-tenant"),
    ("redo_tenant", "r:d:t", "redo-tenant"),
    ("list_tenants", "l:t", "list-tenants"),
    ("pending", "p:t", "pending"),
    ("status", "s:t", "status"),
    ("drop_tenant", "d:t", "drop-tenant"),
    ("rename_tenant", "rn:t", "rename-tenant"),
    ("set_tenant_status", "s:t:s", "set-tenant-status"),
    ("fill_spares", "f:s", "fill-spares"),
    ("list_spares", "l:s", "list-spares"),
    ("drain_spares", "d:s", "drain-spares"),
    ("lint_migrations", "l:m", "lint-migrations"),
    ("move_tenant", "mv:t", "move-tenant"),
    ("rebalance", "r:b", "rebalance"),
    ("print_schema", "p:s", "print-schema"),
];

#[test]
fn every_spelling_resolves_to_its_command() {
    let db = test_db!("every_spelling_resolves_to_its_command");
    let w = Workdir::new();
    for (snake, alias, kebab) in SPELLINGS {
        let expected = w.run(&db, &[kebab, "--help"]).ok().to_owned();
        assert!(!expected.is_empty(), "{kebab}");
        for spelling in [snake, alias] {
            assert_eq!(
                w.run(&db, &[spelling, "--help"]).ok(),
                expected,
                "{spelling}"
            );
        }
    }
    // The top-level help lists each command once, with its short alias; the kebab-case
    // spellings are hidden (one line says they exist).
    let help = w.run(&db, &["--help"]).ok().to_owned();
    for (snake, alias, kebab) in SPELLINGS {
        let name = if *snake == "print_schema" {
            kebab
        } else {
            snake
        };
        let lines: Vec<&str> = help
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{name} ")))
            .collect();
        assert_eq!(lines.len(), 1, "{name}: {help}");
        assert!(
            lines[0].ends_with(&format!("[alias: {alias}]")),
            "{}",
            lines[0]
        );
        if kebab != name {
            assert!(!help.contains(&format!(" {kebab} ")), "{kebab}: {help}");
        }
    }
    assert!(help.contains("Every command also answers to its kebab-case spelling"));
    // An alias runs the command, not only its help.
    assert_eq!(w.run(&db, &["list-tenants"]).ok(), "no tenants\n");
}

#[test]
fn usage_errors_exit_2() {
    let db = test_db!("usage_errors_exit_2");
    let w = Workdir::new();
    let run = w.run(&db, &["no_such_command"]);
    assert_eq!(run.code, 2, "{run:#?}");
    let run = w.run(&db, &["migrate_tenant"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("<IDENTIFIER>"), "{run:#?}");
}
