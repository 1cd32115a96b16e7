//! Test harness: the real application on port 0, over a fresh store per test
//! (a temp dir for SQLite, a fresh database on the test ClickHouse).

use std::io::{self, BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synchealth::settings::{AcknowledgeSetting, ClickHouseSettings};
use synchealth::{Application, Roles, Secret, Settings};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const INGEST_KEY: &str = "shk_test_ingest_key_0123456789abcdef";
pub const ADMIN_PASSWORD: &str = "test-admin-password";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    ClickHouse,
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The ClickHouse URL the test script started, or a clear failure.
pub fn clickhouse_url() -> Option<String> {
    match std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_URL") {
        Ok(url) if !url.is_empty() => {
            tally("clickhouse");
            Some(url)
        }
        _ if std::env::var("SYNCHEALTH_TEST_SKIP_CLICKHOUSE").as_deref() == Ok("1") => None,
        _ => {
            panic!("no test ClickHouse: run scripts/test, or set SYNCHEALTH_TEST_CLICKHOUSE_URL=http://127.0.0.1:PORT")
        }
    }
}

/// Notes in the file `SYNCHEALTH_TEST_TALLY` names (when set) that the
/// running test really used `what` (`clickhouse`, `browser`), one line per
/// test, so the test command can say how many ran rather than skipped.
pub fn tally(what: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var("SYNCHEALTH_TEST_TALLY") else { return };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    // One short line per append: O_APPEND keeps lines whole across processes.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{what} {} {test}", env!("CARGO_PKG_NAME"));
    }
}

/// Settings for a fresh store named after the test.
pub fn test_settings(backend: Backend, name: &str, dir: &std::path::Path) -> Option<Settings> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        data_dir: dir.join("data"),
        ingest_key: Some(Secret::from(INGEST_KEY.to_string())),
        admin_password: Some(Secret::from(ADMIN_PASSWORD.to_string())),
        ..Settings::default()
    };
    // Read-after-acknowledge, on both stores: most tests post and then read.
    // The spool-first default for ClickHouse is exercised by the durability
    // tests and by `spooled_acknowledgements_*` in ingest.rs.
    settings.ingest.acknowledge = AcknowledgeSetting::Stored;
    if backend == Backend::ClickHouse {
        let url = clickhouse_url()?;
        let unique = format!("{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), name);
        settings.clickhouse = ClickHouseSettings {
            url: Some(url),
            user: "default".into(),
            password: None,
            database: format!("it_{}", unique.chars().take(60).collect::<String>()),
            cluster: None,
            insert_quorum: 0,
        };
    }
    Some(settings)
}

/// Starts the whole product (`synchealth up`) for one test.
pub async fn spawn_app(backend: Backend, name: &str) -> Option<TestApp> {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = test_settings(backend, name, dir.path())?;
    let app = Application::build(settings, Roles::ALL).await.expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    Some(TestApp { address, client: reqwest::Client::new(), _dir: dir })
}

impl TestApp {
    pub async fn post_batch(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/events", self.address))
            .bearer_auth(INGEST_KEY)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts a raw body with the valid ingest key and the given headers.
    pub async fn post_raw(&self, headers: &[(&str, &str)], body: impl Into<reqwest::Body>) -> reqwest::Response {
        let request = self.client.post(format!("{}/v1/events", self.address)).bearer_auth(INGEST_KEY);
        let request = headers.iter().fold(request, |r, (name, value)| r.header(*name, *value));
        request.body(body).send().await.expect("request sent")
    }

    pub async fn summary(&self, query: &str) -> Value {
        let response = self
            .client
            .get(format!("{}/api/v1/summary?{query}", self.address))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .expect("request sent");
        assert_eq!(response.status(), 200, "summary failed");
        response.json().await.expect("summary is JSON")
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).expect("formats")
}

/// A valid event `minutes_ago` minutes before now.
pub fn event(device: &str, minutes_ago: i64, success: bool, duration_ms: u64) -> Value {
    let at = OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago);
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "device_id": device,
        "occurred_at": rfc3339(at),
        "last_success_at": rfc3339(at - time::Duration::minutes(5)),
        "success": success,
        "duration_ms": duration_ms,
        "conflicts": if success { 0 } else { 2 },
        "queue_depth": if success { 0 } else { 1500 },
        "app_version": "2.3.0",
        "os": "android",
        "network": "cellular",
        "error_kind": if success { Value::Null } else { json!("timeout") },
    })
}

pub fn batch(events: Vec<Value>) -> Value {
    json!({"sent_at": rfc3339(OffsetDateTime::now_utc()), "events": events})
}

/// Writes one test per backend from `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await })+
        }
        mod clickhouse {
            $(#[tokio::test] async fn $name() { super::$name($crate::helpers::Backend::ClickHouse).await })+
        }
    };
}

/// Starts the whole product with settings adjusted by `configure`, and
/// returns its store too, to provision projects, keys and users directly.
pub async fn spawn_app_with(
    backend: Backend,
    name: &str,
    configure: impl FnOnce(&mut Settings),
) -> Option<(TestApp, synchealth_store::SharedStore)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(backend, name, dir.path())?;
    configure(&mut settings);
    let app = Application::build(settings, Roles::ALL).await.expect("application builds");
    let store = app.store();
    Some((serve(app, dir), store))
}

/// Runs an application the test built; `dir` lives as long as the [`TestApp`].
pub fn serve(app: Application, dir: tempfile::TempDir) -> TestApp {
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp { address, client: reqwest::Client::new(), _dir: dir }
}

impl TestApp {
    /// Posts a batch with the given ingest key.
    pub async fn post_batch_with_key(&self, key: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/events", self.address))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }
}

/// The arguments of `synchealth up` against ClickHouse `database`, with the
/// test key and password and the settings file `config`.
pub fn up_args(clickhouse_url: &str, database: &str, config: &Path) -> Vec<String> {
    let config = config.to_str().expect("a UTF-8 path");
    [
        "--clickhouse-url",
        clickhouse_url,
        "--clickhouse-database",
        database,
        "--ingest-key",
        INGEST_KEY,
        "--admin-password",
        ADMIN_PASSWORD,
        "--config",
        config,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect()
}

/// The real binary, as an operator runs it (`synchealth up`).
pub struct Binary {
    child: Child,
    pub base: String,
}

impl Binary {
    /// Starts `synchealth up` and waits until it says where it listens.
    pub async fn start(data_dir: &Path, args: &[String]) -> Binary {
        let (data_dir, args) = (data_dir.to_path_buf(), args.to_vec());
        tokio::task::spawn_blocking(move || {
            #[allow(clippy::zombie_processes)] // callers stop it and wait; Drop kills
            let mut child = Command::new(env!("CARGO_BIN_EXE_synchealth"))
                .args(["up", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(&data_dir)
                .args(&args)
                .env("RUST_LOG", std::env::var("SYNCHEALTH_TEST_LOG").unwrap_or_else(|_| "error".into()))
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("binary starts");
            let mut reader = BufReader::new(child.stdout.take().expect("stdout piped"));
            loop {
                let mut line = String::new();
                assert!(reader.read_line(&mut line).expect("reads stdout") > 0, "synchealth exited before listening");
                if let Some(url) = line.trim_end().strip_prefix("synchealth: listening on ") {
                    // Drained to the end: a write to a closed stdout at
                    // shutdown would fail the graceful exit.
                    std::thread::spawn(move || io::copy(&mut reader, &mut io::sink()));
                    return Binary { base: url.to_string(), child };
                }
            }
        })
        .await
        .unwrap()
    }

    /// SIGTERM, and a clean exit: in-flight work flushed.
    pub async fn stop_gracefully(mut self) {
        let terminated = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(terminated.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            assert!(Instant::now() < deadline, "synchealth still runs 30 s after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "synchealth exited with {exit:?} after SIGTERM");
    }

    /// SIGKILL: no graceful shutdown, no drain.
    pub fn kill_9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Binary {
    /// A failed assertion must not leave the process running after the test.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until the collector is ready with an empty spool: every
/// acknowledged event is then in the store.
pub async fn wait_until_drained(base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = client.get(format!("{base}/readyz")).timeout(Duration::from_secs(5)).send().await;
        let last = match response {
            Ok(response) => Some((response.status().as_u16(), response.json::<Value>().await.unwrap_or(Value::Null))),
            Err(_) => None,
        };
        if let Some((200, body)) = &last {
            if body["spool"]["bytes"] == 0 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the spool did not drain within 20 s: {last:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
