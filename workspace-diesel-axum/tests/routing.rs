//! The layer over real HTTP: tenant states, isolation, cache invalidation, the user resolver.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{registry::LifecycleState, TenantId};
use diesel_workspace_axum::{
    DbError, Header, Resolver, Routing, Subdomain, Tenant, TenantDb, UserWorkspace,
};

use crate::support::{self, get as http_get, notes, serve};

async fn titles(db: TenantDb) -> Result<Json<Vec<String>>, DbError> {
    let titles = db
        .run(|conn| {
            notes::table
                .select(notes::title)
                .order(notes::id)
                .load(conn)
        })
        .await?;
    Ok(Json(titles))
}

fn router(routing: &Routing<TenantPool>, reached: Arc<AtomicUsize>) -> Router {
    Router::new()
        .route(
            "/notes",
            get(move |db: TenantDb| {
                reached.fetch_add(1, Ordering::SeqCst);
                titles(db)
            }),
        )
        .route(
            "/whoami",
            get(|Tenant(t): Tenant| async move { t.to_string() }),
        )
        .layer(routing.layer())
        .merge(Router::new().route("/health", get(|| async { "ok" })))
}

fn pool(url: &str) -> TenantPool {
    diesel_workspace::pool::builder()
        .max_size(4)
        .build(url)
        .expect("pool")
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_owned()
}

fn host(tenant: &str) -> String {
    format!("{tenant}.localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_and_names_map_to_documented_responses() {
    let (db, _migrator) =
        support::provision("web_states", &["acme", "globex", "sus", "arch", "prov"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    for (t, s) in [
        ("sus", LifecycleState::Suspended),
        ("arch", LifecycleState::Archived),
        ("prov", LifecycleState::Provisioning),
    ] {
        let before = diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &TenantId::new(t).unwrap(),
            s,
        )
        .expect("set status");
        assert_eq!(before, LifecycleState::Active);
    }
    let pool = pool(db.url());
    let routing = Routing::builder(pool)
        .resolver(Subdomain::new(["localhost"]).or(Header::behind_trusted_proxy("x-tenant")))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .build();
    let reached = Arc::new(AtomicUsize::new(0));
    let addr = serve(router(&routing, reached.clone())).await;

    let (s, body) = http_get(addr, "/notes", &[("host", &host("acme"))]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    let (s, body) = http_get(addr, "/notes", &[("x-tenant", "globex")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));
    assert_eq!(reached.swap(0, Ordering::SeqCst), 2);

    type Case<'a> = (&'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case<'_>] = &[
        (&[("host", "nobody.localhost")], 404, "tenant_unknown"),
        (&[("x-tenant", "nobody")], 404, "tenant_unknown"),
        (&[("host", "Bad-Name.localhost")], 400, "tenant_malformed"),
        (&[("x-tenant", "acme;drop")], 400, "tenant_malformed"),
        (&[("x-tenant", "public")], 400, "tenant_malformed"),
        (&[("host", "a.b.localhost")], 400, "tenant_malformed"),
        (&[], 400, "tenant_required"),
        (&[("host", "localhost")], 400, "tenant_required"),
        (&[("host", "sus.localhost")], 403, "tenant_suspended"),
        (&[("x-tenant", "arch")], 410, "tenant_archived"),
        (&[("x-tenant", "prov")], 503, "tenant_provisioning"),
    ];
    for (headers, status, expected) in cases {
        for path in ["/notes", "/whoami"] {
            let (s, body) = http_get(addr, path, headers).await;
            assert_eq!(
                (s, code(&body).as_str()),
                (*status, *expected),
                "{headers:?} {path}: {body}"
            );
        }
    }
    // Not one refused request reached the handler (and so the database).
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    // A route outside the layer needs no tenant.
    assert_eq!(http_get(addr, "/health", &[]).await, (200, "ok".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_process_changes_take_effect_at_once() {
    let (db, migrator) = support::provision("web_inproc", &["acme", "globex"]);
    let routing = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .cache_ttl(Duration::from_secs(600))
        .build();
    let addr = serve(router(&routing, Arc::default())).await;
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let status =
        |t: &'static str| async move { http_get(addr, "/whoami", &[("x-tenant", t)]).await.0 };

    assert_eq!(status("acme").await, 200);
    assert_eq!(status("globex").await, 200);
    assert_eq!(status("acme2").await, 404); // a cached "unknown"

    // Negative control: a change the routing does not hear of is served from the cache.
    diesel_workspace::registry::set_lifecycle_state(&mut conn, &globex, LifecycleState::Suspended)
        .unwrap();
    assert_eq!(
        status("globex").await,
        200,
        "the cache holds `active` for 600 s"
    );
    routing.cache().invalidate(&globex);
    assert_eq!(status("globex").await, 403);

    routing
        .set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended)
        .unwrap();
    assert_eq!(status("acme").await, 403);
    routing
        .set_lifecycle_state(&mut conn, &acme, LifecycleState::Archived)
        .unwrap();
    assert_eq!(status("acme").await, 410);
    routing
        .set_lifecycle_state(&mut conn, &acme, LifecycleState::Active)
        .unwrap();
    assert_eq!(status("acme").await, 200);

    let acme2 = TenantId::new("acme2").unwrap();
    routing
        .rename_tenant(&migrator, &mut conn, &acme, &acme2)
        .unwrap();
    assert_eq!(status("acme").await, 404);
    assert_eq!(status("acme2").await, 200);
    let (_, body) = http_get(addr, "/notes", &[("x-tenant", "acme2")]).await;
    assert_eq!(body, r#"["note of acme"]"#);

    routing.drop_tenant(&migrator, &mut conn, &acme2).unwrap();
    assert_eq!(status("acme2").await, 404);

    let created = TenantId::new("fresh").unwrap();
    assert_eq!(status("fresh").await, 404);
    routing
        .create_tenant(&migrator, &mut conn, &created)
        .unwrap();
    assert_eq!(status("fresh").await, 200);
}

/// Polls until `check` holds; returns how long that took.
async fn within(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_changes_are_seen_through_listen_or_within_the_ttl() {
    let (db, migrator) = support::provision("web_notify", &["acme", "globex", "initech"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("trigger");
    diesel_workspace_axum::install_notify_trigger(&mut conn).expect("idempotent");

    // With LISTEN: a long TTL, and changes made elsewhere still arrive quickly.
    let listening = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .cache_ttl(Duration::from_secs(600))
        .build();
    let _listener = listening.cache().listen(db.url()).expect("listen");
    // With the TTL alone (as behind a transaction pooler).
    let ttl = Duration::from_millis(800);
    let ttl_only = Routing::builder(pool(db.url()))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .cache_ttl(ttl)
        .build();
    let a = serve(router(&listening, Arc::default())).await;
    let b = serve(router(&ttl_only, Arc::default())).await;
    let status = |addr, t: &'static str| async move {
        http_get(addr, "/whoami", &[("x-tenant", t)]).await.0
    };
    for addr in [a, b] {
        for t in ["acme", "globex", "initech"] {
            assert_eq!(status(addr, t).await, 200);
        }
    }

    // "Another process": plain library calls on a connection of their own.
    let acme = TenantId::new("acme").unwrap();
    diesel_workspace::registry::set_lifecycle_state(&mut conn, &acme, LifecycleState::Suspended)
        .unwrap();
    let seen = within(Duration::from_secs(5), async || {
        status(a, "acme").await == 403
    })
    .await;
    assert!(seen < Duration::from_secs(2), "LISTEN took {seen:?}");
    within(ttl + Duration::from_secs(2), async || {
        status(b, "acme").await == 403
    })
    .await;

    let globex = TenantId::new("globex").unwrap();
    migrator
        .rename_tenant(&mut conn, &globex, &TenantId::new("globex2").unwrap())
        .unwrap();
    within(Duration::from_secs(2), async || {
        status(a, "globex").await == 404
    })
    .await;
    within(ttl + Duration::from_secs(2), async || {
        status(b, "globex").await == 404
    })
    .await;
    assert_eq!(status(a, "globex2").await, 200);

    migrator
        .drop_tenant(&mut conn, &TenantId::new("initech").unwrap())
        .unwrap();
    within(Duration::from_secs(2), async || {
        status(a, "initech").await == 404
    })
    .await;
    within(ttl + Duration::from_secs(2), async || {
        status(b, "initech").await == 404
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_user_resolver_routes_to_the_users_workspace_and_refuses_another() {
    let (db, _migrator) = support::provision("web_users", &["acme", "globex"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    diesel::sql_query(
        "INSERT INTO public.users (id, email, workspace_id) \
         SELECT 1, 'ann@acme.test', id FROM public.workspaces WHERE schema_name = 'acme' \
         UNION ALL SELECT 2, 'bob@globex.test', id FROM public.workspaces WHERE schema_name = 'globex'",
    )
    .execute(&mut conn)
    .expect("users");
    let pool = pool(db.url());
    // Stands in for an authentication middleware: the user id from a header.
    let user = |parts: &http::request::Parts| {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    let routing = Routing::builder(pool.clone())
        .resolver(UserWorkspace::new(pool, user).agreeing_with(Subdomain::new(["localhost"])))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .build();
    let addr = serve(router(&routing, Arc::default())).await;

    let (s, body) = http_get(addr, "/notes", &[("x-user", "1")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    let (s, body) = http_get(addr, "/notes", &[("x-user", "2")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));
    let (s, body) = http_get(
        addr,
        "/notes",
        &[("x-user", "1"), ("host", "acme.localhost")],
    )
    .await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
    // Ann asks for globex's notes: refused.
    let (s, body) = http_get(
        addr,
        "/notes",
        &[("x-user", "1"), ("host", "globex.localhost")],
    )
    .await;
    assert_eq!(
        (s, code(&body).as_str()),
        (403, "tenant_forbidden"),
        "{body}"
    );
    // A user who is not in the table gets no tenant.
    let (s, body) = http_get(addr, "/notes", &[("x-user", "99")]).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (400, "tenant_required"),
        "{body}"
    );
    // Nobody logged in: the subdomain decides.
    let (s, body) = http_get(addr, "/notes", &[("host", "globex.localhost")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));

    // Moving Ann to globex moves her requests (the query runs on every request).
    diesel::sql_query(
        "UPDATE public.users SET workspace_id = (SELECT id FROM public.workspaces WHERE schema_name = 'globex') WHERE id = 1",
    )
    .execute(&mut conn)
    .unwrap();
    let (s, body) = http_get(addr, "/notes", &[("x-user", "1")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_registry_refuses_rather_than_guesses() {
    let (db, _migrator) = support::provision("web_deadreg", &["acme"]);
    let pool = pool(db.url());
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .cache_ttl(Duration::ZERO)
        .build();
    let addr = serve(router(&routing, Arc::default())).await;
    assert_eq!(
        http_get(addr, "/whoami", &[("x-tenant", "acme")]).await.0,
        200
    );
    let mut conn = pool.get().unwrap();
    diesel::sql_query("ALTER TABLE public.workspaces RENAME TO workspaces_gone")
        .execute(&mut *conn)
        .unwrap();
    drop(conn);
    let (s, body) = http_get(addr, "/whoami", &[("x-tenant", "acme")]).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (503, "registry_unavailable"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_extractor_outside_the_layer_is_a_server_error() {
    let app = Router::new().route(
        "/whoami",
        get(|Tenant(t): Tenant| async move { t.to_string() }),
    );
    let addr = serve(app).await;
    let (s, body) = http_get(addr, "/whoami", &[("x-tenant", "acme")]).await;
    assert_eq!((s, code(&body).as_str()), (500, "tenant_layer_missing"));
}

/// The resolver trait object and a custom resolver compose with the built-in ones.
#[test]
fn resolvers_are_object_safe() {
    let boxed: Box<dyn Resolver> = Box::new(Header::behind_trusted_proxy("x-tenant"));
    let _chain = boxed.or(Subdomain::new(["localhost"]));
}
