//! `synchealth bench dashboard`: the Overview page's server time, measured as
//! the page spends it: [`synchealth_dashboard::api::overview::overview`]
//! (the window, the previous window and the time buckets, concurrently),
//! over a day of realistic events, repeated and reported as p50/p95/p99.
//!
//! The data: `--events` events per day for `--days` days ending at the load
//! time (so the previous window is as full as the current one), from
//! `--devices` devices with skewed activity, five app versions (newer ones
//! more common, one per device, a fifth of the devices upgrading half-way),
//! three OSes, five networks (each device mostly on its own), 95% success, log-normal
//! durations, 5% conflicts (each with one detail: entity, kind, resolution), error
//! messages with ids in them, the age of pending changes, a few backed-up
//! queues, some sampled devices, and
//! 2% of events arriving late. ClickHouse is loaded with
//! [`ClickHouseStore::insert_unchecked`] in 100,000-row blocks (fresh ids,
//! nothing to deduplicate), SQLite with the normal insert in 5,000-event
//! batches. A loaded data set is reused by the next run when `--reuse` is
//! given (the load time is kept in a file beside it), so tuning a query
//! does not mean reloading 20 million rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use rand::distributions::{Distribution, WeightedIndex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synchealth_dashboard::api::overview::{default_step_seconds, overview};
use synchealth_schema::{
    unix_ms, ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, Network, ProjectName, StoredEvent, SyncEvent,
};
use synchealth_store::metrics::DEFAULT_QUEUE_THRESHOLD;
use synchealth_store::{
    ClickHouseConfig, ClickHouseStore, Database, Events, Filters, Grouping, Query, SharedStore, SqliteStore,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::views::{self, Ingest, ViewFigures};
use crate::Settings;

const DAY_MS: i64 = 86_400_000;

/// Which stores to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchStores {
    /// ClickHouse (needs `--clickhouse-url`) and the embedded store.
    Both,
    /// ClickHouse only.
    Clickhouse,
    /// The embedded SQLite store only.
    Sqlite,
}

/// `synchealth bench dashboard` options.
#[derive(Debug, Clone, Args)]
pub struct DashboardBenchArgs {
    /// Events per day in ClickHouse.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Events per day in the embedded store.
    #[arg(long, default_value_t = 1_000_000)]
    pub sqlite_events: u64,
    /// Days of data (the overview reads the last one and the one before).
    #[arg(long, default_value_t = 2)]
    pub days: u32,
    /// Distinct devices.
    #[arg(long, default_value_t = 20_000)]
    pub devices: u32,
    /// Timed overview runs (after two warm-up runs).
    #[arg(long, default_value_t = 30)]
    pub runs: u32,
    /// Which stores.
    #[arg(long, value_enum, default_value_t = BenchStores::Both)]
    pub stores: BenchStores,
    /// Keep the loaded data and reuse it if already there (same sizes).
    #[arg(long)]
    pub reuse: bool,
    /// Where the SQLite file and the load records live.
    #[arg(long, default_value = "/tmp/synchealth-bench-dashboard")]
    pub dir: PathBuf,
    /// Dashboard views to time as requests through the real router, after
    /// the overview: `all` (the list in `bench/views.rs`), or paths with
    /// their query strings, comma-separated (`/api/v1/summary?range=24h&os=ios`).
    /// Windows given as `range=` end now: load afresh (no `--reuse`) so
    /// that now is where the data ends.
    #[arg(long, value_delimiter = ',')]
    pub views: Vec<String>,
    /// Timed runs of each view (after two warm-ups), round-robin.
    #[arg(long, default_value_t = 7)]
    pub view_runs: u32,
    /// Events a second written into the same store beside the reads, at the
    /// current time, through the store's normal insert (0: none).
    #[arg(long, default_value_t = 0)]
    pub ingest_rate: u32,
}

/// One store's figures.
#[derive(Debug, Clone)]
pub struct DashboardFigures {
    /// `clickhouse` or `sqlite`.
    pub store: &'static str,
    /// Events per day.
    pub events_per_day: u64,
    /// Seconds the load took (`None` when reused).
    pub load_seconds: Option<f64>,
    /// Overview time, ms: p50, p95, p99, max.
    pub overview_ms: [f64; 4],
    /// Each of the overview's aggregates alone, median ms:
    /// window, previous window, time buckets.
    pub parts_ms: [f64; 3],
    /// The `--views`, timed.
    pub views: Vec<ViewFigures>,
    /// Events written beside the reads, and their rate per second.
    pub ingested: Option<(u64, f64)>,
}

/// Loads (or reuses) each store's data, times the overview, prints a
/// Markdown table.
pub async fn run(settings: &Settings, args: &DashboardBenchArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("creating {}", args.dir.display()))?;
    let mut figures = Vec::new();
    if args.stores != BenchStores::Sqlite {
        let url =
            settings.clickhouse.url.clone().context("bench dashboard needs --clickhouse-url (or --stores sqlite)")?;
        let database =
            if args.reuse { "bench_dashboard".to_string() } else { format!("bench_dashboard_{}", std::process::id()) };
        let config = ClickHouseConfig { url, user: "default".into(), password: None, database: database.clone() };
        let store = ClickHouseStore::connect(config.clone()).await.context("connecting to ClickHouse")?;
        if !args.reuse {
            drop_database(&config).await?;
        }
        store.migrate().await.context("migrating the bench database")?;
        let store = Arc::new(store);
        let shared: SharedStore = store.clone();
        let record = args.dir.join(format!("clickhouse-{database}.end_ms"));
        let (end_ms, load_seconds) = load_once(
            &record,
            args,
            args.events,
            |events| {
                let store = store.clone();
                async move { store.insert_unchecked(&events).await.context("inserting into ClickHouse") }
            },
            100_000,
        )
        .await?;
        eprintln!("bench: timing the overview on ClickHouse ...");
        figures.push(measure("clickhouse", &shared, settings, end_ms, args, args.events, load_seconds).await?);
        if !args.reuse {
            drop_database(&config).await?;
        }
    }
    if args.stores != BenchStores::Clickhouse {
        let path =
            args.dir.join(if args.reuse { "bench.db".to_string() } else { format!("bench-{}.db", std::process::id()) });
        if !args.reuse {
            remove_sqlite(&path);
        }
        let store = Arc::new(SqliteStore::open(&path).with_context(|| format!("opening {}", path.display()))?);
        store.migrate().await.context("migrating the bench SQLite file")?;
        let shared: SharedStore = store.clone();
        let record = path.with_extension("end_ms");
        let (end_ms, load_seconds) = load_once(
            &record,
            args,
            args.sqlite_events,
            |events| {
                let store = store.clone();
                async move { store.insert(&events).await.map(|_| ()).context("inserting into SQLite") }
            },
            5_000,
        )
        .await?;
        eprintln!("bench: timing the overview on SQLite ...");
        figures.push(measure("sqlite", &shared, settings, end_ms, args, args.sqlite_events, load_seconds).await?);
        if !args.reuse {
            remove_sqlite(&path);
        }
    }
    print_report(&figures, args);
    Ok(())
}

fn remove_sqlite(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let _ = std::fs::remove_file(path.with_extension("end_ms"));
}

async fn drop_database(config: &ClickHouseConfig) -> anyhow::Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {}", config.database);
    let response =
        reqwest::Client::new().post(&config.url).body(sql).send().await.context("dropping the bench database")?;
    if !response.status().is_success() {
        bail!("ClickHouse refused to drop {}: {}", config.database, response.text().await.unwrap_or_default());
    }
    Ok(())
}

/// Loads the data unless `record` says the same load is already there;
/// returns the load's end time and how long loading took.
async fn load_once<F, Fut>(
    record: &Path,
    args: &DashboardBenchArgs,
    per_day: u64,
    insert: F,
    block: usize,
) -> anyhow::Result<(i64, Option<f64>)>
where
    F: Fn(Vec<StoredEvent>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let signature = format!("{per_day} {} {}", args.days, args.devices);
    if args.reuse {
        if let Ok(text) = std::fs::read_to_string(record) {
            if let Some((end, sig)) = text.split_once(' ') {
                if sig.trim() == signature {
                    let end_ms: i64 = end.parse().context("reading the load record")?;
                    eprintln!("bench: reusing the data loaded up to {end_ms} ({signature})");
                    return Ok((end_ms, None));
                }
            }
            bail!("{} holds another load; remove it and the data, or drop --reuse", record.display());
        }
    }
    let end_ms = unix_ms(OffsetDateTime::now_utc());
    let total = per_day * u64::from(args.days);
    eprintln!("bench: loading {total} events ({per_day} a day for {} days) ...", args.days);
    let generator = Generator::new(args.devices, total, end_ms, i64::from(args.days) * DAY_MS)?;
    let started = Instant::now();
    let mut written = 0u64;
    let mut seq = 0u64;
    while written < total {
        let n = (total - written).min(block as u64);
        let events: Vec<StoredEvent> = (0..n)
            .map(|_| {
                seq += 1;
                generator.event(seq)
            })
            .collect();
        insert(events).await?;
        written += n;
        if written % 1_000_000 < n {
            eprintln!("bench: {written} events loaded");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    std::fs::write(record, format!("{end_ms} {signature}")).with_context(|| format!("writing {}", record.display()))?;
    Ok((end_ms, Some(seconds)))
}

/// Times the overview of the last day before `end_ms`, then the views,
/// with the ingest beside them when asked for.
async fn measure(
    name: &'static str,
    store: &SharedStore,
    settings: &Settings,
    end_ms: i64,
    args: &DashboardBenchArgs,
    per_day: u64,
    load_seconds: Option<f64>,
) -> anyhow::Result<DashboardFigures> {
    let started = Instant::now();
    let ingest = (args.ingest_rate > 0).then(|| {
        let generator = Generator::new(args.devices, per_day, end_ms, DAY_MS).map(Arc::new);
        generator.map(|g| Ingest::start(store.clone(), args.ingest_rate, move |seq, now_ms| g.event_at(seq, now_ms)))
    });
    let ingest = ingest.transpose()?;
    let mut figures = time_overview(name, store, end_ms, args, per_day, load_seconds).await?;
    let views = views::views(&args.views);
    if !views.is_empty() {
        eprintln!("bench: timing {} views on {name} ...", views.len());
        let state = crate::roles::dashboard::state(store.clone(), settings)?;
        figures.views = views::time_views(store, state, "bench", &views, args.view_runs).await?;
    }
    if let Some(ingest) = ingest {
        figures.ingested = Some(ingest.stop(started).await?);
    }
    Ok(figures)
}

/// Times the overview function itself and its three aggregates alone.
async fn time_overview(
    name: &'static str,
    store: &SharedStore,
    end_ms: i64,
    args: &DashboardBenchArgs,
    per_day: u64,
    load_seconds: Option<f64>,
) -> anyhow::Result<DashboardFigures> {
    let query = Query {
        project: ProjectName::parse("bench")?,
        from_ms: end_ms - DAY_MS,
        to_ms: end_ms,
        filters: Filters::default(),
        queue_threshold: DEFAULT_QUEUE_THRESHOLD,
    };
    let step = default_step_seconds(DAY_MS);
    let mut histogram = Histogram::<u64>::new(3).context("histogram")?;
    for run in 0..args.runs + 2 {
        let started = Instant::now();
        let o = overview(store.as_ref(), &query, step).await.map_err(|e| anyhow::anyhow!("overview failed: {e:?}"))?;
        let micros = started.elapsed().as_micros() as u64;
        if run == 0 {
            eprintln!(
                "bench: {name}: {} events, {} devices in the window, {} buckets",
                o.current.events,
                o.current.devices,
                o.series.len()
            );
        }
        if run >= 2 {
            histogram.record(micros.max(1)).context("recording")?;
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let previous = Query { from_ms: query.from_ms - DAY_MS, to_ms: query.from_ms, ..query.clone() };
    let mut parts = [0.0; 3];
    for (i, (q, grouping)) in
        [(&query, Grouping::Total), (&previous, Grouping::Total), (&query, Grouping::Time { step_seconds: step })]
            .into_iter()
            .enumerate()
    {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            store.aggregate(q, grouping).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        parts[i] = times[2];
    }
    Ok(DashboardFigures {
        store: name,
        events_per_day: per_day,
        load_seconds,
        overview_ms: [ms(0.50), ms(0.95), ms(0.99), histogram.max() as f64 / 1000.0],
        parts_ms: parts,
        views: Vec::new(),
        ingested: None,
    })
}

fn print_report(figures: &[DashboardFigures], args: &DashboardBenchArgs) {
    println!(
        "Overview of the last 24 h ({} runs; {} devices; {} days loaded; step {} s):\n",
        args.runs,
        args.devices,
        args.days,
        default_step_seconds(DAY_MS)
    );
    println!("| store | events/day | load s | overview p50 ms | p95 ms | p99 ms | max ms | window ms | previous ms | buckets ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for f in figures {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            f.store,
            f.events_per_day,
            f.load_seconds.map_or("reused".to_string(), |s| format!("{s:.1}")),
            f.overview_ms[0],
            f.overview_ms[1],
            f.overview_ms[2],
            f.overview_ms[3],
            f.parts_ms[0],
            f.parts_ms[1],
            f.parts_ms[2],
        );
    }
    for f in figures.iter().filter(|f| !f.views.is_empty()) {
        println!(
            "\nViews on {} ({} runs each after 2 warm-ups{}):\n",
            f.store,
            args.view_runs,
            match f.ingested {
                Some((n, rate)) => format!("; {n} events ingested beside them, {rate:.0}/s"),
                None => String::new(),
            }
        );
        println!("| view | median ms | p95 ms | max ms | bytes |");
        println!("|---|---:|---:|---:|---:|");
        for v in &f.views {
            println!("| `{}` | {:.1} | {:.1} | {:.1} | {} |", v.view, v.ms[0], v.ms[1], v.ms[2], v.bytes);
        }
    }
}

/// Realistic events, deterministic from a seed per sequence number.
struct Generator {
    devices: u32,
    total: u64,
    end_ms: i64,
    span_ms: i64,
    project: ProjectName,
    versions: WeightedIndex<u32>,
    networks: WeightedIndex<u32>,
}

const VERSIONS: [&str; 5] = ["2.8.3", "2.9.0", "2.9.1", "2.10.0", "2.10.1"];
const OSES: [&str; 3] = ["android", "ios", "windows"];
const NETWORKS: [Network; 5] =
    [Network::Wifi, Network::Cellular, Network::Ethernet, Network::Offline, Network::Unknown];

impl Generator {
    fn new(devices: u32, total: u64, end_ms: i64, span_ms: i64) -> anyhow::Result<Self> {
        Ok(Generator {
            devices: devices.max(1),
            total,
            end_ms,
            span_ms,
            project: ProjectName::parse("bench")?,
            versions: WeightedIndex::new([5, 10, 20, 40, 25])?,
            networks: WeightedIndex::new([55, 30, 5, 5, 5])?,
        })
    }

    /// The `seq`th event of the load: in arrival order, as a collector
    /// writes them, time growing with the sequence number.
    fn event(&self, seq: u64) -> StoredEvent {
        let along = (i128::from(self.span_ms) * i128::from(seq) / i128::from(self.total.max(1))) as i64;
        self.make(seq, |rng| (self.end_ms - self.span_ms + along - rng.gen_range(0..180_000)).min(self.end_ms - 1))
    }

    /// An event received about `now_ms`, for the ingest beside the reads.
    fn event_at(&self, seq: u64, now_ms: i64) -> StoredEvent {
        self.make(seq, |rng| now_ms - rng.gen_range(0..180_000))
    }

    /// An event of a random device at the time `at` picks (with a few
    /// minutes of jitter).
    fn make(&self, seq: u64, at: impl FnOnce(&mut StdRng) -> i64) -> StoredEvent {
        let mut rng = StdRng::seed_from_u64(seq);
        // Skewed activity: a few devices report far more than most.
        let u: f64 = rng.gen();
        let device = ((u * u) * f64::from(self.devices)) as u32;
        let event_ms = at(&mut rng);
        // A device keeps its app version and mostly its network; a fifth of
        // the devices upgraded to the newest version half-way.
        let mut device_rng = StdRng::seed_from_u64(u64::from(device));
        let mut version = self.versions.sample(&mut device_rng);
        if device.is_multiple_of(5) && event_ms > self.end_ms - self.span_ms / 2 {
            version = VERSIONS.len() - 1;
        }
        let home = NETWORKS[self.networks.sample(&mut device_rng)];
        let network = if rng.gen_bool(0.8) { home } else { NETWORKS[self.networks.sample(&mut rng)] };
        let success = rng.gen_bool(0.95);
        let duration_ms = (rng.gen_range(4.0f64..9.0).exp() * rng.gen_range(0.5..1.5)) as u64;
        let backed_up = device.is_multiple_of(97);
        let queue_depth = if backed_up {
            rng.gen_range(800..5000)
        } else if rng.gen_bool(0.7) {
            0
        } else {
            rng.gen_range(1..50)
        };
        let never_synced = device.is_multiple_of(211);
        let last_success_ms = (!never_synced).then(|| event_ms - (rng.gen_range(3.0f64..14.0).exp() as i64));
        // A device offline for a while sends late, with a correct clock:
        // sent just before it is received, long after it happened.
        let late = rng.gen_bool(0.02);
        let delay_ms = if late { rng.gen_range(600_000..3_600_000) } else { rng.gen_range(50..20_000) };
        let time = |ms: i64| {
            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
        };
        // Conflicts with details (the Conflicts page's reads), messages with
        // ids in them (the Errors page's fingerprints), and the age of the
        // oldest pending change (queue lag).
        let conflicts: u32 = if rng.gen_bool(0.05) { rng.gen_range(1..10) } else { 0 };
        let conflict_details = if conflicts > 0 {
            let kinds = [ConflictKind::UpdateUpdate, ConflictKind::UpdateDelete, ConflictKind::InsertInsert];
            let resolutions =
                [ConflictResolution::LastWriteWins, ConflictResolution::CrdtMerge, ConflictResolution::ServerWins];
            vec![ConflictDetail {
                entity: ["todo", "list", "comment", "attachment", "tag"][rng.gen_range(0..5)].to_string(),
                kind: kinds[rng.gen_range(0..3)],
                resolution: resolutions[rng.gen_range(0..3)],
                count: conflicts,
            }]
        } else {
            Vec::new()
        };
        let error_message = (!success).then(|| match rng.gen_range(0..3) {
            0 => "connection reset".to_string(),
            1 => format!("timeout after {} ms for todo {}", rng.gen_range(1000..30000), Uuid::from_u64_pair(seq, 7)),
            _ => format!("HTTP 500 from /sync/push (request {})", Uuid::from_u64_pair(7, seq)),
        });
        let queue_oldest_at = (queue_depth > 0).then(|| time(event_ms - rng.gen_range(1_000..900_000)));
        let event = SyncEvent {
            event_id: Uuid::from_u64_pair(0x5eed_0000_0000_0000 | u64::from(device), seq),
            device_id: format!("device-{device:06}"),
            occurred_at: time(event_ms),
            success,
            duration_ms,
            conflicts,
            queue_depth,
            last_success_at: last_success_ms.map(time),
            app_version: VERSIONS[version].to_string(),
            os: OSES[(device % 3) as usize].to_string(),
            os_version: None,
            network,
            device_model: None,
            sync_type: None,
            trigger: None,
            error_kind: (!success).then_some(ErrorKind::Network),
            error_message,
            retries: 0,
            records_up: rng.gen_range(0..100),
            records_down: rng.gen_range(0..100),
            bytes_up: rng.gen_range(0..100_000),
            bytes_down: rng.gen_range(0..100_000),
            sample_rate: if device.is_multiple_of(10) { 0.5 } else { 1.0 },
            conflict_details,
            queue_oldest_at,
            dimensions: Default::default(),
        };
        StoredEvent::new(self.project.clone(), event, time(event_ms + delay_ms - 30), time(event_ms + delay_ms))
    }
}
