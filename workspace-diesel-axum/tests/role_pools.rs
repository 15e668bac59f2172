//! `RolePools` under the layer: each request's tenant work runs logged in as the tenant's own
//! role, so a handler that reaches for another tenant's rows (DSL or raw SQL) is refused by the
//! database, while the registry check runs on the shared pool; a tenant created through the
//! routing gets its role and is served as it. The negative control: the same
//! handler on a `TenantPool` of the application's role reads the other tenant.

use axum::routing::get;
use axum::{Json, Router};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_workspace::{pool, switch, Migrator, TenantId, TenantRolePools, TenantRoles};
use diesel_workspace_axum::{Access, DbError, DieselPool, Header, RolePools, Routing, TenantDb};

use crate::support::{self, get as http_get, notes, serve, ScratchDb};

fn router<P: DieselPool>(routing: &Routing<P>) -> Router {
    Router::new()
        .route(
            "/notes",
            get(|db: TenantDb<P>| async move {
                let titles: Vec<String> = db
                    .run(|conn| notes::table.select(notes::title).load(conn))
                    .await?;
                Ok::<_, DbError>(Json(titles))
            }),
        )
        .route(
            "/who",
            get(|db: TenantDb<P>| async move {
                let who: String = db
                    .run(|conn| {
                        diesel::select(diesel::dsl::sql::<diesel::sql_types::Text>(
                            "current_user::text",
                        ))
                        .get_result(conn)
                    })
                    .await?;
                Ok::<_, DbError>(Json(who))
            }),
        )
        .route(
            "/globex",
            get(|db: TenantDb<P>| async move {
                let globex = TenantId::new("globex").expect("valid");
                let titles: Vec<String> = db
                    .run(move |conn| {
                        switch(&globex, || notes::table.select(notes::title).load(conn))
                    })
                    .await?;
                Ok::<_, DbError>(Json(titles))
            }),
        )
        .layer(routing.layer())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_runs_as_its_tenants_role() {
    let db = ScratchDb::create("web_role_pools");
    let prefix = format!("dww{}_", support::db::run_token().replace('_', ""));
    let roles = TenantRoles::new(prefix.as_str()).unwrap().login(true);
    let migrator = Migrator::builder(support::TENANT)
        .tenant_roles(roles.clone())
        .build()
        .unwrap();
    let mut conn = PgConnection::establish(db.url()).unwrap();
    migrator.run_shared(&mut conn).unwrap();
    for t in ["acme", "globex"] {
        let id = TenantId::new(t).unwrap();
        migrator.create_tenant(&mut conn, &id).unwrap();
        support::add_note(&mut conn, &id, &format!("note of {t}"));
    }

    let pools = RolePools::new(
        pool::new(db.url()).unwrap(),
        TenantRolePools::builder(db.url(), roles.clone()).build(),
    );
    let routing = Routing::builder(pools.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let addr = serve(router(&routing)).await;
    for t in ["acme", "globex", "acme"] {
        let (s, body) = http_get(addr, "/notes", &[("x-tenant", t)]).await;
        assert_eq!((s, body), (200, format!(r#"["note of {t}"]"#)));
    }
    let (s, body) = http_get(addr, "/globex", &[("x-tenant", "acme")]).await;
    assert_eq!(s, 500, "{body}");
    assert!(!body.contains("note of globex"), "{body}");
    let (s, _) = http_get(addr, "/globex", &[("x-tenant", "globex")]).await;
    assert_eq!(s, 200);
    assert_eq!(pools.tenants().open_pools(), 2);

    // A tenant the web crate creates (`Routing::create_tenant`, with the migrator of roles) gets
    // its login role at once, and its requests run as it.
    let initech = TenantId::new("initech").unwrap();
    routing
        .create_tenant(&migrator, &mut conn, &initech)
        .unwrap();
    support::add_note(&mut conn, &initech, "note of initech");
    let (s, body) = http_get(addr, "/notes", &[("x-tenant", "initech")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of initech"]"#));
    let (s, body) = http_get(addr, "/who", &[("x-tenant", "initech")]).await;
    assert_eq!(
        (s, body),
        (200, format!("\"{}\"", roles.role_name(&initech).unwrap()))
    );
    let (s, body) = http_get(addr, "/globex", &[("x-tenant", "initech")]).await;
    assert_eq!(s, 500, "{body}");
    assert!(!body.contains("note of globex"), "{body}");

    // Negative control: the application's own role reads globex from acme's request.
    let routing = Routing::builder(pool::new(db.url()).unwrap())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let addr = serve(router(&routing)).await;
    let (s, body) = http_get(addr, "/globex", &[("x-tenant", "acme")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#));

    drop((routing, pools));
    for t in ["acme", "globex", "initech"] {
        let role = roles.role_name(&TenantId::new(t).unwrap()).unwrap();
        conn.batch_execute(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\""))
            .unwrap();
    }
}
