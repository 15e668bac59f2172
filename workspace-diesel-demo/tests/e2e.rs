//! End-to-end tests of the demo service: the real binary on a loopback port, driven over real
//! HTTP (reqwest) and by headless Chromium, each run on a scratch database of its own.

use workspace_diesel_tests::db;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_workspace::{registry::LifecycleState, Migrator, TenantId};
use serde_json::{json, Value};

use db::ScratchDb;

/// The demo binary, running until dropped.
struct Demo {
    child: Child,
    port: u16,
    banner: String,
    http: reqwest::Client,
}

impl Demo {
    /// Starts the demo on `db` with extra environment settings.
    fn start(db: Option<&ScratchDb>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_workspace-diesel-demo"));
        cmd.env("PORT", "0")
            .env("RUST_LOG", "off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        match db {
            Some(db) => cmd.env("DATABASE_URL", db.url()),
            None => cmd.env_remove("DATABASE_URL"),
        };
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the demo");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let mut banner = String::new();
        let port = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("the demo printed no URL; it printed:\n{banner}"));
            banner.push_str(&line);
            banner.push('\n');
            if let Some(port) = line.strip_prefix("listening on http://localhost:") {
                break port.trim().parse().expect("port");
            }
        };
        // Read the rest of the banner.
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            banner.push_str(&line);
            banner.push('\n');
        }
        Self {
            child,
            port,
            banner,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a request: `tenant` as a subdomain of `localhost` (`Host` header), or `headers`.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        subdomain: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = subdomain {
            req = req.header("host", format!("{t}.localhost:{}", self.port));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn signup(&self, workspace: &str) -> String {
        let (s, v) = self
            .send(
                reqwest::Method::POST,
                "/api/signup",
                None,
                &[],
                Some(json!({ "workspace": workspace, "email": format!("owner@{workspace}.test") })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v["token"].as_str().expect("token").to_owned()
    }

    async fn add_note(&self, tenant: &str, title: &str) {
        let (s, v) = self
            .send(
                reqwest::Method::POST,
                "/api/notes",
                Some(tenant),
                &[],
                Some(json!({ "title": title, "body": format!("written in {tenant}") })),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }

    async fn notes(
        &self,
        subdomain: Option<&str>,
        headers: &[(&str, &str)],
        query: &str,
    ) -> (u16, Value) {
        self.send(
            reqwest::Method::GET,
            &format!("/api/notes{query}"),
            subdomain,
            headers,
            None,
        )
        .await
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn titles(v: &Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes in {v}"))
        .iter()
        .map(|n| n["title"].as_str().expect("title").to_owned())
        .collect()
}

const TENANT: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("../migrations_tenant");

fn migrator() -> Migrator {
    Migrator::builder(TENANT)
        .build()
        .expect("the tenant migrations")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn two_tenants_by_subdomain_and_by_header_see_only_their_own_notes() {
    let db = ScratchDb::create("demo_apart");
    let demo = Demo::start(Some(&db), &[]);
    assert!(demo.banner.contains("curl -s -X POST"), "{}", demo.banner);
    runtime().block_on(async {
        demo.signup("acme").await;
        demo.signup("globex").await;
        demo.add_note("acme", "acme plans").await;
        demo.add_note("acme", "acme budget").await;
        demo.add_note("globex", "globex plans").await;

        let (s, v) = demo.notes(Some("acme"), &[], "").await;
        assert_eq!(
            (s, titles(&v)),
            (200, vec!["acme plans".into(), "acme budget".into()])
        );
        assert_eq!(v["tenant"], "acme");
        let (s, v) = demo.notes(None, &[("x-tenant", "globex")], "").await;
        assert_eq!((s, titles(&v)), (200, vec!["globex plans".to_owned()]));
        let (s, v) = demo.notes(Some("GLOBEX"), &[], "").await;
        assert_eq!((s, titles(&v)), (200, vec!["globex plans".to_owned()]));
        let (s, v) = demo.notes(None, &[("x-tenant", "acme")], "").await;
        assert_eq!(
            (s, titles(&v)),
            (200, vec!["acme plans".into(), "acme budget".into()])
        );

        // Search stays inside the tenant.
        let (_, v) = demo.notes(Some("acme"), &[], "?q=plans").await;
        assert_eq!(titles(&v), ["acme plans"]);
        let (_, v) = demo.notes(Some("globex"), &[], "?q=budget").await;
        assert_eq!(titles(&v), Vec::<String>::new());
        let (_, v) = demo.notes(Some("acme"), &[], "?q=%25").await; // a literal %
        assert_eq!(titles(&v), Vec::<String>::new());

        // The subdomain wins over the header (first match).
        let (_, v) = demo
            .notes(Some("globex"), &[("x-tenant", "acme")], "")
            .await;
        assert_eq!(v["tenant"], "globex");

        // Sign-up needs no tenant; a taken name or email is refused.
        let (s, v) = demo
            .send(
                reqwest::Method::POST,
                "/api/signup",
                None,
                &[],
                Some(json!({ "workspace": "acme", "email": "other@acme.test" })),
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (409, Some("tenant_exists")),
            "{v}"
        );
        let (s, _) = demo
            .send(reqwest::Method::GET, "/health", None, &[], None)
            .await;
        assert_eq!(s, 200);
    });
}

#[test]
fn refused_requests_get_the_documented_status() {
    let db = ScratchDb::create("demo_status");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        for t in ["acme", "paused", "old"] {
            demo.signup(t).await;
            demo.add_note(t, &format!("{t} note")).await;
        }
        let mut conn = PgConnection::establish(db.url()).expect("connect");
        // Changed by another process (this test): the demo hears of it through LISTEN/NOTIFY.
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &TenantId::new("paused").unwrap(),
            LifecycleState::Suspended,
        )
        .unwrap();
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &TenantId::new("old").unwrap(),
            LifecycleState::Archived,
        )
        .unwrap();

        type Case<'a> = (Option<&'a str>, &'a [(&'a str, &'a str)], u16, &'a str);
        let cases: &[Case<'_>] = &[
            (Some("nobody"), &[], 404, "tenant_unknown"),
            (None, &[("x-tenant", "nobody")], 404, "tenant_unknown"),
            (Some("no-such"), &[], 400, "tenant_malformed"),
            (None, &[("x-tenant", "Acme")], 400, "tenant_malformed"),
            (
                None,
                &[("x-tenant", "acme,public")],
                400,
                "tenant_malformed",
            ),
            (None, &[], 400, "tenant_required"),
            (Some("www"), &[], 400, "tenant_required"),
            (Some("paused"), &[], 403, "tenant_suspended"),
            (None, &[("x-tenant", "old")], 410, "tenant_archived"),
            (
                None,
                &[("authorization", "Bearer 00")],
                401,
                "unknown_token",
            ),
        ];
        for (subdomain, headers, status, code) in cases {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let (s, v) = demo.notes(*subdomain, headers, "").await;
                if (s, v["error"].as_str()) == (*status, Some(*code)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{subdomain:?} {headers:?}: {s} {v}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // The HTML page is refused the same way.
        let (s, _) = demo
            .send(reqwest::Method::GET, "/notes", Some("paused"), &[], None)
            .await;
        assert_eq!(s, 403);
        // Back to active: served again.
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &TenantId::new("paused").unwrap(),
            LifecycleState::Active,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while demo.notes(Some("paused"), &[], "").await.0 != 200 {
            assert!(Instant::now() < deadline, "paused was not served again");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_logged_in_user_is_routed_to_their_workspace_and_refused_another() {
    let db = ScratchDb::create("demo_users");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        demo.signup("acme").await;
        demo.signup("globex").await;
        demo.add_note("acme", "acme secret").await;
        demo.add_note("globex", "globex secret").await;
        let (s, v) = demo
            .send(
                reqwest::Method::POST,
                "/api/login",
                None,
                &[],
                Some(json!({ "email": "owner@globex.test" })),
            )
            .await;
        assert_eq!((s, v["workspace"].as_str()), (200, Some("globex")), "{v}");
        let bearer = format!("Bearer {}", v["token"].as_str().unwrap());
        let auth = [("authorization", bearer.as_str())];

        // No subdomain, no header: the user's workspace.
        let (s, v) = demo.notes(None, &auth, "").await;
        assert_eq!((s, titles(&v)), (200, vec!["globex secret".to_owned()]));
        let (s, v) = demo.notes(Some("globex"), &auth, "").await;
        assert_eq!((s, titles(&v)), (200, vec!["globex secret".to_owned()]));
        // Another workspace, by subdomain or header: refused.
        let (s, v) = demo.notes(Some("acme"), &auth, "").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("tenant_forbidden")),
            "{v}"
        );
        let (s, v) = demo.notes(None, &[auth[0], ("x-tenant", "acme")], "").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("tenant_forbidden")),
            "{v}"
        );
        // Writes go to the user's workspace.
        let (s, _) = demo
            .send(
                reqwest::Method::POST,
                "/api/notes",
                None,
                &auth,
                Some(json!({ "title": "by login" })),
            )
            .await;
        assert_eq!(s, 201);
        let (_, v) = demo.notes(Some("globex"), &[], "").await;
        assert_eq!(titles(&v), ["globex secret", "by login"]);
        let (_, v) = demo.notes(Some("acme"), &[], "").await;
        assert_eq!(titles(&v), ["acme secret"]);
        // An unknown user.
        let (s, _) = demo
            .send(
                reqwest::Method::POST,
                "/api/login",
                None,
                &[],
                Some(json!({ "email": "nobody@x.test" })),
            )
            .await;
        assert_eq!(s, 401);
    });
}

#[test]
fn renamed_and_dropped_tenants_stop_resolving_within_the_ttl() {
    let db = ScratchDb::create("demo_ttl");
    // No LISTEN (as behind a transaction pooler): the TTL alone bounds staleness.
    let ttl = Duration::from_millis(1000);
    let demo = Demo::start(
        Some(&db),
        &[("DEMO_LISTEN", "0"), ("DEMO_CACHE_TTL_MS", "1000")],
    );
    assert!(demo.banner.contains("invalidation off"), "{}", demo.banner);
    runtime().block_on(async {
        for t in ["acme", "globex"] {
            demo.signup(t).await;
            demo.add_note(t, &format!("{t} note")).await;
            assert_eq!(demo.notes(Some(t), &[], "").await.0, 200);
        }
        let migrator = migrator();
        let mut conn = PgConnection::establish(db.url()).expect("connect");
        migrator
            .rename_tenant(
                &mut conn,
                &TenantId::new("acme").unwrap(),
                &TenantId::new("acme_co").unwrap(),
            )
            .unwrap();
        migrator
            .drop_tenant(&mut conn, &TenantId::new("globex").unwrap())
            .unwrap();
        let changed = Instant::now();
        let mut gone = [false, false];
        while gone != [true, true] {
            gone[0] |= demo.notes(Some("acme"), &[], "").await.0 == 404;
            gone[1] |= demo.notes(Some("globex"), &[], "").await.0 == 404;
            assert!(
                changed.elapsed() < ttl + Duration::from_millis(1500),
                "still resolving: {gone:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let (s, v) = demo.notes(Some("acme_co"), &[], "").await;
        assert_eq!((s, titles(&v)), (200, vec!["acme note".to_owned()]));
    });
}

#[test]
fn concurrent_requests_over_twenty_tenants_never_cross() {
    let db = ScratchDb::create("demo_load");
    let demo = Demo::start(Some(&db), &[]);
    let tenants: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    runtime().block_on(async {
        for t in &tenants {
            demo.signup(t).await;
            for n in 0..3 {
                demo.add_note(t, &format!("{t} note {n}")).await;
            }
        }
        let demo = &demo;
        let requests = (0..200).map(|i| {
            let t = tenants[i % tenants.len()].clone();
            async move {
                let (s, v) = if i % 2 == 0 {
                    demo.notes(Some(&t), &[], "").await
                } else {
                    demo.notes(None, &[("x-tenant", &t)], "").await
                };
                (t, s, v)
            }
        });
        let results = join_all(requests).await;
        let mut crossed = 0;
        for (t, s, v) in &results {
            assert_eq!(*s, 200, "{t}: {v}");
            assert_eq!(v["tenant"], t.as_str());
            let titles = titles(v);
            assert_eq!(titles.len(), 3, "{t}: {titles:?}");
            crossed += titles
                .iter()
                .filter(|n| !n.starts_with(&format!("{t} ")))
                .count();
        }
        assert_eq!(results.len(), 200);
        assert_eq!(crossed, 0, "responses holding another tenant's notes");
    });
}

/// Polls every future to completion at once (all 200 requests are in flight together).
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("finished")).collect()
}

/// Headless Chromium's rendering of `url`.
fn chromium_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!(
        "workspace-diesel-demo-chromium-{}-{}",
        std::process::id(),
        url.len()
    ));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).expect("profile dir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("run chromium (`apt-get install -y chromium`; .ci/run does): {e}")
        });
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

#[test]
fn headless_chromium_shows_each_tenant_its_own_page() {
    let db = ScratchDb::create("demo_chromium");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        demo.signup("acme").await;
        demo.signup("globex").await;
        demo.add_note("acme", "Acme roadmap").await;
        demo.add_note("globex", "Globex <b>launch</b>").await;
    });
    // Chromium resolves `*.localhost` to the loopback address itself.
    let acme = chromium_dom(&format!("http://acme.localhost:{}/notes", demo.port));
    let globex = chromium_dom(&format!("http://globex.localhost:{}/notes", demo.port));
    assert!(acme.contains(r#"<h1 id="tenant">acme</h1>"#), "{acme}");
    assert!(acme.contains("Acme roadmap"), "{acme}");
    assert!(!acme.contains("Globex"), "{acme}");
    assert!(
        globex.contains(r#"<h1 id="tenant">globex</h1>"#),
        "{globex}"
    );
    // Escaped: shown as text, not markup.
    assert!(
        globex.contains("Globex &lt;b&gt;launch&lt;/b&gt;"),
        "{globex}"
    );
    assert!(!globex.contains("Acme"), "{globex}");
    // A search in the page's form.
    let found = chromium_dom(&format!("http://acme.localhost:{}/notes?q=road", demo.port));
    assert!(found.contains("Acme roadmap"), "{found}");
    // An unknown tenant's page is refused.
    let unknown = chromium_dom(&format!("http://nobody.localhost:{}/notes", demo.port));
    assert!(unknown.contains("tenant_unknown"), "{unknown}");
}

fn database_exists(name: &str) -> bool {
    let mut conn = PgConnection::establish(&db::admin_url()).expect("admin connection");
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = '{name}')"
    )))
    .get_result(&mut conn)
    .expect("query")
}

fn terminate(demo: &mut Demo) {
    let status = Command::new("kill")
        .args(["-TERM", &demo.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = demo.child.try_wait().expect("wait") {
            assert!(status.success(), "the demo exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_database_url_it_uses_the_local_server_and_drops_its_database() {
    if std::env::var("DATABASE_URL")
        .is_ok_and(|u| !u.contains("127.0.0.1:5432") && !u.contains("localhost:5432"))
    {
        eprintln!(
            "skipped: DATABASE_URL names another server than the local one this default uses"
        );
        return;
    }
    let mut demo = Demo::start(None, &[]);
    let name = format!("workspace_diesel_demo_{}", demo.pid());
    assert!(demo.banner.contains(&name), "{}", demo.banner);
    assert!(database_exists(&name));
    runtime().block_on(async {
        demo.signup("acme").await;
        demo.add_note("acme", "hello").await;
        assert_eq!(
            titles(&demo.notes(Some("acme"), &[], "").await.1),
            ["hello"]
        );
    });
    terminate(&mut demo);
    assert!(!database_exists(&name), "{name} was left behind");
}

#[test]
fn a_throwaway_postgres_is_started_and_removed() {
    let mut demo = Demo::start(None, &[("DEMO_DATABASE", "throwaway")]);
    let dir = std::env::temp_dir().join(format!("workspace-diesel-demo-{}", demo.pid()));
    assert!(
        demo.banner.contains("throwaway PostgreSQL"),
        "{}",
        demo.banner
    );
    assert!(dir.exists());
    runtime().block_on(async {
        demo.signup("acme").await;
        demo.add_note("acme", "in a throwaway server").await;
        assert_eq!(
            titles(&demo.notes(Some("acme"), &[], "").await.1),
            ["in a throwaway server"]
        );
    });
    terminate(&mut demo);
    assert!(!dir.exists(), "{} was left behind", dir.display());
}

#[test]
fn a_dead_database_url_gets_a_hint() {
    let out = Command::new(env!("CARGO_BIN_EXE_workspace-diesel-demo"))
        .env(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:1/app?connect_timeout=2",
        )
        .output()
        .expect("run the demo");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: no PostgreSQL answers at DATABASE_URL (postgres://postgres@127.0.0.1:1/app?connect_timeout=2)")
            && stderr.contains("unset DATABASE_URL"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
