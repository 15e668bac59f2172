//! An application's own registry table (`Registry::new`) behind the layer: the check, the
//! life-cycle states, the cache's trigger and the user resolver all read that table, and the
//! built-in `public.workspaces` plays no part (a tenant only it knows is unknown here).

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::registry::{LifecycleState, Registry};
use diesel_workspace::{Error, Migrator, TenantId};
use diesel_workspace_axum::{Access, DbError, Header, Routing, Tenant, TenantDb, UserWorkspace};

use crate::support::{add_note, get as http_get, notes, serve, ScratchDb, TENANT};

async fn titles(db: TenantDb) -> Result<Json<Vec<String>>, DbError> {
    let titles = db
        .run(|conn| notes::table.select(notes::title).load(conn))
        .await?;
    Ok(Json(titles))
}

fn router(routing: &Routing<TenantPool>) -> Router {
    Router::new()
        .route("/notes", get(titles))
        .route(
            "/whoami",
            get(|Tenant(t): Tenant| async move { t.to_string() }),
        )
        .layer(routing.layer())
}

fn pool(url: &str) -> TenantPool {
    diesel_workspace::pool::builder()
        .max_size(4)
        .build(url)
        .expect("pool")
}

fn id(name: &str) -> TenantId {
    TenantId::new(name).expect("a valid id")
}

/// The application's registry: `app.customers`, keyed by `customer_id`, named by `slug`, with
/// its life-cycle state in `state`.
fn customers() -> Registry {
    Registry::new("app", "customers")
        .identifier_column("slug")
        .status_column("state")
        .key_column("customer_id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_registry_drives_the_check_the_states_the_trigger_and_the_user_resolver() {
    let db = ScratchDb::create("web_custom_registry");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    let migrator = Migrator::builder(TENANT)
        .registry(customers())
        .build()
        .expect("migrator");
    migrator.run_shared(&mut conn).expect("shared migrations");
    conn.batch_execute(
        "CREATE SCHEMA app; \
         CREATE TABLE app.customers (customer_id BIGSERIAL PRIMARY KEY, slug TEXT NOT NULL UNIQUE, \
           state public.workspace_status NOT NULL DEFAULT 'active'); \
         CREATE TABLE app.users (id BIGINT PRIMARY KEY, \
           customer BIGINT NOT NULL REFERENCES app.customers (customer_id))",
    )
    .expect("the application's tables");
    for t in ["acme", "globex"] {
        migrator.create_tenant(&mut conn, &id(t)).expect("create");
        add_note(&mut conn, &id(t), &format!("note of {t}"));
    }
    // A tenant only the built-in registry knows: never served through the custom one.
    let builtin = Migrator::builder(TENANT).build().expect("migrator");
    builtin
        .create_tenant(&mut conn, &id("initech"))
        .expect("create");
    add_note(&mut conn, &id("initech"), "note of initech");

    let custom = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .registry(customers())
        .cache_ttl(Duration::from_secs(600))
        .build();
    let _listener = custom.cache().listen(db.url()).expect("listen");
    diesel_workspace_axum::install_notify_trigger_for(&mut conn, &customers()).expect("trigger");
    diesel_workspace_axum::install_notify_trigger_for(&mut conn, &customers()).expect("idempotent");
    let a = serve(router(&custom)).await;
    // Negative control: the same requests through the built-in registry.
    let plain = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let b = serve(router(&plain)).await;
    let status = |addr, t: &'static str| async move {
        http_get(addr, "/whoami", &[("x-tenant", t)]).await.0
    };

    let (s, body) = http_get(a, "/notes", &[("x-tenant", "acme")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    let (s, body) = http_get(a, "/notes", &[("x-tenant", "globex")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));
    assert_eq!(status(a, "initech").await, 404);
    assert_eq!(status(a, "nobody").await, 404);
    assert_eq!(status(b, "acme").await, 404);
    assert_eq!(status(b, "initech").await, 200);

    // In process: the state is changed in the custom table and seen at once.
    let before = custom
        .set_lifecycle_state(&mut conn, &id("acme"), LifecycleState::Suspended)
        .expect("set the state");
    assert_eq!(before, LifecycleState::Active);
    assert_eq!(status(a, "acme").await, 403);
    assert_eq!(
        customers().lifecycle_state(&mut conn, &id("acme")).unwrap(),
        Some(LifecycleState::Suspended)
    );
    // The built-in registry has no row for it, and its own tenant is untouched.
    assert!(matches!(
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &id("acme"),
            LifecycleState::Active
        ),
        Err(Error::TenantNotFound(_))
    ));
    assert_eq!(
        diesel_workspace::registry::lifecycle_state(&mut conn, &id("initech")).unwrap(),
        Some(LifecycleState::Active)
    );

    // Another process changes the custom table: the trigger notifies the listening cache
    // (its TTL is ten minutes).
    customers()
        .set_lifecycle_state(&mut conn, &id("globex"), LifecycleState::Archived)
        .expect("set the state");
    let start = Instant::now();
    while status(a, "globex").await != 410 {
        assert!(start.elapsed() < Duration::from_secs(5), "not notified");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The user resolver joins the application's users to the custom registry by its key.
    diesel::sql_query(
        "INSERT INTO app.users (id, customer) \
         SELECT 1, customer_id FROM app.customers WHERE slug = 'acme'",
    )
    .execute(&mut conn)
    .expect("a user");
    customers()
        .set_lifecycle_state(&mut conn, &id("acme"), LifecycleState::Active)
        .expect("set the state");
    let p = pool(db.url());
    let user = |parts: &http::request::Parts| {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let by_user = Routing::builder(p.clone())
        .resolver(
            UserWorkspace::new(p, user)
                .table("app", "users", "id", "customer")
                .registry(customers()),
        )
        .access(Access::public_tenant_routes())
        .registry(customers())
        .build();
    let c = serve(router(&by_user)).await;
    let (s, body) = http_get(c, "/notes", &[("x-user", "1")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    // A user who is not in the table gets no tenant.
    assert_eq!(http_get(c, "/notes", &[("x-user", "2")]).await.0, 400);

    // Members only, the membership read through the custom registry's key and identifier.
    let members = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(
            Access::members(user)
                .members_table("app", "users", "id", "customer")
                .registry(customers()),
        )
        .registry(customers())
        .build();
    let d = serve(router(&members)).await;
    let (s, body) = http_get(d, "/notes", &[("x-user", "1"), ("x-tenant", "acme")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    let (s, body) = http_get(d, "/notes", &[("x-user", "1"), ("x-tenant", "globex")]).await;
    assert_eq!(s, 403, "{body}");
    // Negative control: the built-in membership query finds no such row in `public`.
    let builtin_members = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::members(user).members_table("app", "users", "id", "customer"))
        .registry(customers())
        .build();
    let e = serve(router(&builtin_members)).await;
    let (s, body) = http_get(e, "/notes", &[("x-user", "1"), ("x-tenant", "acme")]).await;
    assert_eq!(s, 403, "{body}");
}

#[test]
fn a_registry_without_states_serves_every_registered_tenant_and_refuses_to_change_one() {
    let db = ScratchDb::create("web_custom_registry_stateless");
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    let registry = Registry::new("app", "tenants");
    let migrator = Migrator::builder(TENANT)
        .registry(registry.clone())
        .build()
        .expect("migrator");
    migrator.run_shared(&mut conn).expect("shared migrations");
    conn.batch_execute(
        "CREATE SCHEMA app; CREATE TABLE app.tenants (schema_name TEXT PRIMARY KEY)",
    )
    .expect("the application's table");
    migrator
        .create_tenant(&mut conn, &id("acme"))
        .expect("create");
    assert_eq!(
        registry.lifecycle_state(&mut conn, &id("acme")).unwrap(),
        Some(LifecycleState::Active)
    );
    assert_eq!(
        registry.lifecycle_state(&mut conn, &id("nobody")).unwrap(),
        None
    );
    let refused = registry
        .set_lifecycle_state(&mut conn, &id("acme"), LifecycleState::Suspended)
        .unwrap_err();
    assert!(
        matches!(&refused, Error::NoLifecycleState { registry } if registry == "\"app\".\"tenants\""),
        "{refused}"
    );
}
