//! The notes service: routes, handlers and the HTML page.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Form, Json, Router};
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::{Migrator, TenantId};
use diesel_workspace_axum::{
    DbError, Header, Resolver, Routing, Subdomain, Tenant, TenantDb, UserWorkspace,
};
use serde::{Deserialize, Serialize};

diesel_workspace::tenant_table! {
    /// The example schema's notes (`migrations_tenant/`), in each tenant's schema.
    notes (id) {
        id -> Int4,
        category_id -> Nullable<Int4>,
        tag_id -> Nullable<Int4>,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    /// The demo's users (`migrations/`), in the shared schema.
    public.users (id) {
        id -> Int8,
        email -> Text,
        workspace_id -> Int8,
    }
}

use diesel_workspace::workspaces;

/// The logged-in user, put into the request by [`authenticate`].
#[derive(Debug, Clone, Copy)]
pub struct UserId(pub i64);

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub routing: Routing<TenantPool>,
    pub migrator: Arc<Migrator>,
    /// Login sessions: bearer token → user (in memory; a restart logs everyone out).
    pub sessions: Arc<Mutex<HashMap<String, i64>>>,
}

/// The resolver: a logged-in user's workspace, which a subdomain or `x-tenant` header naming
/// another workspace must not contradict (403); without a login, the subdomain of `localhost`
/// or the header.
pub fn resolver(pool: TenantPool) -> impl Resolver {
    UserWorkspace::new(pool, |parts: &axum::http::request::Parts| {
        parts.extensions.get::<UserId>().map(|u| u.0)
    })
    .agreeing_with(
        Subdomain::new(["localhost"])
            .reserved(["www"])
            .or(Header::behind_trusted_proxy("x-tenant")),
    )
}

/// The whole service.
pub fn router(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/api/notes", get(list_notes).post(create_note))
        .route("/api/whoami", get(whoami))
        .route("/notes", get(notes_page).post(create_note_form))
        .layer(state.routing.layer());
    let open_routes = Router::new()
        .route("/", get(landing))
        .route("/health", get(|| async { "ok" }))
        .route("/api/signup", axum::routing::post(signup))
        .route("/api/login", axum::routing::post(login));
    tenant_routes
        .merge(open_routes)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .with_state(state)
}

/// Reads `Authorization: Bearer <token>`: a known token puts the user into the request, an
/// unknown one is 401.
async fn authenticate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Some(token) = token {
        let user = state
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&token)
            .copied();
        match user {
            Some(user) => {
                req.extensions_mut().insert(UserId(user));
            }
            None => return error(StatusCode::UNAUTHORIZED, "unknown_token", "log in again"),
        }
    }
    next.run(req).await
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": code, "message": message })),
    )
        .into_response()
}

#[derive(Queryable, Selectable, Serialize)]
#[diesel(table_name = notes, check_for_backend(diesel::pg::Pg))]
struct Note {
    id: i32,
    title: String,
    body: String,
}

#[derive(Deserialize)]
struct NewNote {
    title: String,
    #[serde(default)]
    body: String,
}

#[derive(Deserialize)]
struct Search {
    q: Option<String>,
}

#[derive(Serialize)]
struct NoteList {
    tenant: String,
    notes: Vec<Note>,
}

fn load_notes(conn: &mut PgConnection, q: Option<&str>) -> QueryResult<Vec<Note>> {
    let mut query = notes::table
        .select(Note::as_select())
        .order(notes::id)
        .into_boxed();
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        let escaped = q
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        let pattern = format!("%{escaped}%");
        query = query.filter(
            notes::title
                .ilike(pattern.clone())
                .or(notes::body.ilike(pattern)),
        );
    }
    query.load(conn)
}

async fn list_notes(db: TenantDb, Query(search): Query<Search>) -> Result<Json<NoteList>, DbError> {
    let notes = db
        .run(move |conn| load_notes(conn, search.q.as_deref()))
        .await?;
    Ok(Json(NoteList {
        tenant: db.tenant().to_string(),
        notes,
    }))
}

async fn insert_note(db: &TenantDb, new: NewNote) -> Result<Note, DbError> {
    db.run(move |conn| {
        diesel::insert_into(notes::table)
            .values((notes::title.eq(new.title), notes::body.eq(new.body)))
            .returning(Note::as_returning())
            .get_result(conn)
    })
    .await
}

async fn create_note(db: TenantDb, Json(new): Json<NewNote>) -> Response {
    if new.title.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "title_required",
            "a note needs a title",
        );
    }
    match insert_note(&db, new).await {
        Ok(note) => (StatusCode::CREATED, Json(note)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_note_form(db: TenantDb, Form(new): Form<NewNote>) -> Response {
    if new.title.trim().is_empty() {
        return Redirect::to("/notes").into_response();
    }
    match insert_note(&db, new).await {
        Ok(_) => Redirect::to("/notes").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn whoami(Tenant(tenant): Tenant) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "tenant": tenant.as_str() }))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn notes_page(db: TenantDb, Query(search): Query<Search>) -> Result<Html<String>, DbError> {
    let q = search.q.clone().unwrap_or_default();
    let notes = db
        .run(move |conn| load_notes(conn, search.q.as_deref()))
        .await?;
    let tenant = escape(db.tenant().as_str());
    let items: String = if notes.is_empty() {
        "<li class=\"empty\">no notes yet</li>".to_owned()
    } else {
        notes
            .iter()
            .map(|n| {
                format!(
                    "<li class=\"note\"><strong>{}</strong> {}</li>",
                    escape(&n.title),
                    escape(&n.body)
                )
            })
            .collect()
    };
    Ok(Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{tenant} · notes</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}li{{margin:.3em 0}}</style></head>
<body>
<h1 id="tenant">{tenant}</h1>
<form method="get" action="/notes"><input name="q" value="{q}" placeholder="search"> <button>search</button></form>
<ul id="notes">{items}</ul>
<form method="post" action="/notes"><input name="title" placeholder="title" required> <input name="body" placeholder="text"> <button>add note</button></form>
</body></html>
"#,
        q = escape(&q),
    )))
}

async fn landing() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>notes</title></head>\
         <body><h1>notes</h1><p>Sign up a workspace with <code>POST /api/signup</code>, then open \
         <code>http://&lt;workspace&gt;.localhost:PORT/notes</code>.</p></body></html>",
    )
}

#[derive(Deserialize)]
struct Signup {
    workspace: String,
    email: String,
}

#[derive(Serialize)]
struct Session {
    workspace: String,
    user_id: i64,
    token: String,
}

async fn signup(State(state): State<AppState>, Json(req): Json<Signup>) -> Response {
    let tenant = match TenantId::new(&req.workspace) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "tenant_malformed", &e.to_string()),
    };
    if req.email.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "email_required",
            "an email is needed",
        );
    }
    let routing = state.routing.clone();
    let migrator = state.migrator.clone();
    let email = req.email.clone();
    let created = tokio::task::spawn_blocking(move || -> Result<i64, Box<Response>> {
        let mut conn = routing.pool().get().map_err(|e| {
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                &e.to_string(),
            )
        })?;
        let taken: bool = diesel::select(diesel::dsl::exists(
            users::table.filter(users::email.eq(&email)),
        ))
        .get_result(&mut conn)
        .map_err(|e| Box::new(DbError::from(e).into_response()))?;
        if taken {
            return Err(Box::new(error(
                StatusCode::CONFLICT,
                "email_taken",
                "that email already has a workspace",
            )));
        }
        match routing.create_tenant(&migrator, &mut conn, &tenant) {
            Ok(()) => {}
            Err(diesel_workspace::Error::TenantExists(t)) => {
                return Err(Box::new(error(
                    StatusCode::CONFLICT,
                    "tenant_exists",
                    &format!("workspace `{t}` already exists"),
                )))
            }
            Err(e) => return Err(Box::new(DbError::from(e).into_response())),
        }
        diesel::insert_into(users::table)
            .values((
                users::email.eq(&email),
                users::workspace_id.eq(workspaces::table
                    .filter(workspaces::schema_name.eq(tenant.as_str()))
                    .select(workspaces::id)
                    .single_value()
                    .assume_not_null()),
            ))
            .returning(users::id)
            .get_result(&mut conn)
            .map_err(|e| Box::new(DbError::from(e).into_response()))
    })
    .await;
    match created {
        Ok(Ok(user_id)) => start_session(&state, StatusCode::CREATED, req.workspace, user_id),
        Ok(Err(response)) => *response,
        Err(_) => DbError::Panicked.into_response(),
    }
}

#[derive(Deserialize)]
struct Login {
    email: String,
}

/// Logs a user in by email alone: the demo shows routing, not authentication.
async fn login(State(state): State<AppState>, Json(req): Json<Login>) -> Response {
    let pool = state.routing.pool().clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<(i64, String)>, DbError> {
        let mut conn = pool.get().map_err(|e| DbError::Pool(e.to_string()))?;
        let Some((user_id, workspace_id)) = users::table
            .filter(users::email.eq(&req.email))
            .select((users::id, users::workspace_id))
            .get_result::<(i64, i64)>(&mut conn)
            .optional()?
        else {
            return Ok(None);
        };
        let workspace = workspaces::table
            .find(workspace_id)
            .select(workspaces::schema_name)
            .get_result(&mut conn)?;
        Ok(Some((user_id, workspace)))
    })
    .await;
    match found {
        Ok(Ok(Some((user_id, workspace)))) => {
            start_session(&state, StatusCode::OK, workspace, user_id)
        }
        Ok(Ok(None)) => error(StatusCode::UNAUTHORIZED, "unknown_user", "no such user"),
        Ok(Err(e)) => e.into_response(),
        Err(_) => DbError::Panicked.into_response(),
    }
}

/// 128 random bits from the operating system, hex.
fn new_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Starts a session for `user` and answers with its token.
fn start_session(
    state: &AppState,
    status: StatusCode,
    workspace: String,
    user_id: i64,
) -> Response {
    let token = match new_token() {
        Ok(t) => t,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no_randomness",
                &e.to_string(),
            )
        }
    };
    state
        .sessions
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(token.clone(), user_id);
    (
        status,
        Json(Session {
            workspace,
            user_id,
            token,
        }),
    )
        .into_response()
}
