//! Operating the collector: per-key rate limit, batch size limit, key
//! authentication and revocation, project isolation, the `keys` command of
//! the real binary, `/metrics` and OTLP trace export.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synchealth::{Application, Roles};
use synchealth_collector::{hash_ingest_key, KEY_CACHE_TTL};
use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{IngestKey, SharedStore, User};
use time::OffsetDateTime;

use crate::helpers::{batch, event, serve, spawn_app, spawn_app_with, test_settings, Backend, TestApp, ADMIN_PASSWORD};
use crate::on_both_stores;

on_both_stores!(
    events_posted_with_one_projects_key_never_appear_in_another_projects_summary,
    keys_created_listed_and_revoked_through_the_binary_work_for_ingest,
);

/// Creates `project` and an active key for it, straight through the store.
async fn add_key(store: &SharedStore, project: &str, key: &str) {
    let project = ProjectName::parse(project).unwrap();
    store.ensure_project(&project).await.unwrap();
    let record = IngestKey {
        key_hash: hash_ingest_key(key),
        project,
        label: "test".into(),
        created_at_ms: unix_ms(OffsetDateTime::now_utc()),
        revoked: false,
        allowed_origins: vec![],
    };
    store.put_ingest_key(&record).await.unwrap();
}

async fn revoke_key(store: &SharedStore, key: &str) {
    let mut record = store.find_ingest_key(&hash_ingest_key(key)).await.unwrap().unwrap();
    record.revoked = true;
    store.put_ingest_key(&record).await.unwrap();
}

async fn get_json(app: &TestApp, path: &str, user: &str, password: &str) -> (u16, Value) {
    let response =
        app.client.get(format!("{}{path}", app.address)).basic_auth(user, Some(password)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Posts `body` with `key` until the answer is a 401 or `within` passes;
/// returns the last status and body.
async fn post_until_refused(app: &TestApp, key: &str, body: &Value, within: Duration) -> (u16, Value) {
    let deadline = Instant::now() + within;
    loop {
        let response = app.post_batch_with_key(key, body).await;
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        if status == 401 || Instant::now() > deadline {
            return (status, answer);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unauthorized_key() -> Value {
    json!({"error": "unauthorized", "detail": "unknown or revoked ingest key"})
}

#[tokio::test]
async fn a_key_over_its_rate_limit_gets_a_429_with_retry_after_and_is_accepted_after_waiting() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "rate_limit", |s| {
        s.rate_limit.events_per_second = 2;
        s.rate_limit.burst = 10;
    })
    .await
    .unwrap();
    add_key(&store, "default", "shk_second_key_of_default").await;
    let first = app.post_batch(&batch((0..10).map(|i| event(&format!("d{i}"), 1, true, 10)).collect())).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap(), json!({"accepted": 10, "duplicates": 0, "rejected": []}));

    // 4 more events need 2 s of refill at 2 events/s, less what has passed since.
    let four = batch((0..4).map(|i| event(&format!("e{i}"), 1, true, 10)).collect());
    let limited = app.post_batch(&four).await;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "rate limited");
    assert_eq!(body["retry_after_seconds"], retry_after);
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("2 events per second") && detail.contains("bursts of 10"), "{detail}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert_eq!(app.summary("").await["events"], 10, "a refused batch stores nothing");

    // The limit is per key: another key of the same project still has its burst.
    let other = app.post_batch_with_key("shk_second_key_of_default", &batch(vec![event("o1", 1, true, 10)])).await;
    assert_eq!(other.status(), 200);
    assert_eq!(other.json::<Value>().await.unwrap()["accepted"], 1);

    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let retried = app.post_batch(&four).await;
    assert_eq!(retried.status(), 200);
    assert_eq!(retried.json::<Value>().await.unwrap(), json!({"accepted": 4, "duplicates": 0, "rejected": []}));
    assert_eq!(app.summary("").await["events"], 15);
}

#[tokio::test]
async fn a_batch_of_6000_events_is_a_413_naming_the_count_and_the_limit() {
    let app = spawn_app(Backend::Sqlite, "too_many").await.unwrap();
    let response =
        app.post_batch(&batch((0..6000).map(|i| event(&format!("d{}", i % 50), 1, true, 10)).collect())).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({
            "error": "too many events",
            "detail": "6000 events in one batch, at most 5000 allowed; split the batch",
            "count": 6000,
            "max_events": 5000,
        })
    );
    assert_eq!(app.summary("").await["events"], 0);
}

#[tokio::test]
async fn the_batch_limit_is_configurable() {
    let (app, _) = spawn_app_with(Backend::Sqlite, "batch_limit", |s| s.max_events_per_batch = 3).await.unwrap();
    let four = app.post_batch(&batch((0..4).map(|i| event(&format!("d{i}"), 1, true, 10)).collect())).await;
    assert_eq!(four.status(), 413);
    let body: Value = four.json().await.unwrap();
    assert_eq!(
        (body["error"].clone(), body["count"].clone(), body["max_events"].clone()),
        (json!("too many events"), json!(4), json!(3))
    );
    let three = app.post_batch(&batch((0..3).map(|i| event(&format!("d{i}"), 1, true, 10)).collect())).await;
    assert_eq!(three.status(), 200);
    assert_eq!(three.json::<Value>().await.unwrap()["accepted"], 3);
}

#[tokio::test]
async fn a_revoked_key_is_a_401_within_the_key_cache_ttl() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "revoked", |_| {}).await.unwrap();
    // Revoked before its first use: refused at once.
    add_key(&store, "default", "shk_revoked_before_use").await;
    revoke_key(&store, "shk_revoked_before_use").await;
    let body = batch(vec![event("d1", 1, true, 10)]);
    let response = app.post_batch_with_key("shk_revoked_before_use", &body).await;
    assert_eq!(response.status(), 401);
    assert_eq!(response.json::<Value>().await.unwrap(), unauthorized_key());

    // Revoked while in use (and cached): refused within the cache TTL.
    add_key(&store, "default", "shk_revoked_in_use").await;
    let accepted = app.post_batch_with_key("shk_revoked_in_use", &body).await;
    assert_eq!(accepted.status(), 200);
    revoke_key(&store, "shk_revoked_in_use").await;
    let revoked_at = Instant::now();
    let (status, answer) =
        post_until_refused(&app, "shk_revoked_in_use", &batch(vec![event("d2", 1, true, 10)]), KEY_CACHE_TTL * 3).await;
    assert_eq!(status, 401, "still accepted {:?} after revocation", revoked_at.elapsed());
    assert_eq!(answer, unauthorized_key());
    // Within the TTL, plus slack for a loaded test machine.
    assert!(revoked_at.elapsed() < KEY_CACHE_TTL + Duration::from_secs(3), "{:?}", revoked_at.elapsed());
}

async fn events_posted_with_one_projects_key_never_appear_in_another_projects_summary(backend: Backend) {
    let Some((app, store)) = spawn_app_with(backend, "isolation", |_| {}).await else { return };
    add_key(&store, "alpha", "shk_alpha_key").await;
    add_key(&store, "beta", "shk_beta_key").await;
    let password_hash = synchealth_dashboard::hash_password("alice-password");
    let alice = User {
        username: "alice".into(),
        password_hash,
        admin: false,
        projects: vec![ProjectName::parse("alpha").unwrap()],
    };
    store.put_user(&alice).await.unwrap();

    // The same event ids in two projects are two sets of events, not duplicates.
    let shared = batch(vec![event("a1", 2, true, 100), event("a2", 2, false, 200)]);
    let to_alpha = app.post_batch_with_key("shk_alpha_key", &shared).await;
    assert_eq!(to_alpha.status(), 200);
    assert_eq!(to_alpha.json::<Value>().await.unwrap(), json!({"accepted": 2, "duplicates": 0, "rejected": []}));
    let to_beta = app.post_batch_with_key("shk_beta_key", &shared).await;
    assert_eq!(to_beta.status(), 200);
    assert_eq!(to_beta.json::<Value>().await.unwrap(), json!({"accepted": 2, "duplicates": 0, "rejected": []}));
    let more_alpha = app.post_batch_with_key("shk_alpha_key", &batch(vec![event("a3", 1, true, 300)])).await;
    assert_eq!(more_alpha.json::<Value>().await.unwrap(), json!({"accepted": 1, "duplicates": 0, "rejected": []}));
    let beta_device = app.post_batch_with_key("shk_beta_key", &batch(vec![event("b-only", 1, false, 400)])).await;
    assert_eq!(beta_device.json::<Value>().await.unwrap(), json!({"accepted": 1, "duplicates": 0, "rejected": []}));

    let (status, alpha) = get_json(&app, "/api/v1/summary?project=alpha", "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!((alpha["events"].clone(), alpha["devices"].clone()), (json!(3), json!(3)), "{alpha}");
    assert_eq!(alpha["success_rate"], 2.0 / 3.0);
    let (status, beta) = get_json(&app, "/api/v1/summary?project=beta", "admin", ADMIN_PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!((beta["events"].clone(), beta["devices"].clone()), (json!(3), json!(3)), "{beta}");
    assert_eq!(beta["success_rate"], 1.0 / 3.0);
    let (_, default) = get_json(&app, "/api/v1/summary?project=default", "admin", ADMIN_PASSWORD).await;
    assert_eq!(default["events"], 0);

    let (status, own) = get_json(&app, "/api/v1/summary?project=alpha", "alice", "alice-password").await;
    assert_eq!(status, 200);
    assert_eq!(own["events"], 3);
    let (status, other) = get_json(&app, "/api/v1/summary?project=beta", "alice", "alice-password").await;
    assert_eq!(status, 403);
    assert_eq!(other, json!({"error": "forbidden", "detail": "no access to project \"beta\""}));
}

#[tokio::test]
async fn an_ingest_key_cannot_read_the_api() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "key_reads", |_| {}).await.unwrap();
    add_key(&store, "alpha", "shk_alpha_reader").await;
    for path in ["/api/v1/summary", "/api/v1/summary?project=alpha", "/api/v1/breakdown?by=os&project=alpha"] {
        let response =
            app.client.get(format!("{}{path}", app.address)).bearer_auth("shk_alpha_reader").send().await.unwrap();
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{path}: {body}");
        // Nor as a Basic password of any user.
        let (status, body) = get_json(&app, path, "admin", "shk_alpha_reader").await;
        assert_eq!((status, body["error"].clone()), (401, json!("unauthorized")), "{path}");
    }
}

/// Runs `synchealth keys ...` on a store; returns stdout, asserting success.
fn keys_cli(store_args: &[String], args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .arg("keys")
        .args(args)
        .args(store_args)
        .env_remove("SYNCHEALTH_CONFIG")
        .env_remove("SYNCHEALTH_CLICKHOUSE_URL")
        .env_remove("SYNCHEALTH_DATA_DIR")
        .output()
        .expect("binary runs");
    assert!(output.status.success(), "keys {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

async fn keys_created_listed_and_revoked_through_the_binary_work_for_ingest(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(settings) = test_settings(backend, "keys_cli", dir.path()) else { return };
    let store_args: Vec<String> = match &settings.clickhouse.url {
        Some(url) => vec![
            "--clickhouse-url".into(),
            url.clone(),
            "--clickhouse-database".into(),
            settings.clickhouse.database.clone(),
        ],
        None => vec!["--data-dir".into(), settings.data_dir.display().to_string()],
    };
    let app = serve(Application::build(settings, Roles::ALL).await.unwrap(), dir);

    let key = keys_cli(&store_args, &["create", "--project", "mobile", "--label", "ios app 2.x"]).trim().to_string();
    assert!(key.starts_with("shk_") && key.len() > 20, "{key:?}");
    let prefix = &hash_ingest_key(&key)[..12];

    let listed = keys_cli(&store_args, &["list", "--project", "mobile"]);
    assert!(!listed.contains(&key), "list shows the key: {listed}");
    let row = listed.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no row for {prefix}: {listed}"));
    assert!(row.contains("active") && row.ends_with("ios app 2.x"), "{row}");

    let body = batch(vec![event("m1", 1, true, 10), event("m2", 1, false, 20)]);
    let accepted = app.post_batch_with_key(&key, &body).await;
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.json::<Value>().await.unwrap(), json!({"accepted": 2, "duplicates": 0, "rejected": []}));
    let (status, mobile) = get_json(&app, "/api/v1/summary?project=mobile", "admin", ADMIN_PASSWORD).await;
    assert_eq!((status, mobile["events"].clone()), (200, json!(2)));

    let revoked = keys_cli(&store_args, &["revoke", "--project", "mobile", &prefix[..8]]);
    assert!(revoked.contains(&format!("revoked ingest key {prefix}")), "{revoked}");
    let listed = keys_cli(&store_args, &["list", "--project", "mobile"]);
    assert!(listed.lines().any(|l| l.starts_with(prefix) && l.contains("revoked")), "{listed}");
    assert!(!listed.contains(&key));

    let (status, answer) =
        post_until_refused(&app, &key, &batch(vec![event("m3", 1, true, 10)]), KEY_CACHE_TTL * 3).await;
    assert_eq!(status, 401);
    assert_eq!(answer, unauthorized_key());
}

#[tokio::test]
async fn keys_revoke_of_an_unknown_key_fails_and_names_the_project() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data").display().to_string();
    keys_cli(&["--data-dir".into(), data_dir.clone()], &["create", "--project", "web"]);
    let output = Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .args(["keys", "revoke", "--project", "web", "shk_not_a_key", "--data-dir", &data_dir])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no key of project \"web\""), "{stderr}");
}

#[tokio::test]
async fn metrics_count_accepted_and_rate_limited_events_per_project_in_prometheus_text() {
    let (app, store) = spawn_app_with(Backend::Sqlite, "metrics", |s| {
        s.rate_limit.events_per_second = 1;
        s.rate_limit.burst = 2;
        s.metrics.per_project = true;
    })
    .await
    .unwrap();
    // A project of its own: the recorder is shared by every test of this process.
    add_key(&store, "metrics-probe", "shk_metrics_probe").await;
    let two = app
        .post_batch_with_key("shk_metrics_probe", &batch(vec![event("p1", 1, true, 10), event("p2", 1, true, 10)]))
        .await;
    assert_eq!(two.status(), 200);
    assert_eq!(two.json::<Value>().await.unwrap(), json!({"accepted": 2, "duplicates": 0, "rejected": []}));
    let three = batch((0..3).map(|i| event(&format!("q{i}"), 1, true, 10)).collect());
    let limited = app.post_batch_with_key("shk_metrics_probe", &three).await;
    assert_eq!(limited.status(), 429);
    assert_eq!(limited.json::<Value>().await.unwrap()["error"], "rate limited");

    let response = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(text.contains("# TYPE synchealth_rate_limited_total counter"), "{text}");
    assert!(text.lines().any(|l| l == "synchealth_rate_limited_total{project=\"metrics-probe\"} 3"), "{text}");
    assert!(text.lines().any(|l| l == "synchealth_events_accepted_total{project=\"metrics-probe\"} 2"), "{text}");
}

#[tokio::test]
async fn every_role_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let settings = test_settings(Backend::Sqlite, "metrics_roles", dir.path()).unwrap();
    let alerts_only = Roles { collector: false, dashboard: false, alerts: true };
    let app = serve(Application::build(settings, alerts_only).await.unwrap(), dir);
    let response = app.client.get(format!("{}/metrics", app.address)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
}

/// A fake OTLP/HTTP receiver: records `(path, content type, body)` of each POST.
type Received = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

async fn otlp_receiver() -> (String, Received) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Uri};
    let received: Received = Arc::default();
    let sink = received.clone();
    let router = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let sink = sink.clone();
        async move {
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            sink.lock().unwrap().push((uri.path().to_string(), content_type, body.to_vec()));
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (url, received)
}

/// Starts the binary with `env`; returns it and its base URL.
fn start_binary(data_dir: &std::path::Path, env: &[(&str, &str)]) -> (Child, String) {
    #[allow(clippy::zombie_processes)] // the caller waits
    let mut child = Command::new(env!("CARGO_BIN_EXE_synchealth"))
        .args(["up", "--listen", "127.0.0.1:0", "--ingest-key", "shk_otlp", "--admin-password", "pw", "--data-dir"])
        .arg(data_dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "synchealth exited before listening");
        if let Some(url) = line.trim().strip_prefix("synchealth: listening on ") {
            return (child, url.to_string());
        }
    }
}

#[tokio::test]
async fn the_binary_exports_traces_over_otlp_when_the_endpoint_is_set_and_flushes_them_on_exit() {
    let (endpoint, received) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, base) = start_binary(
        dir.path(),
        // A long export delay: what arrives was flushed by the shutdown.
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
            ("RUST_LOG", "info"),
        ],
    );
    let response = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .bearer_auth("shk_otlp")
        .json(&batch(vec![event("t1", 1, true, 10)]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({"accepted": 1, "duplicates": 0, "rejected": []}));
    assert!(received.lock().unwrap().is_empty(), "exported before the shutdown");

    let terminated = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(terminated.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(exit.success(), "{exit:?}");

    let received = received.lock().unwrap();
    let (path, content_type, body) = received.first().expect("traces exported on shutdown");
    assert_eq!(path, "/v1/traces");
    assert_eq!(content_type, "application/x-protobuf");
    let contains = |needle: &str| body.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(contains("synchealth"), "service.name missing");
    assert!(contains("post_events"), "the ingest span is missing");
}

/// `/metrics` of a fresh process, as Prometheus sees it: `promtool check
/// metrics` (Debian's `prometheus` package) finds nothing wrong, every
/// declared counter is there at 0 before its first event, latencies are
/// histograms, and no project name is shown unless asked for.
#[tokio::test]
async fn metrics_pass_promtool_with_counters_at_zero_histograms_and_no_project_names() {
    use crate::helpers::{Binary, ADMIN_PASSWORD, INGEST_KEY};
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> =
        ["--ingest-key", INGEST_KEY, "--admin-password", ADMIN_PASSWORD].iter().map(|a| a.to_string()).collect();
    let binary = Binary::start(&dir.path().join("data"), &args).await;
    let client = reqwest::Client::new();
    let fresh = client.get(format!("{}/metrics", binary.base)).send().await.unwrap().text().await.unwrap();
    use synchealth::metrics_catalog::{Kind, FAMILIES};
    let unlabeled_counters =
        FAMILIES.iter().filter(|f| f.kind == Kind::Counter && (f.labels.is_empty() || f.labels == ["project"]));
    for family in unlabeled_counters {
        assert!(fresh.contains(&format!("# HELP {} ", family.name)), "{} has no HELP at start: {fresh}", family.name);
        assert!(
            fresh.lines().any(|l| l == format!("{} 0", family.name)),
            "{} is not at 0 at start: {fresh}",
            family.name
        );
    }
    assert!(fresh.contains("synchealth_build_info{version=\""), "{fresh}");

    let body = batch(vec![event("m1", 1, true, 10), event("m2", 1, false, 20)]);
    let posted =
        client.post(format!("{}/v1/events", binary.base)).bearer_auth(INGEST_KEY).json(&body).send().await.unwrap();
    assert_eq!(posted.status(), 200);
    let text = client.get(format!("{}/metrics", binary.base)).send().await.unwrap().text().await.unwrap();
    assert!(text.lines().any(|l| l == "synchealth_events_accepted_total 2"), "{text}");
    assert!(text.contains("# TYPE synchealth_insert_seconds histogram"), "{text}");
    assert!(text.contains("synchealth_insert_seconds_bucket{source=\"batch\",le=\"0.1\"}"), "{text}");
    assert!(!text.contains("project="), "project names are opt-in: {text}");

    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("no promtool: run scripts/install-deps (Debian package `prometheus`)");
    use tokio::io::AsyncWriteExt;
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let output = promtool.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
