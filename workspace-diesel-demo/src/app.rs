//! The notes service: routes, middleware, the notes handlers and pages.

use std::sync::Arc;

use axum::extract::{Query, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace::Migrator;
use diesel_workspace_axum::{
    Access, DbError, Resolver, Routing, Subdomain, Tenant, TenantDb, UserWorkspace,
};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_sessions::{MemoryStore, Session, SessionManagerLayer};

use crate::accounts;

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
    /// The demo's users (`migrations/`), in the shared schema: each belongs to one workspace.
    public.users (id) {
        id -> Int8,
        email -> Text,
        workspace_id -> Int8,
        password_hash -> Text,
    }
}

/// Names that are never workspaces: they are (or could become) the service's own hosts.
pub const RESERVED: &[&str] = &[
    "www", "api", "admin", "app", "assets", "static", "mail", "login", "signup", "logout",
];

/// Notes per page.
pub const PAGE: i64 = 50;

/// The signed-in user, put into the request by [`authenticate`] from the session.
#[derive(Debug, Clone, Copy)]
pub struct UserId(pub i64);

/// Everything the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub routing: Routing<TenantPool>,
    pub migrator: Arc<Migrator>,
}

fn principal(parts: &axum::http::request::Parts) -> Option<i64> {
    parts.extensions.get::<UserId>().map(|u| u.0)
}

/// The resolver: the signed-in user's workspace, which a subdomain of `localhost` naming
/// another workspace must not contradict (403). No header: the demo is exposed directly.
pub fn resolver(pool: TenantPool) -> impl Resolver {
    UserWorkspace::new(pool, principal)
        .agreeing_with(Subdomain::new(["localhost"]).reserved(RESERVED))
}

/// Members only: a user enters their own workspace (`users.workspace_id`).
pub fn access() -> Access {
    Access::members(principal).members_table("public", "users", "id", "workspace_id")
}

/// The whole service.
pub fn router(state: AppState, sessions: SessionManagerLayer<MemoryStore>) -> Router {
    let tenant_routes = Router::new()
        .route("/api/notes", get(list_notes).post(create_note))
        .route("/api/whoami", get(whoami))
        .route("/notes", get(notes_page).post(create_note_form))
        .layer(state.routing.layer());
    let open_routes = Router::new()
        .route("/", get(landing))
        .route("/health", get(|| async { "ok" }))
        .route("/signup", get(accounts::signup_page).post(accounts::signup))
        .route("/login", get(accounts::login_page).post(accounts::login))
        .route("/logout", post(accounts::logout));
    let header =
        |name, value| SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value));
    tenant_routes
        .merge(open_routes)
        .layer(from_fn(authenticate))
        .layer(from_fn(same_origin_writes))
        .layer(sessions)
        .layer(header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ))
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::REFERRER_POLICY, "same-origin"))
        .with_state(state)
}

/// Puts the session's user into the request.
async fn authenticate(session: Session, mut req: Request, next: Next) -> Response {
    match session.get::<i64>(accounts::USER_KEY).await {
        Ok(Some(user)) => {
            req.extensions_mut().insert(UserId(user));
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "session store");
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session_error",
                "try again",
            );
        }
    }
    next.run(req).await
}

/// Refuses a write sent from another site (the browser says so in `Sec-Fetch-Site` or
/// `Origin`): the first line against cross-site request forgery, before the forms' tokens.
async fn same_origin_writes(req: Request, next: Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let headers = req.headers();
        let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        let cross_site = matches!(site, Some(s) if s != "same-origin" && s != "none");
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let foreign_origin = match headers.get(header::ORIGIN).map(|v| v.to_str()) {
            None => false,
            Some(Ok(origin)) => {
                let origin_host = origin.split_once("://").map(|(_, h)| h);
                origin_host.is_none() || origin_host != host
            }
            Some(Err(_)) => true,
        };
        if cross_site || foreign_origin {
            return error(
                StatusCode::FORBIDDEN,
                "cross_site_request",
                "writes are accepted from this site's own pages only",
            );
        }
    }
    next.run(req).await
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
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
struct NoteForm {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    csrf: String,
}

/// `?q=` searches title and body; `?after=<id>` is the next page.
#[derive(Deserialize, Clone)]
struct ListQuery {
    q: Option<String>,
    after: Option<i32>,
}

#[derive(Serialize)]
struct NoteList {
    tenant: String,
    notes: Vec<Note>,
    /// The `after` of the next page, when there is one.
    next: Option<i32>,
}

/// One page of notes (and whether there is another), oldest first.
fn load_notes(conn: &mut PgConnection, list: &ListQuery) -> QueryResult<(Vec<Note>, Option<i32>)> {
    let mut query = notes::table
        .select(Note::as_select())
        .filter(notes::id.gt(list.after.unwrap_or(0)))
        .order(notes::id)
        .limit(PAGE + 1)
        .into_boxed();
    if let Some(q) = list.q.as_deref().filter(|q| !q.is_empty()) {
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
    let mut page: Vec<Note> = query.load(conn)?;
    let next = if page.len() as i64 > PAGE {
        page.truncate(PAGE as usize);
        page.last().map(|n| n.id)
    } else {
        None
    };
    Ok((page, next))
}

async fn list_notes(
    db: TenantDb,
    Query(list): Query<ListQuery>,
) -> Result<Json<NoteList>, DbError> {
    let (notes, next) = db.run(move |conn| load_notes(conn, &list)).await?;
    Ok(Json(NoteList {
        tenant: db.tenant().to_string(),
        notes,
        next,
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

fn valid_note(new: &NewNote) -> bool {
    !new.title.trim().is_empty() && new.title.len() <= 200 && new.body.len() <= 10_000
}

async fn create_note(db: TenantDb, Json(new): Json<NewNote>) -> Response {
    if !valid_note(&new) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "note_invalid",
            "a note needs a title of at most 200 bytes and a body of at most 10,000",
        );
    }
    match insert_note(&db, new).await {
        Ok(note) => (StatusCode::CREATED, Json(note)).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn create_note_form(db: TenantDb, session: Session, Form(form): Form<NoteForm>) -> Response {
    if let Err(refused) = accounts::check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let new = NewNote {
        title: form.title,
        body: form.body,
    };
    if !valid_note(&new) {
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

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// An HTML page with the demo's style.
pub fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:2em auto}}li{{margin:.3em 0}}.error{{color:#b00}}</style></head>
<body>
{body}
</body></html>
"#,
        title = escape(title),
    ))
}

async fn notes_page(
    db: TenantDb,
    session: Session,
    Query(list): Query<ListQuery>,
) -> Result<Response, DbError> {
    let csrf = match accounts::csrf_token(&session).await {
        Ok(t) => t,
        Err(refused) => return Ok(refused),
    };
    let q = list.q.clone().unwrap_or_default();
    let (notes, next) = db.run(move |conn| load_notes(conn, &list)).await?;
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
    let more = match next {
        Some(after) => format!(
            r#"<p><a id="next" href="/notes?after={after}&amp;q={}">next page</a></p>"#,
            escape(&q)
        ),
        None => String::new(),
    };
    Ok(page(
        &format!("{tenant} · notes"),
        &format!(
            r#"<h1 id="tenant">{tenant}</h1>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="{csrf}"><button id="logout">sign out</button></form>
<form method="get" action="/notes"><input name="q" value="{q}" placeholder="search"> <button>search</button></form>
<ul id="notes">{items}</ul>{more}
<form id="add" method="post" action="/notes"><input type="hidden" name="csrf" value="{csrf}"><input name="title" placeholder="title" required> <input name="body" placeholder="text"> <button>add note</button></form>"#,
            q = escape(&q),
            csrf = escape(&csrf),
        ),
    )
    .into_response())
}

async fn landing() -> Html<String> {
    page(
        "notes",
        "<h1>notes</h1><p><a href=\"/signup\">Create a workspace</a> or \
         <a href=\"/login\">sign in</a>.</p>",
    )
}
