//! The access policy and the ambiguity rules over real HTTP: 401 / 403 / 200 through every
//! resolver, and 400 for requests that name their tenant twice or in ways that disagree.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use diesel::prelude::*;
use diesel_workspace::pool::TenantPool;
use diesel_workspace_axum::{
    bearer_token, Access, DbError, Header, PathPrefix, Resolver, Routing, Subdomain, TenantDb,
    UserWorkspace,
};

use crate::support::{self, get as http_get, notes, raw, serve};

/// The authenticated user, put into the request by [`authenticate`].
#[derive(Clone, Copy)]
struct UserId(i64);

/// Stands in for a real authentication middleware: `Authorization: Bearer token-<id>`.
async fn authenticate(mut req: Request, next: Next) -> Response {
    let tokens: HashMap<&str, i64> = [("token-1", 1), ("token-2", 2), ("token-3", 3)].into();
    if let Some(user) = bearer_token(req.headers()).and_then(|t| tokens.get(t)) {
        req.extensions_mut().insert(UserId(*user));
    }
    next.run(req).await
}

fn user(parts: &http::request::Parts) -> Option<i64> {
    parts.extensions.get::<UserId>().map(|u| u.0)
}

/// Ann (1) is in acme, Bob (2) in globex, Cy (3) in acme (`public.users.workspace_id`, and the
/// same in `public.memberships`, where Cy is a member of globex too).
fn people(conn: &mut PgConnection) {
    use diesel::connection::SimpleConnection;
    conn.batch_execute(
        "INSERT INTO public.users (id, email, workspace_id) \
         SELECT 1, 'ann@acme.test', id FROM public.workspaces WHERE schema_name = 'acme' \
         UNION ALL SELECT 2, 'bob@globex.test', id FROM public.workspaces WHERE schema_name = 'globex' \
         UNION ALL SELECT 3, 'cy@both.test', id FROM public.workspaces WHERE schema_name = 'acme'; \
         CREATE TABLE public.memberships (user_id BIGINT NOT NULL, workspace_id BIGINT NOT NULL \
         REFERENCES public.workspaces (id) ON DELETE CASCADE, PRIMARY KEY (user_id, workspace_id)); \
         INSERT INTO public.memberships SELECT id, workspace_id FROM public.users \
         WHERE id <> 3 UNION ALL SELECT 3, id FROM public.workspaces \
         WHERE schema_name = 'globex'",
    )
    .expect("people");
}

fn pool(url: &str) -> TenantPool {
    diesel_workspace_axum::pool_builder()
        .max_size(4)
        .build(url)
        .expect("pool")
}

fn app(routing: &Routing<TenantPool>, reached: Arc<AtomicUsize>) -> Router {
    let titles = move |db: TenantDb| {
        reached.fetch_add(1, Ordering::SeqCst);
        async move {
            let titles: Vec<String> = db
                .run(|conn| notes::table.select(notes::title).load(conn))
                .await?;
            Ok::<_, DbError>(Json(titles))
        }
    };
    Router::new()
        .route("/notes", get(titles.clone()))
        .route("/t/{tenant}/notes", get(titles))
        .layer(routing.layer())
        .layer(axum::middleware::from_fn(authenticate))
}

fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"].as_str().unwrap_or_default().to_owned()
}

/// One way of naming a tenant in a request: the path and headers for `tenant`.
type Namer = fn(&str) -> (String, Vec<(String, String)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_other_member_and_member_get_401_403_200_through_every_resolver() {
    let (db, _migrator) = support::provision("web_access", &["acme", "globex"]);
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    people(&mut conn);
    let pool = pool(db.url());

    let by_host: Namer = |t| {
        (
            "/notes".into(),
            vec![("host".into(), format!("{t}.localhost"))],
        )
    };
    let by_path: Namer = |t| (format!("/t/{t}/notes"), vec![]);
    let by_header: Namer = |t| ("/notes".into(), vec![("x-tenant".into(), t.into())]);
    let resolvers: Vec<(&str, Arc<dyn Resolver>, Namer)> = vec![
        (
            "subdomain",
            Arc::new(Subdomain::new(["localhost"])),
            by_host,
        ),
        ("path", Arc::new(PathPrefix::new("/t")), by_path),
        (
            "header",
            Arc::new(Header::behind_trusted_proxy("x-tenant")),
            by_header,
        ),
        (
            "user workspace + subdomain",
            Arc::new(
                UserWorkspace::new(pool.clone(), user).agreeing_with(Subdomain::new(["localhost"])),
            ),
            by_host,
        ),
    ];
    for (name, resolver, namer) in resolvers {
        for (table, access) in [
            (
                "users",
                Access::members(user).members_table("public", "users", "id", "workspace_id"),
            ),
            ("memberships", Access::members(user)),
        ] {
            let routing = Routing::builder(pool.clone())
                .resolver(resolver.clone())
                .access(access)
                .build();
            let reached = Arc::new(AtomicUsize::new(0));
            let addr = serve(app(&routing, reached.clone())).await;
            let send = |tenant: &str, auth: Option<&str>| {
                let (path, mut headers) = namer(tenant);
                if let Some(a) = auth {
                    headers.push(("authorization".into(), a.into()));
                }
                async move {
                    let h: Vec<(&str, &str)> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    http_get(addr, &path, &h).await
                }
            };
            let ctx = format!("{name}, {table}");
            // Anonymous, another scheme, an unknown token: 401.
            for auth in [None, Some("Basic dG9rZW4tMTp4"), Some("Bearer nope")] {
                let (s, body) = send("acme", auth).await;
                assert_eq!(
                    (s, code(&body).as_str()),
                    (401, "authentication_required"),
                    "{ctx} {auth:?}: {body}"
                );
            }
            // Bob (globex) asks for acme: 403, the scheme in any case.
            for scheme in ["Bearer", "bearer", "BEARER"] {
                let (s, body) = send("acme", Some(&format!("{scheme} token-2"))).await;
                assert_eq!(
                    (s, code(&body).as_str()),
                    (403, "tenant_forbidden"),
                    "{ctx} {scheme}: {body}"
                );
            }
            // Unknown tenants are refused as for non-members: names cannot be probed.
            let (s, body) = send("nobody", Some("bearer token-1")).await;
            assert_eq!(
                (s, code(&body).as_str()),
                (403, "tenant_forbidden"),
                "{ctx}: {body}"
            );
            assert_eq!(
                reached.load(Ordering::SeqCst),
                0,
                "{ctx}: a refused request reached the handler"
            );
            // Members, lower-case scheme included: 200 with their tenant's notes.
            for scheme in ["Bearer", "bearer"] {
                let (s, body) = send("acme", Some(&format!("{scheme} token-1"))).await;
                assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#), "{ctx}");
            }
            let (s, body) = send("globex", Some("bearer token-2")).await;
            assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#), "{ctx}");
            // Cy is a member of globex in `memberships` only; the user-workspace resolver
            // routes Cy to acme whatever the table says.
            let (s, body) = send("globex", Some("bearer token-3")).await;
            let cy_enters = table == "memberships" && !name.starts_with("user");
            if cy_enters {
                assert_eq!((s, body.as_str()), (200, r#"["note of globex"]"#), "{ctx}");
            } else {
                assert_eq!(
                    (s, code(&body).as_str()),
                    (403, "tenant_forbidden"),
                    "{ctx}"
                );
            }
            assert_eq!(
                reached.load(Ordering::SeqCst),
                3 + usize::from(cy_enters),
                "{ctx}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_is_required_and_public_routes_are_named() {
    let (db, _migrator) = support::provision("web_public", &["acme"]);
    let pool = pool(db.url());
    let unbuilt = pool.clone();
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        Routing::builder(unbuilt)
            .resolver(Subdomain::new(["localhost"]))
            .build()
    }));
    let message = missing.err().and_then(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
    });
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("access policy")),
        "{message:?}"
    );
    let routing = Routing::builder(pool)
        .resolver(Subdomain::new(["localhost"]))
        .access(Access::public_tenant_routes())
        .build();
    let addr = serve(app(&routing, Arc::default())).await;
    let (s, body) = http_get(addr, "/notes", &[("host", "acme.localhost")]).await;
    assert_eq!((s, body.as_str()), (200, r#"["note of acme"]"#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_naming_their_tenant_twice_or_in_disagreement_get_400() {
    let (db, _migrator) = support::provision("web_ambiguous", &["t0", "t1"]);
    let routing = Routing::builder(pool(db.url()))
        .resolver(
            Subdomain::new(["localhost"])
                .or(PathPrefix::new("/t"))
                .or(Header::behind_trusted_proxy("x-tenant")),
        )
        .access(Access::public_tenant_routes())
        .build();
    let reached = Arc::new(AtomicUsize::new(0));
    let addr = serve(app(&routing, reached.clone())).await;

    // Agreeing sources are served.
    let (s, body) = raw(
        addr,
        "GET /t/t0/notes HTTP/1.1\r\nhost: t0.localhost\r\nx-tenant: t0\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.as_str()), (200, r#"["note of t0"]"#));
    let (s, body) = raw(
        addr,
        "GET http://t1.localhost/notes HTTP/1.1\r\nhost: t1.localhost\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.as_str()), (200, r#"["note of t1"]"#));
    assert_eq!(reached.swap(0, Ordering::SeqCst), 2);

    let cases = [
        // Two Host headers.
        "GET /notes HTTP/1.1\r\nhost: t0.localhost\r\nhost: t1.localhost\r\n\r\n",
        "GET /notes HTTP/1.1\r\nhost: t0.localhost\r\nhost: t0.localhost\r\n\r\n",
        // Two tenant headers (a proxy appending rather than replacing).
        "GET /notes HTTP/1.1\r\nhost: localhost\r\nx-tenant: t0\r\nx-tenant: t1\r\n\r\n",
        // An absolute-form target naming another host than Host.
        "GET http://t0.localhost/notes HTTP/1.1\r\nhost: t1.localhost\r\n\r\n",
        // Host and path disagree.
        "GET /t/t0/notes HTTP/1.1\r\nhost: t1.localhost\r\n\r\n",
        // Path and header disagree.
        "GET /t/t0/notes HTTP/1.1\r\nhost: localhost\r\nx-tenant: t1\r\n\r\n",
    ];
    for request in cases {
        let (s, body) = raw(addr, request).await;
        assert!(s == 400, "{request:?}: {s} {body}");
        assert!(
            matches!(code(&body).as_str(), "tenant_ambiguous"),
            "{request:?}: {body}"
        );
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);

    // A huge name is echoed capped, whichever source carries it.
    let long = "a".repeat(100_000);
    for (path, headers) in [
        ("/notes".to_owned(), vec![("x-tenant", long.clone())]),
        (
            "/notes".to_owned(),
            vec![("host", format!("{long}.localhost"))],
        ),
        // A nested subdomain: `aaa….b` under the apex.
        (
            "/notes".to_owned(),
            vec![("host", format!("{long}.b.localhost"))],
        ),
        // (a URI holds at most 64 KB)
        (format!("/t/{}/notes", &long[..30_000]), vec![]),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (s, body) = http_get(addr, &path, &h).await;
        assert_eq!(
            (s, code(&body).as_str()),
            (400, "tenant_malformed"),
            "{path}"
        );
        assert!(
            body.len() < 400,
            "{} bytes echoed: {path} {:?}",
            body.len(),
            headers.first().map(|h| h.0)
        );
    }

    // Negative control: the explicit precedence serves the first source.
    let first = Routing::builder(pool(db.url()))
        .resolver(Subdomain::new(["localhost"]).or_first(PathPrefix::new("/t")))
        .access(Access::public_tenant_routes())
        .build();
    let addr = serve(app(&first, Arc::default())).await;
    let (s, body) = raw(
        addr,
        "GET /t/t0/notes HTTP/1.1\r\nhost: t1.localhost\r\n\r\n",
    )
    .await;
    assert_eq!((s, body.as_str()), (200, r#"["note of t1"]"#));
}
