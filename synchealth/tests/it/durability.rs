//! "Ack means durable", against a private ClickHouse each test starts, kills,
//! stops, pauses and restarts (never the shared one): whatever the collector
//! acknowledged is in the store exactly once after the store or the collector
//! went away and came back.
//!
//! Posters behave like the probe: each batch is retried until it is
//! acknowledged, so at the end the stored events must be exactly the
//! acknowledged ones. Ingest keys are cached for a short TTL and looked up in
//! the store, so while the store is down a key whose cache entry expired is
//! refused (503, not acknowledged). The tests that need acknowledgements
//! *during* an outage therefore use a key first used right before it, so its
//! entry is fresh. A graceful ClickHouse stop keeps serving the connections
//! it has open for a second or two after it stops accepting new ones, so
//! there "right before" means relaying through fresh keys until a lookup
//! fails.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use synchealth::settings::IngestSettings;
use synchealth::{Application, Roles, Settings};
use synchealth_collector::hash_ingest_key;
use synchealth_schema::ProjectName;
use synchealth_store::{IngestKey, SharedStore};

use crate::helpers::{
    batch, clickhouse_url, event, test_settings, up_args, wait_until_drained, Backend, Binary, ADMIN_PASSWORD,
    INGEST_KEY,
};

/// A second key of the default project, first used right before an outage.
const OUTAGE_KEY: &str = "shk_test_outage_key_fedcba9876543210";
/// Events per batch posted during an outage.
const OUTAGE_BATCH: usize = 50;
/// Keys of the default project, each used once, in turn, while ClickHouse stops.
const RELAY_KEYS: usize = 100;

fn relay_key(i: usize) -> String {
    format!("shk_test_relay_key_{i:04}")
}

/// A ClickHouse server of one test, driven by `scripts/clickhouse.sh`.
struct PrivateClickHouse {
    dir: tempfile::TempDir,
    url: String,
}

impl PrivateClickHouse {
    async fn start() -> Arc<PrivateClickHouse> {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = script("start", &dir.path().join("ch")).await;
        Arc::new(PrivateClickHouse { dir, url })
    }

    /// Stops it gracefully, meanwhile posting one event at a time with a
    /// new key each time, until a key's lookup fails: the store is then
    /// unreachable for the collector (the server refuses new connections and
    /// has closed the open ones), though the process may still be exiting.
    /// Returns the last key that authenticated, whose cache entry is at most
    /// a moment old, and the stop to await.
    async fn stop_keeping_a_fresh_key(
        self: &Arc<Self>,
        base: &str,
        ledger: &Ledger,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let server = Arc::clone(self);
        let stopping = tokio::spawn(async move { server.stop().await });
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let mut fresh = None;
        for i in 0..RELAY_KEYS {
            let body = batch(vec![event(&format!("relay-{i}"), 1, true, 10)]);
            ledger.posted(&body);
            match post(&client, base, &relay_key(i), &body).await {
                Posted::Acked(_) => {
                    ledger.acked(&body);
                    fresh = Some(relay_key(i));
                }
                Posted::Refused { status: 503, body, .. } if body["error"] == "storage unavailable" => {
                    let fresh = fresh.expect("no key authenticated while ClickHouse was stopping");
                    return (fresh, stopping);
                }
                other => panic!("unexpected answer while ClickHouse stops: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ClickHouse still answered after {RELAY_KEYS} keys");
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("ch")
    }

    /// SIGTERM, and wait for the process to exit.
    async fn stop(&self) {
        script("stop", &self.data()).await;
    }

    /// Starts it again on the same ports and data.
    async fn restart(&self) {
        let url = script("restart", &self.data()).await;
        assert_eq!(url, self.url);
    }

    /// SIGKILL: dead at once, though its sockets close only once the
    /// process is torn down (a second or so: until then connections hang).
    async fn kill(&self) {
        script("kill", &self.data()).await;
    }

    /// SIGSTOP: a hung server.
    async fn pause(&self) {
        script("pause", &self.data()).await;
    }

    async fn resume(&self) {
        script("resume", &self.data()).await;
    }

    async fn answers(&self) -> bool {
        let ping =
            reqwest::Client::new().get(format!("{}/ping", self.url)).timeout(Duration::from_millis(300)).send().await;
        ping.is_ok_and(|r| r.status().is_success())
    }

    async fn query(&self, sql: &str) -> String {
        let response = reqwest::Client::new().post(&self.url).body(sql.to_string()).send().await.expect("query sent");
        let status = response.status();
        let text = response.text().await.expect("query answer");
        assert!(status.is_success(), "{sql}: {text}");
        text
    }

    /// Every stored event id, and how many rows hold them. Read without
    /// FINAL: the rollups behind the metrics count every inserted row, and
    /// FINAL would hide exactly the duplicate rows this looks for.
    async fn stored_ids(&self, database: &str) -> (HashSet<String>, usize) {
        let sql = format!("SELECT toString(event_id) FROM {database}.events FORMAT TabSeparated");
        let rows: Vec<String> = self.query(&sql).await.lines().map(str::to_string).collect();
        let total = rows.len();
        (rows.into_iter().collect(), total)
    }
}

impl Drop for PrivateClickHouse {
    fn drop(&mut self) {
        let _ = Command::new(script_path()).arg("stop").arg(self.data()).status();
    }
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/clickhouse.sh")
}

async fn script(command: &str, dir: &Path) -> String {
    let output =
        tokio::process::Command::new(script_path()).arg(command).arg(dir).output().await.expect("clickhouse.sh runs");
    assert!(output.status.success(), "clickhouse.sh {command}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// What a post came back with.
#[derive(Debug)]
enum Posted {
    Acked(Value),
    Refused { status: u16, body: Value, retry_after: Option<String> },
    Failed(#[allow(dead_code)] String), // read through Debug, in failure messages
}

async fn post(client: &reqwest::Client, base: &str, key: &str, body: &Value) -> Posted {
    let sent = client.post(format!("{base}/v1/events")).bearer_auth(key).json(body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(e) => return Posted::Failed(e.to_string()),
    };
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_string);
    match response.json::<Value>().await {
        Ok(body) if status == 200 => Posted::Acked(body),
        Ok(body) => Posted::Refused { status, body, retry_after },
        Err(e) => Posted::Failed(format!("{status}: {e}")),
    }
}

/// An acknowledgement accounts for every event: accepted now, or already
/// stored by an earlier try.
fn assert_answer_counts_every_event(answer: &Value, events: usize) {
    let counted = answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap();
    assert_eq!(counted, events as u64, "{answer}");
}

fn event_ids(body: &Value) -> Vec<String> {
    body["events"].as_array().expect("events").iter().map(|e| e["event_id"].as_str().expect("id").to_string()).collect()
}

/// Events posted and acknowledged, shared by the posters of a test.
#[derive(Default)]
struct Ledger {
    posted: Mutex<HashSet<String>>,
    acked: Mutex<HashSet<String>>,
}

impl Ledger {
    fn posted(&self, body: &Value) {
        self.posted.lock().unwrap().extend(event_ids(body));
    }

    fn acked(&self, body: &Value) {
        self.acked.lock().unwrap().extend(event_ids(body));
    }

    fn acked_ids(&self) -> HashSet<String> {
        self.acked.lock().unwrap().clone()
    }

    fn posted_ids(&self) -> HashSet<String> {
        self.posted.lock().unwrap().clone()
    }
}

/// A client app: posts batches of `size` events until `stop`, each batch
/// retried (as the probe does) until acknowledged, at `base` as it is now.
fn spawn_poster(
    base: Arc<RwLock<String>>,
    key: &'static str,
    size: usize,
    ledger: Arc<Ledger>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let body = batch((0..size).map(|i| event(&format!("p{n}-{i}"), 2, i % 5 != 0, 100 + i as u64)).collect());
            ledger.posted(&body);
            // Bounded: a batch not acknowledged within this is left out
            // (never acknowledged, so the test may find it stored or not).
            let deadline = Instant::now() + Duration::from_secs(25);
            while Instant::now() < deadline {
                let url = base.read().unwrap().clone();
                match post(&client, &url, key, &body).await {
                    Posted::Acked(answer) => {
                        assert_answer_counts_every_event(&answer, size);
                        ledger.acked(&body);
                        break;
                    }
                    Posted::Refused { status, .. } => assert_eq!(status, 503, "only a 503 is expected here"),
                    Posted::Failed(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    })
}

/// The product in this process over a private ClickHouse.
struct InProcess {
    base: String,
    store: SharedStore,
    database: String,
    _dir: tempfile::TempDir,
}

async fn spawn_app(clickhouse: &PrivateClickHouse, name: &str, ingest: IngestSettings) -> InProcess {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = test_settings(Backend::ClickHouse, name, dir.path()).expect("ClickHouse settings");
    settings.clickhouse.url = Some(clickhouse.url.clone());
    settings.ingest = ingest;
    let database = settings.clickhouse.database.clone();
    let app = Application::build(settings, Roles::ALL).await.expect("application builds");
    let store = app.store();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let keys: Vec<String> = (0..RELAY_KEYS).map(relay_key).chain([OUTAGE_KEY.to_string()]).collect();
    add_keys(&store, &keys).await;
    InProcess { base, store, database, _dir: dir }
}

async fn add_keys(store: &SharedStore, keys: &[String]) {
    for key in keys {
        let key = IngestKey {
            key_hash: hash_ingest_key(key),
            project: ProjectName::parse("default").unwrap(),
            label: "durability test key".into(),
            created_at_ms: 0,
            revoked: false,
            allowed_origins: vec![],
        };
        store.put_ingest_key(&key).await.expect("key stored");
    }
}

/// Fast settings for tests: short batches, a short insert timeout, quick replays.
fn quick_ingest() -> IngestSettings {
    IngestSettings {
        max_batch_age_ms: 20,
        insert_timeout_ms: 500,
        replay_backoff_min_ms: 50,
        replay_backoff_max_ms: 300,
        ..IngestSettings::default()
    }
}

async fn readyz(client: &reqwest::Client, base: &str) -> Option<(u16, Value)> {
    let response = client.get(format!("{base}/readyz")).timeout(Duration::from_secs(5)).send().await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

async fn summary_events(base: &str, password: &str) -> u64 {
    crate::process::summary(base, password).await["events"].as_u64().unwrap()
}

/// What [`post_during_outage`] saw.
#[derive(Debug, Default)]
struct OutagePosts {
    acked: usize,
    slowest_ack: Duration,
    /// Every answer that was not an acknowledgement, for failure messages.
    refusals: Vec<String>,
}

/// Posts batches with `key` for `during` (at least one), sequentially.
async fn post_during_outage(base: &str, key: &str, ledger: &Ledger, during: Duration) -> OutagePosts {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut seen = OutagePosts::default();
    let until = Instant::now() + during;
    loop {
        let body = batch((0..OUTAGE_BATCH).map(|i| event(&format!("outage-{i}"), 1, true, 10)).collect());
        ledger.posted(&body);
        let started = Instant::now();
        match post(&client, base, key, &body).await {
            Posted::Acked(answer) => {
                assert_answer_counts_every_event(&answer, OUTAGE_BATCH);
                ledger.acked(&body);
                seen.acked += 1;
                seen.slowest_ack = seen.slowest_ack.max(started.elapsed());
            }
            other => seen.refusals.push(format!("after {:?}: {other:?}", started.elapsed())),
        }
        if Instant::now() >= until {
            return seen;
        }
    }
}

/// Every acknowledged event is stored once, and nothing was stored that was
/// not posted; returns how many are stored.
async fn assert_acked_stored_once(clickhouse: &PrivateClickHouse, database: &str, ledger: &Ledger) -> usize {
    let (stored, rows) = clickhouse.stored_ids(database).await;
    assert_eq!(rows, stored.len(), "an event is stored twice");
    let acked = ledger.acked_ids();
    let missing: Vec<_> = acked.difference(&stored).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events are missing, e.g. {missing:?}",
        acked.len() - stored.len().min(acked.len())
    );
    let posted = ledger.posted_ids();
    assert!(stored.is_subset(&posted), "stored events that were never posted");
    stored.len()
}

/// Bytes of records (headers aside) in the spool segments under `dir`.
fn spooled_record_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .map(|e| e.metadata().map_or(0, |m| m.len().saturating_sub(16)))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_stored_once_when_clickhouse_dies_mid_ingest_and_comes_back() {
    let Some(_) = clickhouse_url() else { return };
    let clickhouse = PrivateClickHouse::start().await;
    let app = spawn_app(&clickhouse, "stop_start", quick_ingest()).await;
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let base = Arc::new(RwLock::new(app.base.clone()));
    let posters: Vec<_> =
        (0..3).map(|_| spawn_poster(base.clone(), INGEST_KEY, 100, ledger.clone(), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(800)).await;

    // Its first use: cached from now, so it authenticates into the outage.
    let warm = post_during_outage(&app.base, OUTAGE_KEY, &ledger, Duration::ZERO).await;
    assert_eq!(warm.acked, 1, "{warm:?}");
    // Killed, not stopped gracefully: a graceful stop keeps serving open
    // connections until it exits (see the spool-full test for that path).
    clickhouse.kill().await;
    let down = post_during_outage(&app.base, OUTAGE_KEY, &ledger, Duration::from_millis(700)).await;
    assert!(down.acked > 0, "nothing was acknowledged while ClickHouse was down: {down:?}");
    let (status, ready) = readyz(&reqwest::Client::new(), &app.base).await.expect("readyz answers");
    assert_eq!(status, 503, "{ready}");
    assert!(ready["spool"]["bytes"].as_u64().unwrap() > 0, "acknowledged from the spool: {ready}");
    assert_eq!(ready["spool"]["store_healthy"], false);
    assert!(!clickhouse.answers().await);

    clickhouse.restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for poster in posters {
        poster.await.unwrap();
    }
    wait_until_drained(&app.base).await;

    let stored = assert_acked_stored_once(&clickhouse, &app.database, &ledger).await;
    let acked = ledger.acked_ids().len();
    assert_eq!(stored, acked, "stored events that were never acknowledged");
    assert_eq!(summary_events(&app.base, ADMIN_PASSWORD).await, acked as u64);
    assert_eq!(app.store.kind(), "clickhouse");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9_of_the_collector_mid_ingest_and_are_stored_once() {
    let Some(_) = clickhouse_url() else { return };
    let clickhouse = PrivateClickHouse::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("synchealth.toml");
    std::fs::write(
        &config,
        "[ingest]\nmax_batch_age_ms = 20\ninsert_timeout_ms = 300\nreplay_backoff_min_ms = 50\nreplay_backoff_max_ms = 300\n",
    )
    .unwrap();
    let args = up_args(&clickhouse.url, "synchealth", &config);
    let data_dir = dir.path().join("data");
    let first = Binary::start(&data_dir, &args).await;
    let mut settings = Settings::default();
    settings.clickhouse.url = Some(clickhouse.url.clone());
    let store = synchealth::open_store(&settings).await.unwrap();
    add_keys(&store, &[OUTAGE_KEY.to_string()]).await;

    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let base = Arc::new(RwLock::new(first.base.clone()));
    let posters: Vec<_> =
        (0..3).map(|_| spawn_poster(base.clone(), INGEST_KEY, 100, ledger.clone(), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(800)).await;

    // A hung store: inserts time out and go to the spool, then the
    // collector dies with posters in flight and the spool not replayed.
    let warm = post_during_outage(&first.base, OUTAGE_KEY, &ledger, Duration::ZERO).await;
    assert_eq!(warm.acked, 1, "{warm:?}");
    clickhouse.pause().await;
    let hung = post_during_outage(&first.base, OUTAGE_KEY, &ledger, Duration::from_millis(700)).await;
    assert!(hung.acked > 0, "nothing was acknowledged while ClickHouse hung: {hung:?}");
    let spool = data_dir.join("spool");
    assert!(spooled_record_bytes(&spool) > 0, "acknowledged from the spool");
    first.kill_9();
    clickhouse.resume().await;

    let second = Binary::start(&data_dir, &args).await;
    *base.write().unwrap() = second.base.clone();
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop.store(true, Ordering::Relaxed);
    for poster in posters {
        poster.await.unwrap();
    }
    wait_until_drained(&second.base).await;
    assert_eq!(spooled_record_bytes(&spool), 0);

    let stored = assert_acked_stored_once(&clickhouse, "synchealth", &ledger).await;
    // Requests in flight at the kill may be stored without an answer.
    assert!(stored >= ledger.acked_ids().len());
    assert_eq!(summary_events(&second.base, ADMIN_PASSWORD).await, stored as u64);
    second.kill_9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_answers_503_with_retry_after_and_loses_nothing_acknowledged() {
    let Some(_) = clickhouse_url() else { return };
    let clickhouse = PrivateClickHouse::start().await;
    let ingest = IngestSettings { spool_max_bytes: 64 * 1024, ..quick_ingest() };
    let app = spawn_app(&clickhouse, "spool_full", ingest).await;
    let ledger = Ledger::default();
    let (fresh, stopping) = clickhouse.stop_keeping_a_fresh_key(&app.base, &ledger).await;
    let acked_before_outage = ledger.acked_ids().len();

    // About 6 KB of spool per batch: some fit, then the collector refuses.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let mut refused = None;
    for n in 0..40 {
        let body = batch((0..50).map(|i| event(&format!("full-{n}-{i}"), 1, true, 10)).collect());
        ledger.posted(&body);
        match post(&client, &app.base, &fresh, &body).await {
            Posted::Acked(_) => ledger.acked(&body),
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    assert!(ledger.acked_ids().len() > acked_before_outage, "the spool took nothing");
    let Some(Posted::Refused { status, body, retry_after }) = refused else { panic!("never refused: {refused:?}") };
    assert_eq!(status, 503);
    assert_eq!(body["error"], "overloaded", "{body}");
    let retry_after: u64 = retry_after.expect("Retry-After").parse().expect("whole seconds");
    assert!((1..=60).contains(&retry_after));
    let (status, ready) = readyz(&client, &app.base).await.unwrap();
    assert_eq!(status, 503);
    assert!(ready["spool"]["bytes"].as_u64().unwrap() <= 64 * 1024, "{ready}");
    assert!(ready["spool"]["bytes"].as_u64().unwrap() >= ready["spool"]["high_water_bytes"].as_u64().unwrap());
    stopping.await.unwrap();

    clickhouse.restart().await;
    wait_until_drained(&app.base).await;
    let stored = assert_acked_stored_once(&clickhouse, &app.database, &ledger).await;
    assert_eq!(stored, ledger.acked_ids().len(), "a refused batch was stored");
    assert_eq!(summary_events(&app.base, ADMIN_PASSWORD).await, stored as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_clickhouse_does_not_hold_acknowledgements_past_the_insert_timeout() {
    let Some(_) = clickhouse_url() else { return };
    let clickhouse = PrivateClickHouse::start().await;
    let app = spawn_app(&clickhouse, "hung", quick_ingest()).await;
    let ledger = Ledger::default();
    let warm = post_during_outage(&app.base, OUTAGE_KEY, &ledger, Duration::ZERO).await;
    assert_eq!(warm.acked, 1, "{warm:?}");

    clickhouse.pause().await;
    let hung = post_during_outage(&app.base, OUTAGE_KEY, &ledger, Duration::from_millis(1000)).await;
    // The first waits for the 500 ms insert timeout; the next ones skip the
    // store it marked unhealthy and are answered from the spool.
    assert!(hung.acked >= 3, "too few acknowledged while ClickHouse hung: {hung:?}");
    assert!(hung.slowest_ack < Duration::from_millis(1500), "{hung:?}");
    clickhouse.resume().await;

    wait_until_drained(&app.base).await;
    let stored = assert_acked_stored_once(&clickhouse, &app.database, &ledger).await;
    assert_eq!(stored, ledger.acked_ids().len());
    assert_eq!(summary_events(&app.base, ADMIN_PASSWORD).await, stored as u64);
}
