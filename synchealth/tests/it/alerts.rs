//! Alerts end to end: events through the real collector, the real evaluator
//! on a 1 s interval, email to a real SMTP server (aiosmtpd, storing each
//! message as JSON via `tests/support/smtp_sink.py`) and webhooks to a real
//! HTTP receiver (axum).

use std::collections::BTreeMap;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use synchealth::commands::alerts as alerts_cmd;
use synchealth::roles::alerts as alerts_role;
use synchealth::settings::{ChannelSettings, EmailChannelSettings, RetrySettings, WebhookChannelSettings};
use synchealth::{Application, Roles, Secret, Settings};
use synchealth_alerts::delivery::SmtpSecurity;
use synchealth_alerts::{Comparison, Rule, Severity};
use synchealth_schema::ProjectName;
use synchealth_store::metrics::Metric;
use synchealth_store::{Dimension, Filters, NotificationRecord, SharedStore};
use time::OffsetDateTime;

use crate::helpers::{batch, rfc3339, serve, test_settings, Backend, TestApp};

mod cluster;
mod delivery;
mod incident_tools;

const INTERVAL: Duration = Duration::from_secs(1);
const RULE: &str = "release-success-rate";
const HMAC_SECRET: &str = "shared-webhook-secret";

// ---------------------------------------------------------------- receivers

/// One webhook request as received.
#[derive(Debug, Clone)]
struct Hook {
    path: String,
    signature: Option<String>,
    timestamp: Option<String>,
    raw: Vec<u8>,
    body: Value,
}

#[derive(Clone, Default)]
struct Hooks(Arc<Mutex<Vec<Hook>>>);

impl Hooks {
    fn on(&self, path: &str) -> Vec<Hook> {
        self.0.lock().unwrap().iter().filter(|h| h.path == path).cloned().collect()
    }
}

async fn record_hook(
    State(hooks): State<Hooks>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let (signature, timestamp) = (header("x-synchealth-signature"), header("x-synchealth-timestamp"));
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut hooks = hooks.0.lock().unwrap();
    hooks.push(Hook { path: path.clone(), signature, timestamp, raw: body.to_vec(), body: parsed });
    let seen = hooks.iter().filter(|h| h.path == path).count();
    match path.as_str() {
        // Unavailable twice, then fine: a transient failure.
        "flaky" if seen <= 2 => StatusCode::SERVICE_UNAVAILABLE,
        // A receiver that will never take it: a permanent failure.
        "gone" => StatusCode::NOT_FOUND,
        _ => StatusCode::OK,
    }
}

/// A real HTTP receiver on a free port: `POST /{anything}` is recorded and
/// answered 200, except `/flaky` (503 twice, then 200) and `/gone` (404).
async fn webhook_receiver() -> (String, Hooks) {
    let hooks = Hooks::default();
    let app = Router::new().route("/{path}", post(record_hook)).with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hooks)
}

/// The request is signed over its timestamp and body, the timestamp is now,
/// and the same request replayed ten minutes later fails verification.
fn assert_signed_now(hook: &Hook) {
    use synchealth_alerts::delivery::webhook::{verify, DEFAULT_TOLERANCE};
    let (Some(timestamp), Some(signature)) = (hook.timestamp.as_deref(), hook.signature.as_deref()) else {
        panic!("a signed webhook carries a timestamp and a signature: {hook:?}");
    };
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let sent: i64 = timestamp.parse().unwrap();
    assert!((now - sent).abs() <= 10, "the timestamp {sent} is the sending time (now {now})");
    assert!(verify(HMAC_SECRET, timestamp, signature, &hook.raw, now, DEFAULT_TOLERANCE), "verifies");
    assert!(
        !verify(HMAC_SECRET, timestamp, signature, &hook.raw, now + 600, DEFAULT_TOLERANCE),
        "a replay is detected"
    );
    let fresh = (now + 600).to_string();
    assert!(
        !verify(HMAC_SECRET, &fresh, signature, &hook.raw, now + 600, DEFAULT_TOLERANCE),
        "the timestamp is signed"
    );
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A python with aiosmtpd (the system one; a pyenv shim may lack it).
fn python() -> String {
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok =
            std::process::Command::new(candidate).args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
        if ok {
            return candidate.to_string();
        }
    }
    panic!("no python3 with aiosmtpd installed");
}

/// A real SMTP server (aiosmtpd) writing each message to `dir` as JSON.
struct Smtp {
    child: tokio::process::Child,
}

impl Smtp {
    async fn start(port: u16, dir: &Path) -> Smtp {
        Smtp::start_with(port, dir, &[]).await
    }

    /// With extra aiosmtpd flags (`--tlscert`, `--smtpscert`...).
    async fn start_with(port: u16, dir: &Path, flags: &[&str]) -> Smtp {
        let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support");
        let child = tokio::process::Command::new(python())
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(flags)
            .args(["-c", "smtp_sink.JsonDir"])
            .arg(dir)
            .env("PYTHONPATH", support)
            .kill_on_drop(true)
            .spawn()
            .expect("aiosmtpd starts");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(15), "aiosmtpd did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Smtp { child }
    }

    async fn stop(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// The messages the SMTP sink stored, oldest first.
fn emails(dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    names.iter().map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()).collect()
}

/// The email notification's record once it is no longer pending (bounded):
/// the SMTP server has the message a moment before the record says so.
async fn settled_email_record(store: &SharedStore) -> NotificationRecord {
    let started = Instant::now();
    loop {
        let record = store.notifications(None, 10).await.unwrap().into_iter().find(|n| n.channel == "email").unwrap();
        if record.status != "pending" || started.elapsed() > Duration::from_secs(5) {
            return record;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (bounded) until an evaluation stored an instance that counted
/// `events` events.
async fn wait_for_instance_events(store: &SharedStore, events: u64) {
    let started = Instant::now();
    while !store.alert_instances().await.unwrap().iter().any(|i| i.events == events) {
        assert!(started.elapsed() < Duration::from_secs(10), "no evaluation saw {events} events");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (bounded) until `n` more evaluations have stored their state: the
/// proof that the system moved on, before asserting that nothing else was
/// sent. A bare sleep passes trivially on a machine too slow to evaluate.
async fn evaluations_later(store: &SharedStore, n: usize) {
    let latest = || async { store.alert_instances().await.unwrap().iter().map(|i| i.last_evaluated_ms).max() };
    let mut seen = latest().await;
    let mut moved = 0;
    let started = Instant::now();
    while moved < n {
        assert!(started.elapsed() < Duration::from_secs(20), "only {moved} of {n} evaluations came");
        tokio::time::sleep(Duration::from_millis(25)).await;
        let now = latest().await;
        if now > seen {
            seen = now;
            moved += 1;
        }
    }
}

/// The start of every evaluation that wrote an instance while it watched
/// (an evaluation stamps all its instances with the time it started).
struct EvaluationStarts {
    seen: Arc<Mutex<Vec<i64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EvaluationStarts {
    fn watch(store: SharedStore) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Ok(instances) = store.alert_instances().await {
                    if let Some(start) = instances.iter().map(|i| i.last_evaluated_ms).max() {
                        let mut log = log.lock().unwrap();
                        if log.last() != Some(&start) {
                            log.push(start);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { seen, task }
    }

    /// Starts strictly after `after_ms` and before `before_ms`, as offsets from `after_ms`.
    fn between(&self, after_ms: i64, before_ms: i64) -> Vec<i64> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|&&t| t > after_ms && t < before_ms).map(|t| t - after_ms).collect()
    }
}

impl Drop for EvaluationStarts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn unix_ms_now() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

// ---------------------------------------------------------------- setup

fn rule(channels: &[&str], min_events: u64) -> Rule {
    Rule {
        name: RULE.into(),
        description: Some("A release's syncs are failing.".into()),
        metric: Metric::SuccessRate,
        comparison: Comparison::Below,
        threshold: 0.95,
        window: time::Duration::minutes(30),
        pending_for: time::Duration::ZERO,
        min_events,
        group_by: Some(Dimension::AppVersion),
        severity: Severity::Page,
        channels: channels.iter().map(|c| c.to_string()).collect(),
        keep_firing_for: time::Duration::ZERO,
        repeat_interval: None,
        evaluation_delay: time::Duration::ZERO,
        queue_threshold: None,
        filters: Filters::default(),
    }
}

fn webhook(url: String, secret: bool) -> WebhookChannelSettings {
    WebhookChannelSettings {
        url: Secret::from(url),
        secret: secret.then(|| Secret::from(HMAC_SECRET.to_string())),
        send_resolved: true,
        timeout: "5s".into(),
    }
}

/// An email channel to the test SMTP server on `port`.
fn email_channel(port: u16, security: SmtpSecurity, tls_ca_file: Option<PathBuf>) -> ChannelSettings {
    ChannelSettings::Email(EmailChannelSettings {
        smtp_host: "127.0.0.1".into(),
        smtp_port: Some(port),
        security,
        username: None,
        password: None,
        from: "synchealth <alerts@example.com>".into(),
        to: vec!["oncall@example.com".into()],
        send_resolved: true,
        timeout: "5s".into(),
        tls_ca_file,
    })
}

/// Channels `email` (SMTP on `smtp_port`), `hook` (generic, signed),
/// `slack` and `am` (Alertmanager), the webhooks at `hooks_url/<name>`.
fn configure(settings: &mut Settings, smtp_port: u16, hooks_url: &str, min_events: u64) {
    settings.alerts.evaluation_interval = "1s".into();
    settings.alerts.public_url = "https://health.example.com".into();
    settings.alerts.lease_ttl = Some("3s".into());
    settings.alerts.retry = RetrySettings { initial_delay_ms: 200, max_delay_ms: 500, max_attempts: 60 };
    settings.alerts.rules = vec![rule(&["email", "hook", "slack", "am"], min_events)];
    let mut channels = BTreeMap::new();
    channels.insert("email".to_string(), email_channel(smtp_port, SmtpSecurity::None, None));
    channels.insert("hook".to_string(), ChannelSettings::Webhook(webhook(format!("{hooks_url}/hook"), true)));
    channels.insert("slack".to_string(), ChannelSettings::Slack(webhook(format!("{hooks_url}/slack"), false)));
    channels.insert("am".to_string(), ChannelSettings::Alertmanager(webhook(format!("{hooks_url}/am"), false)));
    settings.alerts.channels = channels;
}

/// A test world: the app (collector + dashboard, and the evaluator if
/// `with_alerts`), a webhook receiver, an SMTP port and the mail directory.
struct World {
    app: TestApp,
    store: SharedStore,
    settings: Settings,
    hooks: Hooks,
    smtp_port: u16,
    mail: tempfile::TempDir,
}

async fn world(backend: Backend, name: &str, min_events: u64, with_alerts: bool) -> Option<World> {
    world_with(backend, name, min_events, with_alerts, |_| {}).await
}

/// [`world`] with its settings adjusted by `adjust` first.
async fn world_with(
    backend: Backend,
    name: &str,
    min_events: u64,
    with_alerts: bool,
    adjust: impl FnOnce(&mut Settings),
) -> Option<World> {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(backend, name, dir.path())?;
    adjust(&mut settings);
    let (hooks_url, hooks) = webhook_receiver().await;
    let smtp_port = free_port();
    configure(&mut settings, smtp_port, &hooks_url, min_events);
    let roles = Roles { collector: true, dashboard: true, alerts: with_alerts };
    let app = Application::build(settings.clone(), roles).await.expect("application builds");
    let store = app.store();
    Some(World { app: serve(app, dir), store, settings, hooks, smtp_port, mail: tempfile::tempdir().unwrap() })
}

fn sync_event(device: &str, app_version: &str, success: bool) -> Value {
    let at = OffsetDateTime::now_utc() - time::Duration::seconds(30);
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "device_id": device,
        "occurred_at": rfc3339(at),
        "last_success_at": rfc3339(at - time::Duration::minutes(5)),
        "success": success,
        "duration_ms": 900,
        "conflicts": 0,
        "queue_depth": 0,
        "app_version": app_version,
        "os": "android",
        "network": "wifi",
        "error_kind": if success { Value::Null } else { json!("timeout") },
    })
}

/// `failures` failed and `successes` successful syncs of a release.
fn release_events(app_version: &str, failures: usize, successes: usize) -> Vec<Value> {
    (0..failures + successes)
        .map(|i| sync_event(&format!("dev-{app_version}-{}", i % 25), app_version, i >= failures))
        .collect()
}

impl World {
    async fn ingest(&self, events: Vec<Value>) -> Instant {
        let response = self.app.post_batch(&batch(events)).await;
        assert!(response.status().is_success(), "ingest answered {}", response.status());
        Instant::now()
    }

    /// The failure spike: release 2.3.0 at 50% success, release 2.2.0 healthy.
    async fn spike(&self) -> Instant {
        let mut events = release_events("2.3.0", 30, 30);
        events.extend(release_events("2.2.0", 0, 60));
        self.ingest(events).await
    }

    fn emails(&self) -> Vec<Value> {
        emails(self.mail.path())
    }

    /// Every notice received so far, per channel, as (kind, segment) pairs.
    fn received(&self) -> BTreeMap<&'static str, Vec<String>> {
        let mut out = BTreeMap::new();
        out.insert("email", self.emails().iter().map(|m| m["subject"].as_str().unwrap().to_string()).collect());
        out.insert(
            "hook",
            self.hooks
                .on("hook")
                .iter()
                .map(|h| format!("{} {}", h.body["kind"], h.body["segment"]["value"]))
                .collect(),
        );
        out.insert(
            "slack",
            self.hooks.on("slack").iter().map(|h| h.body["text"].as_str().unwrap().to_string()).collect(),
        );
        out.insert(
            "am",
            self.hooks
                .on("am")
                .iter()
                .map(|h| format!("{} {}", h.body["status"], h.body["alerts"][0]["labels"]["app_version"]))
                .collect(),
        );
        out
    }

    /// This test rule's instance for `segment` (`dimension=value`).
    async fn instance(&self, segment: &str) -> synchealth_store::AlertInstanceRecord {
        let instances = self.store.alert_instances().await.unwrap();
        let found = instances.iter().find(|i| i.rule == RULE && i.segment.as_deref() == Some(segment));
        found.unwrap_or_else(|| panic!("no instance for {segment} in {instances:?}")).clone()
    }

    fn total_received(&self) -> usize {
        self.received().values().map(Vec::len).sum()
    }
}

// ---------------------------------------------------------------- tests

crate::on_both_stores!(
    a_failing_release_fires_once_per_channel_at_the_first_evaluation_after_ingest_and_resolves_once,
    two_evaluator_replicas_send_each_notification_once,
);

async fn a_failing_release_fires_once_per_channel_at_the_first_evaluation_after_ingest_and_resolves_once(
    backend: Backend,
) {
    let Some(w) = world(backend, "alerts_fire_resolve", 20, true).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    // A healthy release first, so every evaluation leaves a mark in the store.
    w.ingest(release_events("2.2.0", 0, 60)).await;
    evaluations_later(&w.store, 1).await;
    let starts = EvaluationStarts::watch(w.store.clone());
    w.spike().await;
    let ingested_ms = unix_ms_now();

    let hook = wait_for("the generic webhook", Duration::from_secs(10), || w.hooks.on("hook").first().cloned()).await;
    // Counted in evaluations, not seconds: on two loaded cores one evaluation
    // can outlast the 1 s interval, and then they run back to back.
    let fired_ms = w.instance("app_version=2.3.0").await.since_ms;
    let skipped = starts.between(ingested_ms, fired_ms);
    assert!(
        skipped.is_empty(),
        "evaluations starting {skipped:?} ms after ingest did not fire; the one at {} ms did",
        fired_ms - ingested_ms
    );
    wait_for("every channel", Duration::from_secs(10), || (w.total_received() == 4).then_some(())).await;
    // A few more evaluations: still exactly one per channel, and nothing for 2.2.0.
    evaluations_later(&w.store, 3).await;
    let received = w.received();
    assert_eq!(received["email"], vec!["[FIRING] success rate 50% < 95% — release 2.3.0".to_string()]);
    assert_eq!(received["hook"], vec!["\"firing\" \"2.3.0\"".to_string()]);
    // Slack shows `&lt;` as `<`: its mrkdwn escapes.
    assert_eq!(received["slack"], vec!["[FIRING] success rate 50% &lt; 95% — release 2.3.0".to_string()]);
    assert_eq!(received["am"], vec!["\"firing\" \"2.3.0\"".to_string()]);

    // The generic payload carries the documented fields, signed.
    let body = &hook.body;
    assert_eq!(body["rule"], RULE);
    assert_eq!(body["state"], "firing");
    assert_eq!(body["segment"], json!({"dimension": "app_version", "value": "2.3.0"}));
    assert_eq!(body["value"], 0.5);
    assert_eq!(body["threshold"], 0.95);
    assert_eq!(body["events"], 60);
    assert!(body["window"]["from"].is_string() && body["window"]["to"].is_string());
    let url = body["dashboard_url"].as_str().unwrap();
    assert!(url.starts_with("https://health.example.com/?project=default&from="), "{url}");
    assert!(url.ends_with("&app_version=2.3.0"), "{url}");
    assert_eq!(body["fingerprint"].as_str().unwrap().len(), 16);
    assert_signed_now(&hook);
    let am = &w.hooks.on("am")[0].body;
    assert_eq!(am["version"], "4");
    assert_eq!(am["alerts"][0]["labels"]["alertname"], RULE);
    assert_eq!(am["alerts"][0]["fingerprint"], body["fingerprint"]);
    let slack = &w.hooks.on("slack")[0].body;
    assert!(slack["blocks"].as_array().unwrap().len() >= 3);
    let email = &w.emails()[0];
    assert_eq!(email["rcpt_tos"], json!(["oncall@example.com"]));
    assert!(email["text"].as_str().unwrap().contains("Window: "));
    assert!(email["text"].as_str().unwrap().contains(url));
    assert!(email["html"].as_str().unwrap().contains("<table>"));

    // Recovery: 2.3.0 back above 95% (30 failures in 1030).
    w.ingest(release_events("2.3.0", 0, 970)).await;
    wait_for("the resolutions", Duration::from_secs(10), || (w.total_received() == 8).then_some(())).await;
    evaluations_later(&w.store, 3).await;
    let received = w.received();
    assert_eq!(received["email"][1], "[RESOLVED] success rate back to 97.1% (alert: < 95%) — release 2.3.0");
    assert_eq!(received["hook"][1], "\"resolved\" \"2.3.0\"");
    assert_eq!(received["am"][1], "\"resolved\" \"2.3.0\"");
    assert_eq!(w.total_received(), 8, "one firing and one resolved notice per channel: {received:?}");

    // Every attempt is recorded, for the dashboard.
    let notifications = w.store.notifications(None, 100).await.unwrap();
    assert_eq!(notifications.len(), 8);
    assert!(notifications.iter().all(|n| n.status == "delivered" && n.attempts == 1), "{notifications:?}");

    // The alerting metrics (process-wide: other tests add to them too).
    let metrics = w.app.client.get(format!("{}/metrics", w.app.address)).send().await.unwrap().text().await.unwrap();
    let value = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {series} in {metrics}"))
    };
    assert!(value(r#"synchealth_notifications_total{channel="hook",outcome="sent"}"#) >= 2.0);
    assert!(
        value(r#"synchealth_notifications_total{channel="hook",outcome="failed"}"#) >= 0.0,
        "present from the start"
    );
    assert!(value("synchealth_alert_evaluations_total") >= 4.0);
    assert!(value("synchealth_alert_evaluation_errors_total") >= 0.0);
    for state in ["ok", "pending", "firing", "resolved"] {
        assert!(value(&format!("synchealth_alert_instances{{state=\"{state}\"}}")) >= 0.0);
    }
    smtp.stop().await;
}

async fn two_evaluator_replicas_send_each_notification_once(backend: Backend) {
    let Some(w) = world(backend, "alerts_replicas", 20, false).await else {
        return;
    };
    // Each replica with a store handle of its own on the same database, as
    // two processes have: nothing in memory is shared between them.
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = synchealth::startup::open_store(&w.settings).await.unwrap();
        let evaluator = alerts_role::evaluator(store, &w.settings.alerts).unwrap();
        replicas.push(tokio::spawn(evaluator.run(INTERVAL)));
    }
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    w.spike().await;
    wait_for("every channel", Duration::from_secs(10), || (w.total_received() >= 4).then_some(())).await;
    evaluations_later(&w.store, 4).await;
    assert_eq!(w.total_received(), 4, "each channel told once: {:?}", w.received());
    for replica in replicas {
        replica.abort();
    }
    smtp.stop().await;
}

#[tokio::test]
async fn a_restarted_alerts_role_carries_on_without_a_duplicate() {
    let Some(w) = world(Backend::Sqlite, "alerts_restart", 20, false).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let first = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    w.spike().await;
    wait_for("every channel", Duration::from_secs(10), || (w.total_received() == 4).then_some(())).await;
    // Stopped once it has recorded the four deliveries: a notice received
    // but still `pending` in the store is resumed by the next process on
    // purpose (delivery is at least once), which is not what this tests.
    let started = Instant::now();
    loop {
        let notifications = w.store.notifications(None, 100).await.unwrap();
        if notifications.iter().filter(|n| n.status == "delivered").count() == 4 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "deliveries not recorded: {notifications:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    first.abort();
    // A new process: a new lease holder, which takes over once the old
    // lease (3 s) runs out, with the firing state read from the store.
    let stopped_ms = OffsetDateTime::now_utc().unix_timestamp() * 1000 + 999;
    let second = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    // The proof it moved on: the new process evaluating (after the old
    // lease ran out), then twice more.
    let started = Instant::now();
    while !w.store.alert_instances().await.unwrap().iter().any(|i| i.last_evaluated_ms > stopped_ms) {
        assert!(started.elapsed() < Duration::from_secs(15), "the new process never evaluated");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    evaluations_later(&w.store, 2).await;
    assert_eq!(w.total_received(), 4, "no notice sent again after the restart: {:?}", w.received());
    let instance = w
        .store
        .alert_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.segment.as_deref() == Some("app_version=2.3.0"));
    let instance = instance.expect("the 2.3.0 instance is stored");
    assert_eq!(instance.state, "firing");
    assert!(
        instance.last_evaluated_ms > OffsetDateTime::now_utc().unix_timestamp() * 1000 - 3000,
        "the new process evaluates"
    );
    // And it still resolves, once.
    w.ingest(release_events("2.3.0", 0, 970)).await;
    wait_for("the resolutions", Duration::from_secs(10), || (w.total_received() == 8).then_some(())).await;
    second.abort();
    smtp.stop().await;
}

#[tokio::test]
async fn two_failing_releases_make_one_email_and_one_alertmanager_group_and_a_resolution_threads_under_its_firing_email(
) {
    let Some(w) = world(Backend::Sqlite, "alerts_grouping", 20, true).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let mut events = release_events("2.3.0", 30, 30);
    events.extend(release_events("2.4.0", 40, 20));
    w.ingest(events).await;

    // The generic webhook is one instance per request (schema v1): two.
    wait_for("both generic webhooks", Duration::from_secs(10), || (w.hooks.on("hook").len() == 2).then_some(())).await;
    let am = wait_for("the Alertmanager message", Duration::from_secs(10), || w.hooks.on("am").first().cloned()).await;
    let email = wait_for("the email", Duration::from_secs(10), || w.emails().first().cloned()).await;
    let am = am.body;
    let alerts = am["alerts"].as_array().unwrap();
    assert_eq!(alerts.len(), 2, "one message with both segments: {am}");
    let versions: Vec<&str> = alerts.iter().map(|a| a["labels"]["app_version"].as_str().unwrap()).collect();
    assert_eq!(versions, ["2.3.0", "2.4.0"]);
    assert_eq!(am["groupLabels"], json!({"alertname": RULE, "project": "default"}));
    // Alertmanager's groupKey: route key, ":", the group labels as a label set.
    assert_eq!(am["groupKey"], format!("{{}}:{{alertname=\"{RULE}\", project=\"default\"}}"));
    assert_eq!(am["commonLabels"]["alertname"], RULE);
    assert!(am["commonLabels"].get("app_version").is_none(), "the segments differ: {am}");
    assert!(alerts.iter().all(|a| a["endsAt"] == "0001-01-01T00:00:00Z" && a["status"] == "firing"));
    assert_eq!(email["subject"], "[2 FIRING] success rate < 95% — release 2.3.0, release 2.4.0");
    assert_eq!(email["auto_submitted"], "auto-generated");
    let firing_id = email["message_id"].as_str().unwrap().to_string();
    assert!(firing_id.starts_with("<synchealth.") && firing_id.ends_with("@example.com>"), "{firing_id}");
    assert!(email["in_reply_to"].is_null(), "a firing email starts a thread: {email}");
    let slack = w.hooks.on("slack");
    assert_eq!(slack.len(), 1, "one Slack message for the group");

    // 2.3.0 recovers, 2.4.0 does not.
    w.ingest(release_events("2.3.0", 0, 970)).await;
    let resolved = wait_for("the resolution email", Duration::from_secs(10), || w.emails().get(1).cloned()).await;
    assert_eq!(resolved["subject"], "[RESOLVED] success rate back to 97.1% (alert: < 95%) — release 2.3.0");
    assert_eq!(resolved["in_reply_to"].as_str(), Some(firing_id.as_str()), "threads under its firing email");
    assert_eq!(resolved["references"].as_str(), Some(firing_id.as_str()));
    assert_ne!(resolved["message_id"].as_str(), Some(firing_id.as_str()));
    let am2 =
        wait_for("the second Alertmanager message", Duration::from_secs(10), || w.hooks.on("am").get(1).cloned()).await;
    let am2 = am2.body;
    assert_eq!(am2["status"], "firing", "2.4.0 still fires: {am2}");
    assert_eq!(am2["groupKey"], am["groupKey"]);
    let alerts2 = am2["alerts"].as_array().unwrap();
    assert_eq!(alerts2.len(), 2, "the group's whole state: {am2}");
    let by_version =
        |alerts: &[Value], v: &str| alerts.iter().find(|a| a["labels"]["app_version"] == v).cloned().unwrap();
    let (before, after) = (by_version(alerts, "2.3.0"), by_version(alerts2, "2.3.0"));
    assert_eq!(after["status"], "resolved");
    assert_eq!(after["startsAt"], before["startsAt"], "startsAt is fixed per fingerprint");
    assert_eq!(after["fingerprint"], before["fingerprint"]);
    assert_ne!(after["endsAt"], "0001-01-01T00:00:00Z");
    let still = by_version(alerts2, "2.4.0");
    assert_eq!(
        (still["status"].as_str(), still["startsAt"].clone()),
        (Some("firing"), by_version(alerts, "2.4.0")["startsAt"].clone())
    );
    smtp.stop().await;
}

#[tokio::test]
async fn a_hostile_app_version_reaches_slack_and_email_escaped() {
    let Some(w) = world(Backend::Sqlite, "alerts_escaping", 20, true).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let hostile = "<!channel> <https://evil.example/login|Open dashboard>";
    w.ingest((0..60).map(|i| sync_event(&format!("dev-hostile-{}", i % 25), hostile, i >= 30)).collect()).await;
    let slack = wait_for("the Slack message", Duration::from_secs(10), || w.hooks.on("slack").first().cloned()).await;
    let raw = String::from_utf8(slack.raw.clone()).unwrap();
    assert!(raw.contains("&lt;!channel&gt; &lt;https://evil.example/login|Open dashboard&gt;"), "{raw}");
    for block in slack.body["blocks"].as_array().unwrap() {
        let text = block.to_string();
        if text.contains("\"mrkdwn\"") {
            assert!(!text.contains("<!channel>") && !text.contains("<https://evil"), "unescaped mrkdwn: {text}");
        }
    }
    assert!(!slack.body["text"].as_str().unwrap().contains('<'), "{}", slack.body["text"]);
    let email = wait_for("the email", Duration::from_secs(10), || w.emails().first().cloned()).await;
    let html = email["html"].as_str().unwrap();
    assert!(html.contains("&lt;!channel&gt;") && !html.contains("<!channel>"), "{html}");
    smtp.stop().await;
}

#[tokio::test]
async fn a_shipped_rule_whose_channel_is_not_configured_shows_no_channel_configured_not_a_failed_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut settings) = test_settings(Backend::Sqlite, "alerts_no_channel", dir.path()) else {
        return;
    };
    settings.alerts.evaluation_interval = "1s".into();
    // The shipped success-rate rule, channel `email` as shipped, made quick.
    let shipped = Rule::defaults().remove(0);
    assert_eq!(shipped.channels, ["email"]);
    let quick = Rule { pending_for: time::Duration::ZERO, evaluation_delay: time::Duration::ZERO, ..shipped };
    settings.alerts.rules = vec![quick];
    settings.alerts.channels = BTreeMap::new();
    let app = Application::build(settings, Roles::ALL).await.expect("application builds");
    let store = app.store();
    let app = serve(app, dir);
    // Before anything fired, the rule itself says its channel is missing.
    let cookie = crate::pages::login(&app.address, "admin", crate::helpers::ADMIN_PASSWORD).await;
    let (_, before) = crate::pages::page(&app.address, &cookie, "/alerts").await;
    assert!(before.contains("no channel configured</span> email"), "{before}");
    let response = app.post_batch(&batch(release_events("2.3.0", 40, 20))).await;
    assert!(response.status().is_success());
    let started = Instant::now();
    let record = loop {
        if let Some(n) = store.notifications(None, 10).await.unwrap().into_iter().next() {
            break n;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no notification recorded");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!((record.channel.as_str(), record.status.as_str(), record.attempts), ("email", "unconfigured", 0));
    assert_eq!(record.last_error, None, "nothing was tried, nothing failed");
    let cookie = crate::pages::login(&app.address, "admin", crate::helpers::ADMIN_PASSWORD).await;
    let (status, body) = crate::pages::page(&app.address, &cookie, "/alerts").await;
    assert_eq!(status, 200);
    assert!(body.contains("no channel configured"), "{body}");
    assert!(!body.contains(">failed<"), "not shown as a failed delivery: {body}");
}

#[tokio::test]
async fn a_silenced_segment_sends_nothing_while_its_state_still_shows() {
    let Some(w) = world(Backend::Sqlite, "alerts_silence", 20, true).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let project = ProjectName::parse("default").unwrap();
    let silence = alerts_cmd::silence(
        &w.store,
        &w.settings.alerts.rules,
        &project,
        RULE,
        Some("app_version=2.3.0".into()),
        "2h",
        "known bad release".into(),
    )
    .await
    .unwrap();
    assert_eq!(w.store.silences(0).await.unwrap(), vec![silence.clone()]);
    // 2.3.0 (silenced) and 2.1.0 (not) both fail.
    let mut events = release_events("2.3.0", 30, 30);
    events.extend(release_events("2.1.0", 30, 30));
    w.ingest(events).await;
    wait_for("the 2.1.0 notices", Duration::from_secs(10), || (w.total_received() == 4).then_some(())).await;
    evaluations_later(&w.store, 3).await;
    assert!(
        w.received().values().flatten().all(|notice| notice.contains("2.1.0")),
        "only the unsilenced release is notified: {:?}",
        w.received()
    );
    let instances = w.store.alert_instances().await.unwrap();
    let silenced = instances.iter().find(|i| i.segment.as_deref() == Some("app_version=2.3.0")).unwrap();
    assert_eq!(silenced.state, "firing", "a silenced alert still shows its state");
    assert_eq!(silenced.silenced_until_ms, Some(silence.ends_at_ms));
    smtp.stop().await;
}

#[tokio::test]
async fn email_is_retried_while_the_smtp_server_is_down_and_delivered_when_it_returns() {
    let Some(w) = world(Backend::Sqlite, "alerts_smtp_down", 20, true).await else {
        return;
    };
    w.spike().await;
    // The webhooks go out at once: a failing channel does not hold them up.
    wait_for("the webhooks", Duration::from_secs(10), || (w.total_received() == 3).then_some(())).await;
    let started = Instant::now();
    let failing = loop {
        let notifications = w.store.notifications(None, 10).await.unwrap();
        if let Some(n) = notifications.into_iter().find(|n| n.channel == "email" && n.attempts >= 2) {
            break n;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for failed email attempts");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(failing.status, "pending");
    assert!(failing.last_error.as_deref().unwrap_or("").contains("smtp"), "{failing:?}");
    assert!(w.emails().is_empty());

    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let email = wait_for("the email", Duration::from_secs(10), || w.emails().first().cloned()).await;
    assert_eq!(email["subject"], "[FIRING] success rate 50% < 95% — release 2.3.0");
    let record = settled_email_record(&w.store).await;
    assert_eq!(record.id, failing.id, "the same notification, retried");
    assert_eq!(record.status, "delivered");
    assert!(record.attempts > failing.attempts);
    evaluations_later(&w.store, 2).await;
    assert_eq!(w.emails().len(), 1, "delivered once");
    smtp.stop().await;
}

#[tokio::test]
async fn min_events_keeps_a_handful_of_failures_quiet() {
    let Some(w) = world(Backend::Sqlite, "alerts_min_events", 40, true).await else {
        return;
    };
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    // 30 events, every one failed: below min_events = 40.
    w.ingest(release_events("2.3.0", 30, 0)).await;
    // Until an evaluation has seen the 30 events, then two more.
    wait_for_instance_events(&w.store, 30).await;
    evaluations_later(&w.store, 2).await;
    assert_eq!(w.total_received(), 0, "{:?}", w.received());
    let instance = w
        .store
        .alert_instances()
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.segment.as_deref() == Some("app_version=2.3.0"));
    let instance = instance.expect("the instance is evaluated");
    assert_eq!((instance.state.as_str(), instance.verdict.as_str(), instance.events), ("ok", "insufficient_data", 30));
    // Ten more failures reach min_events: now it fires.
    w.ingest(release_events("2.3.0", 10, 0)).await;
    wait_for("the notices", Duration::from_secs(10), || (w.total_received() == 4).then_some(())).await;
    smtp.stop().await;
}
