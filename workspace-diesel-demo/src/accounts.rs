//! Accounts: sign-up (a workspace and its first user, atomically), sign-in, sign-out, and the
//! forms' anti-forgery token.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use diesel::prelude::*;
use diesel_workspace::{registry::workspaces, TenantId};
use serde::Deserialize;
use tower_sessions::Session;

use crate::app::{error, escape, page, users, AppState, RESERVED};

/// The session key of the signed-in user's id.
pub const USER_KEY: &str = "user";
const CSRF_KEY: &str = "csrf";

/// The session's anti-forgery token, made on first use.
pub async fn csrf_token(session: &Session) -> Result<String, Response> {
    let failed = |e: tower_sessions::session::Error| {
        tracing::error!(error = %e, "session store");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "session_error",
            "try again",
        )
    };
    if let Some(token) = session.get::<String>(CSRF_KEY).await.map_err(failed)? {
        return Ok(token);
    }
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    session
        .insert(CSRF_KEY, token.clone())
        .await
        .map_err(failed)?;
    Ok(token)
}

/// A form's token must be the session's.
pub async fn check_csrf(session: &Session, sent: &str) -> Result<(), Response> {
    let expected = session.get::<String>(CSRF_KEY).await.ok().flatten();
    match expected {
        Some(token) if !sent.is_empty() && constant_time_eq(token.as_bytes(), sent.as_bytes()) => {
            Ok(())
        }
        _ => Err(error(
            StatusCode::FORBIDDEN,
            "csrf_token_invalid",
            "reload the page and submit the form again",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn form_page(
    kind: &str,
    csrf: &str,
    message: Option<&str>,
    workspace: &str,
    email: &str,
) -> String {
    let error = message
        .map(|m| format!(r#"<p class="error" id="error">{}</p>"#, escape(m)))
        .unwrap_or_default();
    let workspace_field = if kind == "signup" {
        format!(
            r#"<label>workspace <input name="workspace" value="{}" required maxlength="63"></label><br>"#,
            escape(workspace)
        )
    } else {
        String::new()
    };
    let (title, other) = if kind == "signup" {
        ("Create a workspace", r#"<a href="/login">sign in</a>"#)
    } else {
        ("Sign in", r#"<a href="/signup">create a workspace</a>"#)
    };
    format!(
        r#"<h1>{title}</h1>{error}
<form id="{kind}" method="post" action="/{kind}"><input type="hidden" name="csrf" value="{csrf}">
{workspace_field}<label>email <input name="email" type="email" value="{email}" required maxlength="254"></label><br>
<label>password <input name="password" type="password" required minlength="8" maxlength="128"></label><br>
<button>{title}</button></form><p>or {other}</p>"#,
        csrf = escape(csrf),
        email = escape(email),
    )
}

async fn render(
    session: &Session,
    kind: &str,
    status: StatusCode,
    message: Option<&str>,
    workspace: &str,
    email: &str,
) -> Response {
    match csrf_token(session).await {
        Ok(csrf) => {
            let title = if kind == "signup" {
                "sign up"
            } else {
                "sign in"
            };
            let body = form_page(kind, &csrf, message, workspace, email);
            (status, page(title, &body)).into_response()
        }
        Err(refused) => refused,
    }
}

pub async fn signup_page(session: Session) -> Response {
    render(&session, "signup", StatusCode::OK, None, "", "").await
}

pub async fn login_page(session: Session) -> Response {
    render(&session, "login", StatusCode::OK, None, "", "").await
}

#[derive(Deserialize)]
pub struct SignupForm {
    workspace: String,
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// What is wrong with a sign-up, before anything is written.
fn validate(form: &SignupForm) -> Result<(TenantId, String), String> {
    let tenant = TenantId::new(form.workspace.trim()).map_err(|e| e.to_string())?;
    if RESERVED.contains(&tenant.as_str()) {
        return Err(format!(
            "`{tenant}` is reserved; choose another workspace name"
        ));
    }
    let email = form.email.trim().to_lowercase();
    let shaped = email.len() <= 254
        && !email.chars().any(char::is_whitespace)
        && email
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'));
    if !shaped {
        return Err("enter a valid email address (at most 254 characters)".into());
    }
    let length = form.password.chars().count();
    if !(8..=128).contains(&length) {
        return Err("a password has 8 to 128 characters".into());
    }
    Ok((tenant, email))
}

/// Creates the workspace and its first user, or nothing: sign-ups for one email are serialised
/// (an advisory lock on the email), the email is checked before the workspace is created, and
/// a failure to add the user drops the workspace again.
pub async fn signup(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<SignupForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let workspace = form.workspace.chars().take(63).collect::<String>();
    let email_echo = form.email.chars().take(254).collect::<String>();
    let (tenant, email) = match validate(&form) {
        Ok(v) => v,
        Err(why) => {
            return render(
                &session,
                "signup",
                StatusCode::BAD_REQUEST,
                Some(&why),
                &workspace,
                &email_echo,
            )
            .await
        }
    };
    let password = form.password;
    let hashed = tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await;
    let Ok(Ok(hash)) = hashed else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "hash_failed",
            "try again",
        );
    };
    let routing = state.routing.clone();
    let migrator = state.migrator.clone();
    let created = tokio::task::spawn_blocking(move || -> Result<i64, (StatusCode, String)> {
        let unavailable = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "sign-up");
            (StatusCode::SERVICE_UNAVAILABLE, "the service is temporarily unavailable; try again".to_owned())
        };
        let mut conn = routing
            .pool()
            .get_timeout(diesel_workspace_axum::DEFAULT_WAIT)
            .map_err(|e| unavailable(&e))?;
        let lock = |conn: &mut PgConnection, f: &str| {
            diesel::sql_query(format!("SELECT pg_catalog.{f}(pg_catalog.hashtextextended($1, 0))"))
                .bind::<diesel::sql_types::Text, _>(&email)
                .execute(conn)
        };
        lock(&mut conn, "pg_advisory_lock").map_err(|e| unavailable(&e))?;
        let result = (|| {
            let taken: bool = diesel::select(diesel::dsl::exists(
                users::table.filter(users::email.eq(&email)),
            ))
            .get_result(&mut *conn)
            .map_err(|e| unavailable(&e))?;
            if taken {
                return Err((StatusCode::CONFLICT, "that email already has an account".to_owned()));
            }
            match routing.create_tenant(&migrator, &mut conn, &tenant) {
                Ok(()) => {}
                Err(diesel_workspace::Error::TenantExists(t)) => {
                    return Err((StatusCode::CONFLICT, format!("workspace `{t}` already exists")))
                }
                Err(e) => return Err(unavailable(&e)),
            }
            let user = diesel::insert_into(users::table)
                .values((
                    users::email.eq(&email),
                    users::password_hash.eq(&hash),
                    users::workspace_id.eq(workspaces::table
                        .filter(workspaces::schema_name.eq(tenant.as_str()))
                        .select(workspaces::id)
                        .single_value()
                        .assume_not_null()),
                ))
                .returning(users::id)
                .get_result(&mut *conn);
            match user {
                Ok(id) => Ok(id),
                Err(e) => {
                    if let Err(dropped) = routing.drop_tenant(&migrator, &mut conn, &tenant) {
                        tracing::error!(error = %dropped, tenant = tenant.as_str(), "undo a sign-up");
                    }
                    Err(unavailable(&e))
                }
            }
        })();
        let _ = lock(&mut conn, "pg_advisory_unlock");
        result
    })
    .await;
    match created {
        Ok(Ok(user)) => sign_in(&session, user).await,
        Ok(Err((status, why))) => {
            render(
                &session,
                "signup",
                status,
                Some(&why),
                &workspace,
                &email_echo,
            )
            .await
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "signup_failed",
            "try again",
        ),
    }
}

/// A new session id (no fixation) holding the user; on to the notes.
async fn sign_in(session: &Session, user: i64) -> Response {
    let stored = async {
        session.cycle_id().await?;
        session.insert(USER_KEY, user).await
    };
    match stored.await {
        Ok(()) => Redirect::to("/notes").into_response(),
        Err(e) => {
            tracing::error!(error = %e, "session store");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "session_error",
                "try again",
            )
        }
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// A hash to verify against when the email is unknown, so both answers take as long.
const NOBODY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Ao4bqrHcyRr1TsA2wx6IZmm0QAkDk9ZN6O2h9ibOkfE";

pub async fn login(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<LoginForm>,
) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    let email = form.email.trim().to_lowercase();
    let email_echo = form.email.chars().take(254).collect::<String>();
    let pool = state.routing.pool().clone();
    let password = form.password;
    let found = tokio::task::spawn_blocking(move || -> Result<Option<i64>, String> {
        let mut conn = pool
            .get_timeout(diesel_workspace_axum::DEFAULT_WAIT)
            .map_err(|e| e.to_string())?;
        let row: Option<(i64, String)> = users::table
            .filter(users::email.eq(&email))
            .select((users::id, users::password_hash))
            .first(&mut conn)
            .optional()
            .map_err(|e| e.to_string())?;
        let stored = row.as_ref().map_or(NOBODY, |(_, h)| h.as_str());
        let matches = PasswordHash::new(stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        Ok(row.filter(|_| matches).map(|(id, _)| id))
    })
    .await;
    match found {
        Ok(Ok(Some(user))) => sign_in(&session, user).await,
        Ok(Ok(None)) => {
            render(
                &session,
                "login",
                StatusCode::UNAUTHORIZED,
                Some("wrong email or password"),
                "",
                &email_echo,
            )
            .await
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "sign-in");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the service is temporarily unavailable; try again",
            )
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "login_failed",
            "try again",
        ),
    }
}

#[derive(Deserialize)]
pub struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

pub async fn logout(session: Session, Form(form): Form<LogoutForm>) -> Response {
    if let Err(refused) = check_csrf(&session, &form.csrf).await {
        return refused;
    }
    if let Err(e) = session.flush().await {
        tracing::error!(error = %e, "session store");
    }
    Redirect::to("/login").into_response()
}
