//! The registry model: the `workspaces` table through Diesel, its status enum and its trigger.

use diesel::prelude::*;
use diesel_workspace::prelude::*;
use diesel_workspace::{
    registry::workspace_migrations, registry::workspaces, registry::LifecycleState,
    registry::Workspace,
};

use crate::test_db;

#[test]
fn registry_rows_load_update_and_keep_timestamps() {
    let db = test_db!("registry_rows_load_update_and_keep_timestamps");
    let ids = db.provision(&["acme", "globex"]);
    let mut conn = db.conn();

    let rows: Vec<Workspace> = workspaces::table
        .order(workspaces::schema_name)
        .select(Workspace::as_select())
        .load(&mut conn)
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].tenant_id().unwrap(), ids[0]);
    assert_eq!(rows[1].schema_name(), "globex");
    assert!(rows.iter().all(|w| w.status == LifecycleState::Active));

    // The enum round-trips, and the trigger moves updated_at (not created_at).
    conn.transaction(|c| {
        diesel::update(workspaces::table.filter(workspaces::schema_name.eq("acme")))
            .set((
                workspaces::status.eq(LifecycleState::Suspended),
                workspaces::display_name.eq("Acme Corp"),
            ))
            .execute(c)
    })
    .unwrap();
    let acme: Workspace = workspaces::table
        .filter(workspaces::schema_name.eq("acme"))
        .select(Workspace::as_select())
        .first(&mut conn)
        .unwrap();
    assert_eq!(acme.status, LifecycleState::Suspended);
    assert_eq!(acme.display_name, "Acme Corp");
    assert!(acme.updated_at > rows[0].updated_at);
    assert_eq!(acme.created_at, rows[0].created_at);

    // Every tenant migration is in the central record.
    let recorded: Vec<(String, String)> = workspace_migrations::table
        .select((
            workspace_migrations::schema_name,
            workspace_migrations::version,
        ))
        .order((
            workspace_migrations::schema_name,
            workspace_migrations::version,
        ))
        .load(&mut conn)
        .unwrap();
    let versions = db.migrator().tenant_versions().to_vec();
    let expected: Vec<(String, String)> = ["acme", "globex"]
        .iter()
        .flat_map(|t| versions.iter().map(move |v| (t.to_string(), v.clone())))
        .collect();
    assert_eq!(recorded, expected);
}

#[test]
fn registry_refuses_invalid_names_written_by_hand() {
    let db = test_db!("registry_refuses_invalid_names_written_by_hand");
    db.provision(&[]);
    let mut conn = db.conn();
    let err = diesel::insert_into(workspaces::table)
        .values(workspaces::schema_name.eq("Bad Name"))
        .execute(&mut conn)
        .unwrap_err();
    assert!(err.to_string().contains("check constraint"), "{err}");
    // The model refuses a name that breaks the rule even if it was stored some other way.
    let stored = Workspace {
        schema_name: "Bad Name".into(),
        ..sample()
    };
    assert!(stored.tenant_id().is_err());
}

fn sample() -> Workspace {
    let now = chrono::Utc::now();
    Workspace {
        id: 1,
        schema_name: "acme".into(),
        display_name: String::new(),
        status: LifecycleState::Active,
        created_at: now,
        updated_at: now,
    }
}
