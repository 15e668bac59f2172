//! deadpool-diesel under the layer, and diesel-async with `tenant_table!` and `TenantFuture`.

use axum::routing::get;
use axum::{Json, Router};
use diesel_workspace::{TenantFuture, TenantId};
use diesel_workspace_axum::{DbError, Header, Routing, Tenant, TenantDb};

use crate::support::{self, get as http_get, notes, serve};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadpool_diesel_runs_tenant_work_under_the_layer() {
    use diesel::prelude::*;
    let (db, _migrator) = support::provision("web_deadpool", &["acme", "globex"]);
    let manager =
        deadpool_diesel::postgres::Manager::new(db.url(), deadpool_diesel::Runtime::Tokio1);
    let pool = deadpool_diesel::postgres::Pool::builder(manager)
        .max_size(2)
        .build()
        .expect("deadpool");
    let routing = Routing::builder(pool)
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(diesel_workspace_axum::Access::public_tenant_routes())
        .build();
    type Db = TenantDb<deadpool_diesel::postgres::Pool>;
    let app = Router::new()
        .route(
            "/notes",
            get(|db: Db| async move {
                let titles: Vec<String> = db
                    .run(|conn| notes::table.select(notes::title).load(conn))
                    .await?;
                Ok::<_, DbError>(Json(titles))
            }),
        )
        .layer(routing.layer());
    let addr = serve(app).await;
    for i in 0..40 {
        let t = if i % 2 == 0 { "acme" } else { "globex" };
        let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
        assert_eq!((s, body), (200, format!(r#"["note of {t}"]"#)));
    }
    let (s, _) = http_get(addr, "/notes", &[("x-tenant", "nobody")]).await;
    assert_eq!(s, 404);
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
