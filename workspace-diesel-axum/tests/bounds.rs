//! The checks' connections and the bounds of every step over real HTTP: tenant work on a pool
//! shared with the checks leaves them connections, a resolver that asks the database answers
//! within the routing's wait, and request connections carry a `statement_timeout`.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace_axum::{
    Access, DbError, DieselPool, Header, Routing, Tenant, TenantDb, UserWorkspace,
};

use crate::support::{self, get as http_get, notes, serve};

/// The fixed body of a 503 about the checks.
const CHECKS_UNAVAILABLE: &str = r#"{"error":"registry_unavailable","message":"the service is temporarily unavailable; try again"}"#;

/// The user id from `x-user` (standing in for an authentication middleware).
fn user(parts: &http::request::Parts) -> Option<i64> {
    parts.headers.get("x-user")?.to_str().ok()?.parse().ok()
}

/// Ann (1) in acme, Bob (2) in globex (`public.users`).
fn people(conn: &mut PgConnection) {
    conn.batch_execute(
        "INSERT INTO public.users (id, email, workspace_id) \
         SELECT 1, 'ann@acme.test', id FROM public.workspaces WHERE schema_name = 'acme' \
         UNION ALL SELECT 2, 'bob@globex.test', id FROM public.workspaces WHERE schema_name = 'globex'",
    )
    .expect("people");
}

fn members() -> Access {
    Access::members(user).members_table("public", "users", "id", "workspace_id")
}

/// The same pool, not saying its size: no share is kept for the checks (the negative control).
#[derive(Clone)]
struct Unsized(TenantPool);

impl DieselPool for Unsized {
    fn interact<R, F>(
        &self,
        wait: Duration,
        f: F,
    ) -> impl Future<Output = Result<R, DbError>> + Send
    where
        F: FnOnce(&mut PgConnection) -> R + Send + 'static,
        R: Send + 'static,
    {
        self.0.interact(wait, f)
    }
}

fn app<P: DieselPool>(routing: &Routing<P>) -> Router {
    let titles = |db: TenantDb<P>| async move {
        let titles: Vec<String> = db
            .run(|conn| notes::table.select(notes::title).load(conn))
            .await?;
        Ok::<_, DbError>(Json(titles))
    };
    Router::new()
        .route("/notes", get(titles))
        .route(
            "/whoami",
            get(|Tenant(t): Tenant| async move { t.to_string() }),
        )
        .layer(routing.layer())
}

/// Ten slow requests of Ann's (acme's table locked) in flight, then Bob's first request: its
/// membership and registry checks (cold caches, no listener) need a pooled connection. Returns
/// Bob's status and body, how long he waited, and the most acme sessions seen on the lock.
async fn bob_behind_a_flood<P: DieselPool>(
    url: &str,
    routing: &Routing<P>,
) -> (u16, String, Duration, i64) {
    let addr = serve(app(routing)).await;
    let mut locker = PgConnection::establish(url).expect("connect");
    locker
        .batch_execute("BEGIN; LOCK TABLE acme.notes IN ACCESS EXCLUSIVE MODE")
        .expect("lock");
    let flood: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(async move {
                http_get(addr, "/notes", &[("x-tenant", "acme"), ("x-user", "1")]).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut watcher = PgConnection::establish(url).expect("connect");
    let on_lock: i64 = diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
        "(SELECT count(*) FROM pg_catalog.pg_stat_activity \
          WHERE datname = current_database() AND wait_event_type = 'Lock')",
    ))
    .get_result(&mut watcher)
    .expect("pg_stat_activity");
    let start = Instant::now();
    let (s, body) = http_get(addr, "/whoami", &[("x-tenant", "globex"), ("x-user", "2")]).await;
    let took = start.elapsed();
    locker.batch_execute("ROLLBACK").expect("unlock");
    for f in flood {
        let (s, body) = f.await.expect("flood request");
        assert!([200, 503].contains(&s), "{s} {body}");
    }
    (s, body, took, on_lock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_work_leaves_the_checks_connections_on_a_shared_pool() {
    let (db, _migrator) = support::provision("web_reserved", &["acme", "globex"]);
    people(&mut PgConnection::establish(db.url()).expect("connect"));
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(4)
        .statement_timeout(Some(Duration::from_secs(3)))
        .build(db.url())
        .expect("pool");
    let wait = Duration::from_secs(1);
    // No per-tenant limit to speak of: only the share kept for the checks is tested here.
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(members())
        .wait(wait)
        .tenant_limit(100)
        .build();
    assert_eq!(routing.reserved_for_checks(), 1);
    let (s, body, took, on_lock) = bob_behind_a_flood(db.url(), &routing).await;
    eprintln!(
        "shared pool of 4, 1 kept for the checks: {on_lock} acme sessions on the lock; \
         Bob's first request {s} in {took:?}"
    );
    assert_eq!((s, body.as_str()), (200, "globex"));
    assert!(took < wait, "{took:?}");
    assert_eq!(on_lock, 3, "tenant work held more than its share");
    assert!(
        routing.registry_reads() >= 1,
        "the registry check read the pool"
    );

    // A registry pool of its own: nothing is kept back on the main pool.
    let own = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(members())
        .registry_pool(
            diesel_workspace_axum::pool_builder()
                .max_size(1)
                .build(db.url())
                .expect("registry pool"),
        )
        .build();
    assert_eq!(own.reserved_for_checks(), 0);

    // Negative control: a pool that does not say its size gets no share kept, the flood takes
    // every connection and Bob's checks wait behind it, then 503.
    let unsized_routing = Routing::builder(Unsized(pool))
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(members())
        .wait(wait)
        .tenant_limit(100)
        .build();
    assert_eq!(unsized_routing.reserved_for_checks(), 0);
    let (s, body, took, on_lock) = bob_behind_a_flood(db.url(), &unsized_routing).await;
    assert_eq!((s, body.as_str()), (503, CHECKS_UNAVAILABLE));
    assert!(on_lock >= 4, "{on_lock}");
    assert!(took >= wait, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_that_asks_the_database_answers_within_the_wait() {
    let (db, _migrator) = support::provision("web_resolver_wait", &["acme", "globex"]);
    people(&mut PgConnection::establish(db.url()).expect("connect"));
    let users = diesel_workspace_axum::pool_builder()
        .max_size(1)
        .build(db.url())
        .expect("users pool");
    let wait = Duration::from_millis(400);
    let routing = Routing::builder(
        diesel_workspace_axum::pool_builder()
            .max_size(2)
            .build(db.url())
            .expect("pool"),
    )
    .resolver(UserWorkspace::new(users.clone(), user))
    .access(members())
    .wait(wait)
    .build();
    let addr = serve(app(&routing)).await;
    assert_eq!(
        http_get(addr, "/whoami", &[("x-user", "1")]).await,
        (200, "acme".to_owned())
    );

    // The resolver's only connection is taken: its lookup (which would wait
    // `DEFAULT_WAIT`, 3 s) is cut at the routing's wait.
    let held = users.get().expect("the users pool's connection");
    let start = Instant::now();
    let (s, body) = http_get(addr, "/whoami", &[("x-user", "2")]).await;
    let took = start.elapsed();
    eprintln!("resolver without a connection: {s} in {took:?} (wait {wait:?})");
    assert_eq!((s, body.as_str()), (503, CHECKS_UNAVAILABLE));
    assert!(
        took >= wait && took < wait + Duration::from_millis(600),
        "{took:?}"
    );
    drop(held);
    // Control: with its connection back, the same request is served.
    let start = Instant::now();
    loop {
        let (s, body) = http_get(addr, "/whoami", &[("x-user", "2")]).await;
        if s == 200 {
            assert_eq!(body, "globex");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{s} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_connections_carry_a_default_statement_timeout() {
    let (db, _migrator) = support::provision("web_statement_timeout", &["acme"]);
    let setting = |db: TenantDb| async move {
        db.run(|conn| {
            diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
                "pg_catalog.current_setting('statement_timeout')",
            ))
            .get_result::<String>(conn)
        })
        .await
    };
    let serve_on = |pool: TenantPool| {
        let routing = Routing::builder(pool)
            .resolver(Header::behind_trusted_proxy("x-tenant"))
            .access(Access::public_tenant_routes())
            .build();
        let app = Router::new()
            .route("/timeout", get(setting))
            .layer(routing.layer());
        serve(app)
    };
    let addr = serve_on(
        diesel_workspace_axum::pool_builder()
            .max_size(2)
            .build(db.url())
            .expect("pool"),
    )
    .await;
    assert_eq!(
        diesel_workspace_axum::DEFAULT_STATEMENT_TIMEOUT,
        Duration::from_secs(15)
    );
    // Every request's connection, reused ones included (the pool resets its sessions).
    for _ in 0..5 {
        assert_eq!(
            http_get(addr, "/timeout", &[("x-tenant", "acme")]).await,
            (200, "15s".to_owned())
        );
    }
    // Control: the library's plain pool builder sets none.
    let plain = serve_on(
        diesel_workspace::pool::builder()
            .max_size(2)
            .build(db.url())
            .expect("pool"),
    )
    .await;
    assert_eq!(
        http_get(plain, "/timeout", &[("x-tenant", "acme")]).await,
        (200, "0".to_owned())
    );
}
