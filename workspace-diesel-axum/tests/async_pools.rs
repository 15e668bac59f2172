//! deadpool-diesel under the layer (built by the library, with deadpool's own manager as the
//! negative control for what one request leaves on the connection), and diesel-async with
//! `tenant_table!` and `TenantFuture`.

use axum::routing::get;
use axum::{Json, Router};
use diesel_workspace::{TenantFuture, TenantId};
use diesel_workspace_axum::{DbError, Header, Routing, Tenant, TenantDb};

use crate::support::{self, get as http_get, notes, serve};

/// The layer over a deadpool-diesel pool of one connection: `/notes` reads the tenant's notes,
/// `/leave` leaves a temporary table and a session role on the connection, `/left` says what the
/// next request finds of them.
fn deadpool_app(pool: deadpool_diesel::postgres::Pool, role: &str) -> Router {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    let routing = Routing::builder(pool)
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .build();
    type Db = TenantDb<deadpool_diesel::postgres::Pool>;
    let leave = format!("CREATE TEMP TABLE left_behind AS SELECT 1 AS x; SET ROLE {role}");
    Router::new()
        .route(
            "/notes",
            get(|db: Db| async move {
                let titles: Vec<String> = db
                    .run(|conn| notes::table.select(notes::title).load(conn))
                    .await?;
                Ok::<_, DbError>(Json(titles))
            }),
        )
        .route(
            "/leave",
            get(move |db: Db| {
                let leave = leave.clone();
                async move {
                    db.run(move |conn| conn.batch_execute(&leave)).await?;
                    Ok::<_, DbError>(Json(true))
                }
            }),
        )
        .route(
            "/left",
            get(|db: Db| async move {
                let left: (bool, String) = db
                    .run(|conn| {
                        diesel::select((
                            diesel::dsl::sql::<diesel::sql_types::Bool>(
                                "pg_catalog.to_regclass('pg_temp.left_behind') IS NOT NULL",
                            ),
                            diesel::dsl::sql::<diesel::sql_types::Text>("current_user::text"),
                        ))
                        .get_result(conn)
                    })
                    .await?;
                Ok::<_, DbError>(Json(left))
            }),
        )
        .layer(routing.layer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_diesel_runs_tenant_work_under_the_layer() {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    let (db, _migrator) = support::provision("web_deadpool", &["acme", "globex"]);
    // The role a request leaves with `SET ROLE`: it may read the registry, so that the next
    // request's registry check passes on the stock pool and the handler shows the role.
    let role = format!("dww_left_{}", std::process::id());
    let mut admin = PgConnection::establish(db.url()).expect("connect");
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role}; \
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}"
        ))
        .expect("a role to leave behind");

    // Built by the library: the r2d2 pool's checks, and its reset on every reuse.
    let pool = diesel_workspace::pool::builder()
        .deadpool(db.url())
        .expect("the library's deadpool")
        .max_size(1)
        .build()
        .expect("deadpool");
    let addr = serve(deadpool_app(pool, &role)).await;
    for i in 0..40 {
        let t = if i % 2 == 0 { "acme" } else { "globex" };
        let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
        assert_eq!((s, body), (200, format!(r#"["note of {t}"]"#)));
    }
    let (s, _) = http_get(addr, "/notes", &[("x-tenant", "nobody")]).await;
    assert_eq!(s, 404);
    assert_eq!(
        http_get(addr, "/leave", &[("x-tenant", "acme")]).await.0,
        200
    );
    let (s, body) = http_get(addr, "/left", &[("x-tenant", "globex")]).await;
    assert_eq!((s, body.as_str()), (200, r#"[false,"postgres"]"#));

    // Negative control: deadpool-diesel's own manager hands the next request what was left.
    let manager =
        deadpool_diesel::postgres::Manager::new(db.url(), deadpool_diesel::Runtime::Tokio1);
    let stock = deadpool_diesel::postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .expect("deadpool");
    let addr = serve(deadpool_app(stock, &role)).await;
    assert_eq!(
        http_get(addr, "/leave", &[("x-tenant", "acme")]).await.0,
        200
    );
    let (s, body) = http_get(addr, "/left", &[("x-tenant", "globex")]).await;
    assert_eq!((s, body), (200, format!(r#"[true,"{role}"]"#)));
    admin
        .batch_execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"))
        .expect("drop the role");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diesel_async_queries_tenant_tables_inside_a_tenant_future() {
    use diesel::{ExpressionMethods, QueryDsl};
    use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

    let (db, _migrator) = support::provision("web_dieselasync", &["acme", "globex"]);
    let mut conn = AsyncPgConnection::establish(db.url())
        .await
        .expect("async connection");
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();

    // Alternate tenants on one connection, yielding (and maybe moving threads) between queries.
    for round in 0..10 {
        for tenant in [&acme, &globex] {
            let titles: Vec<String> = TenantFuture::new(tenant.clone(), async {
                tokio::task::yield_now().await;
                diesel::insert_into(notes::table)
                    .values(notes::title.eq(format!("{tenant} async {round}")))
                    .execute(&mut conn)
                    .await?;
                tokio::task::yield_now().await;
                notes::table
                    .select(notes::title)
                    .order(notes::id)
                    .load(&mut conn)
                    .await
            })
            .await
            .expect("query in the tenant");
            assert_eq!(titles.len(), round + 2);
            assert!(
                titles
                    .iter()
                    .all(|t| t.starts_with(&format!("note of {tenant}"))
                        || t.starts_with(&format!("{tenant} async"))),
                "{titles:?}"
            );
        }
    }

    // The extractor's helper does the same.
    let scoped: Vec<String> = Tenant(globex.clone())
        .scope(async {
            notes::table
                .select(notes::title)
                .limit(1)
                .load(&mut conn)
                .await
        })
        .await
        .unwrap();
    assert_eq!(scoped, ["note of globex"]);

    // Negative control: the same query after an `.await` without the wrapper fails closed.
    let err = diesel_workspace::switch(&acme, || async {
        tokio::task::yield_now().await;
        notes::table
            .select(notes::title)
            .load::<String>(&mut conn)
            .await
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no tenant is active"), "{err}");
}
