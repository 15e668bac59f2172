//! The demo's test harness: the binary started on a scratch database and driven over HTTP.

use workspace_diesel_tests::db;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::prelude::*;
use reqwest::Method;
use serde_json::{json, Value};

use db::ScratchDb;

pub(crate) const PASSWORD: &str = "correct horse battery";

/// The demo binary, running until dropped.
pub(crate) struct Demo {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) banner: String,
    pub(crate) http: reqwest::Client,
}

/// A request's body.
pub(crate) enum Body<'a> {
    Empty,
    Form(&'a [(&'a str, &'a str)]),
    Json(Value),
}

/// A response: status, `Location`, the session cookie set (if any), body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    pub(crate) cookie: Option<String>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::String(self.body.clone()))
    }
}

impl Demo {
    /// Starts the demo on `db` with extra environment settings.
    pub(crate) fn start(db: Option<&ScratchDb>, env: &[(&str, &str)]) -> Self {
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
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            banner.push_str(&line);
            banner.push('\n');
        }
        Self {
            child,
            port,
            banner,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a request with the session `cookie`, `Host: <subdomain>.localhost`, extra
    /// headers, and a form or JSON body.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        subdomain: Option<&str>,
        headers: &[(&str, &str)],
        body: Body<'_>,
    ) -> Reply {
        let mut req = self.http.request(method, self.url(path));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        if let Some(t) = subdomain {
            req = req.header("host", format!("{t}.localhost:{}", self.port));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match body {
            Body::Empty => {}
            Body::Form(form) => req = req.form(form),
            Body::Json(value) => {
                req = req
                    .header("content-type", "application/json")
                    .body(value.to_string())
            }
        }
        let resp = req.send().await.expect("request");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let location = header("location");
        let cookie = header("set-cookie").map(|c| c.split(';').next().unwrap_or("").to_owned());
        let headers = resp.headers().clone();
        let status = resp.status().as_u16();
        let body = resp.text().await.expect("body");
        Reply {
            status,
            location,
            cookie,
            headers,
            body,
        }
    }

    /// A fresh session and its form token, from the sign-up page.
    pub(crate) async fn form_session(&self) -> (String, String) {
        let page = self
            .send(Method::GET, "/signup", None, None, &[], Body::Empty)
            .await;
        assert_eq!(page.status, 200, "{}", page.body);
        let cookie = page.cookie.expect("a session cookie");
        (cookie, csrf_of(&page.body))
    }

    /// Posts the sign-up form; the reply.
    pub(crate) async fn try_signup(&self, workspace: &str, email: &str, password: &str) -> Reply {
        let (cookie, csrf) = self.form_session().await;
        let form = [
            ("workspace", workspace),
            ("email", email),
            ("password", password),
            ("csrf", csrf.as_str()),
        ];
        self.send(
            Method::POST,
            "/signup",
            Some(&cookie),
            None,
            &[],
            Body::Form(&form),
        )
        .await
    }

    /// Signs up `workspace` with its owner `owner@<workspace>.test`; the signed-in cookie.
    pub(crate) async fn signup(&self, workspace: &str) -> String {
        let reply = self
            .try_signup(workspace, &format!("owner@{workspace}.test"), PASSWORD)
            .await;
        assert_eq!(
            (reply.status, reply.location.as_deref()),
            (303, Some("/notes")),
            "{}",
            reply.body
        );
        reply.cookie.expect("the signed-in session")
    }

    /// Signs in; the signed-in cookie, or the refusal's status.
    pub(crate) async fn login(&self, email: &str, password: &str) -> Result<String, u16> {
        let (cookie, csrf) = self.form_session().await;
        let form = [
            ("email", email),
            ("password", password),
            ("csrf", csrf.as_str()),
        ];
        let reply = self
            .send(
                Method::POST,
                "/login",
                Some(&cookie),
                None,
                &[],
                Body::Form(&form),
            )
            .await;
        match reply.status {
            303 => Ok(reply.cookie.expect("the signed-in session")),
            s => Err(s),
        }
    }

    pub(crate) async fn add_note(&self, cookie: &str, title: &str) {
        let r = self
            .send(
                Method::POST,
                "/api/notes",
                Some(cookie),
                None,
                &[],
                Body::Json(json!({ "title": title, "body": "text" })),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }

    pub(crate) async fn notes(
        &self,
        cookie: Option<&str>,
        subdomain: Option<&str>,
        query: &str,
    ) -> (u16, Value) {
        let r = self
            .send(
                Method::GET,
                &format!("/api/notes{query}"),
                cookie,
                subdomain,
                &[],
                Body::Empty,
            )
            .await;
        (r.status, r.json())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn csrf_of(html: &str) -> String {
    html.split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no form token in {html}"))
        .to_owned()
}

pub(crate) fn titles(v: &Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("no notes in {v}"))
        .iter()
        .map(|n| n["title"].as_str().expect("title").to_owned())
        .collect()
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn count(db: &ScratchDb, sql: &str) -> i64 {
    let mut conn = PgConnection::establish(db.url()).expect("connect");
    diesel::select(diesel::dsl::sql::<diesel::sql_types::BigInt>(&format!(
        "({sql})"
    )))
    .get_result(&mut conn)
    .expect("count")
}

pub(crate) fn database_exists(name: &str) -> bool {
    let mut conn = PgConnection::establish(&db::admin_url()).expect("admin connection");
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Bool>(&format!(
        "EXISTS (SELECT 1 FROM pg_catalog.pg_database WHERE datname = '{name}')"
    )))
    .get_result(&mut conn)
    .expect("query")
}

pub(crate) fn terminate(demo: &mut Demo) {
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
