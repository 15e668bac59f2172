//! Test support: scratch databases, the example schema, a server on a loopback port.

#![allow(dead_code)]

pub use workspace_diesel_tests::db;

use std::net::SocketAddr;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel_migrations::{embed_migrations, EmbeddedMigrations};
use diesel_workspace::{Migrator, TenantId};

pub use db::ScratchDb;

/// The example tenant schema.
pub const TENANT: EmbeddedMigrations = embed_migrations!("../migrations_tenant");

diesel_workspace::tenant_table! {
    notes (id) {
        id -> Int4,
        category_id -> Nullable<Int4>,
        tag_id -> Nullable<Int4>,
        title -> Text,
        body -> Text,
        created_at -> Timestamptz,
    }
}

/// A scratch database with the registry, a `public.users` table and `tenants`, each holding
/// one note titled `note of <tenant>`.
pub fn provision(label: &str, tenants: &[&str]) -> (ScratchDb, Migrator) {
    let db = ScratchDb::create(label);
    let migrator = provision_at(db.url(), tenants);
    (db, migrator)
}

/// [`provision`] on the database at `url`.
pub fn provision_at(url: &str, tenants: &[&str]) -> Migrator {
    let migrator = Migrator::builder(TENANT)
        .build()
        .expect("the tenant migrations");
    let mut conn = PgConnection::establish(url).expect("connect");
    migrator.run_shared(&mut conn).expect("shared migrations");
    conn.batch_execute(
        "CREATE TABLE public.users (id BIGSERIAL PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
         workspace_id BIGINT NOT NULL REFERENCES public.workspaces (id) ON DELETE CASCADE)",
    )
    .expect("users table");
    for t in tenants {
        let id = TenantId::new(t).expect("valid id");
        migrator
            .create_tenant(&mut conn, &id)
            .expect("create tenant");
        add_note(&mut conn, &id, &format!("note of {t}"));
    }
    migrator
}

/// Inserts a note into `tenant`.
pub fn add_note(conn: &mut PgConnection, tenant: &TenantId, title: &str) {
    diesel_workspace::switch(tenant, || {
        diesel::insert_into(notes::table)
            .values(notes::title.eq(title))
            .execute(conn)
    })
    .expect("insert a note");
}

/// Serves `router` on a free loopback port; the server runs until the runtime ends.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    addr
}

/// GET `path` with extra headers; returns the status and the body.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut req = client.get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

/// Sends `request` (raw HTTP/1.1, `Connection: close` added) and returns the status and body.
pub async fn raw(addr: SocketAddr, request: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = request.replace("\r\n\r\n", "\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}
