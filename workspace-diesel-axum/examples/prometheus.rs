//! Exports the library's and the web layer's metrics for Prometheus (feature `metrics`): a
//! tenant route behind the tenant layer, and `/metrics` beside it in Prometheus's text format.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/app \
//!   cargo run -p workspace-diesel-axum --features metrics --example prometheus
//! curl -H 'x-tenant: acme' http://127.0.0.1:3001/notes
//! curl http://127.0.0.1:3001/metrics
//! ```
//!
//! The database needs the registry and tenants with a `notes` table (the README's quickstart
//! makes them). `tests/prometheus.rs` serves this `app` and scrapes it after known traffic.

use axum::routing::get;
use axum::Router;
use diesel::prelude::*;
use diesel_workspace::metrics::{query_instrumentation, record_pool_state};
use diesel_workspace::pool::TenantPool;
use diesel_workspace_axum::{Access, DbError, Header, Routing, TenantDb};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

/// Installs the Prometheus recorder for this process (once) and returns the handle that renders
/// the scrape.
pub fn install_recorder() -> PrometheusHandle {
    PrometheusBuilder::new()
        .install_recorder()
        .expect("no other metrics recorder is installed")
}

/// A pool whose connections count their queries per tenant.
pub fn pool(database_url: &str) -> Result<TenantPool, diesel_workspace::Error> {
    diesel_workspace::pool::builder()
        .instrumentation(|| Some(query_instrumentation()))
        .build(database_url)
}

/// The service: `GET /notes` (the tenant from the `x-tenant` header, which a trusted proxy sets)
/// answers the tenant's number of notes; `GET /metrics` the scrape, with the pool's gauges
/// refreshed first.
pub fn app(pool: TenantPool, handle: PrometheusHandle) -> Router {
    let routing = Routing::builder(pool.clone())
        .resolver(Header::behind_trusted_proxy("x-tenant"))
        .access(Access::public_tenant_routes())
        .build();
    let tenant_routes = Router::new()
        .route("/notes", get(count_notes))
        .layer(routing.layer());
    let scrape = move || {
        record_pool_state("web", &pool);
        let body = handle.render();
        async move { body }
    };
    tenant_routes.route("/metrics", get(scrape))
}

async fn count_notes(db: TenantDb) -> Result<String, DbError> {
    let n = db
        .run(|conn| notes::table.count().get_result::<i64>(conn))
        .await?;
    Ok(n.to_string())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL")?;
    let handle = install_recorder();
    let app = app(pool(&url)?, handle);
    let listen =
        std::env::var("PROMETHEUS_EXAMPLE_LISTEN").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("serving on http://{listen} (/notes with x-tenant, /metrics)");
    axum::serve(listener, app).await?;
    Ok(())
}
