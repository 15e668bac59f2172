//! End-to-end tests of the demo service: the real binary on a loopback port, driven over real
//! HTTP (reqwest) and by headless Chromium, each run on a scratch database of its own.

mod cdp;
mod harness;

use workspace_diesel_tests::db;

use std::process::Command;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use diesel_workspace::{registry::LifecycleState, TenantId};
use reqwest::Method;

use db::ScratchDb;
use harness::*;

#[test]
fn members_see_their_own_notes_and_nobody_else_gets_in() {
    let db = ScratchDb::create("demo_members");
    let demo = Demo::start(Some(&db), &[]);
    assert!(demo.banner.contains("/signup"), "{}", demo.banner);
    runtime().block_on(async {
        let ann = demo.signup("acme").await;
        let bob = demo.signup("globex").await;
        demo.add_note(&ann, "acme plans").await;
        demo.add_note(&ann, "acme budget").await;
        demo.add_note(&bob, "globex plans").await;

        // The session's user decides; the subdomain may agree.
        let (s, v) = demo.notes(Some(&ann), None, "").await;
        assert_eq!(
            (s, titles(&v)),
            (200, vec!["acme plans".into(), "acme budget".into()])
        );
        assert_eq!(v["tenant"], "acme");
        let (s, v) = demo.notes(Some(&bob), Some("globex"), "").await;
        assert_eq!((s, titles(&v)), (200, vec!["globex plans".to_owned()]));
        let (_, v) = demo.notes(Some(&ann), None, "?q=plans").await;
        assert_eq!(titles(&v), ["acme plans"]);
        let (_, v) = demo.notes(Some(&ann), None, "?q=%25").await;
        assert_eq!(titles(&v), Vec::<String>::new());

        // Anonymous: 401 with or without a subdomain; another workspace's member: 403.
        for subdomain in [None, Some("acme"), Some("nobody")] {
            let (s, v) = demo.notes(None, subdomain, "").await;
            assert_eq!(
                (s, v["error"].as_str()),
                (401, Some("authentication_required")),
                "{v}"
            );
        }
        let (s, v) = demo.notes(Some(&bob), Some("acme"), "").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (403, Some("tenant_forbidden")),
            "{v}"
        );
        // A header names no tenant on this directly exposed server.
        let r = demo
            .send(
                Method::GET,
                "/api/notes",
                Some(&bob),
                None,
                &[("x-tenant", "acme")],
                Body::Empty,
            )
            .await;
        assert_eq!(
            (r.status, r.json()["tenant"].as_str()),
            (200, Some("globex"))
        );
        let r = demo
            .send(Method::GET, "/notes", None, Some("acme"), &[], Body::Empty)
            .await;
        assert_eq!(r.status, 401);

        // Sign-in by password; a wrong one or an unknown email is refused alike.
        let again = demo
            .login("OWNER@acme.test", PASSWORD)
            .await
            .expect("sign in");
        let (_, v) = demo.notes(Some(&again), None, "").await;
        assert_eq!(v["tenant"], "acme");
        assert_eq!(
            demo.login("owner@acme.test", "wrong password").await,
            Err(401)
        );
        assert_eq!(demo.login("nobody@acme.test", PASSWORD).await, Err(401));

        // Sign-out ends the session.
        let page = demo
            .send(Method::GET, "/notes", Some(&ann), None, &[], Body::Empty)
            .await;
        let csrf = csrf_of(&page.body);
        let out = demo
            .send(
                Method::POST,
                "/logout",
                Some(&ann),
                None,
                &[],
                Body::Form(&[("csrf", csrf.as_str())]),
            )
            .await;
        assert_eq!((out.status, out.location.as_deref()), (303, Some("/login")));
        assert_eq!(demo.notes(Some(&ann), None, "").await.0, 401);

        // A suspended workspace is refused to its members too.
        let mut conn = PgConnection::establish(db.url()).expect("connect");
        diesel_workspace::registry::set_lifecycle_state(
            &mut conn,
            &TenantId::new("globex").unwrap(),
            LifecycleState::Suspended,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (s, v) = demo.notes(Some(&bob), None, "").await;
            if (s, v["error"].as_str()) == (403, Some("tenant_suspended")) {
                break;
            }
            assert!(Instant::now() < deadline, "{s} {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

#[test]
fn a_session_ends_after_its_idle_time() {
    let db = ScratchDb::create("demo_expiry");
    let demo = Demo::start(Some(&db), &[("DEMO_SESSION_SECONDS", "2")]);
    runtime().block_on(async {
        let ann = demo.signup("acme").await;
        // Requests within the idle time keep it alive.
        for _ in 0..3 {
            assert_eq!(demo.notes(Some(&ann), None, "").await.0, 200);
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (s, v) = demo.notes(Some(&ann), None, "").await;
        assert_eq!(
            (s, v["error"].as_str()),
            (401, Some("authentication_required")),
            "{v}"
        );
    });
}

#[test]
fn notes_come_in_pages() {
    let db = ScratchDb::create("demo_pages");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        let ann = demo.signup("acme").await;
        for i in 0..120 {
            demo.add_note(&ann, &format!("note {i:03}")).await;
        }
        let mut seen = Vec::new();
        let mut query = String::new();
        let mut pages = 0;
        loop {
            let (s, v) = demo.notes(Some(&ann), None, &query).await;
            assert_eq!(s, 200);
            let page = titles(&v);
            assert!(page.len() <= 50, "{}", page.len());
            seen.extend(page);
            pages += 1;
            match v["next"].as_i64() {
                Some(after) => query = format!("?after={after}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let expected: Vec<String> = (0..120).map(|i| format!("note {i:03}")).collect();
        assert_eq!(seen, expected);
    });
}

#[test]
fn sign_up_is_validated_first_and_atomic() {
    let db = ScratchDb::create("demo_signup");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        // Eight concurrent sign-ups with one email, each for another workspace: one account.
        let demo = &demo;
        let attempts = (0..8).map(|i| async move {
            demo.try_signup(&format!("w{i}"), "same@example.test", PASSWORD).await.status
        });
        let statuses = join_all(attempts).await;
        assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 7, "{statuses:?}");
        assert_eq!(count(&db, "SELECT count(*) FROM public.users"), 1);
        assert_eq!(count(&db, "SELECT count(*) FROM public.workspaces"), 1, "an orphan workspace");

        // Refused before anything is written: 400.
        let huge = format!("{}@example.test", "a".repeat(1 << 20));
        for (workspace, email, password) in [
            ("www", "x@example.test", PASSWORD),
            ("api", "x@example.test", PASSWORD),
            ("Bad-Name", "x@example.test", PASSWORD),
            ("fine", huge.as_str(), PASSWORD),
            ("fine", "not an email", PASSWORD),
            ("fine", "x@example.test", "short"),
        ] {
            let r = demo.try_signup(workspace, email, password).await;
            assert_eq!(r.status, 400, "{workspace} {}", &email[..email.len().min(40)]);
            assert!(r.body.len() < 8_000, "{} bytes echoed", r.body.len());
        }
        // A taken workspace name: 409, and no second user.
        let winner = (0..8)
            .map(|i| format!("w{i}"))
            .find(|w| {
                count(&db, &format!("SELECT count(*) FROM public.workspaces WHERE schema_name = '{w}'")) == 1
            })
            .expect("the one workspace");
        let r = demo.try_signup(&winner, "other@example.test", PASSWORD).await;
        assert_eq!(r.status, 409, "{}", r.body);
        assert_eq!(count(&db, "SELECT count(*) FROM public.users"), 1);
        assert_eq!(
            count(&db, "SELECT count(*) FROM public.workspaces w WHERE NOT EXISTS (SELECT 1 FROM public.users u WHERE u.workspace_id = w.id)"),
            0,
            "a workspace without a user"
        );
    });
}

#[test]
fn cross_site_writes_are_refused_and_pages_carry_security_headers() {
    let db = ScratchDb::create("demo_csrf");
    let demo = Demo::start(Some(&db), &[]);
    runtime().block_on(async {
        let ann = demo.signup("acme").await;
        let page = demo
            .send(Method::GET, "/notes", Some(&ann), None, &[], Body::Empty)
            .await;
        assert_eq!(page.status, 200);
        for (name, value) in [
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
        ] {
            assert_eq!(
                page.headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{name}"
            );
        }
        let csp = page
            .headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok());
        assert!(
            csp.is_some_and(|c| c.contains("frame-ancestors 'none'")),
            "{csp:?}"
        );
        let csrf = csrf_of(&page.body);
        let own = format!("http://127.0.0.1:{}", demo.port);
        let demo = &demo;
        let post = |headers: Vec<(&'static str, String)>, token: String| {
            let ann = ann.clone();
            async move {
                let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let form = [("title", "forged"), ("body", ""), ("csrf", token.as_str())];
                demo.send(
                    Method::POST,
                    "/notes",
                    Some(&ann),
                    None,
                    &h,
                    Body::Form(&form),
                )
                .await
                .status
            }
        };
        // A form on another site posting with the user's cookie: refused.
        assert_eq!(
            post(vec![("origin", "http://evil.example".into())], csrf.clone()).await,
            403
        );
        assert_eq!(
            post(vec![("sec-fetch-site", "cross-site".into())], csrf.clone()).await,
            403
        );
        assert_eq!(
            post(vec![("origin", "null".into())], csrf.clone()).await,
            403
        );
        // Without the page's token, or with another: refused.
        assert_eq!(
            post(vec![("origin", own.clone())], String::new()).await,
            403
        );
        assert_eq!(
            post(vec![("origin", own.clone())], "0".repeat(64)).await,
            403
        );
        let (_, v) = demo.notes(Some(&ann), None, "").await;
        assert_eq!(
            titles(&v),
            Vec::<String>::new(),
            "a forged note was written"
        );
        // Control: the page's own form.
        assert_eq!(
            post(
                vec![("origin", own), ("sec-fetch-site", "same-origin".into())],
                csrf
            )
            .await,
            303
        );
        let (_, v) = demo.notes(Some(&ann), None, "").await;
        assert_eq!(titles(&v), ["forged"]);
    });
}

#[test]
fn concurrent_requests_over_twenty_tenants_never_cross() {
    let db = ScratchDb::create("demo_load");
    let demo = Demo::start(Some(&db), &[]);
    let tenants: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    runtime().block_on(async {
        let mut cookies = Vec::new();
        for t in &tenants {
            let cookie = demo.signup(t).await;
            for n in 0..3 {
                demo.add_note(&cookie, &format!("{t} note {n}")).await;
            }
            cookies.push(cookie);
        }
        let demo = &demo;
        let requests = (0..200).map(|i| {
            let t = tenants[i % tenants.len()].clone();
            let cookie = cookies[i % tenants.len()].clone();
            async move {
                let subdomain = (i % 2 == 0).then_some(t.as_str());
                let (s, v) = demo.notes(Some(&cookie), subdomain, "").await;
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

#[test]
fn headless_chromium_signs_up_adds_notes_signs_out_and_in() {
    let db = ScratchDb::create("demo_chromium");
    let demo = Demo::start(Some(&db), &[]);
    let base = format!("http://localhost:{}", demo.port);
    let mut page = cdp::Chromium::start();

    page.goto(&format!("{base}/signup"));
    page.submit(
        "signup",
        &[
            ("workspace", "acme"),
            ("email", "ann@acme.test"),
            ("password", PASSWORD),
        ],
    );
    page.wait_for("location.pathname === '/notes' && !!document.querySelector('#tenant')");
    assert_eq!(
        page.eval("document.querySelector('#tenant').textContent"),
        "acme"
    );
    page.submit(
        "add",
        &[
            ("title", "Acme <b>roadmap</b>"),
            ("body", "from the browser"),
        ],
    );
    page.wait_for("document.body.innerText.includes('Acme <b>roadmap</b>')");
    // Shown as text, not markup.
    assert!(page.html().contains("Acme &lt;b&gt;roadmap&lt;/b&gt;"));

    page.eval("document.querySelector('#logout').click(); true");
    page.wait_for("location.pathname === '/login'");
    page.goto(&format!("{base}/notes"));
    assert!(
        page.html().contains("authentication_required"),
        "{}",
        page.html()
    );

    // A wrong password, then the right one.
    page.goto(&format!("{base}/login"));
    page.submit(
        "login",
        &[("email", "ann@acme.test"), ("password", "not the password")],
    );
    page.wait_for("!!document.querySelector('#error')");
    page.submit(
        "login",
        &[("email", "ann@acme.test"), ("password", PASSWORD)],
    );
    page.wait_for("location.pathname === '/notes' && !!document.querySelector('#notes')");
    assert!(page.html().contains("from the browser"));

    // Another workspace's user in another browser sees only their own.
    let mut other = cdp::Chromium::start();
    other.goto(&format!("{base}/signup"));
    other.submit(
        "signup",
        &[
            ("workspace", "globex"),
            ("email", "bob@globex.test"),
            ("password", PASSWORD),
        ],
    );
    other.wait_for("location.pathname === '/notes' && !!document.querySelector('#tenant')");
    assert_eq!(
        other.eval("document.querySelector('#tenant').textContent"),
        "globex"
    );
    assert!(!other.html().contains("roadmap"));
    // Ann's subdomain in Bob's browser: no session there, so no entry.
    other.goto(&format!("http://acme.localhost:{}/notes", demo.port));
    assert!(
        other.html().contains("authentication_required"),
        "{}",
        other.html()
    );
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
        let ann = demo.signup("acme").await;
        demo.add_note(&ann, "hello").await;
        assert_eq!(titles(&demo.notes(Some(&ann), None, "").await.1), ["hello"]);
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
        let ann = demo.signup("acme").await;
        demo.add_note(&ann, "in a throwaway server").await;
        assert_eq!(
            titles(&demo.notes(Some(&ann), None, "").await.1),
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
