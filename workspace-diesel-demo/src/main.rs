//! The reference demo: a multi-tenant notes service on workspace-diesel and axum.
//!
//! `cargo run -p workspace-diesel-demo` starts it: it picks a database (`DATABASE_URL`, else a
//! database of its own on the local server, else a throwaway PostgreSQL), runs the embedded
//! migrations, and serves HTML pages (sign-up, sign-in, each workspace's notes) and a JSON API on
//! `http://localhost:PORT`. Every tenant route needs a signed-in member of the workspace.
//!
//! Settings (environment): `PORT` (default 3000; 0 picks a free one), `DEMO_CACHE_TTL_MS` (the
//! registry cache's time-to-live, default 5000), `DEMO_LISTEN` (`0` turns the cross-process
//! `LISTEN` invalidation off, leaving the TTL), `DEMO_DATABASE=throwaway` (always start a
//! throwaway PostgreSQL), `DEMO_SESSION_SECONDS` (sessions end after this long without a
//! request, default 28800: 8 hours), `RUST_LOG` (default `info` for the demo).

mod accounts;
mod app;
mod database;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{MigrateOptions, Migrator};
use diesel_workspace_axum::Routing;

/// The example tenant schema of the repository.
const TENANT: EmbeddedMigrations = embed_migrations!("migrations_tenant");
/// The demo's shared tables (the users).
const SHARED: EmbeddedMigrations = embed_migrations!("migrations");

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,workspace_diesel_demo=info")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v} is not a number")),
        Err(_) => Ok(default),
    }
}

fn run() -> anyhow::Result<()> {
    let port = u16::try_from(env_u64("PORT", 3000)?).context("PORT is not a port number")?;
    let ttl = Duration::from_millis(env_u64("DEMO_CACHE_TTL_MS", 5000)?);
    let listen = std::env::var("DEMO_LISTEN")
        .map(|v| v != "0")
        .unwrap_or(true);
    let session_seconds = env_u64("DEMO_SESSION_SECONDS", 8 * 3600)?;

    let database = database::Database::open()?;
    let url = database.url().to_owned();
    let migrator = Migrator::builder(TENANT)
        .shared(SHARED)
        .build()
        .context("read the migrations")?;
    let report = migrator
        .startup(&url, &MigrateOptions::default())
        .context("run the migrations")?;
    let mut conn = PgConnection::establish(&url)?;
    diesel_workspace_axum::install_notify_trigger(&mut conn)?;
    drop(conn);

    // A statement_timeout on every connection, and at most 3 s of waiting for one.
    let pool = diesel_workspace_axum::pool_builder()
        .max_size(16)
        .build(&url)
        .context("open the connection pool")?;
    let registry_pool = diesel_workspace_axum::pool_builder()
        .max_size(2)
        .build(&url)
        .context("open the registry pool")?;
    let routing = Routing::builder(pool.clone())
        .resolver(app::resolver(registry_pool.clone()))
        .access(app::access())
        .registry_pool(registry_pool)
        .cache_ttl(ttl)
        .build();
    let _listener = if listen {
        Some(routing.cache().listen(&url)?)
    } else {
        None
    };
    let state = app::AppState {
        routing,
        migrator: Arc::new(migrator),
    };
    let seconds = i64::try_from(session_seconds).context("DEMO_SESSION_SECONDS is too large")?;
    let sessions = tower_sessions::SessionManagerLayer::new(tower_sessions::MemoryStore::default())
        .with_name("notes_session")
        .with_secure(false) // plain http on localhost; set it behind TLS
        .with_http_only(true)
        .with_same_site(tower_sessions::cookie::SameSite::Lax)
        .with_expiry(tower_sessions::Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::seconds(seconds),
        ));

    let described = database.describe();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let socket = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("listen on 127.0.0.1:{port}"))?;
        let port = socket.local_addr()?.port();
        print_banner(&described, report.tenants.len(), port, ttl, listen);
        axum::serve(socket, app::router(state, sessions))
            .with_graceful_shutdown(shutdown())
            .await
            .context("serve")
    })?;
    drop(runtime);
    drop(database);
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down");
}

fn print_banner(database: &str, tenants: usize, port: u16, ttl: Duration, listen: bool) {
    let base = format!("http://localhost:{port}");
    println!("workspace-diesel demo: a multi-tenant notes service");
    println!("database: {database}; {tenants} tenants migrated");
    println!(
        "registry cache: {} ms TTL, {}",
        ttl.as_millis(),
        if listen {
            "LISTEN/NOTIFY invalidation on"
        } else {
            "LISTEN/NOTIFY invalidation off"
        }
    );
    println!("listening on {base}");
    println!();
    println!("try:");
    println!("  open {base}/signup   # create a workspace and its first user, then add notes");
    println!("  open {base}/login    # sign in; {base}/notes is your workspace's page");
    println!("  curl -s {base}/api/notes   # 401: every tenant route needs a signed-in member");
    println!("Ctrl-C stops the demo.");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
