//! A small driver for headless Chromium over the DevTools protocol: navigate, evaluate script,
//! wait for a condition. Enough to fill and submit the demo's forms as a user would.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// A headless Chromium with one page, closed on drop.
pub struct Chromium {
    child: Child,
    profile: PathBuf,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
}

impl Chromium {
    /// Starts Chromium and opens a blank page.
    pub fn start() -> Self {
        let profile = std::env::temp_dir().join(format!(
            "workspace-diesel-demo-cdp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("profile dir");
        let binary = std::env::var_os("CHROMIUM_BIN").unwrap_or_else(|| "chromium".into());
        let mut child = Command::new(&binary)
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
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run {} ({e}): `cargo xtask test` installs Chromium when run as root \
                     (`apt-get install chromium`), CHROMIUM_BIN names another binary, and \
                     `cargo xtask test --skip chromium` runs the other suites without this test",
                    binary.to_string_lossy()
                )
            });
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("chromium printed no DevTools address")
                .expect("stderr");
            if let Some(url) = line.strip_prefix("DevTools listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep reading so that Chromium never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        let (socket, _) = tungstenite::connect(url.as_str()).expect("DevTools websocket");
        let mut browser = Self {
            child,
            profile,
            socket,
            session: String::new(),
            next_id: 0,
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" }));
        let target = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.call(
            "Target.attachToTarget",
            json!({ "targetId": target, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        browser.call("Page.enable", json!({}));
        browser
    }

    /// Sends a command (to the page once attached) and returns its result.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if !self.session.is_empty() {
            message["sessionId"] = json!(self.session);
        }
        self.socket
            .send(Message::text(message.to_string()))
            .expect("send to Chromium");
        loop {
            let reply = self.socket.read().expect("read from Chromium");
            let Message::Text(text) = reply else { continue };
            let value: Value = serde_json::from_str(text.as_str()).expect("DevTools JSON");
            if value["id"].as_u64() == Some(id) {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    /// Evaluates `script` in the page and returns its value.
    pub fn eval(&mut self, script: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({ "expression": script, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{script}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits (up to 20 s) until `condition` evaluates to `true` in a loaded page.
    pub fn wait_for(&mut self, condition: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let script = format!("document.readyState === 'complete' && ({condition})");
        loop {
            // A navigation in progress may reject an evaluation; try again.
            let done = self.call(
                "Runtime.evaluate",
                json!({ "expression": script, "returnByValue": true }),
            );
            if done["result"]["value"] == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not within 20 s: {condition}; page: {}",
                self.html()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens `url` and waits until it has loaded.
    pub fn goto(&mut self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(&format!("location.href === {}", json!(url)));
    }

    /// The page's markup.
    pub fn html(&mut self) -> String {
        let v = self.call(
            "Runtime.evaluate",
            json!({ "expression": "document.documentElement.outerHTML", "returnByValue": true }),
        );
        v["result"]["value"].as_str().unwrap_or_default().to_owned()
    }

    /// Fills the fields of form `#form` and submits it as a click on its button would.
    pub fn submit(&mut self, form: &str, fields: &[(&str, &str)]) {
        let mut script = String::new();
        for (name, value) in fields {
            script.push_str(&format!(
                "document.querySelector('#{form} [name={name}]').value = {};",
                json!(value)
            ));
        }
        script.push_str(&format!(
            "document.querySelector('#{form} button').click(); true"
        ));
        self.eval(&script);
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
