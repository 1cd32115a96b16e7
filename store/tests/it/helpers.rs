//! Shared pieces of the conformance suite: a fresh store per test and
//! backend, a seeded fixture generator, and the brute-force expectations the
//! stores are checked against. The expectations are computed here from the
//! raw fixture rows, with none of the store code, so a bug shared by both
//! stores still shows.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use synchealth_schema::{unix_ms, ProjectName, StoredEvent, SyncEvent};
use synchealth_store::metrics::DEFAULT_QUEUE_THRESHOLD;
use synchealth_store::{
    Aggregate, ClickHouseConfig, ClickHouseStore, ClusterConfig, Database, Filters, GroupKey, Grouping, Query,
    SharedStore, SqliteStore, Store, Summary,
};
use tempfile::TempDir;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

pub(crate) const HOUR_MS: i64 = 3_600_000;
pub(crate) const DAY_MS: i64 = 24 * HOUR_MS;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    ClickHouse,
    /// The same ClickHouse store in cluster mode, on the 2 x 2 cluster of
    /// `scripts/clickhouse-cluster.sh` (`SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_URLS`).
    Cluster,
}

/// The cluster `scripts/clickhouse-cluster.sh` starts.
pub(crate) const TEST_CLUSTER: &str = "synchealth_cluster";

/// The four node URLs of the test cluster (shard 1 replicas 1 and 2, then
/// shard 2's), or `None` when the cluster variants are skipped on purpose;
/// without both it panics, as [`fresh_store`] does for ClickHouse.
pub(crate) fn cluster_urls(test: &str) -> Option<Vec<String>> {
    match std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_URLS") {
        Ok(urls) if !urls.trim().is_empty() => Some(urls.split_whitespace().map(str::to_string).collect()),
        _ if std::env::var("SYNCHEALTH_TEST_SKIP_CLICKHOUSE_CLUSTER").is_ok_and(|v| v == "1") => {
            eprintln!("skipping the cluster variant of {test}: SYNCHEALTH_TEST_SKIP_CLICKHOUSE_CLUSTER=1");
            None
        }
        _ => panic!(
            "no ClickHouse cluster to test against: run scripts/test, or set \
             SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_URLS to the URLs scripts/clickhouse-cluster.sh start prints \
             (SYNCHEALTH_TEST_SKIP_CLICKHOUSE_CLUSTER=1 skips the cluster variants)"
        ),
    }
}

/// A fresh, migrated store, and what must live as long as it does.
pub(crate) struct TestStore {
    pub(crate) store: SharedStore,
    /// The SQLite file's directory, deleted on drop.
    pub(crate) dir: Option<TempDir>,
    /// The ClickHouse URL and test database, dropped after a passing test.
    pub(crate) clickhouse: Option<(String, String)>,
    /// Whether that database is on the test cluster (dropped `ON CLUSTER`).
    pub(crate) on_cluster: bool,
}

impl TestStore {
    /// Drops the ClickHouse test database. Only called once a test has
    /// passed: a failed test leaves its database behind to look at.
    pub(crate) async fn cleanup(self) {
        if let Some((url, database)) = &self.clickhouse {
            let client = clickhouse::Client::default().with_url(url).with_user("default");
            let on = if self.on_cluster { format!(" ON CLUSTER {TEST_CLUSTER}") } else { String::new() };
            if let Err(e) = client.query(&format!("DROP DATABASE IF EXISTS {database}{on}")).execute().await {
                eprintln!("could not drop the test database {database}: {e}");
            }
        }
    }

    /// The SQLite database file, for tests that reopen it.
    pub(crate) fn sqlite_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("synchealth.db"))
    }
}

/// A fresh, migrated store for `test`, or `None` when the ClickHouse
/// variants are skipped on purpose. Without a ClickHouse to test against and
/// no explicit skip this panics: a silently skipped half of the suite looks
/// green and proves nothing.
pub(crate) async fn fresh_store(backend: Backend, test: &str) -> Option<TestStore> {
    match backend {
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let store = SqliteStore::open(&dir.path().join("synchealth.db")).expect("opening the SQLite store");
            store.migrate().await.expect("migrating the SQLite store");
            Some(TestStore { store: Arc::new(store), dir: Some(dir), clickhouse: None, on_cluster: false })
        }
        Backend::ClickHouse => {
            // A URL wins over a skip: a ClickHouse that is there is used.
            let url = match std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_URL") {
                Ok(url) if !url.is_empty() => url,
                _ if std::env::var("SYNCHEALTH_TEST_SKIP_CLICKHOUSE").is_ok_and(|v| v == "1") => {
                    eprintln!("skipping the ClickHouse variant of {test}: SYNCHEALTH_TEST_SKIP_CLICKHOUSE=1");
                    return None;
                }
                _ => panic!(
                    "no ClickHouse to test against: run scripts/test, or set \
                     SYNCHEALTH_TEST_CLICKHOUSE_URL=http://127.0.0.1:PORT \
                     (SYNCHEALTH_TEST_SKIP_CLICKHOUSE=1 skips the ClickHouse variants)"
                ),
            };
            tally("clickhouse");
            let database = format!("test_{test}_{:08x}", rand::random::<u32>());
            let config = ClickHouseConfig {
                url: url.clone(),
                user: "default".into(),
                password: None,
                database: database.clone(),
            };
            let store = ClickHouseStore::connect(config)
                .await
                .unwrap_or_else(|e| panic!("connecting to the test ClickHouse at {url}: {e}"));
            store.migrate().await.unwrap_or_else(|e| panic!("migrating the test ClickHouse database: {e}"));
            Some(TestStore { store: Arc::new(store), dir: None, clickhouse: Some((url, database)), on_cluster: false })
        }
        Backend::Cluster => {
            let urls = cluster_urls(test)?;
            tally("cluster");
            let database = format!("test_{test}_{:08x}", rand::random::<u32>());
            let store = cluster_store(&urls[0], &database).await;
            store.migrate().await.unwrap_or_else(|e| panic!("migrating the test database on the cluster: {e}"));
            Some(TestStore {
                store: Arc::new(store),
                dir: None,
                clickhouse: Some((urls[0].clone(), database)),
                on_cluster: true,
            })
        }
    }
}

/// A store in cluster mode through the node at `url` (not migrated).
pub(crate) async fn cluster_store(url: &str, database: &str) -> ClickHouseStore {
    let config = ClickHouseConfig {
        url: url.to_string(),
        user: "default".into(),
        password: None,
        database: database.to_string(),
    };
    let store = ClickHouseStore::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting to the test cluster's node at {url}: {e}"));
    store.with_cluster(ClusterConfig { name: TEST_CLUSTER.into(), insert_quorum: 0 })
}

/// Conformance tests that do not hold on a cluster, by design: retention
/// drops the day partitions of the shard the store's node is in (18.16
/// cannot `ALTER ... ON CLUSTER` a replicated table; README, "Cluster mode").
const NOT_ON_CLUSTER: &[&str] = &["retention_deletes_only_events_older_than_the_limit"];

/// Runs one conformance test on a fresh store of `backend`.
pub(crate) async fn run<F, Fut>(backend: Backend, name: &str, test: F)
where
    F: FnOnce(SharedStore) -> Fut,
    Fut: Future<Output = ()>,
{
    if backend == Backend::Cluster && NOT_ON_CLUSTER.contains(&name) {
        eprintln!("{name} does not run on the cluster: see NOT_ON_CLUSTER");
        return;
    }
    let Some(fresh) = fresh_store(backend, name).await else { return };
    test(Arc::clone(&fresh.store)).await;
    fresh.cleanup().await;
}

/// Notes in the file `SYNCHEALTH_TEST_TALLY` names (when set) that the
/// running test really used `what` (`clickhouse`, `browser`), one line per
/// test, so the test command can say how many ran rather than skipped.
pub(crate) fn tally(what: &str) {
    use std::io::Write;
    let Ok(path) = std::env::var("SYNCHEALTH_TEST_TALLY") else { return };
    let test = std::thread::current().name().unwrap_or("?").to_string();
    // One short line per append: O_APPEND keeps lines whole across processes.
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        let _ = writeln!(file, "{what} {} {test}", env!("CARGO_PKG_NAME"));
    }
}

pub(crate) fn project(name: &str) -> ProjectName {
    ProjectName::parse(name).expect("a valid project name")
}

pub(crate) fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .expect("a time in range")
        .format(&Rfc3339)
        .expect("an RFC 3339 time")
}

pub(crate) fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// Validates `json` as the collector would and stamps it with the given
/// send and receive times.
pub(crate) fn stamp(project: &ProjectName, json: Value, sent_ms: i64, received_ms: i64) -> StoredEvent {
    let event = SyncEvent::from_json(json.clone()).unwrap_or_else(|e| panic!("fixture event {json}: {e:?}"));
    let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).expect("a time in range");
    StoredEvent::new(project.clone(), event, at(sent_ms), at(received_ms))
}

/// A plain successful event of `device` at `occurred_ms`, sent a second later
/// from a device with a correct clock.
pub(crate) fn simple_event(project: &ProjectName, device: &str, occurred_ms: i64, queue_depth: u32) -> StoredEvent {
    simple_event_with_id(project, device, occurred_ms, queue_depth, Uuid::new_v4())
}

pub(crate) fn simple_event_with_id(
    project: &ProjectName,
    device: &str,
    occurred_ms: i64,
    queue_depth: u32,
    event_id: Uuid,
) -> StoredEvent {
    let json = json!({
        "event_id": event_id.to_string(),
        "device_id": device,
        "occurred_at": rfc3339(occurred_ms),
        "last_success_at": rfc3339(occurred_ms - 60_000),
        "success": true,
        "duration_ms": 250,
        "queue_depth": queue_depth,
        "app_version": "2.0.0",
        "os": "android",
        "network": "wifi",
    });
    stamp(project, json, occurred_ms + 1_000, occurred_ms + 1_020)
}

/// Start of the fixture day: midnight UTC two days ago, recent enough that
/// no store-side TTL can have removed it, old enough to be all in the past.
pub(crate) fn fixture_base_ms() -> i64 {
    (now_ms() / DAY_MS - 2) * DAY_MS
}

/// The window most tests query: 2 h to 22 h into the fixture day.
pub(crate) fn fixture_window(base_ms: i64) -> (i64, i64) {
    (base_ms + 2 * HOUR_MS, base_ms + 22 * HOUR_MS)
}

pub(crate) fn query(project: &ProjectName, (from_ms, to_ms): (i64, i64)) -> Query {
    Query {
        project: project.clone(),
        from_ms,
        to_ms,
        filters: Filters::default(),
        queue_threshold: DEFAULT_QUEUE_THRESHOLD,
    }
}

pub(crate) const APP_VERSIONS: [&str; 3] = ["1.9.0", "2.0.0", "2.1.0"];
pub(crate) const OSES: [&str; 3] = ["android", "ios", "windows"];

struct Device {
    id: String,
    os: &'static str,
    os_version: &'static str,
    model: Option<&'static str>,
    sample_rate: f64,
    /// `received - sent` beyond latency: how far the device clock is behind.
    skew_ms: i64,
    never_synced: bool,
    backed_up: bool,
}

/// A deterministic day of sync events for `project`: about 3,000 events from
/// 40 devices, with every case the metrics care about (sampling, failures,
/// conflicts, deep queues, never-synced devices, wrong clocks, ties in time,
/// events exactly on the window bounds).
pub(crate) fn fixture(project: &ProjectName, seed: u64, base_ms: i64) -> Vec<StoredEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    // Clock errors: far behind, ahead, a few minutes, and one just under the
    // tolerance (kept as is).
    let skews = [3 * HOUR_MS, -2 * HOUR_MS, 90_000, -45 * 60_000, 59_000];
    let devices: Vec<Device> = (0..40)
        .map(|i| Device {
            id: format!("dev-{i:02}"),
            os: OSES[i % 3],
            os_version: ["14", "17.2", "11"][i % 3],
            model: [Some("pixel-8"), Some("iphone-15"), None][(i / 3) % 3],
            sample_rate: *[1.0, 0.5, 0.25].choose(&mut rng).expect("non-empty"),
            skew_ms: skews.get(i).copied().unwrap_or(0),
            never_synced: i >= 36,
            backed_up: (10..16).contains(&i),
        })
        .collect();
    let networks = ["wifi", "wifi", "wifi", "cellular", "cellular", "ethernet", "offline", "unknown"];
    let triggers = ["app_open", "resume", "user", "local_write", "scheduled", "reconnect", "other"];
    let error_kinds = ["network", "timeout", "server", "auth", "validation", "conflict", "cancelled", "unknown"];
    let mut events = Vec::new();
    for device in &devices {
        let count = rng.gen_range(65..85);
        let mut previous_occurred: Option<i64> = None;
        for _ in 0..count {
            // Device-clock time such that the corrected time falls in the day.
            let occurred_ms = match previous_occurred {
                // Same instant as the previous event: "latest" must break
                // the tie on the event id.
                Some(prev) if rng.gen_bool(0.05) => prev,
                _ => base_ms - device.skew_ms + rng.gen_range(0..DAY_MS),
            };
            previous_occurred = Some(occurred_ms);
            let success = rng.gen_bool(0.8);
            let conflicts: u32 = if rng.gen_bool(0.1) { rng.gen_range(1..20) } else { 0 };
            let duration_ms = log_uniform(&mut rng, 5.0, 600_000.0);
            let queue_depth: u32 = if device.backed_up {
                *[1000, 1001, 1500, 2500, 4999].choose(&mut rng).expect("non-empty")
            } else if rng.gen_bool(0.02) {
                1000
            } else {
                rng.gen_range(0..60)
            };
            let last_success_ms = if device.never_synced || rng.gen_bool(0.03) {
                None
            } else {
                Some(occurred_ms - log_uniform(&mut rng, 1_000.0, 3.0 * DAY_MS as f64) as i64)
            };
            let mut json = json!({
                "event_id": Uuid::from_bytes(rng.gen()).to_string(),
                "device_id": device.id,
                "occurred_at": rfc3339(occurred_ms),
                "last_success_at": last_success_ms.map(rfc3339),
                "success": success,
                "duration_ms": duration_ms,
                "conflicts": conflicts,
                "queue_depth": queue_depth,
                "app_version": APP_VERSIONS.choose(&mut rng).expect("non-empty"),
                "os": device.os,
                "os_version": device.os_version,
                "network": networks.choose(&mut rng).expect("non-empty"),
                "device_model": device.model,
                "retries": rng.gen_range(0..4),
                "records_up": rng.gen_range(0..10_000),
                "records_down": rng.gen_range(0..10_000),
                "bytes_up": rng.gen_range(0..1_000_000_000u64),
                "bytes_down": rng.gen_range(0..1_000_000_000u64),
                "sample_rate": device.sample_rate,
            });
            if rng.gen_bool(0.8) {
                json["trigger"] = json!(triggers.choose(&mut rng).expect("non-empty"));
            }
            if rng.gen_bool(0.7) {
                json["sync_type"] = json!(["push", "pull", "full", "delta"].choose(&mut rng).expect("non-empty"));
            }
            if !success {
                json["error_kind"] = json!(error_kinds.choose(&mut rng).expect("non-empty"));
                if rng.gen_bool(0.7) {
                    json["error_message"] = json!(format!("sync failed: code {}", rng.gen_range(100..600)));
                }
            }
            let sent_ms = occurred_ms + rng.gen_range(0..30_000);
            let received_ms = sent_ms + device.skew_ms + rng.gen_range(5..800);
            events.push(stamp(project, json, sent_ms, received_ms));
        }
    }
    // Events exactly on the window bounds: `from` is in, `to` is out.
    let (from_ms, to_ms) = fixture_window(base_ms);
    for (i, at) in [from_ms, from_ms + 1, to_ms - 1, to_ms].into_iter().enumerate() {
        let event_id = Uuid::from_bytes(rng.gen());
        events.push(simple_event_with_id(project, "dev-edge", at, 7 + i as u32, event_id));
    }
    events
}

fn log_uniform(rng: &mut StdRng, low: f64, high: f64) -> u64 {
    rng.gen_range(low.ln()..high.ln()).exp() as u64
}

// ---- brute force -------------------------------------------------------------

/// The events of `events` that `query` selects, by group key.
pub(crate) fn expected_groups<'e>(
    events: &'e [StoredEvent],
    query: &Query,
    grouping: Grouping,
) -> BTreeMap<GroupKey, Vec<&'e StoredEvent>> {
    let f = &query.filters;
    let mut groups: BTreeMap<GroupKey, Vec<&StoredEvent>> = BTreeMap::new();
    for e in events {
        let selected = e.project == query.project
            && e.event_time_ms >= query.from_ms
            && e.event_time_ms < query.to_ms
            && f.app_version.as_ref().is_none_or(|v| *v == e.event.app_version)
            && f.os.as_ref().is_none_or(|v| *v == e.event.os)
            && f.network.is_none_or(|n| n == e.event.network);
        if !selected {
            continue;
        }
        let key = match grouping {
            Grouping::Total => GroupKey::Total,
            Grouping::Time { step_seconds } => {
                let step = i64::from(step_seconds);
                GroupKey::Time(e.event_time_ms.div_euclid(1000).div_euclid(step) * step)
            }
            Grouping::By(dimension) => GroupKey::Segment(match dimension.column() {
                "app_version" => e.event.app_version.clone(),
                "os" => e.event.os.clone(),
                "network" => e.event.network.as_str().to_string(),
                other => panic!("a dimension the suite does not know: {other}"),
            }),
        };
        groups.entry(key).or_default().push(e);
    }
    groups
}

/// Each device's latest event: greatest `(event_time_ms, event_id text)`.
pub(crate) fn latest_per_device<'e>(rows: &[&'e StoredEvent]) -> BTreeMap<String, &'e StoredEvent> {
    let mut latest: BTreeMap<String, &StoredEvent> = BTreeMap::new();
    for &e in rows {
        let key = |x: &StoredEvent| (x.event_time_ms, x.event.event_id.hyphenated().to_string());
        latest
            .entry(e.event.device_id.clone())
            .and_modify(|cur| {
                if key(e) > key(cur) {
                    *cur = e;
                }
            })
            .or_insert(e);
    }
    latest
}

/// The exact weighted nearest-rank quantile of raw `(value, weight)` pairs,
/// with the same rank rule as the contract (first value whose cumulative
/// weight reaches `q` of the total).
pub(crate) fn nearest_rank(values: &[(f64, f64)], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total: f64 = sorted.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let mut cumulative = 0.0;
    for (value, weight) in &sorted {
        cumulative += weight;
        if cumulative >= target - total * 1e-12 {
            return Some(*value);
        }
    }
    sorted.last().map(|(v, _)| *v)
}

pub(crate) fn close(a: f64, b: f64, relative: f64) -> bool {
    a == b || (a - b).abs() <= relative * a.abs().max(b.abs())
}

fn assert_close(actual: f64, expected: f64, relative: f64, what: &str) {
    assert!(
        close(actual, expected, relative),
        "{what}: got {actual}, expected {expected} (relative tolerance {relative})"
    );
}

fn assert_close_opt(actual: Option<f64>, expected: Option<f64>, relative: f64, what: &str) {
    match (actual, expected) {
        (None, None) => {}
        (Some(a), Some(e)) => assert_close(a, e, relative, what),
        _ => panic!("{what}: got {actual:?}, expected {expected:?}"),
    }
}

fn sorted_u64(histogram: &[(u16, u64)]) -> Vec<(u16, u64)> {
    let mut h: Vec<(u16, u64)> = histogram.iter().copied().filter(|(_, n)| *n > 0).collect();
    h.sort_unstable();
    h
}

/// Checks one group's aggregate, and the summary derived from it, against
/// the raw rows of that group.
pub(crate) fn assert_group_matches(actual: &Aggregate, rows: &[&StoredEvent], queue_threshold: u32, context: &str) {
    let latest = latest_per_device(rows);
    let weight_where = |pred: &dyn Fn(&StoredEvent) -> bool| -> f64 {
        rows.iter().filter(|e| pred(e)).map(|e| 1.0 / e.event.sample_rate).sum()
    };
    let attempts = weight_where(&|_| true);
    let successes = weight_where(&|e| e.event.success);
    let conflicted = weight_where(&|e| e.event.conflicts > 0);

    assert_eq!(actual.events, rows.len() as u64, "{context}: events");
    assert_eq!(actual.devices, latest.len() as u64, "{context}: devices");
    assert_close(actual.attempts, attempts, 1e-9, &format!("{context}: attempts"));
    assert_close(actual.successes, successes, 1e-9, &format!("{context}: successes"));
    assert_close(actual.conflicted, conflicted, 1e-9, &format!("{context}: conflicted"));

    let queues: Vec<u64> = latest.values().map(|e| u64::from(e.event.queue_depth)).collect();
    assert_eq!(actual.queue_sum, queues.iter().sum::<u64>(), "{context}: queue_sum");
    assert_eq!(actual.queue_max, queues.iter().copied().max().unwrap_or(0), "{context}: queue_max");
    assert_eq!(
        actual.queue_over_threshold,
        queues.iter().filter(|q| **q > u64::from(queue_threshold)).count() as u64,
        "{context}: queue_over_threshold"
    );
    let never = latest.values().filter(|e| e.event.last_success_at.is_none()).count() as u64;
    assert_eq!(actual.never_synced_devices, never, "{context}: never_synced_devices");

    // The histograms, bucket by bucket, from the buckets stamped at ingest.
    let mut durations: BTreeMap<u16, f64> = BTreeMap::new();
    for e in rows {
        *durations.entry(e.duration_bucket).or_default() += 1.0 / e.event.sample_rate;
    }
    let mut got_durations: BTreeMap<u16, f64> = BTreeMap::new();
    for (b, w) in &actual.duration_histogram {
        *got_durations.entry(*b).or_default() += w;
    }
    got_durations.retain(|_, w| *w > 0.0);
    assert_eq!(
        got_durations.keys().collect::<Vec<_>>(),
        durations.keys().collect::<Vec<_>>(),
        "{context}: duration histogram buckets"
    );
    for (b, w) in &durations {
        assert_close(got_durations[b], *w, 1e-9, &format!("{context}: duration bucket {b}"));
    }
    let mut queue_hist: BTreeMap<u16, u64> = BTreeMap::new();
    let mut stale_hist: BTreeMap<u16, u64> = BTreeMap::new();
    for e in latest.values() {
        *queue_hist.entry(e.queue_bucket).or_default() += 1;
        if e.event.last_success_at.is_some() {
            *stale_hist.entry(e.staleness_bucket).or_default() += 1;
        }
    }
    assert_eq!(
        sorted_u64(&actual.queue_histogram),
        queue_hist.into_iter().collect::<Vec<_>>(),
        "{context}: queue histogram"
    );
    assert_eq!(
        sorted_u64(&actual.staleness_histogram),
        stale_hist.into_iter().collect::<Vec<_>>(),
        "{context}: staleness histogram"
    );

    // The metrics, against exact values over the raw rows.
    let s = Summary::from_aggregate(actual);
    let rate = |part: f64| (attempts > 0.0).then(|| part / attempts);
    assert_close_opt(s.success_rate, rate(successes), 1e-9, &format!("{context}: success rate"));
    assert_close_opt(s.conflict_rate, rate(conflicted), 1e-9, &format!("{context}: conflict rate"));
    let raw_durations: Vec<(f64, f64)> =
        rows.iter().map(|e| (e.event.duration_ms as f64, 1.0 / e.event.sample_rate)).collect();
    let raw_staleness: Vec<(f64, f64)> = latest
        .values()
        .filter(|e| e.event.last_success_at.is_some())
        .map(|e| (e.staleness_ms.unwrap_or(0) as f64, 1.0))
        .collect();
    let raw_queues: Vec<(f64, f64)> = queues.iter().map(|q| (*q as f64, 1.0)).collect();
    for (q, got, got_stale) in [
        (0.50, s.duration_ms.p50, s.staleness_ms.p50),
        (0.90, s.duration_ms.p90, s.staleness_ms.p90),
        (0.99, s.duration_ms.p99, s.staleness_ms.p99),
    ] {
        assert_close_opt(got, nearest_rank(&raw_durations, q), 0.02, &format!("{context}: duration p{}", q * 100.0));
        assert_close_opt(
            got_stale,
            nearest_rank(&raw_staleness, q),
            0.02,
            &format!("{context}: staleness p{}", q * 100.0),
        );
    }
    assert_close_opt(s.queue_depth.p95, nearest_rank(&raw_queues, 0.95), 0.02, &format!("{context}: queue p95"));
    let devices = latest.len() as f64;
    let expected_avg = (!latest.is_empty()).then(|| queues.iter().sum::<u64>() as f64 / devices);
    assert_close_opt(s.queue_depth.avg, expected_avg, 1e-12, &format!("{context}: queue avg"));
    let over = queues.iter().filter(|q| **q > u64::from(queue_threshold)).count() as f64;
    let expected_share = (!latest.is_empty()).then(|| over / devices);
    assert_close_opt(
        s.queue_depth.over_threshold_share,
        expected_share,
        1e-12,
        &format!("{context}: queue over share"),
    );
    assert_eq!(s.never_synced_devices, never, "{context}: never synced");
}

/// Checks a whole `aggregate` answer against brute force: the same keys, in
/// key order, and every group matching.
pub(crate) fn assert_answer_matches(
    actual: &[(GroupKey, Aggregate)],
    events: &[StoredEvent],
    query: &Query,
    grouping: Grouping,
    context: &str,
) {
    let expected = expected_groups(events, query, grouping);
    let got_keys: Vec<&GroupKey> = actual.iter().map(|(k, _)| k).collect();
    let want_keys: Vec<&GroupKey> = expected.keys().collect();
    assert_eq!(got_keys, want_keys, "{context}: group keys (in key order)");
    for (key, aggregate) in actual {
        assert_group_matches(aggregate, &expected[key], query.queue_threshold, &format!("{context}, group {key:?}"));
    }
}

/// Two stores' answers are the same data: same keys, equal integers, floats
/// within 1e-9 relative, histograms equal once normalized.
pub(crate) fn assert_same_answer(a: &[(GroupKey, Aggregate)], b: &[(GroupKey, Aggregate)], context: &str) {
    let keys = |x: &[(GroupKey, Aggregate)]| x.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(a), keys(b), "{context}: group keys");
    for ((key, x), (_, y)) in a.iter().zip(b) {
        let (x, y) = (x.clone().normalized(), y.clone().normalized());
        let ctx = format!("{context}, group {key:?}");
        assert_eq!(x.events, y.events, "{ctx}: events");
        assert_eq!(x.devices, y.devices, "{ctx}: devices");
        assert_close(x.attempts, y.attempts, 1e-9, &format!("{ctx}: attempts"));
        assert_close(x.successes, y.successes, 1e-9, &format!("{ctx}: successes"));
        assert_close(x.conflicted, y.conflicted, 1e-9, &format!("{ctx}: conflicted"));
        assert_eq!(x.duration_histogram.len(), y.duration_histogram.len(), "{ctx}: duration buckets");
        for ((bx, wx), (by, wy)) in x.duration_histogram.iter().zip(&y.duration_histogram) {
            assert_eq!(bx, by, "{ctx}: duration buckets");
            assert_close(*wx, *wy, 1e-9, &format!("{ctx}: duration bucket {bx}"));
        }
        assert_eq!(x.queue_sum, y.queue_sum, "{ctx}: queue_sum");
        assert_eq!(x.queue_max, y.queue_max, "{ctx}: queue_max");
        assert_eq!(x.queue_over_threshold, y.queue_over_threshold, "{ctx}: queue_over_threshold");
        assert_eq!(x.queue_histogram, y.queue_histogram, "{ctx}: queue histogram");
        assert_eq!(x.staleness_histogram, y.staleness_histogram, "{ctx}: staleness histogram");
        assert_eq!(x.never_synced_devices, y.never_synced_devices, "{ctx}: never synced");
    }
}

/// Inserts `events` in batches the size a collector would write.
pub(crate) async fn insert_all(store: &dyn Store, events: &[StoredEvent]) {
    for chunk in events.chunks(1000) {
        let outcome = store.insert(chunk).await.expect("inserting the fixture");
        assert_eq!(outcome.inserted, chunk.len(), "fixture events are all new");
        assert!(outcome.duplicates.is_empty(), "fixture events are all new: {:?}", outcome.duplicates);
    }
}

/// Writes each listed `async fn name(store: SharedStore)` of the calling
/// module as two tests, `sqlite::name` and `clickhouse::name`, each on a
/// fresh, migrated store of its own.
macro_rules! on_both_stores {
    ($($test:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::helpers::run(crate::helpers::Backend::Sqlite, stringify!($test), super::$test).await;
                }
            )+
        }
        mod clickhouse {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::helpers::run(crate::helpers::Backend::ClickHouse, stringify!($test), super::$test).await;
                }
            )+
        }
        mod cluster {
            $(
                #[tokio::test]
                async fn $test() {
                    crate::helpers::run(crate::helpers::Backend::Cluster, stringify!($test), super::$test).await;
                }
            )+
        }
    };
}
