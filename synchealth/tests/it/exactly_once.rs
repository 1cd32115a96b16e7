//! Exactly once on ClickHouse: an event id that reaches the store twice counts
//! once in every metric, whoever sent it twice. A client retrying after a
//! collector restart (graceful or `kill -9`), the spool replaying an insert
//! whose answer was lost, two collectors given the same batch at once or one
//! after the other: each time the dashboard's numbers must be those of the
//! distinct event ids the test posted, computed here by brute force.
//!
//! The batches mix events from a minute, an hour and three days ago, so they
//! land in the recent past a restarted collector reloads, in whole hours the
//! rollups serve and in old partitions nothing in memory remembers. Every
//! check reads the JSON summary, a breakdown and its CSV export of a window
//! covering all of them, and, where the design allows no extra row at all,
//! counts the rows of `events` without `FINAL` (`FINAL` would hide exactly
//! the duplicates these tests look for; the rollups cannot be read with it).
//! The collectors acknowledge once stored, unless a test says otherwise, so
//! an answer means the insert has finished and a read after it sees it.
//!
//! Every mismatch is collected before a test fails, so one run shows every
//! metric that counted an event twice, not only the first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use synchealth::settings::{AcknowledgeSetting, IngestSettings};
use synchealth::{Application, Roles, Settings};
use time::OffsetDateTime;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{
    batch, clickhouse_url, rfc3339, test_settings, up_args, wait_until_drained, Backend, Binary, ADMIN_PASSWORD,
    INGEST_KEY,
};

/// Events per batch: a multiple of the three ages, three versions and three
/// OSes below, so every segment holds events of every age.
pub(crate) const BATCH: usize = 36;

/// Minutes ago of the events: the last minutes (what a restarted collector
/// reloads), an hour (whole-hour rollups) and three days (an old partition).
const AGES_MINUTES: [i64; 3] = [1, 60, 3 * 24 * 60];
const APP_VERSIONS: [&str; 3] = ["2.3.0", "2.4.0", "2.5.0"];
const OSES: [&str; 3] = ["android", "ios", "web"];
/// `None`: the field left out (a weight of 1). Powers of two, so the
/// sample-weighted sums are exact in floating point on both sides.
const SAMPLE_RATES: [Option<f64>; 4] = [None, Some(0.5), Some(1.0), Some(0.25)];

/// The window every check reads: it covers events from three days ago.
const WINDOW: &str = "range=7d";

/// A batch of `BATCH` fresh events of devices named after `tag`.
pub(crate) fn fresh_batch(tag: &str) -> Value {
    let now = OffsetDateTime::now_utc();
    let events = (0..BATCH)
        .map(|i| {
            let at = now - time::Duration::minutes(AGES_MINUTES[i % 3]);
            let success = i % 4 != 1;
            let mut event = json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "device_id": format!("{tag}-device-{}", i % 5),
                "occurred_at": rfc3339(at),
                "last_success_at": rfc3339(at - time::Duration::minutes(5)),
                "success": success,
                "duration_ms": 100 + 37 * i as u64,
                "conflicts": u32::from(!success),
                "queue_depth": i % 7,
                "app_version": APP_VERSIONS[(i / 3) % 3],
                "os": OSES[(i / 2) % 3],
                "network": if i % 2 == 0 { "wifi" } else { "cellular" },
                "error_kind": if success { Value::Null } else { json!("network") },
            });
            if let Some(rate) = SAMPLE_RATES[(i / 5) % 4] {
                event["sample_rate"] = json!(rate);
            }
            event
        })
        .collect();
    batch(events)
}

pub(crate) fn events_of(body: &Value) -> Vec<Value> {
    body["events"].as_array().expect("events").clone()
}

/// What every metric must say, counted by brute force over distinct ids.
#[derive(Debug, Default)]
struct Counts {
    events: u64,
    attempts: f64,
    successes: f64,
    devices: BTreeSet<String>,
}

impl Counts {
    fn add(&mut self, event: &Value) {
        let weight = 1.0 / event["sample_rate"].as_f64().unwrap_or(1.0);
        self.events += 1;
        self.attempts += weight;
        if event["success"] == true {
            self.successes += weight;
        }
        self.devices.insert(event["device_id"].as_str().expect("device_id").to_string());
    }

    fn success_rate(&self) -> f64 {
        self.successes / self.attempts
    }
}

#[derive(Debug, Default)]
pub(crate) struct Expected {
    pub(crate) ids: usize,
    total: Counts,
    by_app_version: BTreeMap<String, Counts>,
    by_os: BTreeMap<String, Counts>,
}

impl Expected {
    /// Each event id once, however many times it was posted.
    pub(crate) fn of(posted: &[Value]) -> Expected {
        let mut distinct: BTreeMap<&str, &Value> = BTreeMap::new();
        for event in posted {
            distinct.entry(event["event_id"].as_str().expect("event_id")).or_insert(event);
        }
        let mut expected = Expected { ids: distinct.len(), ..Expected::default() };
        for event in distinct.values() {
            expected.total.add(event);
            let segment = |field: &str| event[field].as_str().expect("segment").to_string();
            expected.by_app_version.entry(segment("app_version")).or_default().add(event);
            expected.by_os.entry(segment("os")).or_default().add(event);
        }
        expected
    }
}

/// Mismatches found so far; [`Findings::finish`] fails with all of them.
#[derive(Debug, Default)]
pub(crate) struct Findings(Vec<String>);

impl Findings {
    pub(crate) fn count(&mut self, what: &str, actual: &Value, expected: u64) {
        if actual.as_u64() != Some(expected) {
            self.0.push(format!("{what}: {actual}, expected {expected}"));
        }
    }

    fn number(&mut self, what: &str, actual: &Value, expected: f64) {
        let close = actual.as_f64().is_some_and(|a| (a - expected).abs() <= 1e-9 * expected.abs().max(1.0));
        if !close {
            self.0.push(format!("{what}: {actual}, expected {expected}"));
        }
    }

    fn answer(&mut self, what: &str, actual: &Value, expected: &Value) {
        if actual != expected {
            self.0.push(format!("{what}: {actual}, expected {expected}"));
        }
    }

    fn segments(&mut self, what: &str, actual: &BTreeMap<String, Value>, expected: &BTreeMap<String, Counts>) {
        let (have, want): (Vec<_>, Vec<_>) = (actual.keys().collect(), expected.keys().collect());
        if have != want {
            self.0.push(format!("{what}: segments {have:?}, expected {want:?}"));
        }
        for (segment, counts) in expected {
            let Some(row) = actual.get(segment) else { continue };
            self.count(&format!("{what}[{segment}].events"), &row["events"], counts.events);
            self.number(&format!("{what}[{segment}].attempts"), &row["attempts"], counts.attempts);
            self.number(&format!("{what}[{segment}].success_rate"), &row["success_rate"], counts.success_rate());
            self.count(&format!("{what}[{segment}].devices"), &row["devices"], counts.devices.len() as u64);
        }
    }

    pub(crate) fn finish(self, context: &str) {
        assert!(self.0.is_empty(), "{context}: counted wrong:\n  {}", self.0.join("\n  "));
    }
}

/// The dashboard API of a running collector.
pub(crate) struct Api {
    /// Names the collector in failure messages.
    pub(crate) name: String,
    pub(crate) base: String,
    client: reqwest::Client,
}

impl Api {
    pub(crate) fn new(name: &str, base: &str) -> Api {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Api { name: name.to_string(), base: base.to_string(), client }
    }

    /// Posts a batch; asserts it was acknowledged and returns the answer.
    pub(crate) async fn post(&self, body: &Value) -> Value {
        let response = self
            .client
            .post(format!("{}/v1/events", self.base))
            .bearer_auth(INGEST_KEY)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let answer: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{answer}");
        answer
    }

    async fn get(&self, path_and_query: &str) -> reqwest::Response {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path_and_query}");
        response
    }

    pub(crate) async fn json(&self, path_and_query: &str) -> Value {
        self.get(path_and_query).await.json().await.unwrap()
    }

    /// Checks the summary, the breakdown by app version and the CSV
    /// breakdown by OS against the distinct events of `posted`.
    pub(crate) async fn check_counted_once(&self, posted: &[Value], findings: &mut Findings) {
        let expected = Expected::of(posted);
        let name = &self.name;
        let summary = self.json(&format!("/api/v1/summary?{WINDOW}")).await;
        findings.count(&format!("{name} summary.events"), &summary["events"], expected.total.events);
        findings.number(&format!("{name} summary.attempts"), &summary["attempts"], expected.total.attempts);
        let success_rate = expected.total.success_rate();
        findings.number(&format!("{name} summary.success_rate"), &summary["success_rate"], success_rate);
        findings.count(&format!("{name} summary.devices"), &summary["devices"], expected.total.devices.len() as u64);

        let breakdown = self.json(&format!("/api/v1/breakdown?by=app_version&{WINDOW}")).await;
        let segments = breakdown["segments"]
            .as_array()
            .expect("segments")
            .iter()
            .map(|s| (s["segment"].as_str().expect("segment").to_string(), s.clone()))
            .collect();
        findings.segments(&format!("{name} breakdown by app_version"), &segments, &expected.by_app_version);

        let csv = self.get(&format!("/api/v1/breakdown.csv?by=os&{WINDOW}")).await.text().await.unwrap();
        findings.segments(&format!("{name} breakdown.csv by os"), &csv_rows(&csv), &expected.by_os);
    }
}

/// The rows of a breakdown CSV by their first cell, each as a JSON object of
/// its numeric cells (the segments here need no quoting).
fn csv_rows(csv: &str) -> BTreeMap<String, Value> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    lines
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            let numbers = header
                .iter()
                .zip(&cells)
                .skip(1)
                .filter_map(|(name, cell)| {
                    let number = cell.parse::<u64>().map(Value::from).or_else(|_| cell.parse::<f64>().map(Value::from));
                    Some((name.to_string(), number.ok()?))
                })
                .collect::<serde_json::Map<_, _>>();
            (cells[0].to_string(), Value::Object(numbers))
        })
        .collect()
}

/// Rows of `events` (no `FINAL`: every stored copy) and distinct ids in them.
pub(crate) async fn stored_rows(url: &str, database: &str) -> (u64, u64) {
    let sql = format!("SELECT count(), uniqExact(event_id) FROM `{database}`.events FORMAT TabSeparated");
    let response = reqwest::Client::new().post(url).body(sql).send().await.unwrap();
    assert!(response.status().is_success(), "counting rows: {}", response.text().await.unwrap());
    let text = response.text().await.unwrap();
    let mut cells = text.split_whitespace().map(|c| c.parse::<u64>().expect("a count"));
    (cells.next().expect("count()"), cells.next().expect("uniqExact"))
}

/// `events` holds each posted id exactly once.
async fn check_stored_once(url: &str, database: &str, posted: &[Value], findings: &mut Findings) {
    let ids = Expected::of(posted).ids as u64;
    let (rows, distinct) = stored_rows(url, database).await;
    findings.count(&format!("rows of {database}.events"), &json!(rows), ids);
    findings.count(&format!("distinct ids in {database}.events"), &json!(distinct), ids);
}

fn acknowledged_as_duplicates(events: usize) -> Value {
    json!({"accepted": 0, "duplicates": events, "rejected": []})
}

/// An acknowledgement that accounts for every event of the batch, whether it
/// says accepted or duplicate (answers that cannot know).
fn assert_answer_counts_every_event(answer: &Value, events: usize) {
    let counted = answer["accepted"].as_u64().unwrap() + answer["duplicates"].as_u64().unwrap();
    assert_eq!(counted, events as u64, "{answer}");
}

/// A database name for a test that starts binaries.
fn database_for(name: &str) -> String {
    format!("it_{}_{name}", std::process::id())
}

/// `synchealth up` against ClickHouse, acknowledging stored.
fn binary_args(dir: &Path, url: &str, database: &str) -> Vec<String> {
    let config = dir.join("synchealth.toml");
    // Stored acknowledgements: the answer to a resend can say duplicates.
    std::fs::write(&config, "[ingest]\nacknowledge = \"stored\"\n").unwrap();
    up_args(url, database, &config)
}

/// How a test stops the first collector before the resend.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Sigterm,
    Kill9,
}

/// Posts a batch, stops the binary, starts it again on the same database and
/// data directory, posts the same batch again.
async fn resend_after_restart(name: &str, stop: Stop) {
    let Some(url) = clickhouse_url() else { return };
    let dir = tempfile::tempdir().unwrap();
    let database = database_for(name);
    let args = binary_args(dir.path(), &url, &database);
    let data_dir = dir.path().join("data");
    let body = fresh_batch(name);

    let first = Binary::start(&data_dir, &args).await;
    let answer = Api::new("first binary", &first.base).post(&body).await;
    assert_eq!(answer, json!({"accepted": BATCH, "duplicates": 0, "rejected": []}), "a fresh database");
    match stop {
        Stop::Sigterm => first.stop_gracefully().await,
        Stop::Kill9 => first.kill_9(),
    }

    let second = Binary::start(&data_dir, &args).await;
    let api = Api::new("restarted binary", &second.base);
    let mut findings = Findings::default();
    let again = api.post(&body).await;
    findings.answer("the answer to the resend", &again, &acknowledged_as_duplicates(BATCH));
    api.check_counted_once(&events_of(&body), &mut findings).await;
    check_stored_once(&url, &database, &events_of(&body), &mut findings).await;
    findings.finish(&format!("{BATCH} events posted, {stop:?}, posted again"));
    second.kill_9();
}

#[tokio::test]
async fn a_batch_posted_again_after_a_graceful_restart_of_the_collector_is_counted_once() {
    resend_after_restart("graceful_restart", Stop::Sigterm).await;
}

#[tokio::test]
async fn a_batch_posted_again_after_kill_9_of_the_collector_is_counted_once() {
    resend_after_restart("kill_9_restart", Stop::Kill9).await;
}

/// An in-process collector (the whole product) on a test database.
struct Collector {
    api: Api,
    database: String,
    _dir: tempfile::TempDir,
}

/// Starts the product on `database`, or on a fresh database named after
/// `name`, with settings adjusted by `configure`; a data directory (and so a
/// spool) of its own, as a separate collector process has.
async fn collector(name: &str, database: Option<&str>, configure: impl FnOnce(&mut Settings)) -> Option<Collector> {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Backend::ClickHouse, name, dir.path())?;
    if let Some(database) = database {
        settings.clickhouse.database = database.to_string();
    }
    configure(&mut settings);
    let database = settings.clickhouse.database.clone();
    let app = Application::build(settings, Roles::ALL).await.expect("application builds");
    let api = Api::new(name, &format!("http://127.0.0.1:{}", app.port()));
    tokio::spawn(app.run_until_stopped());
    Some(Collector { api, database, _dir: dir })
}

/// Two collectors on one fresh database, built one after the other (each
/// applies the migrations at start).
async fn two_collectors(name: &str) -> Option<(Collector, Collector)> {
    let mut a = collector(name, None, |_| {}).await?;
    let mut b = collector(name, Some(&a.database), |_| {}).await?;
    a.api.name = "collector A".into();
    b.api.name = "collector B".into();
    Some((a, b))
}

/// Rounds of the race: each a fresh batch, so each is a new chance for both
/// collectors to check the same ids before either has written them.
const RACE_ROUNDS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_posted_to_two_collectors_at_the_same_time_is_counted_once() {
    let Some(url) = clickhouse_url() else { return };
    let Some((a, b)) = two_collectors("two_at_once").await else { return };
    let mut posted = Vec::new();
    let mut answers = Vec::new();
    for round in 0..RACE_ROUNDS {
        let body = fresh_batch(&format!("race{round}"));
        let (first, second) = tokio::join!(a.api.post(&body), b.api.post(&body));
        // Neither could know of the other's insert: each answer accounts for
        // every event, as accepted or duplicate; only the metrics are exact.
        assert_answer_counts_every_event(&first, BATCH);
        assert_answer_counts_every_event(&second, BATCH);
        answers.push((first["accepted"].as_u64().unwrap(), second["accepted"].as_u64().unwrap()));
        posted.extend(events_of(&body));
    }
    let mut findings = Findings::default();
    a.api.check_counted_once(&posted, &mut findings).await;
    b.api.check_counted_once(&posted, &mut findings).await;
    let (rows, _) = stored_rows(&url, &a.database).await;
    findings.finish(&format!(
        "{RACE_ROUNDS} batches of {BATCH} posted to two collectors at once (accepted per round {answers:?}; \
         {rows} rows in events)"
    ));
}

#[tokio::test]
async fn a_batch_posted_to_two_collectors_one_after_the_other_is_counted_once() {
    let Some(url) = clickhouse_url() else { return };
    let Some((a, b)) = two_collectors("one_then_other").await else { return };
    let mut posted = Vec::new();
    let mut findings = Findings::default();
    // Both orders: neither collector is the one that happens to know better.
    for (round, (first, second)) in [(&a, &b), (&b, &a)].into_iter().enumerate() {
        let body = fresh_batch(&format!("seq{round}"));
        let answer = first.api.post(&body).await;
        assert_eq!(answer, json!({"accepted": BATCH, "duplicates": 0, "rejected": []}), "fresh ids");
        // The first insert had finished: the second collector can know.
        let again = second.api.post(&body).await;
        findings.answer(
            &format!("round {round}: the other collector's answer"),
            &again,
            &acknowledged_as_duplicates(BATCH),
        );
        posted.extend(events_of(&body));
    }
    a.api.check_counted_once(&posted, &mut findings).await;
    b.api.check_counted_once(&posted, &mut findings).await;
    check_stored_once(&url, &a.database, &posted, &mut findings).await;
    findings.finish(&format!("2 batches of {BATCH}, each posted to one collector and then to the other"));
}

/// Quick batches, replays and spooled inserts, so the spool drains soon
/// after the lost answer.
pub(crate) fn quick_ingest(acknowledge: AcknowledgeSetting) -> IngestSettings {
    IngestSettings {
        acknowledge,
        max_batch_age_ms: 20,
        insert_max_delay_ms: 50,
        replay_backoff_min_ms: 50,
        replay_backoff_max_ms: 300,
        ..IngestSettings::default()
    }
}

/// Posts a batch through a collector whose first insert into `events`
/// reaches ClickHouse and is stored, but whose answer never comes back: the
/// collector spools the batch and replays it, and the replay must count once.
async fn lost_insert_answer(name: &str, acknowledge: AcknowledgeSetting) {
    let Some(url) = clickhouse_url() else { return };
    let proxy = CuttingProxy::start(&url).await;
    let via_proxy = proxy.url.clone();
    let Some(app) = collector(name, None, move |settings| {
        settings.clickhouse.url = Some(via_proxy);
        settings.ingest = quick_ingest(acknowledge);
    })
    .await
    else {
        return;
    };
    let body = fresh_batch(name);
    let answer = app.api.post(&body).await;
    assert_answer_counts_every_event(&answer, BATCH);

    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.cut_status().is_none() {
        assert!(Instant::now() < deadline, "the collector sent no insert into events within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Drained: the replayer took the batch and the store said it has it
    // (by inserting it again or by finding it stored).
    wait_until_drained(&app.api.base).await;
    assert_eq!(proxy.cut_status(), Some(200), "ClickHouse stored the insert whose answer was cut");

    let mut findings = Findings::default();
    app.api.check_counted_once(&events_of(&body), &mut findings).await;
    check_stored_once(&url, &app.database, &events_of(&body), &mut findings).await;
    findings.finish(&format!(
        "{BATCH} events, acknowledged {acknowledge:?}, the answer to their insert lost, replayed from the spool \
         ({} inserts into events)",
        proxy.events_inserts()
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_whose_answer_was_lost_and_replayed_from_the_spool_is_counted_once_acknowledging_stored() {
    lost_insert_answer("lost_answer_stored", AcknowledgeSetting::Stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_whose_answer_was_lost_and_replayed_from_the_spool_is_counted_once_acknowledging_spooled() {
    lost_insert_answer("lost_answer_spooled", AcknowledgeSetting::Spooled).await;
}

/// A TCP proxy in front of ClickHouse's HTTP port that relays every request
/// and its answer, except the first insert into `events`: that one goes to
/// ClickHouse whole, ClickHouse's answer is read to its end (the rows are
/// stored) and then the client's connection is closed instead. So the
/// collector sees an insert fail that in fact succeeded: the answer was lost.
struct CuttingProxy {
    url: String,
    state: Arc<ProxyState>,
}

#[derive(Debug, Default)]
struct ProxyState {
    /// Inserts into `events` seen, cut or relayed.
    events_inserts: AtomicUsize,
    /// The status ClickHouse answered to the insert whose answer was cut.
    cut: Mutex<Option<u16>>,
}

impl CuttingProxy {
    async fn start(clickhouse_url: &str) -> CuttingProxy {
        let upstream = reqwest::Url::parse(clickhouse_url).expect("a ClickHouse URL");
        let upstream =
            format!("{}:{}", upstream.host_str().expect("a host"), upstream.port_or_known_default().expect("a port"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(ProxyState::default());
        let shared = state.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, state) = (upstream.clone(), shared.clone());
                // A connection that fails is the client's error to see.
                tokio::spawn(async move { drop(relay(client, &upstream, &state).await) });
            }
        });
        CuttingProxy { url, state }
    }

    fn cut_status(&self) -> Option<u16> {
        *self.state.cut.lock().unwrap()
    }

    fn events_inserts(&self) -> usize {
        self.state.events_inserts.load(Ordering::SeqCst)
    }
}

/// Relays one client connection, a request and then its answer at a time
/// (HTTP/1.1 keep-alive, no pipelining: what the clickhouse crate does).
async fn relay(client: TcpStream, upstream: &str, state: &ProxyState) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    let (client_read, mut client_write) = client.into_split();
    let (server_read, mut server_write) = server.into_split();
    let (mut client_read, mut server_read) = (BufReader::new(client_read), BufReader::new(server_read));
    while let Some(request) = read_message(&mut client_read, false).await? {
        let cut = request.inserts_into_events() && state.events_inserts.fetch_add(1, Ordering::SeqCst) == 0;
        server_write.write_all(&request.raw).await?;
        let response = loop {
            let response = read_message(&mut server_read, true).await?.ok_or(io::ErrorKind::UnexpectedEof)?;
            if !(100..200).contains(&response.status) {
                break response;
            }
            client_write.write_all(&response.raw).await?;
        };
        if cut {
            *state.cut.lock().unwrap() = Some(response.status);
            // Dropping both halves closes the client's connection with the
            // answer unsent.
            return Ok(());
        }
        client_write.write_all(&response.raw).await?;
        if request.close || response.close {
            return Ok(());
        }
    }
    Ok(())
}

/// One HTTP/1.1 message: its bytes as read (relayed verbatim) and what the
/// proxy needs to know of it.
struct Message {
    raw: Vec<u8>,
    /// The request target (`/?query=...`); empty in a response.
    target: String,
    /// The response status; 0 in a request.
    status: u16,
    /// The body without chunk framing.
    body: Vec<u8>,
    /// The connection ends after this message.
    close: bool,
}

impl Message {
    /// Whether this request inserts into the table `events` (not
    /// `device_hour_input` or another): the SQL is in the `query` URL
    /// parameter (the clickhouse crate's inserts) or else starts the body.
    fn inserts_into_events(&self) -> bool {
        let from_url = self
            .target
            .split_once('?')
            .and_then(|(_, query)| query.split('&').find_map(|pair| pair.strip_prefix("query=")).map(form_decode));
        let sql =
            from_url.unwrap_or_else(|| String::from_utf8_lossy(&self.body[..self.body.len().min(200)]).into_owned());
        let sql = sql.trim_start();
        let insert = sql.get(..12).is_some_and(|p| p.eq_ignore_ascii_case("INSERT INTO "));
        let Some(rest) = sql.get(12..).filter(|_| insert) else { return false };
        let table: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '`' | '"'))
            .collect();
        table.rsplit('.').next().unwrap_or_default().trim_matches(['`', '"']) == "events"
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match (bytes[i], escaped) {
            (_, Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', None) => {
                out.push(b' ');
                i += 1;
            }
            (byte, None) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one message, or `None` at a clean end of the connection. Bodies are
/// delimited by `Content-Length` or chunked transfer encoding; a response
/// with neither runs to the end of the connection.
async fn read_message<R: AsyncBufRead + Unpin>(reader: &mut R, response: bool) -> io::Result<Option<Message>> {
    let mut raw = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut raw).await?;
        if n == 0 {
            return if raw.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        if raw == b"\r\n" {
            raw.clear(); // stray line breaks between messages
        } else if raw.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let mut lines = head.split("\r\n");
    let start: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_ascii_lowercase()))
        .collect();
    let (target, status) = if response {
        (String::new(), start.get(1).and_then(|s| s.parse().ok()).unwrap_or(0))
    } else {
        (start.get(1).copied().unwrap_or_default().to_string(), 0)
    };
    let mut close = headers.get("connection").is_some_and(|c| c == "close");
    let mut body = Vec::new();
    if response && ((100..200).contains(&status) || status == 204 || status == 304) {
        // No body.
    } else if headers.get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).await?;
            raw.extend_from_slice(&line);
            let size_text = String::from_utf8_lossy(&line);
            let size_text = size_text.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::other(format!("chunk size {size_text:?}")))?;
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut trailer = Vec::new();
                    if reader.read_until(b'\n', &mut trailer).await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        break;
                    }
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            raw.extend_from_slice(&chunk);
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(length) = headers.get("content-length") {
        let length: usize = length.parse().map_err(|_| io::Error::other(format!("content-length {length:?}")))?;
        let mut content = vec![0; length];
        reader.read_exact(&mut content).await?;
        raw.extend_from_slice(&content);
        body = content;
    } else if response {
        reader.read_to_end(&mut body).await?;
        raw.extend_from_slice(&body);
        close = true;
    }
    Ok(Some(Message { raw, target, status, body, close }))
}

#[test]
fn the_proxy_tells_an_insert_into_events_from_other_requests() {
    let request = |target: &str, body: &[u8]| Message {
        raw: Vec::new(),
        target: target.to_string(),
        status: 0,
        body: body.to_vec(),
        close: false,
    };
    let url = |sql: &str| {
        let query: String = reqwest::Url::parse_with_params("http://ch/", [("database", "db"), ("query", sql)])
            .unwrap()
            .query()
            .unwrap()
            .to_string();
        format!("/?{query}")
    };
    assert!(request(&url("INSERT INTO events(project,event_id) FORMAT RowBinary"), b"").inserts_into_events());
    assert!(request(&url("insert into `db`.`events` FORMAT RowBinary"), b"").inserts_into_events());
    assert!(request("/", b"INSERT INTO events (project) VALUES").inserts_into_events());
    assert!(!request(&url("INSERT INTO device_hour_input(project) FORMAT RowBinary"), b"").inserts_into_events());
    assert!(!request(&url("INSERT INTO events_by_device(project) FORMAT RowBinary"), b"").inserts_into_events());
    assert!(!request(&url("SELECT count() FROM events"), b"").inserts_into_events());
    assert!(!request("/?database=db", b"SELECT 1").inserts_into_events());
}
