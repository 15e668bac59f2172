//! The example of this crate's README; a test keeps the README's copy identical.

use axum::extract::{Request, State};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::{routing::get, Json, Router};
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace_axum::{
    bearer_token, install_notify_trigger, Access, DbError, DieselPool, Routing, Subdomain, Tenant,
    TenantDb,
};

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        title -> Text,
    }
}

diesel::table! {
    /// The service's API tokens, in the shared schema.
    api_tokens (token) {
        /// A random token handed out at login.
        token -> Text,
        /// Whose it is.
        user_id -> Int8,
    }
}

/// The authenticated user, put into the request by `authenticate`.
#[derive(Clone, Copy)]
struct UserId(i64);

/// `Authorization: Bearer <token>` (any case of `Bearer`) of a known token: the user enters the
/// request. Anything else leaves the request anonymous, and the tenant routes answer 401.
async fn authenticate(State(pool): State<TenantPool>, mut req: Request, next: Next) -> Response {
    if let Some(token) = bearer_token(req.headers()).map(str::to_owned) {
        let wait = diesel_workspace_axum::DEFAULT_WAIT;
        let user = pool
            .interact(wait, move |conn| {
                api_tokens::table
                    .find(token)
                    .select(api_tokens::user_id)
                    .first::<i64>(conn)
                    .optional()
            })
            .await;
        if let Ok(Ok(Some(user))) = user {
            req.extensions_mut().insert(UserId(user));
        }
    }
    next.run(req).await
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
    // A default statement_timeout, and at most 3 s of waiting for a connection.
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(16)
        .build(&url)?;
    install_notify_trigger(&mut PgConnection::establish(&url)?)?; // once; idempotent

    // acme.example.com is tenant `acme`; only its members enter (`public.memberships`).
    let routing = Routing::builder(pool.clone())
        .resolver(Subdomain::new(["example.com"]).reserved(["www", "api", "admin"]))
        .access(Access::members(|parts| {
            parts.extensions.get::<UserId>().map(|u| u.0)
        }))
        .registry_pool(
            diesel_workspace_axum::pool_builder()
                .max_size(2)
                .build(&url)?,
        )
        .build();
    // Every name answered from memory, other processes' changes at once.
    let _listener = routing.cache().listen(&url)?;

    let app = Router::new()
        .route("/notes", get(list))
        .route("/whoami", get(whoami))
        .layer(routing.layer()) // these routes need a tenant the user is a member of
        .merge(Router::new().route("/health", get(|| async { "ok" }))) // this one needs none
        .layer(from_fn_with_state(pool, authenticate));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}
