//! `synchealth bench ingest`: the collector's throughput, measured against
//! its own ceilings on the same machine in the same run, so the ratios hold
//! on a noisy box.
//!
//! Phases (`--phases` picks some), each into a fresh database:
//! 1. **direct**: the `clickhouse` crate's RowBinary inserts of large blocks
//!    (the best any writer can do here);
//! 2. **json**: the same clients posting their 1,000-event batches
//!    straight into ClickHouse's HTTP interface as `JSONEachRow` (what a
//!    collector-less setup gets: every small insert makes a part);
//! 3. **collector**: the real `synchealth collector` process (this binary,
//!    spawned) taking the same 1,000-event batches over loopback, measured
//!    until ClickHouse holds every acknowledged event; RSS read from /proc;
//! 4. **half rate**: clients paced at half the sustained rate, for the ack
//!    latency an app sees in normal operation;
//! 5. **embedded**: the collector on its SQLite store, acknowledging once
//!    stored (the default there), then once spooled (`ingest.acknowledge =
//!    "spooled"`), each measured until the database file holds every event.
//!
//! Event ids are counters laid out as UUIDs, so batches are unique without a
//! random number generator in the hot loop of the load generator. Like
//! time-ordered ids (UUIDv7, what `client-probe` sends), they land at the end
//! of the embedded store's primary key rather than all over it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use hdrhistogram::Histogram;
use synchealth_schema::{Network, ProjectName, StoredEvent, SyncEvent};
use synchealth_store::{ClickHouseConfig, ClickHouseStore, Database};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::Settings;

/// `synchealth bench ingest` options.
#[derive(Debug, Clone, Args)]
pub struct IngestBenchArgs {
    /// Events the collector phase posts (the direct phase writes the same number).
    #[arg(long, default_value_t = 2_000_000)]
    pub events: u64,
    /// Events the slow JSONEachRow and embedded phases post.
    #[arg(long, default_value_t = 400_000)]
    pub small_events: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Events per client request.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Rows per insert in the direct phase.
    #[arg(long, default_value_t = 100_000)]
    pub direct_rows: usize,
    /// Seconds of the half-rate latency phase.
    #[arg(long, default_value_t = 10)]
    pub half_rate_seconds: u64,
    /// Phases to run (all by default); ratios need `direct`, `json` and `collector`.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchPhase::Direct, BenchPhase::Json, BenchPhase::Collector, BenchPhase::Embedded])]
    pub phases: Vec<BenchPhase>,
}

/// A phase of `bench ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchPhase {
    /// RowBinary inserts straight into ClickHouse with the store's own writer.
    Direct,
    /// Clients posting JSONEachRow straight to ClickHouse's HTTP interface.
    Json,
    /// Clients posting to the collector with ClickHouse behind it, then the half-rate run.
    Collector,
    /// Clients posting to the collector with the embedded SQLite store, acknowledged once stored, then once spooled.
    Embedded,
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    /// Phase name.
    pub name: &'static str,
    /// Events written.
    pub events: u64,
    /// Wall time until they were all stored.
    pub seconds: f64,
    /// Request latencies (ms), when the phase has requests.
    pub latency_ms: Option<(f64, f64)>,
    /// Peak RSS of the collector process, MiB.
    pub peak_rss_mib: Option<f64>,
    /// CPU time (user + system) the collector process spent per event during
    /// the phase, µs: what an event costs whatever else the box is doing.
    pub cpu_us_per_event: Option<f64>,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }
}

const INGEST_KEY: &str = "shk_bench_ingest_key";

/// Runs every phase and prints a Markdown report.
pub async fn run(settings: &Settings, args: &IngestBenchArgs) -> anyhow::Result<()> {
    let url = settings.clickhouse.url.clone().context("bench ingest needs --clickhouse-url")?;
    let mut phases = Vec::new();
    let run_id = std::process::id();
    let tmp = tempdir()?;
    let run = |phase| args.phases.contains(&phase);

    if run(BenchPhase::Direct) {
        eprintln!("bench: direct RowBinary inserts of {} rows ...", args.direct_rows);
        let database = format!("bench_direct_{run_id}");
        phases.push(direct(&url, &database, args).await?);
        drop_database(&url, &database).await;
    }
    if run(BenchPhase::Json) {
        eprintln!("bench: {} clients posting JSONEachRow straight to ClickHouse ...", args.clients);
        let database = format!("bench_jer_{run_id}");
        phases.push(json_each_row(&url, &database, args).await?);
        drop_database(&url, &database).await;
    }
    if run(BenchPhase::Collector) {
        let database = format!("bench_collector_{run_id}");
        collector_phases(&url, &database, &tmp, args, &mut phases).await?;
        drop_database(&url, &database).await;
    }
    if run(BenchPhase::Embedded) {
        phases.push(embedded(&tmp, args, "stored").await?);
        phases.push(embedded(&tmp, args, "spooled").await?);
    }

    let _ = std::fs::remove_dir_all(&tmp);
    print_report(&phases, args);
    Ok(())
}

/// Drops a finished phase's database at once: its parts would otherwise be
/// merged in the background during the next phases (the JSONEachRow phase
/// leaves hundreds of small parts), taking their CPU.
async fn drop_database(url: &str, database: &str) {
    let _ = ch_query(url, &format!("DROP DATABASE IF EXISTS {database}")).await;
}

/// The collector with the embedded store, acknowledging as `acknowledge`
/// says (`ingest.acknowledge`), until SQLite holds every event.
async fn embedded(tmp: &Path, args: &IngestBenchArgs, acknowledge: &str) -> anyhow::Result<Phase> {
    eprintln!(
        "bench: {} clients posting to the collector (embedded store, acknowledge = {acknowledge}) ...",
        args.clients
    );
    let dir = tmp.join(format!("sqlite-{acknowledge}"));
    std::fs::create_dir_all(&dir).context("creating the embedded phase's data dir")?;
    let config = dir.join("bench.toml");
    std::fs::write(&config, format!("[ingest]\nacknowledge = \"{acknowledge}\"\n"))
        .context("writing the bench config")?;
    let config = config.to_str().context("a non-UTF-8 temp path")?;
    let mut collector = Collector::spawn(&dir, &["--config", config])?;
    let counter = Counter::Sqlite(dir.join("synchealth.db"));
    let result = post_all(&collector.base, args, args.small_events, 0, Some(&counter)).await?;
    let name = if acknowledge == "spooled" {
        "collector → embedded SQLite (spooled)"
    } else {
        "collector → embedded SQLite"
    };
    let cpu_us_per_event = collector.cpu_seconds().map(|cpu| cpu * 1e6 / result.events as f64);
    let phase = Phase { name, peak_rss_mib: collector.peak_rss_mib(), cpu_us_per_event, ..result };
    collector.stop();
    Ok(phase)
}

/// The collector with ClickHouse behind it: all-out, then at half that rate.
async fn collector_phases(
    url: &str,
    database: &str,
    tmp: &Path,
    args: &IngestBenchArgs,
    phases: &mut Vec<Phase>,
) -> anyhow::Result<()> {
    eprintln!("bench: {} clients posting to the collector (ClickHouse) ...", args.clients);
    let extra = ["--clickhouse-url", url, "--clickhouse-database", database];
    let mut collector = Collector::spawn(&tmp.join("ch"), &extra)?;
    let counter = Counter::ClickHouse { url: url.to_string(), database: database.to_string() };
    let sustained = post_all(&collector.base, args, args.events, 0, Some(&counter)).await?;
    let cpu_sustained = collector.cpu_seconds();
    let cpu_us_per_event = cpu_sustained.map(|cpu| cpu * 1e6 / sustained.events as f64);
    let mut sustained =
        Phase {
            name: "collector → ClickHouse", peak_rss_mib: collector.peak_rss_mib(), cpu_us_per_event, ..sustained
        };
    let half_rate = sustained.rate() / 2.0;
    eprintln!("bench: half rate ({half_rate:.0} events/s) for {} s ...", args.half_rate_seconds);
    let mut paced = paced(&collector.base, args, half_rate, args.events).await?;
    // The half-rate phase's events are stored a little after their answers:
    // its CPU is counted up to its last answer, a slight undercount.
    if let (Some(before), Some(after)) = (cpu_sustained, collector.cpu_seconds()) {
        paced.cpu_us_per_event = Some((after - before) * 1e6 / paced.events as f64);
    }
    sustained.peak_rss_mib = collector.peak_rss_mib();
    collector.stop();
    phases.push(sustained);
    phases.push(paced);
    Ok(())
}

fn print_report(phases: &[Phase], args: &IngestBenchArgs) {
    println!(
        "| phase | events | seconds | events/s | ack p50 ms | ack p99 ms | peak RSS MiB | collector CPU µs/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for p in phases {
        let (p50, p99) = p.latency_ms.map_or(("".into(), "".into()), |(a, b)| (format!("{a:.1}"), format!("{b:.1}")));
        let rss = p.peak_rss_mib.map_or(String::new(), |r| format!("{r:.0}"));
        let cpu = p.cpu_us_per_event.map_or(String::new(), |c| format!("{c:.1}"));
        println!("| {} | {} | {:.2} | {:.0} | {p50} | {p99} | {rss} | {cpu} |", p.name, p.events, p.seconds, p.rate());
    }
    let rate = |name: &str| phases.iter().find(|p| p.name == name).map(Phase::rate).unwrap_or(f64::NAN);
    let collector = rate("collector → ClickHouse");
    println!();
    println!(
        "clients: {}, batch: {} events; collector / direct = {:.2}; collector / JSONEachRow = {:.1}",
        args.clients,
        args.batch,
        collector / rate("direct RowBinary"),
        collector / rate("JSONEachRow over HTTP")
    );
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("synchealth-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).context("creating the bench temp dir")?;
    Ok(dir)
}

/// The event id of sequence number `seq`: a counter laid out as a UUID.
fn event_id(seq: u64) -> Uuid {
    Uuid::from_u64_pair(0x5eed_0000_0000_4000 | (seq >> 48), 0x8000_0000_0000_0000 | seq)
}

/// Request bodies for the load generator: one batch serialized once, then
/// re-stamped per request with fresh event ids (same length, written in
/// place), so the generator's CPU goes to sending, not to serde, and the
/// collector and ClickHouse get the cores on this shared box. Every other
/// field repeats from batch to batch, which changes nothing for ingest.
struct BodyTemplate {
    bytes: Vec<u8>,
    /// Where each event's id (36 hyphenated characters) starts.
    id_offsets: Vec<usize>,
}

impl BodyTemplate {
    /// `body` holds the events of sequence numbers `0..n`, in order.
    fn new(bytes: Vec<u8>, n: usize) -> anyhow::Result<BodyTemplate> {
        let mut id_offsets = Vec::with_capacity(n);
        let mut from = 0;
        for seq in 0..n as u64 {
            let id = event_id(seq).hyphenated().to_string();
            let at = bytes[from..]
                .windows(id.len())
                .position(|w| w == id.as_bytes())
                .context("an event id missing from the template body")?;
            id_offsets.push(from + at);
            from += at + id.len();
        }
        Ok(BodyTemplate { bytes, id_offsets })
    }

    /// The body of the batch whose events are `first..first + n`.
    fn body(&self, first: u64) -> Vec<u8> {
        let mut body = self.bytes.clone();
        for (i, &at) in self.id_offsets.iter().enumerate() {
            event_id(first + i as u64).hyphenated().encode_lower(&mut body[at..at + 36]);
        }
        body
    }
}

/// The event with sequence number `seq`: varied but cheap to make.
fn event(seq: u64, now: OffsetDateTime) -> SyncEvent {
    let networks = [Network::Wifi, Network::Cellular, Network::Wifi, Network::Ethernet];
    let occurred_at = now - time::Duration::milliseconds((seq % 600_000) as i64);
    SyncEvent {
        event_id: event_id(seq),
        device_id: format!("bench-device-{}", seq % 50_000),
        occurred_at,
        success: !seq.is_multiple_of(20),
        duration_ms: 50 + (seq * 7919) % 30_000,
        conflicts: u32::from(seq.is_multiple_of(50)),
        queue_depth: (seq % 97) as u32,
        last_success_at: Some(occurred_at - time::Duration::seconds((seq % 3600) as i64)),
        app_version: format!("2.{}.0", seq % 4),
        os: if seq.is_multiple_of(3) { "ios".into() } else { "android".into() },
        os_version: Some("14".into()),
        network: networks[(seq % 4) as usize],
        device_model: Some("Pixel 8".into()),
        sync_type: Some("delta".into()),
        trigger: None,
        error_kind: None,
        error_message: None,
        retries: 0,
        records_up: seq % 10,
        records_down: seq % 30,
        bytes_up: 1000 + seq % 5000,
        bytes_down: 4000 + seq % 20_000,
        sample_rate: 1.0,
        conflict_details: Vec::new(),
        queue_oldest_at: None,
        dimensions: Default::default(),
    }
}

fn batch_body(first: u64, n: usize, now: OffsetDateTime) -> anyhow::Result<Vec<u8>> {
    let events: Vec<SyncEvent> = (first..first + n as u64).map(|s| event(s, now)).collect();
    let sent_at = now.format(&Rfc3339).context("formatting sent_at")?;
    Ok(serde_json::to_vec(&serde_json::json!({"sent_at": sent_at, "events": events}))?)
}

async fn direct(url: &str, database: &str, args: &IngestBenchArgs) -> anyhow::Result<Phase> {
    let store = ClickHouseStore::connect(ch_config(url, database)).await?;
    store.migrate().await?;
    let project = ProjectName::parse("bench")?;
    let now = OffsetDateTime::now_utc();
    let mut written = 0u64;
    let mut spent = Duration::ZERO;
    while written < args.events {
        let n = (args.events - written).min(args.direct_rows as u64);
        // Rows are built outside the timed part: this phase measures the
        // insert, the ceiling the collector is compared with.
        let rows: Vec<StoredEvent> =
            (written..written + n).map(|s| StoredEvent::new(project.clone(), event(s, now), now, now)).collect();
        let started = Instant::now();
        store.insert_unchecked(&rows).await?;
        spent += started.elapsed();
        written += n;
    }
    Ok(Phase {
        name: "direct RowBinary",
        events: written,
        seconds: spent.as_secs_f64(),
        latency_ms: None,
        peak_rss_mib: None,
        cpu_us_per_event: None,
    })
}

fn ch_config(url: &str, database: &str) -> ClickHouseConfig {
    ClickHouseConfig { url: url.to_string(), user: "default".into(), password: None, database: database.to_string() }
}

async fn ch_query(url: &str, sql: &str) -> anyhow::Result<String> {
    let response = reqwest::Client::new().post(url).body(sql.to_string()).send().await?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("ClickHouse answered {status}: {text}");
    }
    Ok(text)
}

/// One JSONEachRow line per event, the columns of the `events` table.
fn json_each_row_body(first: u64, n: usize, now: OffsetDateTime, project: &ProjectName) -> Vec<u8> {
    let mut body = Vec::with_capacity(n * 700);
    for seq in first..first + n as u64 {
        let s = StoredEvent::new(project.clone(), event(seq, now), now, now);
        let e = &s.event;
        let row = serde_json::json!({
            "project": s.project.as_str(), "event_id": e.event_id.to_string(), "device_id": e.device_id,
            "event_time": s.event_time_ms.div_euclid(1000), "event_time_ms": s.event_time_ms,
            "occurred_at_ms": s.occurred_at_ms(), "last_success_at_ms": s.last_success_at_ms(),
            "sent_at_ms": s.sent_at_ms, "received_at_ms": s.received_at_ms, "clock_skew_ms": s.clock_skew_ms,
            "success": u8::from(e.success), "duration_ms": e.duration_ms, "duration_bucket": s.duration_bucket,
            "conflicts": e.conflicts, "queue_depth": e.queue_depth, "queue_bucket": s.queue_bucket,
            "staleness_ms": s.staleness_ms, "staleness_bucket": s.staleness_bucket,
            "app_version": e.app_version, "os": e.os, "os_version": e.os_version.clone().unwrap_or_default(),
            "network": e.network.as_str(), "device_model": e.device_model.clone().unwrap_or_default(),
            "sync_type": e.sync_type.clone().unwrap_or_default(), "trigger": "", "error_kind": "",
            "error_message": "", "retries": e.retries, "records_up": e.records_up, "records_down": e.records_down,
            "bytes_up": e.bytes_up, "bytes_down": e.bytes_down, "sample_rate": e.sample_rate, "weight": s.weight,
        });
        // A JSON value always serializes.
        let _ = serde_json::to_writer(&mut body, &row);
        body.push(b'\n');
    }
    body
}

async fn json_each_row(url: &str, database: &str, args: &IngestBenchArgs) -> anyhow::Result<Phase> {
    let store = ClickHouseStore::connect(ch_config(url, database)).await?;
    store.migrate().await?;
    let insert_url = format!("{url}/?query=INSERT%20INTO%20{database}.events%20FORMAT%20JSONEachRow");
    let project = ProjectName::parse("bench")?;
    let now = OffsetDateTime::now_utc();
    let batches = args.small_events / args.batch as u64;
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let template = Arc::new(BodyTemplate::new(json_each_row_body(0, args.batch, now, &project), args.batch)?);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.clients {
        let (next, client, insert_url, template) = (next.clone(), client.clone(), insert_url.clone(), template.clone());
        let batch = args.batch;
        tasks.push(tokio::spawn(async move {
            let mut latencies = new_histogram();
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let body = template.body(b * batch as u64);
                let sent = Instant::now();
                let response = client.post(&insert_url).body(body).send().await?;
                if !response.status().is_success() {
                    bail!("ClickHouse refused a JSONEachRow insert: {}", response.text().await?);
                }
                record(&mut latencies, sent);
            }
        }));
    }
    let latencies = join_histograms(tasks).await?;
    Ok(Phase {
        name: "JSONEachRow over HTTP",
        events: batches * args.batch as u64,
        seconds: started.elapsed().as_secs_f64(),
        latency_ms: Some(percentiles(&latencies)),
        peak_rss_mib: None,
        cpu_us_per_event: None,
    })
}

fn new_histogram() -> Histogram<u64> {
    // Auto-resizing, 3 significant digits: never fails for that precision.
    let mut h = Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"));
    h.auto(true);
    h
}

fn record(h: &mut Histogram<u64>, since: Instant) {
    let micros = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    // `record` grows the auto-resizing histogram; it only fails past u64.
    let _ = h.record(micros.max(1));
}

fn percentiles(h: &Histogram<u64>) -> (f64, f64) {
    (h.value_at_quantile(0.5) as f64 / 1000.0, h.value_at_quantile(0.99) as f64 / 1000.0)
}

async fn join_histograms(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>>,
) -> anyhow::Result<Histogram<u64>> {
    let mut all = new_histogram();
    for task in tasks {
        let h = task.await.context("a client task panicked")??;
        all.add(&h).context("merging latency histograms")?;
    }
    Ok(all)
}

/// Counts the events a store holds, straight from the store (not the
/// collector's word for it), so a phase ends once every acknowledged event is
/// stored whichever way the collector acknowledges.
enum Counter {
    ClickHouse { url: String, database: String },
    Sqlite(std::path::PathBuf),
}

impl Counter {
    async fn count(&self) -> anyhow::Result<u64> {
        match self {
            Counter::ClickHouse { url, database } => {
                let text = ch_query(url, &format!("SELECT count() FROM {database}.events")).await?;
                text.trim().parse().context("parsing count()")
            }
            Counter::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
                    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
                    let conn =
                        rusqlite::Connection::open_with_flags(&path, flags).context("opening the bench database")?;
                    let count: i64 = conn.query_row("SELECT count(*) FROM events", [], |row| row.get(0))?;
                    Ok(u64::try_from(count).unwrap_or(0))
                })
                .await?
            }
        }
    }
}

/// Posts `total` events in batches from every client as fast as acks come;
/// with a counter, the phase ends only once the store holds them all.
async fn post_all(
    base: &str,
    args: &IngestBenchArgs,
    total: u64,
    first_seq: u64,
    counter: Option<&Counter>,
) -> anyhow::Result<Phase> {
    let batches = total / args.batch as u64;
    let started = Instant::now();
    let latencies = run_clients(base, args, batches, first_seq, None).await?;
    let events = batches * args.batch as u64;
    if let Some(counter) = counter {
        let deadline = Instant::now() + Duration::from_secs(120);
        while counter.count().await? < events {
            if Instant::now() > deadline {
                bail!("the store did not receive every acknowledged event within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Ok(Phase {
        name: "collector",
        events,
        seconds: started.elapsed().as_secs_f64(),
        latency_ms: Some(percentiles(&latencies)),
        peak_rss_mib: None,
        cpu_us_per_event: None,
    })
}

/// `args.clients` tasks posting `batches` batches between them, each either
/// as fast as acks come or one request per `pace` (start times spread over
/// one pace, so requests interleave). Returns every request's latency.
async fn run_clients(
    base: &str,
    args: &IngestBenchArgs,
    batches: u64,
    first_seq: u64,
    pace: Option<Duration>,
) -> anyhow::Result<Histogram<u64>> {
    let next = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/events");
    let now = OffsetDateTime::now_utc();
    let template = Arc::new(BodyTemplate::new(batch_body(0, args.batch, now)?, args.batch)?);
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let (next, client, url, template) = (next.clone(), client.clone(), url.clone(), template.clone());
        let batch = args.batch;
        let mut tick = pace.map(|interval| {
            let offset = interval.mul_f64(c as f64 / args.clients as f64);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        tasks.push(tokio::spawn(async move {
            let mut latencies = new_histogram();
            loop {
                if let Some(tick) = tick.as_mut() {
                    tick.tick().await;
                }
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok(latencies);
                }
                let body = template.body(first_seq + b * batch as u64);
                post_batch(&client, &url, body, &mut latencies).await?;
            }
        }));
    }
    join_histograms(tasks).await
}

async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    latencies: &mut Histogram<u64>,
) -> anyhow::Result<()> {
    let sent = Instant::now();
    let response =
        client.post(url).bearer_auth(INGEST_KEY).header("content-type", "application/json").body(body).send().await?;
    if !response.status().is_success() {
        bail!("the collector answered {}: {}", response.status(), response.text().await?);
    }
    record(latencies, sent);
    Ok(())
}

/// Clients paced to `rate` events/s in total, for the ack latency at a
/// sustainable load.
async fn paced(base: &str, args: &IngestBenchArgs, rate: f64, first_seq: u64) -> anyhow::Result<Phase> {
    let batches_per_second = rate / args.batch as f64;
    let total_batches = (batches_per_second * args.half_rate_seconds as f64).max(1.0) as u64;
    let interval = Duration::from_secs_f64(args.clients as f64 / batches_per_second);
    let started = Instant::now();
    let latencies = run_clients(base, args, total_batches, first_seq, Some(interval)).await?;
    Ok(Phase {
        name: "collector at half rate",
        events: total_batches * args.batch as u64,
        seconds: started.elapsed().as_secs_f64(),
        latency_ms: Some(percentiles(&latencies)),
        peak_rss_mib: None,
        cpu_us_per_event: None,
    })
}

/// A `synchealth collector` child process.
struct Collector {
    child: Child,
    base: String,
}

impl Collector {
    fn spawn(data_dir: &Path, extra: &[&str]) -> anyhow::Result<Collector> {
        let exe = std::env::current_exe().context("locating the synchealth binary")?;
        let mut child = Command::new(exe)
            .args(["collector", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(["--ingest-key", INGEST_KEY, "--admin-password", "bench", "--rate-limit-events-per-second", "0"])
            .args(extra)
            .env("RUST_LOG", std::env::var("SYNCHEALTH_BENCH_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the collector")?;
        let stdout = child.stdout.take().context("collector stdout")?;
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).context("reading collector stdout")? == 0 {
                bail!("the collector exited before listening");
            }
            if let Some(url) = line.trim().strip_prefix("synchealth: listening on ") {
                let base = url.to_string();
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in reader.lines() {});
                return Ok(Collector { child, base });
            }
        }
    }

    /// Peak resident memory (VmHWM) so far, MiB.
    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    /// CPU time (user + system) the process has used so far, seconds.
    fn cpu_seconds(&self) -> Option<f64> {
        cpu_seconds_of(&std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// User + system CPU seconds from a `/proc/PID/stat` line: its 14th and
/// 15th fields, in clock ticks of `USER_HZ` (100 on Linux, fixed by the ABI).
/// The command name (2nd field) may hold spaces, so fields are counted from
/// its closing parenthesis.
fn cpu_seconds_of(stat: &str) -> Option<f64> {
    let mut after_name = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let utime: f64 = after_name.nth(11)?.parse().ok()?;
    let stime: f64 = after_name.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (x) y) S 1 4242 4242 0 -1 4194560 8 0 0 0 949 258 0 0 20 0 6 0 1234 1000 100";
        assert_eq!(cpu_seconds_of(stat), Some(12.07));
        assert_eq!(cpu_seconds_of("4242 (short"), None);
    }

    #[test]
    fn generated_batches_pass_the_collectors_validation_with_unique_ids() {
        let body = batch_body(1_000, 500, OffsetDateTime::now_utc()).unwrap();
        let parsed = synchealth_schema::parse_batch(&body).unwrap();
        assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected.first());
        let mut ids: Vec<_> = parsed.events.iter().map(|(_, e)| e.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 500);
        assert_ne!(
            event(1, OffsetDateTime::now_utc()).event_id,
            event(1 << 48 | 1, OffsetDateTime::now_utc()).event_id
        );
    }

    #[test]
    fn a_restamped_template_body_carries_exactly_the_ids_of_its_batch() {
        let now = OffsetDateTime::now_utc();
        let template = BodyTemplate::new(batch_body(0, 300, now).unwrap(), 300).unwrap();
        let parsed = synchealth_schema::parse_batch(&template.body(7_000)).unwrap();
        assert!(parsed.rejected.is_empty());
        let ids: Vec<_> = parsed.events.iter().map(|(_, e)| e.event_id).collect();
        assert_eq!(ids, (7_000..7_300).map(event_id).collect::<Vec<_>>());
        let project = ProjectName::parse("p").unwrap();
        let rows = BodyTemplate::new(json_each_row_body(0, 50, now, &project), 50).unwrap().body(900);
        let text = String::from_utf8(rows).unwrap();
        assert_eq!(text.lines().count(), 50);
        assert!(text.lines().nth(3).unwrap().contains(&event_id(903).to_string()));
    }
}
