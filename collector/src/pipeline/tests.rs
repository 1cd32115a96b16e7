//! The pipeline over a real embedded store that a test can make fail or
//! hang: batching, the split of outcomes, spooling, replay, the bound, and
//! the drain at shutdown.
//!
//! "Stored once" is checked where it could fail: the store's own metrics
//! over the events (of every age, minutes to days old) and the ids the
//! pipeline actually sent, not only the rows SQLite reports inserted, which
//! its primary key has already deduplicated.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use synchealth_schema::{parse_batch, ProjectName, StoredEvent};
use synchealth_store::metrics::{Aggregate, GroupKey, Grouping, Query};
use synchealth_store::{
    Accounts, Aggregates, AlertInstanceRecord, Alerting, Database, DeviceList, DeviceSummary, Error, Events, IngestKey,
    InsertOutcome, LossReports, NotificationRecord, Result, Session, Sessions, Silence, SqliteStore, TelemetryLoss,
    User,
};
use time::OffsetDateTime;

use super::{Pipeline, PipelineConfig, PipelineHandle, SubmitError};

const WORKING: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;
const SLOW: u8 = 3;
/// Slow in proportion to the rows: 0.1 ms a row (a loaded ClickHouse).
const SLOW_PER_ROW: u8 = 4;

/// SQLite behind a switch: working, failing at once, hanging, or slow.
#[derive(Debug)]
struct Switchable {
    inner: SqliteStore,
    mode: AtomicU8,
    /// Rows of every insert that reached SQLite, in order.
    inserts: Mutex<Vec<usize>>,
    /// Every event id the pipeline sent to SQLite, one per row sent.
    sent: Mutex<Vec<uuid::Uuid>>,
    stored: AtomicUsize,
}

impl Switchable {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn new(inner: SqliteStore) -> Switchable {
        Switchable {
            inner,
            mode: AtomicU8::new(WORKING),
            inserts: Mutex::new(Vec::new()),
            sent: Mutex::new(Vec::new()),
            stored: AtomicUsize::new(0),
        }
    }

    /// The store counts each of the `acked` events once in its metrics, and
    /// the pipeline sent every one of them, and nothing else: each exactly
    /// once when `resends` is false (no insert was abandoned while it could
    /// still go through, so nothing needed sending twice).
    async fn assert_counted_once(&self, acked: usize, resends: bool) {
        let summary = self.inner.aggregate(&all_time(), Grouping::Total).await.unwrap();
        assert_eq!(summary.first().map_or(0, |(_, a)| a.events), acked as u64, "events in the store's metrics");
        let sent = self.sent.lock().unwrap().clone();
        let distinct: std::collections::HashSet<_> = sent.iter().collect();
        assert_eq!(distinct.len(), acked, "distinct events sent to the store");
        if !resends {
            assert_eq!(sent.len(), acked, "an event was sent to the store twice");
        }
    }

    async fn gate(&self) -> Result<()> {
        match self.mode.load(Ordering::SeqCst) {
            FAILING => Err(Error::Task("store down (test)".into())),
            // Like a paused ClickHouse: no answer while paused, then the
            // request goes through (the adversarial case for duplicates).
            HANGING => {
                while self.mode.load(Ordering::SeqCst) == HANGING {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(())
            }
            SLOW => {
                tokio::time::sleep(Duration::from_millis(150)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Database for Switchable {
    fn kind(&self) -> &'static str {
        "switchable"
    }

    async fn migrate(&self) -> Result<()> {
        self.inner.migrate().await
    }

    async fn ping(&self) -> Result<()> {
        self.gate().await?;
        self.inner.ping().await
    }
}

#[async_trait]
impl Events for Switchable {
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.gate().await?;
        if self.mode.load(Ordering::SeqCst) == SLOW_PER_ROW {
            tokio::time::sleep(Duration::from_micros(100 * events.len() as u64)).await;
        }
        self.sent.lock().unwrap().extend(events.iter().map(|e| e.event.event_id));
        let outcome = self.inner.insert(events).await?;
        self.inserts.lock().unwrap().push(events.len());
        self.stored.fetch_add(outcome.inserted, Ordering::SeqCst);
        Ok(outcome)
    }

    async fn apply_retention(&self, days: u32) -> Result<()> {
        self.inner.apply_retention(days).await
    }
}

#[async_trait]
impl Aggregates for Switchable {
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        self.inner.aggregate(query, grouping).await
    }

    // The rest of the interface is not what these tests switch: plain delegation.
    async fn devices(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
        self.inner.devices(query, list, limit).await
    }

    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
        self.inner.device_events(project, device_id, limit).await
    }
}

#[async_trait]
impl synchealth_store::Signals for Switchable {
    async fn conflicts(&self, query: &Query, step: u32, entities: u32) -> Result<synchealth_store::ConflictAggregate> {
        self.inner.conflicts(query, step, entities).await
    }

    async fn errors(&self, query: &Query, step: u32, groups: u32) -> Result<synchealth_store::ErrorAggregate> {
        self.inner.errors(query, step, groups).await
    }

    async fn queue_lags(&self, query: &Query) -> Result<synchealth_store::signals::QueueLags> {
        self.inner.queue_lags(query).await
    }
}

#[async_trait]
impl Accounts for Switchable {
    async fn ensure_project(&self, project: &ProjectName) -> Result<()> {
        self.inner.ensure_project(project).await
    }

    async fn projects(&self) -> Result<Vec<ProjectName>> {
        self.inner.projects().await
    }

    async fn put_ingest_key(&self, key: &IngestKey) -> Result<()> {
        self.inner.put_ingest_key(key).await
    }

    async fn find_ingest_key(&self, key_hash: &str) -> Result<Option<IngestKey>> {
        self.gate().await?;
        self.inner.find_ingest_key(key_hash).await
    }

    async fn ingest_keys(&self, project: &ProjectName) -> Result<Vec<IngestKey>> {
        self.inner.ingest_keys(project).await
    }

    async fn put_user(&self, user: &User) -> Result<()> {
        self.inner.put_user(user).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>> {
        self.inner.find_user(username).await
    }

    async fn remove_user(&self, username: &str) -> Result<bool> {
        self.inner.remove_user(username).await
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.inner.users().await
    }

    async fn set_project_dimensions(&self, project: &ProjectName, keys: &[String]) -> Result<()> {
        self.inner.set_project_dimensions(project, keys).await
    }

    async fn project_dimensions(&self, project: &ProjectName) -> Result<Vec<String>> {
        self.inner.project_dimensions(project).await
    }
}

#[async_trait]
impl Sessions for Switchable {
    async fn create_session(&self, session: &Session) -> Result<()> {
        self.inner.create_session(session).await
    }

    async fn find_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<Session>> {
        self.inner.find_session(token_hash, now_ms).await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        self.inner.delete_session(token_hash).await
    }
}

#[async_trait]
impl Alerting for Switchable {
    async fn alert_instances(&self) -> Result<Vec<AlertInstanceRecord>> {
        self.inner.alert_instances().await
    }

    async fn put_alert_instance(&self, instance: &AlertInstanceRecord) -> Result<()> {
        self.inner.put_alert_instance(instance).await
    }

    async fn notifications(&self, project: Option<&ProjectName>, limit: u32) -> Result<Vec<NotificationRecord>> {
        self.inner.notifications(project, limit).await
    }

    async fn put_notification(&self, notification: &NotificationRecord) -> Result<()> {
        self.inner.put_notification(notification).await
    }

    async fn silences(&self, now_ms: i64) -> Result<Vec<Silence>> {
        self.inner.silences(now_ms).await
    }

    async fn put_silence(&self, silence: &Silence) -> Result<()> {
        self.inner.put_silence(silence).await
    }

    async fn remove_silence(&self, id: &str) -> Result<bool> {
        self.inner.remove_silence(id).await
    }

    async fn ticket(
        &self,
        project: &ProjectName,
        fingerprint: &str,
        channel: &str,
        episode_ms: i64,
    ) -> Result<Option<synchealth_store::TicketRecord>> {
        self.inner.ticket(project, fingerprint, channel, episode_ms).await
    }

    async fn put_ticket(&self, ticket: &synchealth_store::TicketRecord) -> Result<()> {
        self.inner.put_ticket(ticket).await
    }

    async fn try_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        self.inner.try_lease(name, holder, now_ms, ttl_ms).await
    }
}

#[async_trait]
impl LossReports for Switchable {
    async fn record_telemetry_loss(
        &self,
        project: &ProjectName,
        device_id: &str,
        dropped: &BTreeMap<String, u64>,
        reported_at_ms: i64,
    ) -> Result<()> {
        self.inner.record_telemetry_loss(project, device_id, dropped, reported_at_ms).await
    }

    async fn telemetry_loss(&self, project: &ProjectName, from_ms: i64, to_ms: i64) -> Result<TelemetryLoss> {
        self.inner.telemetry_loss(project, from_ms, to_ms).await
    }
}

struct Harness {
    store: Arc<Switchable>,
    pipeline: Pipeline,
    handle: PipelineHandle,
    dir: tempfile::TempDir,
}

async fn harness(configure: impl FnOnce(&mut PipelineConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    inner.migrate().await.unwrap();
    let store = Arc::new(Switchable::new(inner));
    let mut config = PipelineConfig::new(dir.path().join("spool"));
    config.max_batch_age = Duration::from_millis(20);
    config.insert_timeout = Duration::from_millis(200);
    config.replay_backoff_min = Duration::from_millis(10);
    config.replay_backoff_max = Duration::from_millis(50);
    configure(&mut config);
    let pipeline = Pipeline::start(store.clone(), config).await.unwrap();
    let handle = pipeline.handle();
    Harness { store, pipeline, handle, dir }
}

/// `n` valid events, as the ingest handler builds them: in turn now, a
/// minute, an hour and three days old (what an offline device sends).
fn events(n: usize) -> Vec<StoredEvent> {
    let now = OffsetDateTime::now_utc();
    let rfc3339 = |t: OffsetDateTime| t.format(&time::format_description::well_known::Rfc3339).unwrap();
    let at = rfc3339(now);
    let ages = [time::Duration::ZERO, time::Duration::minutes(1), time::Duration::hours(1), time::Duration::days(3)];
    let events: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "event_id": uuid::Uuid::new_v4().to_string(), "device_id": format!("d{i}"),
                "occurred_at": rfc3339(now - ages[i % ages.len()]),
                "success": true, "duration_ms": 10, "app_version": "1", "os": "ios",
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({"sent_at": at, "events": events})).unwrap();
    let project = ProjectName::parse("default").unwrap();
    parse_batch(&body)
        .unwrap()
        .events
        .into_iter()
        .map(|(_, e)| StoredEvent::new(project.clone(), e, now, now))
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_lone_request_on_an_idle_store_does_not_wait_for_the_batch_age() {
    let h = harness(|c| c.max_batch_age = Duration::from_secs(10)).await;
    let started = Instant::now();
    let outcome = h.handle.submit(events(3)).await.unwrap();
    assert_eq!(outcome, InsertOutcome { inserted: 3, duplicates: vec![] });
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    assert_eq!(*h.store.inserts.lock().unwrap(), vec![3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_become_few_inserts_and_each_gets_its_own_outcome() {
    let h = harness(|c| {
        c.max_batch_age = Duration::from_millis(200);
        c.batch_linger = Duration::from_millis(200);
    })
    .await;
    let known = events(2);
    h.handle.submit(known.clone()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let handle = h.handle.clone();
        let mut request = events(10);
        if i == 7 {
            // Already stored, and repeated within the request.
            request[3] = known[1].clone();
            request[8] = request[5].clone();
        }
        tasks.push(tokio::spawn(async move { (i, handle.submit(request).await.unwrap()) }));
    }
    for task in tasks {
        let (i, outcome) = task.await.unwrap();
        if i == 7 {
            assert_eq!(outcome, InsertOutcome { inserted: 8, duplicates: vec![3, 8] });
        } else {
            assert_eq!(outcome, InsertOutcome { inserted: 10, duplicates: vec![] });
        }
    }
    let inserts = h.store.inserts.lock().unwrap().clone();
    assert_eq!(inserts.iter().sum::<usize>(), 402);
    assert!(inserts.len() <= 4, "40 requests took {} inserts: {inserts:?}", inserts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_arriving_while_the_store_is_busy_gather_into_the_next_batch() {
    let h = harness(|c| {
        c.max_batch_age = Duration::from_secs(10);
        c.max_inflight_batches = 1;
        // No insert may time out and be retried (that is another test's
        // subject): on two loaded cores a 150 ms insert can pass 200 ms.
        c.insert_timeout = Duration::from_secs(10);
    })
    .await;
    h.store.set(SLOW);
    let mut answers = Vec::new();
    for _ in 0..20 {
        let handle = h.handle.clone();
        answers.push(tokio::spawn(async move { handle.submit(events(5)).await }));
        // Sparse: each gap is longer than the linger.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap().inserted, 5);
    }
    let inserts = h.store.inserts.lock().unwrap().clone();
    assert_eq!(inserts.iter().sum::<usize>(), 100);
    // 20 requests over 200 ms into a store taking 150 ms per insert.
    assert!(inserts.len() <= 4, "{inserts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_never_grows_past_the_row_limit_by_more_than_one_request() {
    let h = harness(|c| {
        c.max_batch_rows = 25;
        c.max_batch_age = Duration::from_secs(5);
        c.max_inflight_batches = 1;
    })
    .await;
    // 120 rows: four full batches, none left waiting for the age limit.
    let answers: Vec<_> = (0..12)
        .map(|_| {
            let handle = h.handle.clone();
            tokio::spawn(async move { handle.submit(events(10)).await })
        })
        .collect();
    let started = Instant::now();
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap().inserted, 10);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "full batches do not wait for the age limit");
    let inserts = h.store.inserts.lock().unwrap().clone();
    assert_eq!(inserts.iter().sum::<usize>(), 120);
    // Flushed once at 25 rows or more: at most the limit plus one request.
    assert!(inserts.iter().all(|&rows| rows <= 30), "{inserts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_spools_and_acknowledges_then_the_replay_stores_everything_once() {
    let h = harness(|_| {}).await;
    h.store.set(FAILING);
    let first = events(5);
    let outcome = h.handle.submit(first.clone()).await.unwrap();
    assert_eq!(outcome.inserted, 5, "acknowledged from the spool");
    let status = h.handle.status();
    assert!(!status.store_healthy);
    assert!(status.spool_bytes > 0 && status.spool_segments == 1);
    // While unhealthy, requests go straight to the spool.
    h.handle.submit(events(5)).await.unwrap();
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 0);

    h.store.set(WORKING);
    wait_until("the spool is replayed", || h.handle.status().spool_bytes == 0).await;
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 10);
    assert!(h.handle.status().store_healthy);
    h.store.assert_counted_once(10, false).await;
    // A retry of an acknowledged request is a duplicate, not a second copy.
    let again = h.handle.submit(first).await.unwrap();
    assert_eq!(again, InsertOutcome { inserted: 0, duplicates: vec![0, 1, 2, 3, 4] });
    let summary = h.store.inner.aggregate(&all_time(), Grouping::Total).await.unwrap();
    assert_eq!(summary[0].1.events, 10, "the retry counts nowhere");
    let files: Vec<_> =
        std::fs::read_dir(h.dir.path().join("spool")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(files, vec![std::ffi::OsString::from("LOCK")], "replayed segments are deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_too_slow_for_a_whole_segment_within_the_timeout_still_drains_the_spool_in_smaller_blocks() {
    let h = harness(|c| c.max_batch_rows = 10_000).await;
    h.store.set(FAILING);
    for _ in 0..2 {
        assert_eq!(h.handle.submit(events(3000)).await.unwrap().inserted, 3000);
    }
    // 3,000 rows take 300 ms against a 200 ms timeout: a whole segment
    // never fits, blocks of 1,500 do.
    h.store.set(SLOW_PER_ROW);
    wait_until("the spool is replayed", || h.handle.status().spool_bytes == 0).await;
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 6000, "every event once");
    // Abandoned slow inserts went on and reached the store: resent rows.
    h.store.assert_counted_once(6000, true).await;
    let inserts = h.store.inserts.lock().unwrap().clone();
    assert!(inserts.iter().any(|&rows| rows < 2000), "the block shrank: {inserts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_store_is_abandoned_after_the_insert_timeout() {
    let h = harness(|c| c.insert_timeout = Duration::from_millis(1000)).await;
    h.store.set(HANGING);
    let started = Instant::now();
    assert_eq!(h.handle.submit(events(4)).await.unwrap().inserted, 4);
    let first = started.elapsed();
    assert!(first >= Duration::from_millis(1000) && first < Duration::from_secs(3), "{first:?}");
    let started = Instant::now();
    h.handle.submit(events(4)).await.unwrap();
    let second = started.elapsed();
    assert!(second < Duration::from_millis(500), "the next one skips the hung store, yet took {second:?}");
    h.store.set(WORKING);
    wait_until("the spool is replayed", || h.handle.status().spool_bytes == 0).await;
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 8);
    // The abandoned insert went through once the store came back, and the
    // replay waited for it, so its duplicate check saw those 4 rows.
    assert_eq!(*h.store.inserts.lock().unwrap(), vec![4, 8]);
    h.store.assert_counted_once(8, true).await;
}

#[tokio::test]
async fn a_full_spool_refuses_whole_requests_with_a_retry_after() {
    let h = harness(|c| c.spool_max_bytes = 8 * 1024).await;
    h.store.set(FAILING);
    let mut refused = None;
    let mut acked = 0;
    for _ in 0..200 {
        match h.handle.submit(events(5)).await {
            Ok(outcome) => acked += outcome.inserted,
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let Some(SubmitError::SpoolFull { retry_after }) = refused else { panic!("never refused: {refused:?}") };
    assert!(retry_after >= Duration::from_secs(1));
    assert!(acked > 0);
    let status = h.handle.status();
    assert!(status.spool_bytes <= 8 * 1024);
    assert!(!status.spool_below_high_water());
    h.store.set(WORKING);
    wait_until("the spool is replayed", || h.handle.status().spool_bytes == 0).await;
    assert_eq!(h.store.stored.load(Ordering::SeqCst), acked, "exactly what was acknowledged");
    h.store.assert_counted_once(acked, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_every_queued_request_and_then_refuses_new_ones() {
    let h = harness(|c| {
        c.max_batch_age = Duration::from_secs(30);
        c.batch_linger = Duration::from_secs(30);
    })
    .await;
    let pending: Vec<_> = (0..5)
        .map(|_| {
            let handle = h.handle.clone();
            tokio::spawn(async move { handle.submit(events(3)).await })
        })
        .collect();
    // Queued and waiting for the (long) batch age.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(h.store.inserts.lock().unwrap().is_empty());
    let handle = h.handle.clone();
    let started = Instant::now();
    h.pipeline.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5), "the drain did not wait for the 30 s batch age");
    for task in pending {
        assert_eq!(task.await.unwrap().unwrap().inserted, 3);
    }
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 15);
    h.store.assert_counted_once(15, false).await;
    assert_eq!(handle.submit(events(1)).await, Err(SubmitError::ShuttingDown));
}

#[tokio::test]
async fn spooled_events_left_by_a_previous_process_are_replayed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let acked = {
        let h = harness(|c| c.spool_dir = dir.path().to_path_buf()).await;
        h.store.set(FAILING);
        let outcome = h.handle.submit(events(6)).await.unwrap();
        // Gone without a shutdown, as after kill -9 (the spool lock goes with it).
        h.pipeline.abort().await;
        outcome.inserted
    };
    let h = harness(|c| c.spool_dir = dir.path().to_path_buf()).await;
    wait_until("the spool is replayed", || h.store.stored.load(Ordering::SeqCst) == acked).await;
    wait_until("the segment is deleted", || h.handle.status().spool_bytes == 0).await;
    h.store.assert_counted_once(acked, false).await;
}

#[tokio::test]
async fn a_key_known_before_the_store_went_down_still_authenticates_so_its_events_can_spool() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("keys.db")).unwrap();
    inner.migrate().await.unwrap();
    let project = ProjectName::parse("p").unwrap();
    let key = IngestKey {
        key_hash: crate::hash_ingest_key("shk_known"),
        project: project.clone(),
        label: "t".into(),
        created_at_ms: 0,
        revoked: false,
        allowed_origins: vec![],
    };
    inner.put_ingest_key(&key).await.unwrap();
    let store = Arc::new(Switchable::new(inner));
    let cache = crate::KeyCache::with_ttl(store.clone(), Duration::from_millis(1));
    assert_eq!(cache.authenticate(Some("Bearer shk_known")).await.unwrap(), project);
    store.set(FAILING);
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(cache.authenticate(Some("Bearer shk_known")).await.unwrap(), project, "stale answer served");
    let unknown = cache.authenticate(Some("Bearer shk_never_seen")).await;
    assert!(matches!(unknown, Err(crate::AppError::Unavailable(_))), "no answer to fall back on: 503");
    store.set(HANGING);
    let started = Instant::now();
    assert_eq!(cache.authenticate(Some("Bearer shk_known")).await.unwrap(), project);
    assert!(started.elapsed() < Duration::from_secs(5), "a hung store does not hang authentication");
}

/// Spool-first acknowledgement (what ClickHouse deployments run).
fn spooled(c: &mut PipelineConfig) {
    c.acknowledge = super::Acknowledge::Spooled;
    c.insert_max_delay = Duration::from_millis(50);
}

fn spool_files(h: &Harness) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(h.dir.path().join("spool"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "LOCK")
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_acknowledgements_come_before_the_insert_and_the_events_follow_in_large_inserts() {
    let h = harness(|c| {
        spooled(c);
        c.insert_max_delay = Duration::from_millis(300);
    })
    .await;
    h.store.set(SLOW);
    let answers: Vec<_> = (0..30)
        .map(|_| {
            let handle = h.handle.clone();
            tokio::spawn(async move { handle.submit(events(10)).await })
        })
        .collect();
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap(), InsertOutcome { inserted: 10, duplicates: vec![] });
    }
    // Answered from the spool before any insert finished (the first one
    // starts 300 ms after the first request and takes 150 ms).
    assert_eq!(h.store.stored.load(Ordering::SeqCst), 0, "nothing inserted yet");
    assert!(h.handle.status().spool_bytes > 0, "acknowledged means on disk");
    wait_until("every event is stored", || h.store.stored.load(Ordering::SeqCst) == 300).await;
    let inserts = h.store.inserts.lock().unwrap().clone();
    assert!(inserts.len() <= 2, "30 requests took {} inserts: {inserts:?}", inserts.len());
    wait_until("stored segments are deleted", || spool_files(&h).is_empty()).await;
    // The gauge follows the deletions, not in the same instant.
    wait_until("the spool gauge reads empty", || h.handle.status().spool_bytes == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_acknowledgement_does_not_wait_for_the_linger() {
    let h = harness(|c| {
        spooled(c);
        c.batch_linger = Duration::from_secs(30);
        c.max_batch_age = Duration::from_secs(30);
    })
    .await;
    let started = Instant::now();
    let outcome = h.handle.submit(events(3)).await.unwrap();
    assert_eq!(outcome, InsertOutcome { inserted: 3, duplicates: vec![] });
    assert!(started.elapsed() < Duration::from_secs(5), "answered after {:?}", started.elapsed());
    wait_until("the events are stored", || h.store.stored.load(Ordering::SeqCst) == 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_a_store_failure_and_are_stored_exactly_once() {
    let h = harness(spooled).await;
    let mut acked = 0;
    // Stored normally, then the store fails with events acknowledged and held
    // in memory, then recovers.
    for round in 0..3 {
        if round == 1 {
            h.store.set(FAILING);
        }
        for _ in 0..5 {
            acked += h.handle.submit(events(7)).await.unwrap().inserted;
        }
        tokio::time::sleep(Duration::from_millis(120)).await;
        if round == 1 {
            assert!(!h.handle.status().store_healthy, "the failed insert was noticed");
            h.store.set(WORKING);
        }
    }
    wait_until("every acknowledged event is stored", || h.store.stored.load(Ordering::SeqCst) == acked).await;
    wait_until("the spool is empty", || spool_files(&h).is_empty()).await;
    assert_eq!(acked, 105);
    // Counted by the store itself: nothing twice, nothing missing.
    h.store.assert_counted_once(105, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_of_a_killed_collector_are_replayed_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let acked = {
        let h = harness(|c| {
            spooled(c);
            c.spool_dir = dir.path().to_path_buf();
            c.insert_max_delay = Duration::from_secs(30);
        })
        .await;
        let mut acked = 0;
        for _ in 0..4 {
            acked += h.handle.submit(events(9)).await.unwrap().inserted;
        }
        assert_eq!(h.store.stored.load(Ordering::SeqCst), 0, "still waiting for the insert delay");
        h.pipeline.abort().await;
        acked
    };
    let h = harness(|c| {
        spooled(c);
        c.spool_dir = dir.path().to_path_buf();
    })
    .await;
    wait_until("the spool is replayed", || h.store.stored.load(Ordering::SeqCst) == acked).await;
    wait_until("the segment is deleted", || h.handle.status().spool_bytes == 0).await;
    h.store.assert_counted_once(acked, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_pending_bound_spooled_events_are_inserted_from_disk() {
    let h = harness(|c| {
        spooled(c);
        c.max_pending_rows = 20;
    })
    .await;
    h.store.set(SLOW);
    let answers: Vec<_> = (0..12)
        .map(|_| {
            let handle = h.handle.clone();
            tokio::spawn(async move { handle.submit(events(10)).await })
        })
        .collect();
    for answer in answers {
        assert_eq!(answer.await.unwrap().unwrap().inserted, 10);
    }
    h.store.set(WORKING);
    wait_until("every event is stored", || h.store.stored.load(Ordering::SeqCst) == 120).await;
    wait_until("the spool is empty", || spool_files(&h).is_empty()).await;
    h.store.assert_counted_once(120, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_spooled_acknowledgements_inserts_what_memory_holds() {
    let h = harness(|c| {
        spooled(c);
        c.insert_max_delay = Duration::from_secs(30);
    })
    .await;
    for _ in 0..3 {
        h.handle.submit(events(4)).await.unwrap();
    }
    let store = h.store.clone();
    h.pipeline.shutdown().await;
    assert_eq!(store.stored.load(Ordering::SeqCst), 12);
    store.assert_counted_once(12, false).await;
}

fn all_time() -> Query {
    Query {
        project: ProjectName::parse("default").unwrap(),
        from_ms: 0,
        to_ms: i64::MAX / 2,
        filters: Default::default(),
        queue_threshold: synchealth_store::metrics::DEFAULT_QUEUE_THRESHOLD,
    }
}
