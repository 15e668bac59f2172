//! A tenant being restored from a snapshot is refused with 503 `tenant_restoring` while the
//! restore runs (held behind an application's lock so the requests land during it), other
//! tenants are served meanwhile, and a snapshot schema is never routed to.

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{MigrateOptions, Migrator, TenantId};
use diesel_workspace_axum::{Header, Routing, Tenant};

use crate::support::{self, get as http_get, serve};

/// The example schema, then a migration that drops `notes.body`.
const DESTRUCTIVE: EmbeddedMigrations = embed_migrations!("../tests/migrations/destructive");

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_owned()
}

async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_a_restore_get_503_and_are_served_after_it() {
    let (db, _before) = support::provision("web_restore", &["acme", "globex"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    let after = Migrator::builder(DESTRUCTIVE).build().expect("migrations");
    let acme = TenantId::new("acme").unwrap();
    after
        .migrate_tenant_with(
            &mut conn,
            &acme,
            &MigrateOptions::default().snapshot(Duration::from_secs(3600)),
        )
        .expect("migrate with a snapshot");
    let snapshot = after.snapshots(&mut conn, Some(&acme)).unwrap().remove(0);
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");

    let routing = Routing::builder(
        diesel_workspace::pool::builder()
            .max_size(4)
            .build(db.url())
            .expect("pool"),
    )
    .resolver(Header::behind_trusted_proxy("x-tenant"))
    .access(diesel_workspace_axum::Access::public_tenant_routes())
    .cache_ttl(Duration::from_secs(600))
    .build();
    let _listener = routing.cache().listen(db.url()).expect("listen");
    let app = Router::new()
        .route(
            "/whoami",
            get(|Tenant(t): Tenant| async move { t.to_string() }),
        )
        .layer(routing.layer());
    let addr = serve(app).await;
    let whoami = |t: String| async move { http_get(addr, "/whoami", &[("x-tenant", &t)]).await };
    assert_eq!(whoami("acme".into()).await, (200, "acme".into()));
    assert_eq!(whoami("globex".into()).await, (200, "globex".into()));

    // An application transaction holds acme's table: the restore waits behind it.
    let mut holder = PgConnection::establish(db.url()).expect("connect");
    holder
        .batch_execute("BEGIN; LOCK TABLE acme.notes IN ACCESS SHARE MODE")
        .unwrap();
    let url = db.url().to_owned();
    let name = snapshot.name.clone();
    let restore = tokio::task::spawn_blocking(move || {
        let mut conn = PgConnection::establish(&url).expect("connect");
        let migrator = Migrator::builder(DESTRUCTIVE).build().expect("migrations");
        migrator.restore_snapshot(&mut conn, &name)
    });
    within(Duration::from_secs(5), async || {
        let (status, body) = whoami("acme".into()).await;
        status == 503 && code(&body) == "tenant_restoring"
    })
    .await;
    for _ in 0..5 {
        let (status, body) = whoami("acme".into()).await;
        assert_eq!((status, code(&body).as_str()), (503, "tenant_restoring"));
        // Other tenants are served meanwhile.
        assert_eq!(whoami("globex".into()).await, (200, "globex".into()));
    }
    assert!(!restore.is_finished(), "the restore is still waiting");
    // A snapshot schema is no tenant: never routed to.
    let (status, body) = whoami(snapshot.name.clone()).await;
    assert_eq!((status, code(&body).as_str()), (404, "tenant_unknown"));

    holder.batch_execute("COMMIT").unwrap();
    restore.await.unwrap().expect("restored");
    within(Duration::from_secs(5), async || {
        whoami("acme".into()).await == (200, "acme".into())
    })
    .await;
    // The restore brought the dropped column back.
    conn.batch_execute("SELECT body FROM acme.notes")
        .expect("body is back");
}
