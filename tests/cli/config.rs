//! The config file `workspace-diesel.toml`: found from the current directory upward, paths
//! relative to it, overridden by flags.

use std::path::Path;

use super::*;

/// Moves the work directory's migrations under `db/` and writes a config file naming them and
/// `APP_DB` as the URL variable.
fn configured(w: &Workdir) {
    fs::create_dir_all(w.path().join("db")).unwrap();
    fs::rename(
        w.path().join("migrations_tenant"),
        w.path().join("db/tenant"),
    )
    .unwrap();
    fs::rename(
        w.path().join("migrations_shared"),
        w.path().join("db/shared"),
    )
    .unwrap();
    fs::create_dir_all(w.path().join("src/deep")).unwrap();
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[database]\nurl_env = \"APP_DB\"\n\n[migrations]\ntenant_dir = \"db/tenant\"\nshared_dir = \"db/shared\"\n",
    )
    .unwrap();
}

fn run_in(w: &Workdir, db: &TestDb, dir: &str, args: &[&str]) -> Run {
    Run::from(
        w.cmd(db)
            .current_dir(w.path().join(dir))
            .env("APP_DB", db.url())
            .env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/not_this_one",
            )
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn the_config_file_is_found_upward_and_its_paths_are_its_own() {
    let db = test_db!("the_config_file_is_found_upward_and_its_paths_are_its_own");
    let w = Workdir::new();
    configured(&w);
    // From a subdirectory: the URL comes from APP_DB, the migrations from db/.
    run_in(&w, &db, "src/deep", &["c:t:s", "acme"]).ok();
    assert!(db.check("pg_catalog.to_regclass('acme.notes') IS NOT NULL"));
    assert!(db.check("pg_catalog.to_regclass('public.plans') IS NOT NULL"));
    let out = run_in(&w, &db, "src/deep", &["m:m:t", "add_x"])
        .ok()
        .to_owned();
    let up = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("Creating ")
        .unwrap();
    assert!(
        Path::new(up).starts_with(w.path().join("db/tenant")),
        "{up}"
    );
    let status = run_in(&w, &db, "src", &["status"]).ok().to_owned();
    assert!(
        status.contains("not written yet (empty up.sql, not counted): "),
        "{status}"
    );
    // A flag wins over the file.
    let other = w.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let run = run_in(
        &w,
        &db,
        "src",
        &["--migrations-dir", other.to_str().unwrap(), "status"],
    );
    assert!(
        run.ok().contains("tenant migrations: 0 migrations\n"),
        "{run:#?}"
    );
    let run = run_in(
        &w,
        &db,
        "src",
        &[
            "--database-url",
            "postgres://postgres@127.0.0.1:1/flag",
            "status",
        ],
    );
    run.fails_with("could not connect to the database");
    // Without the variable it names, the error says where that name comes from.
    let run = Run::from(
        w.cmd(&db)
            .current_dir(w.path().join("src"))
            .env_remove("APP_DB")
            .arg("status")
            .output()
            .unwrap(),
    );
    let line = run.fails_with("no database given: pass --database-url or set APP_DB (named by `");
    assert!(line.contains("workspace-diesel.toml`)"), "{line}");
}

#[test]
fn an_explicit_config_file_and_a_broken_one() {
    let db = test_db!("an_explicit_config_file_and_a_broken_one");
    let w = Workdir::new();
    configured(&w);
    let elsewhere = w.path().join("elsewhere.toml");
    fs::rename(w.path().join("workspace-diesel.toml"), &elsewhere).unwrap();
    // No file is found any more: the defaults apply (DATABASE_URL, migrations_tenant).
    run_in(&w, &db, ".", &["list_tenants"]).fails_with("could not connect to the database");
    let run = run_in(
        &w,
        &db,
        ".",
        &["--config", elsewhere.to_str().unwrap(), "c:t:s", "acme"],
    );
    run.ok();
    assert!(db.schema_exists("acme"));
    run_in(&w, &db, ".", &["--config", "missing.toml", "status"])
        .fails_with("the config file `missing.toml` does not exist");
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[migrations]\ntenant_directory = \"db/tenant\"\n",
    )
    .unwrap();
    let run = run_in(&w, &db, "src", &["status"]);
    let line = run.fails_with("invalid config file `");
    assert!(line.contains("unknown field `tenant_directory`"), "{line}");
}

/// A `[roles]` table makes the commands create, rename and drop each tenant's role with the
/// tenant (a login role with `login = true`), so an application's role pools find the roles of
/// tenants made by the CLI; the role logs in and reads its own tenant only.
#[test]
fn tenant_roles_from_the_config_file() {
    let db = test_db!("cli_config_roles");
    let w = Workdir::new();
    let prefix = format!("dwc{}_", support::db::run_token().replace('_', ""));
    fs::write(
        w.path().join("workspace-diesel.toml"),
        format!("[roles]\nprefix = \"{prefix}\"\nlogin = true\n"),
    )
    .unwrap();
    w.run(&db, &["create_tenant_schema", "acme"]).ok();
    w.run(&db, &["create_tenant_schema", "globex"]).ok();
    let role = |t: &str| format!("{prefix}{t}");
    let login = |t: &str| {
        db.check(&format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = '{}' AND rolcanlogin)",
            role(t)
        ))
    };
    assert!(login("acme") && login("globex"));
    let roles = diesel_workspace::TenantRoles::new(prefix.as_str())
        .unwrap()
        .login(true);
    let pools = diesel_workspace::TenantRolePools::builder(db.url(), roles).build();
    let acme = TenantId::new("acme").unwrap();
    let mut conn = pools.get(&acme).unwrap();
    conn.batch_execute("SELECT count(*) FROM acme.notes")
        .unwrap();
    assert!(conn
        .batch_execute("SELECT count(*) FROM globex.notes")
        .unwrap_err()
        .to_string()
        .contains("permission denied"));
    drop((conn, pools));
    w.run(&db, &["rename_tenant", "globex", "initech"]).ok();
    assert!(login("initech") && !login("globex"));
    w.run(&db, &["drop_tenant", "--yes", "initech"]).ok();
    w.run(&db, &["drop_tenant", "--yes", "acme"]).ok();
    assert!(!login("initech") && !login("acme"));
    fs::write(
        w.path().join("workspace-diesel.toml"),
        "[roles]\nprefix = \"Bad\"\n",
    )
    .unwrap();
    w.run(&db, &["create_tenant_schema", "hooli"])
        .fails_with("roles.prefix");
}
