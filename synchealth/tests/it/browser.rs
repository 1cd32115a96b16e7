//! The dashboard in a real browser: headless Chromium (Debian `chromium`,
//! installed by `scripts/install-deps`) driven over the DevTools protocol.
//! The browser logs in through the login form itself (so the session
//! cookie, `SameSite=Strict` and the CSRF token are exercised as a user's
//! browser does), then loads every page, and the test asserts on the text
//! the browser rendered. Screenshots of each page are kept in
//! `target/screenshots/` as test artifacts.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::helpers::{batch, rfc3339, spawn_app_with, Backend, ADMIN_PASSWORD};

/// A small deterministic generator, so the demo data is the same every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Twelve hours of a plausible fleet: three releases, three OSes, wifi and
/// cellular; the newest release struggles on cellular (the story an
/// on-call engineer would find), one device's uploads are stuck.
pub fn demo_events() -> Vec<Value> {
    let mut rng = Lcg(7);
    let now = OffsetDateTime::now_utc();
    let mut events = Vec::new();
    for i in 0..3600 {
        let device = i % 120;
        let minutes_ago = 715.0 * rng.next();
        let at = now - time::Duration::seconds((minutes_ago * 60.0) as i64 + 30);
        let version = ["2.2.0", "2.3.0", "2.4.0"][device % 3];
        let os = ["android", "ios", "web"][device % 3 / 2 + device % 2];
        let network = if device % 4 == 0 { "cellular" } else { "wifi" };
        let bad = version == "2.4.0" && network == "cellular" && minutes_ago < 120.0;
        let success = rng.next() > if bad { 0.35 } else { 0.03 };
        let base = if network == "cellular" { 900.0 } else { 350.0 };
        let duration = (base * (0.3 + 2.5 * rng.next().powi(3)) * if bad { 4.0 } else { 1.0 }) as u64;
        let stuck = device == 7;
        let queue = if stuck {
            1200 + (720.0 - minutes_ago) as u64 * 3
        } else if success {
            0
        } else {
            40
        };
        let stale_min = if success { 0 } else { 5 + (rng.next() * 90.0) as i64 };
        events.push(json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "device_id": format!("device-{device:03}"),
            "occurred_at": rfc3339(at),
            "last_success_at": rfc3339(at - time::Duration::minutes(stale_min)),
            "success": success && !stuck,
            "duration_ms": duration,
            "conflicts": u32::from(rng.next() < 0.04),
            "queue_depth": queue,
            "app_version": version,
            "os": os,
            "network": network,
            "error_kind": if success && !stuck { Value::Null } else { json!("timeout") },
            "error_message": if success && !stuck { Value::Null } else { json!("push timed out after 30 s") },
        }));
    }
    events
}

/// Where the screenshots go: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("screenshots")
}

fn chromium_binary() -> Option<String> {
    ["chromium", "chromium-browser", "google-chrome"].into_iter().map(str::to_string).find(|name| {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// One headless Chromium and a DevTools connection to one of its tabs.
struct Browser {
    child: Child,
    socket: WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch(binary: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // Chromium prints its DevTools websocket URL on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let url = rx.recv_timeout(Duration::from_secs(30)).expect("chromium announces its DevTools URL");
        let (socket, _) = tungstenite::connect(url.as_str()).expect("DevTools websocket");
        let mut browser = Browser { child, socket, session: String::new(), next_id: 0, _profile: profile };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached =
            browser.call(None, "Target.attachToTarget", json!({"targetId": target["targetId"], "flatten": true}));
        browser.session = attached["sessionId"].as_str().unwrap().to_string();
        browser.page("Page.enable", json!({}));
        browser.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        browser
    }

    /// Sends a command and waits for its answer (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.socket.send(Message::text(message.to_string())).unwrap();
        loop {
            let Message::Text(text) = self.socket.read().unwrap() else { continue };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Waits for the tab's next `load` event.
    fn wait_for_load(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Message::Text(text) = self.socket.read().unwrap() else { continue };
            let event: Value = serde_json::from_str(&text).unwrap();
            if event["method"] == "Page.loadEventFired" {
                return;
            }
        }
        panic!("the page did not load within 30 s");
    }

    fn navigate(&mut self, url: &str) {
        self.page("Page.navigate", json!({"url": url}));
        self.wait_for_load();
    }

    fn eval(&mut self, expression: &str) -> Value {
        self.page("Runtime.evaluate", json!({"expression": expression, "returnByValue": true}))["result"]["value"]
            .clone()
    }

    /// Runs a script that submits a form, and waits for the next page.
    fn submit(&mut self, script: &str) {
        self.page("Runtime.evaluate", json!({"expression": script}));
        self.wait_for_load();
    }

    /// A full-page PNG.
    fn screenshot(&mut self, name: &str) -> PathBuf {
        let metrics = self.page("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"].as_f64().unwrap_or(1000.0).clamp(1000.0, 6000.0);
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": height as u64, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 1000, "deviceScaleFactor": 1, "mobile": false}),
        );
        let png = base64::engine::general_purpose::STANDARD.decode(shot["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }
}

#[tokio::test]
async fn chromium_logs_in_and_renders_every_page() {
    if std::env::var("SYNCHEALTH_TEST_SKIP_BROWSER").as_deref() == Ok("1") {
        return;
    }
    let binary = chromium_binary().expect("no chromium: run scripts/install-deps (Debian package `chromium`)");
    crate::helpers::tally("browser");
    let (app, _store) = spawn_app_with(Backend::Sqlite, "browser", |_| {}).await.unwrap();
    for chunk in demo_events().chunks(1000) {
        let response = app.post_batch(&batch(chunk.to_vec())).await;
        assert_eq!(response.status(), 200);
    }
    let address = app.address.clone();
    // The browser is driven synchronously on its own thread while this
    // runtime keeps serving the application.
    let checked = tokio::task::spawn_blocking(move || {
        let mut browser = Browser::launch(&binary);
        // Not logged in: any page sends the browser to the login form.
        browser.navigate(&format!("{address}/?range=6h"));
        let url = browser.eval("location.pathname + location.search").as_str().unwrap().to_string();
        assert!(url.starts_with("/login?next="), "{url}");
        browser.screenshot("login");
        browser.submit(&format!(
            "document.querySelector('#username').value = 'admin';
             document.querySelector('#password').value = {};
             document.querySelector('form.login').submit();",
            json!(ADMIN_PASSWORD)
        ));
        // Back where the user wanted to go, logged in.
        let url = browser.eval("location.pathname + location.search").as_str().unwrap().to_string();
        assert_eq!(url, "/?range=6h");
        let cookie_visible = browser.eval("document.cookie").as_str().unwrap_or_default().contains("sh_session");
        assert!(!cookie_visible, "the session cookie is HttpOnly");

        let pages: [(&str, &str, &[&str]); 9] = [
            (
                "overview",
                "/?range=6h",
                &[
                    "Success rate",
                    "Duration p99",
                    "Staleness p50",
                    "Never-synced devices",
                    "Dropped by probes",
                    "Sync duration distribution",
                ],
            ),
            ("breakdown", "/breakdown?by=app_version&range=6h", &["2.4.0", "2.3.0", "2.2.0", "Download CSV"]),
            ("breakdown-network", "/breakdown?by=network&range=6h", &["cellular", "wifi"]),
            ("releases", "/releases?range=6h", &["Release comparison", "2.4.0", "95% CI difference"]),
            (
                "conflicts",
                "/conflicts?range=6h",
                &["Overwrite share", "Unclassified conflicts", "sent without details"],
            ),
            (
                "errors",
                "/errors?range=6h",
                &["Error groups", "timeout", "push timed out after ? s", "push timed out after 30 s"],
            ),
            ("devices", "/devices?range=6h&list=stuck", &["Stuck uploads", "device-007"]),
            ("device", "/devices/device-007?range=6h", &["Device device-007", "push timed out after 30 s"]),
            ("alerts", "/alerts", &["sync-success-rate", "Add a silence"]),
        ];
        let mut rendered = Vec::new();
        for (name, path, expected) in pages {
            browser.navigate(&format!("{address}{path}"));
            let text = browser.eval("document.body.innerText").as_str().unwrap_or_default().to_string();
            // innerText follows CSS (tile names are upper-cased): compare case-blind.
            let lower = text.to_lowercase();
            for needle in expected {
                assert!(lower.contains(&needle.to_lowercase()), "{name}: {needle:?} not rendered:\n{text}");
            }
            let charts = browser.eval("document.querySelectorAll('svg.chart').length").as_u64().unwrap_or(0);
            if name == "overview" {
                assert_eq!(charts, 7, "five time series and two distributions");
                let tiles = browser.eval("document.querySelectorAll('.tile').length").as_u64().unwrap_or(0);
                assert_eq!(tiles, 14);
            }
            rendered.push(browser.screenshot(name));
        }
        // A link opened from another site (here `localhost`, another site
        // than `127.0.0.1`): the Strict cookie is not sent on that
        // navigation, the dashboard reloads it from its own page, and the
        // logged-in user lands on the page without a second login.
        let other_site = address.replace("127.0.0.1", "localhost");
        browser.navigate(&format!("{other_site}/login"));
        browser.page(
            "Runtime.evaluate",
            json!({"expression": format!("location.href = '{address}/breakdown?by=os&range=6h'")}),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let at = browser.eval("location.host + location.pathname + ' ' + document.title");
            let at = at.as_str().unwrap_or_default().to_string();
            if at.contains("/breakdown Breakdown") {
                break;
            }
            assert!(Instant::now() < deadline, "the cross-site link did not land on the page: {at}");
            std::thread::sleep(Duration::from_millis(100));
        }
        // Let the last load event arrive, and skip it (a call skips events).
        std::thread::sleep(Duration::from_millis(300));
        browser.eval("1");
        // A silence through the form, as a user would add one.
        browser.navigate(&format!("{address}/alerts"));
        browser.submit(
            "document.querySelector('#s-segment').value = 'app_version=2.4.0';
             document.querySelector('#s-comment').value = 'rollout paused';
             document.querySelector('form.stack').submit();",
        );
        let text = browser.eval("document.body.innerText").as_str().unwrap_or_default().to_string();
        assert!(text.contains("rollout paused") && text.contains("app_version=2.4.0"), "{text}");
        // And log out.
        browser.submit("document.querySelector('header form').submit();");
        let url = browser.eval("location.pathname").as_str().unwrap().to_string();
        assert_eq!(url, "/login");
        browser.navigate(&format!("{address}/breakdown"));
        let url = browser.eval("location.pathname").as_str().unwrap().to_string();
        assert_eq!(url, "/login", "logged out");
        rendered
    })
    .await
    .unwrap();
    assert_eq!(checked.len(), 9);
}
