//! The README's "Web services" example; a test keeps the README's copy identical.

use axum::{routing::get, Json, Router};
use diesel::prelude::*;
use diesel_workspace_axum::{
    install_notify_trigger, DbError, Header, Resolver, Routing, Subdomain, Tenant, TenantDb,
};

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

// `TenantDb` runs the closure on a pooled connection in a blocking task, inside
// `switch(tenant, ..)`: the tenant is active on the thread that runs the queries.
async fn list(db: TenantDb) -> Result<Json<Vec<String>>, DbError> {
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

async fn whoami(Tenant(tenant): Tenant) -> String {
    tenant.to_string()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let pool = diesel_workspace::pool::new(&url)?;
    install_notify_trigger(&mut PgConnection::establish(&url)?)?; // once; idempotent

    // acme.example.com or `x-tenant: acme` (the header only behind an authenticating proxy).
    let routing = Routing::builder(pool)
        .resolver(
            Subdomain::new(["example.com"])
                .reserved(["www"])
                .or(Header::new("x-tenant")),
        )
        .cache_ttl(std::time::Duration::from_secs(5))
        .build();
    let _listener = routing.cache().listen(&url)?; // other processes' changes, at once

    let app = Router::new()
        .route("/notes", get(list))
        .route("/whoami", get(whoami))
        .layer(routing.layer()) // these routes need an active tenant
        .merge(Router::new().route("/health", get(|| async { "ok" }))); // this one needs none

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
