//! On a terminal, with `RUST_LOG` on: the fleet's progress bar and the log records share stderr
//! without mixing. The binary runs under script(1) (util-linux) for a pseudo-terminal, and what
//! it wrote is replayed through a terminal emulator (vt100) to get the screen a person sees.

use super::*;

/// How many tenants the fleet run walks.
const TENANTS: usize = 36;

/// The screen after `command` ran on a 160-column terminal, with no line scrolled away; also the
/// raw bytes and the exit code.
fn on_terminal(w: &Workdir, db: &TestDb, command: &str) -> (String, String, i32) {
    let bin = support::binary().display();
    let out = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("stty cols 160 rows 50; exec '{bin}' {command}"),
            "/dev/null",
        ])
        .current_dir(w.path())
        .env("DATABASE_URL", db.url())
        .env("TERM", "xterm")
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .output()
        .expect("script(1) from util-linux runs the binary on a terminal");
    // Tall enough that nothing scrolls off: every line ever printed stays on the screen.
    let size = |n: u16| std::num::NonZeroU16::new(n).expect("not zero");
    let mut screen = vt100::Parser::new(size(4000), size(160), 0);
    screen.process(&out.stdout);
    (
        screen.screen().contents(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.code().unwrap_or(-1),
    )
}

#[test]
fn progress_bar_and_log_records_do_not_interleave() {
    let db = test_db!("progress_bar_and_log_records_do_not_interleave");
    let w = Workdir::new();
    let names: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
    fs::write(w.path().join("names.txt"), names.join("\n")).unwrap();
    w.run(&db, &["c:t:s", "--file", "names.txt"]).ok();
    // Each tenant takes a moment, so the bar is drawn many times between the records.
    w.add_migration(
        false,
        "2026-02-01-000000_add_x",
        "SELECT pg_sleep(0.04); ALTER TABLE notes ADD COLUMN x INT;",
        "ALTER TABLE notes DROP COLUMN x;",
    );
    let (screen, raw, code) = on_terminal(&w, &db, "migrate_all --parallel 2");
    assert_eq!(code, 0, "{screen}");
    // Not vacuous: the bar was drawn, and every tenant's record is there.
    let bar = format!("/{TENANTS} tenants, ");
    assert!(raw.matches(&bar).count() >= 3, "the bar was drawn: {raw:?}");
    let lines: Vec<&str> = screen.lines().collect();
    let record_of =
        regex::Regex::new(r"fleet\.tenant\{tenant=(t\d\d)( elapsed_ms=\d+)? applied=1\}: ")
            .unwrap();
    for name in &names {
        let record = format!("fleet.tenant{{tenant={name} ");
        let whole = lines
            .iter()
            .filter(|l| l.contains(&record))
            .filter(|l| {
                record_of
                    .captures(l)
                    .is_some_and(|c| &c[1] == name.as_str())
            })
            .count();
        assert_eq!(whole, 1, "{record} in\n{screen}");
    }
    // No line holds both a record and bar fragments, and no bar line is left behind (the bar is
    // cleared when the run ends).
    for line in &lines {
        assert!(
            !line.contains(&bar) && !line.contains("[==") && !line.contains("=>"),
            "a bar fragment is left on the screen: {line:?}\n{screen}"
        );
    }
    // Every record line is one whole record, and the summary comes after the records.
    let records = lines.iter().filter(|l| l.contains(" INFO ")).count();
    assert!(records > TENANTS, "{screen}");
    assert!(
        lines
            .iter()
            .filter(|l| l.contains(" INFO "))
            .all(|l| l.trim_start().starts_with("INFO ")),
        "{screen}"
    );
    let summary = lines
        .iter()
        .position(|l| l.starts_with(&format!("migrated {TENANTS} tenants in ")))
        .unwrap_or_else(|| panic!("no summary in\n{screen}"));
    assert!(lines[..summary].iter().any(|l| l.contains("fleet.tenant{")));
    assert!(has_x(&db, "t00") && has_x(&db, &names[TENANTS - 1]));
}
