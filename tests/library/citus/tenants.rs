//! Tenants on Citus: provisioning distributes every table (create_tenant, create_tenants, warm
//! spares), routing keeps tenants apart, rename and drop reach the workers, a moved tenant reads
//! the same rows, shared tables referenced by tenant tables become reference tables.

use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{pool, switch, MigrateOptions, Migrator, TenantConnectionExt, TenantId};
use workspace_diesel_tests::citus::{check_on, nodes_of, shard_tables_on, tables};
use workspace_diesel_tests::citus_db;
use workspace_diesel_tests::schema::notes;

const SHARED_REF: EmbeddedMigrations = embed_migrations!("migrations/citus_shared_ref");

fn id(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

#[test]
fn provisioning_distributes_every_table() {
    let db = citus_db!("provisioning_distributes_every_table");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();

    // One tenant: every table (the ledger included) is a tenant table with its shard on a worker.
    migrator.create_tenant(&mut conn, &id("acme")).unwrap();
    db.assert_distributed("acme");
    assert_eq!(
        tables(&mut conn, "acme"),
        ["__diesel_schema_migrations", "categories", "notes", "tags"]
    );

    // Twenty at once, spread over both workers.
    let many: Vec<TenantId> = (0..20).map(|i| id(&format!("t{i:02}"))).collect();
    migrator
        .create_tenants(db.url(), &many, &MigrateOptions::default().parallel(2))
        .unwrap();
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for t in &many {
        let w = db.assert_distributed(t.as_str());
        *per_worker
            .entry(format!("{}:{}", w.host, w.port))
            .or_default() += 1;
    }
    assert_eq!(
        per_worker.len(),
        2,
        "both workers hold tenants: {per_worker:?}"
    );
    assert!(per_worker.values().all(|&n| n >= 5), "{per_worker:?}");

    // Warm spares are distributed, and a claimed spare stays so under its new name.
    migrator.fill_spares(&mut conn, 2).unwrap();
    let spares = migrator.spares(&mut conn).unwrap();
    assert_eq!(spares.len(), 2);
    for s in &spares {
        db.assert_distributed(s.as_str());
    }
    migrator.create_tenant(&mut conn, &id("claimed")).unwrap();
    assert_eq!(migrator.spares(&mut conn).unwrap().len(), 1);
    db.assert_distributed("claimed");
}

#[test]
fn the_same_query_reads_each_tenants_rows_on_the_workers() {
    let db = citus_db!("the_same_query_reads_each_tenants_rows_on_the_workers");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let tenants = [id("acme"), id("globex")];
    for t in &tenants {
        migrator.create_tenant(&mut conn, t).unwrap();
        switch(t, || {
            diesel::insert_into(notes::table)
                .values(
                    (0..10)
                        .map(|i| notes::title.eq(format!("{t}-{i}")))
                        .collect::<Vec<_>>(),
                )
                .execute(&mut conn)
        })
        .unwrap();
    }
    // One connection, one prepared statement shape, two tenants.
    let query = notes::table.select(notes::title).order(notes::id);
    for _ in 0..3 {
        for t in &tenants {
            let titles: Vec<String> = switch(t, || query.load(&mut conn)).unwrap();
            assert_eq!(titles.len(), 10);
            assert!(
                titles.iter().all(|x| x.starts_with(&format!("{t}-"))),
                "{titles:?}"
            );
        }
    }
    // Raw SQL through the tenant's search_path.
    let n: i64 = switch(&tenants[1], || {
        conn.tenant_transaction(|c| {
            #[derive(QueryableByName)]
            struct N {
                #[diesel(sql_type = diesel::sql_types::BigInt)]
                n: i64,
            }
            diesel::sql_query("SELECT count(*) AS n FROM notes WHERE title LIKE 'globex-%'")
                .get_result::<N>(c)
                .map(|r| r.n)
        })
    })
    .unwrap();
    assert_eq!(n, 10);

    // 8 threads x 2,000 switches through a pool of 4: never a row of the other tenant.
    let pool = pool::builder().max_size(4).build(db.url()).unwrap();
    std::thread::scope(|s| {
        for worker in 0..8 {
            let pool = &pool;
            let tenants = &tenants;
            s.spawn(move || {
                let mut conn = pool.get().unwrap();
                for i in 0..2_000 {
                    let t = &tenants[(i + worker) % 2];
                    let title: String = switch(t, || {
                        notes::table
                            .select(notes::title)
                            .order(notes::id)
                            .first(&mut *conn)
                    })
                    .unwrap();
                    assert_eq!(title, format!("{t}-0"), "switch {i} of thread {worker}");
                }
            });
        }
    });
}

#[test]
fn rename_and_drop_reach_the_workers() {
    let db = citus_db!("rename_and_drop_reach_the_workers");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    migrator.create_tenant(&mut conn, &id("acme")).unwrap();
    switch(&id("acme"), || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("kept"))
            .execute(&mut conn)
    })
    .unwrap();
    let worker = db.assert_distributed("acme").clone();

    migrator
        .rename_tenant(&mut conn, &id("acme"), &id("acme_corp"))
        .unwrap();
    let mut on_worker = db.conn_on(&worker);
    assert!(shard_tables_on(&mut on_worker, "acme").is_empty());
    assert_eq!(db.assert_distributed("acme_corp"), &worker);
    let titles: Vec<String> = switch(&id("acme_corp"), || {
        notes::table.select(notes::title).load(&mut conn)
    })
    .unwrap();
    assert_eq!(titles, ["kept"]);

    migrator.drop_tenant(&mut conn, &id("acme_corp")).unwrap();
    assert!(shard_tables_on(&mut on_worker, "acme_corp").is_empty());
    assert!(!check_on(
        &mut on_worker,
        "EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'acme_corp')"
    ));
    assert!(!db.check("EXISTS (SELECT 1 FROM pg_catalog.pg_dist_schema)"));
}

#[test]
fn a_moved_tenant_reads_the_same_rows() {
    let db = citus_db!("a_moved_tenant_reads_the_same_rows");
    let _moves = workspace_diesel_tests::citus::move_lock();
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let acme = id("acme");
    migrator.create_tenant(&mut conn, &acme).unwrap();
    let values: Vec<_> = (0..50).map(|i| notes::title.eq(format!("n{i}"))).collect();
    switch(&acme, || {
        diesel::insert_into(notes::table)
            .values(&values)
            .execute(&mut conn)
    })
    .unwrap();
    let read = |conn: &mut PgConnection| -> Vec<(i32, String)> {
        switch(&acme, || {
            notes::table
                .select((notes::id, notes::title))
                .order(notes::id)
                .load(conn)
        })
        .unwrap()
    };
    let before = read(&mut conn);
    assert_eq!(before.len(), 50);

    let from = db.assert_distributed("acme").clone();
    let to = db.workers().iter().find(|w| **w != from).unwrap().clone();
    let placement = migrator.placement(&mut conn).unwrap();
    assert_eq!(placement.len(), 1);
    assert_eq!(
        placement[0].node,
        Some(format!("{}:{}", from.host, from.port))
    );
    assert!(placement[0].size_bytes > 0);

    migrator
        .move_tenant(&mut conn, &acme, &to.host, to.port as u16)
        .unwrap();
    assert_eq!(db.assert_distributed("acme"), &to);
    assert_eq!(
        migrator.placement(&mut conn).unwrap()[0].node,
        Some(format!("{}:{}", to.host, to.port))
    );
    // The same connection (with its prepared statement) and a new one read the same rows.
    assert_eq!(read(&mut conn), before);
    assert_eq!(read(&mut db.conn()), before);
    // Writes go to the new node.
    switch(&acme, || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq("after"))
            .execute(&mut conn)
    })
    .unwrap();
    assert_eq!(read(&mut conn).len(), 51);
    assert_eq!(
        nodes_of(&mut conn, "acme"),
        [format!("{}:{}", to.host, to.port)]
    );

    // Moving to where it is, or an unknown tenant, fails with a message.
    let e = migrator
        .move_tenant(&mut conn, &acme, &to.host, to.port as u16)
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("same node")
            || std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("same node")),
        "{e}"
    );
    let e = migrator
        .move_tenant(&mut conn, &id("nobody"), &to.host, to.port as u16)
        .unwrap_err();
    assert_eq!(e.to_string(), "tenant `nobody` does not exist");
}

#[test]
fn a_rebalance_spreads_tenants_and_reports_progress() {
    let db = citus_db!("a_rebalance_spreads_tenants_and_reports_progress");
    let _moves = workspace_diesel_tests::citus::move_lock();
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let tenants: Vec<TenantId> = (0..4).map(|i| id(&format!("r{i}"))).collect();
    for t in &tenants {
        migrator.create_tenant(&mut conn, t).unwrap();
    }
    // Everything on the first worker, then rebalance.
    let first = db.workers()[0].clone();
    for t in &tenants {
        if nodes_of(&mut conn, t.as_str()) != [format!("{}:{}", first.host, first.port)] {
            migrator
                .move_tenant(&mut conn, t, &first.host, first.port as u16)
                .unwrap();
        }
    }
    let job = diesel_workspace::citus::start_rebalance(&mut conn)
        .unwrap()
        .expect("something to move");
    let mut seen = Vec::new();
    let end = diesel_workspace::citus::wait_rebalance(
        &mut conn,
        std::time::Duration::from_millis(200),
        |s| seen.push(s.clone()),
    )
    .unwrap()
    .expect("a job");
    assert_eq!(end.job_id, job);
    assert!(end.succeeded(), "{end:?}");
    assert!(end.total >= 1 && end.done == end.total, "{end:?}");
    assert!(seen.iter().all(|s| s.job_id == job));
    let mut per_worker: BTreeMap<String, usize> = BTreeMap::new();
    for t in &tenants {
        let w = db.assert_distributed(t.as_str());
        *per_worker
            .entry(format!("{}:{}", w.host, w.port))
            .or_default() += 1;
    }
    assert_eq!(per_worker.values().copied().collect::<Vec<_>>(), [2, 2]);
    // Nothing left to move.
    assert_eq!(
        diesel_workspace::citus::start_rebalance(&mut conn).unwrap(),
        None
    );
}

#[test]
fn shared_tables_that_tenants_reference_become_reference_tables() {
    let db = citus_db!("shared_tables_that_tenants_reference_become_reference_tables");
    let migrator = Migrator::builder(SHARED_REF)
        .shared(workspace_diesel_tests::SHARED_MIGRATIONS)
        .build()
        .unwrap();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    assert!(db.check(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
         WHERE logicalrelid = 'public.plans'::regclass AND partmethod = 'n' AND repmodel = 't')"
    ));
    // The registry stays a local table of the coordinator.
    assert!(db.check(
        "NOT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition \
         WHERE logicalrelid = 'public.workspaces'::regclass)"
    ));
    migrator.create_tenant(&mut conn, &id("acme")).unwrap();
    db.assert_distributed("acme");
    conn.batch_execute(
        "INSERT INTO public.plans (name) VALUES ('basic'); \
         INSERT INTO acme.subscriptions (plan_id) SELECT id FROM public.plans",
    )
    .unwrap();
    let e = conn
        .batch_execute("INSERT INTO acme.subscriptions (plan_id) VALUES (999)")
        .unwrap_err();
    assert!(e.to_string().contains("foreign key"), "{e}");
}

#[test]
fn audit_reports_tenants_that_are_not_distributed() {
    let db = citus_db!("audit_reports_tenants_that_are_not_distributed");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    migrator.create_tenant(&mut conn, &id("acme")).unwrap();
    // A tenant made before the move to Citus: registered, its tables local to the coordinator.
    conn.batch_execute(
        "SET citus.enable_schema_based_sharding = off; CREATE SCHEMA legacy; \
         CREATE TABLE legacy.notes (id INT PRIMARY KEY); \
         INSERT INTO public.workspaces (schema_name) VALUES ('legacy')",
    )
    .unwrap();
    let hazards: Vec<_> = migrator
        .audit(&mut conn)
        .unwrap()
        .into_iter()
        .filter(|h| matches!(h, diesel_workspace::Hazard::NotDistributed { .. }))
        .collect();
    assert_eq!(
        hazards,
        [diesel_workspace::Hazard::NotDistributed {
            tenant: "legacy".into(),
            local_tables: Vec::new(),
        }]
    );
    assert!(hazards[0]
        .to_string()
        .contains("citus_schema_distribute('legacy')"));
}

#[test]
fn a_clone_is_distributed_with_the_templates_rows() {
    let db = citus_db!("a_clone_is_distributed_with_the_templates_rows");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let template = id("template_basic");
    migrator.create_tenant(&mut conn, &template).unwrap();
    conn.batch_execute(
        "INSERT INTO template_basic.categories (name) VALUES ('inbox'), ('done'); \
         INSERT INTO template_basic.notes (category_id, title) SELECT 1 + i % 2, 'n' || i FROM generate_series(1, 50) i",
    )
    .unwrap();
    migrator
        .clone_tenant(
            &mut conn,
            &template,
            &id("acme"),
            diesel_workspace::CloneData::WithData,
        )
        .unwrap();
    db.assert_distributed("acme");
    assert!(check_on(
        &mut conn,
        "(SELECT count(*) FROM acme.notes) = 50 AND (SELECT count(*) FROM acme.categories) = 2 \
         AND (SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"
    ));
    let next: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
        "nextval('acme.notes_id_seq')::int",
    ))
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(next, 51, "the clone's sequence stands past its rows");
}

#[test]
fn a_clone_from_a_warm_spare_is_distributed() {
    let db = citus_db!("a_clone_from_a_warm_spare_is_distributed");
    let migrator = db.migrator();
    let mut conn = db.conn();
    migrator.run_shared(&mut conn).unwrap();
    let template = id("template_warm");
    migrator.create_tenant(&mut conn, &template).unwrap();
    conn.batch_execute(
        "INSERT INTO template_warm.notes (title) SELECT 'n' || i FROM generate_series(1, 20) i",
    )
    .unwrap();
    assert_eq!(migrator.fill_spares(&mut conn, 1).unwrap(), 1);
    migrator
        .clone_tenant(
            &mut conn,
            &template,
            &id("acme"),
            diesel_workspace::CloneData::WithData,
        )
        .unwrap();
    assert!(
        migrator.spares(&mut conn).unwrap().is_empty(),
        "the spare was claimed"
    );
    db.assert_distributed("acme");
    assert!(check_on(
        &mut conn,
        "(SELECT count(*) FROM acme.notes) = 20 \
         AND (SELECT count(*) FROM acme.__diesel_schema_migrations) = 1"
    ));
}
