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

/// The notifications `conn` has received on its channels by now (waiting up to 10 s for at
/// least `at_least`), as payloads.
fn heard(conn: &mut PgConnection, at_least: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut payloads = Vec::new();
    loop {
        for n in conn.notifications_iter() {
            payloads.push(n.unwrap().payload);
        }
        if payloads.len() >= at_least || std::time::Instant::now() > deadline {
            return payloads;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn tenant_records_carry_the_latest_version_pushed_by_the_central_record() {
    use diesel::connection::SimpleConnection;
    use diesel_workspace::registry::{Registry, TenantRecord};
    use diesel_workspace::TenantId;

    use crate::fleet::{migrator_for, Prefix, ADDITIVE};

    const V1: &str = "20260101000001";
    const V2: &str = "20260301000001";
    let db = test_db!("tenant_records_carry_the_latest_version");
    let mut conn = db.conn();
    let v1 = migrator_for(&mut conn, Prefix(ADDITIVE, 1));
    let v2 = migrator_for(&mut conn, ADDITIVE);
    let (acme, globex) = (
        TenantId::new("acme").unwrap(),
        TenantId::new("globex").unwrap(),
    );
    v1.create_tenant(&mut conn, &acme).unwrap();
    v1.create_tenant(&mut conn, &globex).unwrap();
    let registry = Registry::default();
    let at = |version: &str| TenantRecord {
        state: LifecycleState::Active,
        version: Some(version.to_owned()),
    };
    assert_eq!(
        registry.tenant_record(&mut conn, &acme).unwrap(),
        Some(at(V1))
    );

    // The triggers: the registry's alone (an install of an older release) is not enough.
    assert!(!registry.has_notify_trigger(&mut conn).unwrap());
    let install = registry.notify_trigger_sql("records_test");
    conn.batch_execute(&install).unwrap();
    assert!(registry.has_notify_trigger(&mut conn).unwrap());
    conn.batch_execute(
        "DROP TRIGGER workspace_migrations_notify_change ON public.workspace_migrations",
    )
    .unwrap();
    assert!(!registry.has_notify_trigger(&mut conn).unwrap());
    conn.batch_execute(&install).unwrap();
    conn.batch_execute(&install).unwrap(); // idempotent
    assert!(registry.has_notify_trigger(&mut conn).unwrap());

    let mut listener = db.conn();
    listener.batch_execute("LISTEN records_test").unwrap();
    // Migrating a tenant announces it once, at commit; the other tenant is not named.
    v2.migrate_tenant(&mut conn, &acme).unwrap();
    assert_eq!(heard(&mut listener, 1), vec!["acme".to_owned()]);
    let mut records = registry.tenant_records(&mut conn).unwrap();
    records.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        records,
        vec![(acme.clone(), at(V2)), (globex.clone(), at(V1))]
    );
    assert!(records[1].1.is_behind(V2) && !records[0].1.is_behind(V2));
    let nobody = TenantId::new("nobody").unwrap();
    assert_eq!(
        registry
            .tenant_records_of(&mut conn, &[globex.clone(), nobody.clone()])
            .unwrap(),
        vec![(globex.clone(), at(V1))]
    );
    assert_eq!(registry.tenant_record(&mut conn, &nobody).unwrap(), None);

    // A revert is announced too, and the record goes back.
    v2.revert_last(&mut conn, &acme).unwrap();
    assert_eq!(heard(&mut listener, 1), vec!["acme".to_owned()]);
    assert_eq!(
        registry.tenant_record(&mut conn, &acme).unwrap(),
        Some(at(V1))
    );

    // Warm spares are not announced; the tenant that claims one is.
    v2.fill_spares(&mut conn, 2).unwrap();
    let initech = TenantId::new("initech").unwrap();
    v2.create_tenant(&mut conn, &initech).unwrap();
    let payloads = heard(&mut listener, 1);
    assert!(payloads.iter().all(|p| p == "initech"), "{payloads:?}");
    assert!(!payloads.is_empty());
    assert_eq!(
        registry.tenant_record(&mut conn, &initech).unwrap(),
        Some(at(V2))
    );
}
