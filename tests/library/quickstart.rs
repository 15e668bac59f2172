//! The quick start example (`cargo run -p workspace-diesel --example quickstart`), run as a user
//! runs it: its scratch database is unique per run and gone afterwards, and a dead server gets a
//! one-line hint.

use std::process::Command;

use diesel::prelude::*;
use workspace_diesel_tests::admin_url;
use workspace_diesel_tests::cli::{quickstart, Run};

fn database_exists(name: &str) -> bool {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        b: bool,
    }
    let mut conn = PgConnection::establish(&admin_url()).expect("connect to the server");
    diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1) AS b",
    )
    .bind::<diesel::sql_types::Text, _>(name)
    .get_result::<Row>(&mut conn)
    .expect("look up the database")
    .b
}

#[test]
fn scratch_databases_are_unique_per_run_and_dropped() {
    // Two runs at once on one server: each gets a database of its own.
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(quickstart())
                .env_remove("DATABASE_URL")
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("start the example")
        })
        .collect();
    let mut names = Vec::new();
    for child in children {
        let pid = child.id();
        let run = Run::from(child.wait_with_output().expect("wait for the example"));
        let out = run.ok();
        let first = out.lines().next().unwrap_or_default();
        let name = first
            .strip_prefix("using a fresh database ")
            .and_then(|rest| rest.split(' ').next())
            .unwrap_or_else(|| panic!("no database named in {out:?}"));
        assert!(name.starts_with(&format!("dwx_{pid}_")), "{name}");
        assert!(name.ends_with("_quickstart"), "{name}");
        assert!(out.contains("acme sees 2 note(s):"), "{out}");
        assert!(out.contains("globex sees 1 note(s):"), "{out}");
        assert!(!database_exists(name), "{name} was not dropped");
        names.push(name.to_owned());
    }
    assert_ne!(names[0], names[1]);
}

#[test]
fn dead_database_url_gets_a_hint() {
    let run = Run::from(
        Command::new(quickstart())
            .env(
                "DATABASE_URL",
                "postgres://someone:s3cret@127.0.0.1:1/nowhere",
            )
            .output()
            .expect("run the example"),
    );
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(run.stdout, "", "{run:#?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{run:#?}");
    assert!(
        lines[0].starts_with(
            "error: no PostgreSQL answers at DATABASE_URL postgres://someone:***@127.0.0.1:1/nowhere ("
        ),
        "{run:#?}"
    );
    assert!(
        lines[0].contains("Start it, or point DATABASE_URL at a database"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains("s3cret"), "{run:#?}");
}
