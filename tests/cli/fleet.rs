//! Fleet runs from the command line: the tenant selection, the states, waves with a failure
//! budget, the record (`runs`) and `revert_run`, in JSON.

use serde_json::Value;

use super::*;

fn doc(run: &Run) -> Value {
    serde_json::from_str(run.ok()).unwrap_or_else(|e| panic!("{e}: {}", run.ok()))
}

fn outcomes(v: &Value) -> Vec<(String, String)> {
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap().to_owned(),
                t["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn pair(t: &str, o: &str) -> (String, String) {
    (t.to_owned(), o.to_owned())
}

#[test]
fn select_record_and_revert_a_run() {
    let db = test_db!("cli_select_record_and_revert_a_run");
    let w = Workdir::new();
    for t in ["eu_a", "eu_b", "us_a", "paused"] {
        w.run(&db, &["c:t:s", t]).ok();
    }
    w.run(&db, &["set_tenant_status", "paused", "suspended"])
        .ok();
    w.add_migration(
        false,
        "2026-02-01-000000_add_x",
        "ALTER TABLE notes ADD COLUMN x INTEGER;",
        "ALTER TABLE notes DROP COLUMN x;",
    );
    // A bad selection is refused before anything runs.
    w.run(&db, &["migrate_all", "--tenants", "nobody"])
        .fails_with("tenant `nobody` does not exist");
    w.run(&db, &["migrate_all", "--wave", "half"])
        .fails_usage("invalid --wave `half`");
    w.run(&db, &["migrate_all", "--failure-budget", "lots"])
        .fails_usage("invalid --failure-budget `lots`");

    // The eu tenants but eu_b, in waves; the suspended tenant is not matched.
    let run = doc(&w.run(
        &db,
        &[
            "--format",
            "json",
            "migrate_all",
            "--pattern",
            "eu_*",
            "--except",
            "eu_b",
            "--wave",
            "tenants:eu_a",
            "--wave",
            "rest",
            "--failure-budget",
            "0",
        ],
    ));
    assert_eq!(outcomes(&run), [pair("eu_a", "applied")]);
    let first = run["run"].as_i64().expect("recorded");

    // Everything else: the suspended tenant is held and reported.
    let run = doc(&w.run(&db, &["--format", "json", "migrate_all"]));
    assert_eq!(
        outcomes(&run),
        [
            pair("eu_a", "up_to_date"),
            pair("eu_b", "applied"),
            pair("us_a", "applied"),
            pair("paused", "held"),
        ]
    );
    assert_eq!(run["summary"]["held"], 1);
    let second = run["run"].as_i64().unwrap();

    let runs = doc(&w.run(&db, &["--format", "json", "runs"]));
    let ids: Vec<i64> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, [second, first]);
    assert_eq!(runs["runs"][1]["selection"], "patterns: eu_*; except: eu_b");
    let detail = doc(&w.run(
        &db,
        &["--format", "json", "runs", "--run", &second.to_string()],
    ));
    assert_eq!(detail["tenants"].as_array().unwrap().len(), 3);

    // Reverting the second run brings back eu_b and us_a only (eu_a had nothing to do in it);
    // a rerun does nothing.
    let reverted = doc(&w.run(
        &db,
        &["--format", "json", "revert_run", &second.to_string()],
    ));
    assert_eq!(
        outcomes(&reverted),
        [pair("eu_b", "reverted"), pair("us_a", "reverted")]
    );
    let pending = doc(&w.run(&db, &["--format", "json", "pending", "--state", "active"]));
    let behind: Vec<&str> = pending["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(behind, ["eu_b", "us_a"]);
    let again = doc(&w.run(
        &db,
        &["--format", "json", "revert_run", &second.to_string()],
    ));
    assert_eq!(again["summary"]["changed"], 0);
}
