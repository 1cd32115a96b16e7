//! `synchealth demo`: a simulated fleet that drives the product through the
//! real protocol. Each device is a real [`Probe`] (its own storage directory,
//! buffer, worker thread and uploads), fed by a script of realistic and
//! broken sync behaviour (`device.rs`), so the dashboard and the alerts have
//! something true to show: a bad release failing on cellular, a conflict
//! surge, a cohort whose upload queue climbs past 1000, Lie-Fi, devices that
//! go offline and come back with a backlog.
//!
//! Time is not compressed per event (events carry real times, so the
//! dashboard's "last hour" is the demo's last hour); instead each device
//! syncs every few seconds, which a real app would not, so a few dozen
//! devices make a busy dashboard at a few events per second, a small load
//! beside the server on the same two cores. One scheduler thread drives
//! every device; the probes' workers sleep between uploads.
//!
//! At the end (duration reached, or Ctrl-C) every probe is flushed with a
//! bounded wait and the totals are printed so that they add up:
//! `restored + recorded = uploaded + thinned + sampled out + dropped + buffered`.

mod device;
pub mod web;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use synchealth_probe::{BufferLimits, Probe, ProbeStats};
use synchealth_schema::ProjectName;

use crate::{Application, Settings};

use self::device::{DeviceState, Profile};

/// `synchealth demo`'s flags (the ingest key is the global `--ingest-key`).
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// The collector's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long)]
    pub endpoint: String,
    /// Simulated devices.
    #[arg(long, default_value_t = 40)]
    pub devices: usize,
    /// How long to run (e.g. 90s, 10m, 2h); until Ctrl-C if not given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Mean seconds between two sync attempts of one device.
    #[arg(long, default_value_t = 4.0)]
    pub interval_seconds: f64,
    /// Where the devices' probes keep their buffers [default: <data-dir>/demo].
    #[arg(long)]
    pub storage_dir: Option<PathBuf>,
}

/// Everything a demo run needs.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The collector's base URL.
    pub endpoint: String,
    /// An ingest key of the project to fill.
    pub ingest_key: String,
    /// Simulated devices.
    pub devices: usize,
    /// Stop after this long; `None` = until stopped.
    pub duration: Option<Duration>,
    /// Mean time between two attempts of one device.
    pub interval: Duration,
    /// Parent of the devices' storage directories.
    pub storage_dir: PathBuf,
    /// How often each probe uploads.
    pub upload_interval: Duration,
    /// The longest wait for the final flush.
    pub flush_timeout: Duration,
    /// Seed of the script's randomness.
    pub seed: u64,
}

impl DemoConfig {
    /// The defaults for a fleet of `devices` against `endpoint`.
    pub fn new(endpoint: &str, ingest_key: &str, devices: usize, storage_dir: PathBuf) -> Self {
        DemoConfig {
            endpoint: endpoint.to_string(),
            ingest_key: ingest_key.to_string(),
            devices,
            duration: None,
            interval: Duration::from_secs(4),
            storage_dir,
            upload_interval: Duration::from_secs(10),
            flush_timeout: Duration::from_secs(10),
            seed: 0x5eed,
        }
    }
}

/// The fleet's totals at the end, summed over its probes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DemoSummary {
    /// Devices simulated.
    pub devices: usize,
    /// Attempts recorded in this run.
    pub recorded: u64,
    /// Events left in the probes' buffers by a previous run.
    pub restored: u64,
    /// Events the collector acknowledged.
    pub uploaded: u64,
    /// Of those, events it already had (a retry after a lost answer).
    pub duplicates: u64,
    /// Successes thinned out of full buffers (their weight is on the kept ones).
    pub thinned: u64,
    /// Successes not kept by sampling.
    pub sampled_out: u64,
    /// Events dropped, by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Events still in the buffers (uploaded at the next run).
    pub buffered: u64,
}

impl DemoSummary {
    fn add(&mut self, stats: &ProbeStats) {
        self.recorded += stats.recorded;
        self.restored += stats.restored;
        self.uploaded += stats.uploaded;
        self.duplicates += stats.duplicates;
        self.thinned += stats.thinned;
        self.sampled_out += stats.sampled_out;
        self.buffered += stats.buffered;
        for (reason, n) in &stats.dropped {
            *self.dropped.entry(reason.clone()).or_default() += n;
        }
    }

    /// Every event dropped.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Whether every event is accounted for.
    pub fn adds_up(&self) -> bool {
        self.restored + self.recorded
            == self.uploaded + self.thinned + self.sampled_out + self.dropped_total() + self.buffered
    }
}

impl fmt::Display for DemoSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dropped: Vec<String> = self.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(f, "synchealth demo: {} devices", self.devices)?;
        writeln!(f, "  recorded     {:>8}   (+ {} restored from a previous run)", self.recorded, self.restored)?;
        writeln!(
            f,
            "  uploaded     {:>8}   ({} of them duplicates of an earlier try)",
            self.uploaded, self.duplicates
        )?;
        writeln!(f, "  thinned      {:>8}   (successes; their weight is on the kept ones)", self.thinned)?;
        writeln!(f, "  sampled out  {:>8}", self.sampled_out)?;
        write!(f, "  dropped      {:>8}", self.dropped_total())?;
        if dropped.is_empty() {
            writeln!(f)?;
        } else {
            writeln!(f, "   ({})", dropped.join(", "))?;
        }
        writeln!(f, "  buffered     {:>8}   (kept on disk, sent at the next run)", self.buffered)?;
        write!(
            f,
            "  {} + {} = {} + {} + {} + {} + {}: {}",
            self.restored,
            self.recorded,
            self.uploaded,
            self.thinned,
            self.sampled_out,
            self.dropped_total(),
            self.buffered,
            if self.adds_up() { "adds up" } else { "DOES NOT ADD UP" }
        )
    }
}

/// Runs the fleet until `config.duration` passes or `stop` is set, then
/// flushes every probe (bounded) and returns the totals. Blocking: call it
/// from a thread of its own.
pub fn run(config: &DemoConfig, stop: &AtomicBool) -> anyhow::Result<DemoSummary> {
    std::fs::create_dir_all(&config.storage_dir)
        .with_context(|| format!("creating the demo's storage directory {}", config.storage_dir.display()))?;
    let mut rng = StdRng::seed_from_u64(config.seed);
    let start = Instant::now();
    let mut devices: Vec<(DeviceState, Probe)> = (0..config.devices)
        .map(|i| {
            let profile = Profile::new(i, &mut rng);
            let probe = build_probe(config, &profile);
            (DeviceState::new(profile), probe)
        })
        .collect();
    tracing::info!(devices = devices.len(), endpoint = %config.endpoint, "Demo fleet started.");

    // Each device's next attempt, earliest first; first attempts spread
    // over one interval so the fleet does not sync in lockstep.
    let mut due: BinaryHeap<Reverse<(Instant, usize)>> =
        (0..devices.len()).map(|i| Reverse((start + config.interval.mul_f64(rng.gen::<f64>()), i))).collect();
    let end = config.duration.map(|d| start + d);
    while let Some(Reverse((at, index))) = due.pop() {
        if !sleep_until(at, end, stop) {
            break;
        }
        let (device, probe) = &mut devices[index];
        let t = start.elapsed();
        let simulated = device.attempt(t, &mut rng);
        probe.set_network(simulated.network);
        probe.set_queue(simulated.queue_depth, simulated.queue_oldest_at);
        probe.record(simulated.event);
        // The network after the attempt (a device may have just come back).
        probe.set_network(device.network(t));
        let next = at.max(Instant::now()) + config.interval.mul_f64(rng.gen_range(0.5..1.5));
        due.push(Reverse((next, index)));
    }

    tracing::info!("Demo fleet stopping: flushing every device.");
    // In parallel: a fleet of unreachable devices still stops within one
    // flush timeout. The threads are joined when the scope ends.
    std::thread::scope(|scope| {
        for (_, probe) in &devices {
            scope.spawn(move || {
                probe.flush(config.flush_timeout);
                probe.shutdown();
            });
        }
    });
    let mut summary = DemoSummary { devices: devices.len(), ..DemoSummary::default() };
    for (_, probe) in devices.drain(..) {
        summary.add(&probe.stats());
    }
    Ok(summary)
}

/// Sleeps until `at`, waking early to notice `stop`; `false` when the demo
/// should end instead.
fn sleep_until(at: Instant, end: Option<Instant>, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if end.is_some_and(|end| now >= end || at >= end) {
            if let Some(end) = end.filter(|end| *end > now) {
                std::thread::sleep((end - now).min(Duration::from_millis(200)));
                continue;
            }
            return false;
        }
        if now >= at {
            return true;
        }
        std::thread::sleep((at - now).min(Duration::from_millis(200)));
    }
}

fn build_probe(config: &DemoConfig, profile: &Profile) -> Probe {
    let mut limits = BufferLimits::default();
    if profile.long_outages {
        // Small enough that a five-minute outage fills it: thinning and
        // drops show on the dashboard's telemetry-loss panel.
        limits.max_events = 40;
    }
    Probe::builder(&config.endpoint, &config.ingest_key)
        .device_id(profile.device_id.clone())
        .app_version(profile.app_version)
        .os(profile.os)
        .os_version(profile.os_version)
        .device_model(profile.model)
        .storage_dir(config.storage_dir.join(&profile.device_id))
        .buffer_limits(limits)
        .upload_interval(config.upload_interval)
        .backoff(Duration::from_millis(500), Duration::from_secs(60))
        .request_timeout(Duration::from_secs(10))
        .build()
}

/// Runs the demo on a thread of its own until it ends or Ctrl-C; prints the
/// totals. For `synchealth demo`.
pub async fn run_until_ctrl_c(config: DemoConfig) -> anyhow::Result<DemoSummary> {
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::task::spawn_blocking({
        let stop = Arc::clone(&stop);
        move || run(&config, &stop)
    });
    tokio::pin!(running);
    let summary = tokio::select! {
        result = &mut running => result,
        _ = tokio::signal::ctrl_c() => {
            println!("synchealth demo: stopping, flushing the devices...");
            stop.store(true, Ordering::Relaxed);
            running.await
        }
    }
    .context("the demo thread failed")??;
    println!("{summary}");
    Ok(summary)
}

/// A demo started beside a running server (`synchealth up --demo`); stopped
/// and summarized with [`BackgroundDemo::stop`].
#[derive(Debug)]
pub struct BackgroundDemo {
    stop: Arc<AtomicBool>,
    thread: tokio::task::JoinHandle<anyhow::Result<DemoSummary>>,
}

impl BackgroundDemo {
    /// Starts the fleet on a blocking thread.
    pub fn start(config: DemoConfig) -> BackgroundDemo {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = tokio::task::spawn_blocking({
            let stop = Arc::clone(&stop);
            move || run(&config, &stop)
        });
        BackgroundDemo { stop, thread }
    }

    /// Stops the fleet, flushes it (bounded) and prints the totals.
    pub async fn stop(self) -> anyhow::Result<DemoSummary> {
        self.stop.store(true, Ordering::Relaxed);
        let summary = self.thread.await.context("the demo thread failed")??;
        println!("{summary}");
        Ok(summary)
    }
}

/// `synchealth demo`: the ingest key is the global `--ingest-key`.
pub async fn run_command(settings: &Settings, args: DemoArgs) -> anyhow::Result<()> {
    let key = settings
        .ingest_key
        .as_ref()
        .context("the demo needs an ingest key: pass --ingest-key (or set SYNCHEALTH_INGEST_KEY)")?;
    if args.devices == 0 {
        anyhow::bail!("--devices must be at least 1");
    }
    let storage_dir = args.storage_dir.clone().unwrap_or_else(|| settings.data_dir.join("demo"));
    let mut config = DemoConfig::new(&args.endpoint, key.expose(), args.devices, storage_dir);
    config.duration = args.duration;
    let seconds = if args.interval_seconds.is_finite() { args.interval_seconds.clamp(0.05, 3600.0) } else { 4.0 };
    config.interval = Duration::from_secs_f64(seconds);
    let summary = run_until_ctrl_c(config).await?;
    if !summary.adds_up() {
        anyhow::bail!("the demo's totals do not add up");
    }
    Ok(())
}

/// Starts the demo fleet against a just-built application (`synchealth up
/// --demo`), with its probes' buffers in `<data_dir>/demo`. The ingest key is
/// the configured one, the one generated at this start, or else a key of
/// the demo's own, created once and kept in `<data_dir>/demo/ingest_key`
/// (the store keeps only hashes, so an earlier generated key is unknown).
pub async fn start_beside(app: &Application, settings: &Settings, devices: usize) -> anyhow::Result<BackgroundDemo> {
    let dir = settings.data_dir.join("demo");
    let key = match (&settings.ingest_key, &app.generated().ingest_key) {
        (Some(key), _) => key.expose().to_string(),
        (None, Some(generated)) => generated.clone(),
        (None, None) => demo_key(app.store(), &dir).await?,
    };
    let endpoint = format!("http://127.0.0.1:{}", app.port());
    println!("synchealth: demo fleet of {devices} devices sending to {endpoint} (buffers in {})", dir.display());
    Ok(BackgroundDemo::start(DemoConfig::new(&endpoint, &key, devices.max(1), dir)))
}

/// The demo's own ingest key for the default project, created on first use.
async fn demo_key(store: synchealth_store::SharedStore, dir: &std::path::Path) -> anyhow::Result<String> {
    own_key(store, &dir.join("ingest_key"), "demo fleet", vec![]).await
}

/// A key of the demo's for the default project, kept in `path` (the store
/// keeps only hashes) and created when that file names no live key; its
/// allowed origins are set to `allowed_origins` when they differ.
async fn own_key(
    store: synchealth_store::SharedStore,
    path: &std::path::Path,
    label: &str,
    allowed_origins: Vec<String>,
) -> anyhow::Result<String> {
    let project = ProjectName::parse(synchealth_dashboard::DEFAULT_PROJECT).context("default project name")?;
    if let Ok(key) = std::fs::read_to_string(path) {
        let key = key.trim().to_string();
        let hash = synchealth_collector::hash_ingest_key(&key);
        let found = store.find_ingest_key(&hash).await.context("looking up the demo's ingest key")?;
        if let Some(mut record) = found.filter(|k| !k.revoked) {
            if record.allowed_origins != allowed_origins {
                record.allowed_origins = allowed_origins;
                store.put_ingest_key(&record).await.context("updating the demo's ingest key")?;
            }
            return Ok(key);
        }
    }
    let key = crate::bootstrap::generate_ingest_key();
    let record = synchealth_store::IngestKey {
        key_hash: synchealth_collector::hash_ingest_key(&key),
        project,
        label: label.into(),
        created_at_ms: synchealth_schema::unix_ms(time::OffsetDateTime::now_utc()),
        revoked: false,
        allowed_origins,
    };
    store.put_ingest_key(&record).await.context("storing the demo's ingest key")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, &key).with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// `90s`, `10m`, `2h`, `1d`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => return Err(format!("{text:?}: unknown unit {unit:?}; use s, m, h or d")),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5w").is_err());
    }

    #[test]
    fn a_summary_adds_up_only_when_every_event_is_accounted_for() {
        let mut s =
            DemoSummary { recorded: 10, restored: 2, uploaded: 7, thinned: 1, buffered: 2, ..Default::default() };
        s.dropped.insert("expired".into(), 2);
        assert!(s.adds_up());
        s.buffered = 3;
        assert!(!s.adds_up());
        assert!(s.to_string().contains("DOES NOT ADD UP"));
    }
}
