//! `RUST_LOG`: the library's spans on stderr, naming each tenant; none by default.

use super::*;

#[test]
fn rust_log_info_shows_the_library_spans_of_migrate_all() {
    let db = test_db!("rust_log_info_shows_the_library_spans_of_migrate_all");
    let w = Workdir::new();
    for t in ["acme", "globex", "initech"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    add_column_migration(&w);
    let run = Run::from(
        w.cmd(&db)
            .env("RUST_LOG", "info")
            .args(["migrate_all", "--parallel", "2"])
            .output()
            .expect("run the binary"),
    );
    run.ok();
    let lines: Vec<&str> = run.stderr.lines().collect();
    // Each span carries its duration (`elapsed_ms`), which varies.
    let timed = regex::Regex::new(r" elapsed_ms=\d+").unwrap();
    let lines: Vec<String> = lines
        .iter()
        .map(|l| timed.replace(l, "").into_owned())
        .collect();
    for t in ["acme", "globex", "initech"] {
        let line = format!(" INFO fleet.migrate_all:fleet.tenant{{tenant={t} applied=1}}: ");
        assert_eq!(
            lines.iter().filter(|l| l.contains(&line)).count(),
            1,
            "{line} in {run:#?}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains("INFO fleet.migrate_all{tenants=3 applied=3 up_to_date=0 failed=0}: ")),
        "{run:#?}"
    );
    // Plain text when stderr is not a terminal.
    assert!(!run.stderr.contains('\u{1b}'), "{run:#?}");
    assert!(has_x(&db, "acme") && has_x(&db, "globex") && has_x(&db, "initech"));

    // A failing tenant: its span carries the SQLSTATE and the error.
    w.run(&db, &["revert_tenant", "acme"]).ok();
    db.conn()
        .batch_execute("ALTER TABLE acme.notes ADD COLUMN x INT")
        .unwrap();
    let run = Run::from(
        w.cmd(&db)
            .env("RUST_LOG", "diesel_workspace=info")
            .args(["migrate_all"])
            .output()
            .expect("run the binary"),
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.lines().any(|l| timed
            .replace(l, "")
            .contains("fleet.tenant{tenant=acme sqlstate=\"42701\" error=")
            && l.ends_with(": failed")),
        "{run:#?}"
    );
}

#[test]
fn without_rust_log_no_span_is_printed() {
    let db = test_db!("without_rust_log_no_span_is_printed");
    let w = Workdir::new();
    w.run(&db, &["c:t:s", "acme"]).ok();
    add_column_migration(&w);
    let run = w.run(&db, &["migrate_all"]);
    run.ok();
    assert_eq!(run.stderr, "", "{run:#?}");
}
