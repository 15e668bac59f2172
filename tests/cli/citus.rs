//! The Citus commands: `lint_migrations` (any engine), and on the cluster `list_tenants` /
//! `status` with placement, `move_tenant`, and the lint refusing a migration before it runs.

use super::*;
use workspace_diesel_tests::citus_db;

fn add_trigger_migration(w: &Workdir) {
    w.add_migration(
        false,
        "2026-03-01-000000_add_trigger",
        "CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;\n\
         CREATE TRIGGER notes_touch BEFORE UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION touch();",
        "DROP TRIGGER notes_touch ON notes; DROP FUNCTION touch();",
    );
}

#[test]
fn lint_migrations_reports_each_finding() {
    let db = test_db!("lint_migrations_reports_each_finding");
    let w = Workdir::new();
    let run = w.run(&db, &["lint_migrations"]);
    assert!(
        run.ok()
            .contains("nothing Citus cannot do in a distributed schema"),
        "{run:?}"
    );
    add_trigger_migration(&w);
    let run = w.run(&db, &["lint_migrations"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stdout
            .starts_with("migration `20260301000000`, line 2: CREATE TRIGGER"),
        "{run:?}"
    );
    assert!(
        run.stderr.contains("1 problem in the tenant migrations"),
        "{run:?}"
    );
    // On PostgreSQL the migration still applies: the lint runs before applying only on Citus.
    w.run(&db, &["c:t:s", "acme"]).ok();
}

#[test]
fn placement_commands_on_the_cluster() {
    let db = citus_db!("placement_commands_on_the_cluster");
    let _moves = workspace_diesel_tests::citus::move_lock();
    let w = Workdir::new();
    w.run_url(db.url(), &["c:t:s", "acme"]).ok();
    let list = w.run_url(db.url(), &["list_tenants"]);
    let out = list.ok();
    assert!(out.starts_with("TENANT  APPLIED  PENDING  NODE"), "{out}");
    let node = db.assert_distributed("acme").clone();
    let here = format!("{}:{}", node.host, node.port);
    assert!(out.contains(&here), "{out}");
    let status = w.run_url(db.url(), &["status"]);
    assert!(status.ok().contains("engine: Citus 12.1"), "{status:?}");
    assert!(
        status.ok().contains(&format!("  {here}: 1 tenant, ")),
        "{status:?}"
    );

    let other = db.workers().iter().find(|n| **n != node).unwrap();
    let there = format!("{}:{}", other.host, other.port);
    let moved = w.run_url(db.url(), &["move_tenant", "acme", &there]);
    assert_eq!(moved.ok(), format!("moved tenant `acme` to {there}\n"));
    assert_eq!(db.assert_distributed("acme"), other);
    w.run_url(db.url(), &["move_tenant", "acme", "nowhere"])
        .fails_with("expected HOST:PORT");

    // The lint refuses a trigger before anything runs.
    add_trigger_migration(&w);
    let refused = w.run_url(db.url(), &["migrate_all"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("refusing to apply"), "{refused:?}");
    assert!(refused.stderr.contains("CREATE TRIGGER"), "{refused:?}");
    assert!(db.check("pg_catalog.to_regprocedure('acme.touch()') IS NULL"));
}

/// `--node`: a fleet run takes exactly the tenants placed on that worker (checked against
/// Citus's placement and in each tenant's schema), and a node without tenants is refused.
#[test]
fn node_selection_takes_the_tenants_placed_there() {
    let db = citus_db!("node_selection_takes_the_tenants_placed_there");
    let _moves = workspace_diesel_tests::citus::move_lock();
    let w = Workdir::new();
    let tenants = ["n_a", "n_b", "n_c", "n_d", "n_e", "n_f"];
    for t in tenants {
        w.run_url(db.url(), &["c:t:s", t]).ok();
    }
    // Both workers hold tenants: move one when the cluster put them all on one.
    let first = db.assert_distributed(tenants[0]).clone();
    if tenants.iter().all(|t| *db.assert_distributed(t) == first) {
        let other = db.workers().iter().find(|n| **n != first).unwrap();
        let there = format!("{}:{}", other.host, other.port);
        w.run_url(db.url(), &["move_tenant", tenants[0], &there])
            .ok();
    }
    let placed = |node: &workspace_diesel_tests::citus::Node| -> Vec<&str> {
        tenants
            .iter()
            .copied()
            .filter(|t| db.assert_distributed(t) == node)
            .collect()
    };
    let node = db.workers()[0].clone();
    let here = format!("{}:{}", node.host, node.port);
    let on_node = placed(&node);
    let elsewhere: Vec<&str> = tenants
        .iter()
        .copied()
        .filter(|t| !on_node.contains(t))
        .collect();
    assert!(!on_node.is_empty() && !elsewhere.is_empty(), "{on_node:?}");

    add_column_migration(&w);
    // The plan and the run take the same tenants: exactly those placed on the node.
    let plan: serde_json::Value = serde_json::from_str(
        w.run_url(db.url(), &["--format", "json", "plan", "--node", &here])
            .ok(),
    )
    .unwrap();
    let planned: Vec<&str> = plan["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(planned, on_node);
    let run: serde_json::Value = serde_json::from_str(
        w.run_url(
            db.url(),
            &["--format", "json", "migrate_all", "--node", &here],
        )
        .ok(),
    )
    .unwrap();
    let ran: Vec<(&str, &str)> = run["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tenant"].as_str().unwrap(),
                t["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ran,
        on_node.iter().map(|t| (*t, "applied")).collect::<Vec<_>>()
    );
    for t in &on_node {
        assert!(
            db.check(&format!(
                "EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{t}' \
                 AND table_name = 'notes' AND column_name = 'x')"
            )),
            "{t} migrated"
        );
    }
    for t in &elsewhere {
        assert!(
            db.check(&format!(
                "NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = '{t}' \
                 AND table_name = 'notes' AND column_name = 'x')"
            )),
            "{t} untouched"
        );
    }
    w.run_url(db.url(), &["migrate_all", "--node", "127.0.0.1:1"])
        .fails_with("no tenant is placed on node `127.0.0.1:1`");
    // `--node` narrows the other options: a named tenant placed elsewhere is not taken.
    let narrowed: serde_json::Value = serde_json::from_str(
        w.run_url(
            db.url(),
            &[
                "--format",
                "json",
                "plan",
                "--node",
                &here,
                "--tenants",
                elsewhere[0],
            ],
        )
        .ok(),
    )
    .unwrap();
    assert_eq!(narrowed["tenants"], serde_json::json!([]), "{narrowed}");
    assert_eq!(narrowed["up_to_date"], 0, "{narrowed}");
}
