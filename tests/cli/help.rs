//! `--help`, aliases and usage errors.

use super::*;

#[test]
fn help_is_pinned() {
    let db = test_db!("help_is_pinned");
    let w = Workdir::new();
    insta::assert_snapshot!("help", w.run(&db, &["--help"]).ok());
    for command in [
        "create_tenant_schema",
        "makemigrations_tenant",
        "migrate_tenant",
        "migrate_all",
        "revert_tenant",
        "list_tenants",
        "status",
        "drop_tenant",
        "rename_tenant",
        "set_tenant_status",
        "fill_spares",
        "list_spares",
        "drain_spares",
        "print-schema",
    ] {
        let run = w.run(&db, &[command, "--help"]);
        insta::assert_snapshot!(format!("help_{command}"), run.ok());
    }
}

#[test]
fn aliases_resolve_to_their_commands() {
    let db = test_db!("aliases_resolve_to_their_commands");
    let w = Workdir::new();
    for (alias, command) in [
        ("c:t:s", "create_tenant_schema"),
        ("m:m:t", "makemigrations_tenant"),
        ("m:t", "migrate_tenant"),
    ] {
        assert_eq!(
            w.run(&db, &[alias, "--help"]).ok(),
            w.run(&db, &[command, "--help"]).ok(),
            "{alias}"
        );
    }
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
