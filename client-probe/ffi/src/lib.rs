//! The client probe for apps in Kotlin, Swift and Python: UniFFI bindings
//! (proc-macros, no hand-written C) over `synchealth-probe`, the same Rust
//! core a Rust app embeds, so every platform gets the crash-safe buffer,
//! thinning, loss accounting and clock-skew correction.
//!
//! The surface is small on purpose and named alike in every language:
//! `ProbeConfig` (a record), `Probe` (`start`, `record`, `flush`, `stats`,
//! `shutdown`, the app's network and its queue's depth and oldest change),
//! `Attempt` (`conflict`, `dimension`, `succeed`, `fail`, `cancel`),
//! `Details`, `ProbeStats`, and the enums of the contract. Conflict
//! details, queue times and dimensions are bounded by the Rust core as for
//! a Rust app (cut, folded or dropped, counted in `ProbeStats.adjusted`):
//! nothing the app passes makes the collector reject an event. No call blocks on I/O except `flush`, which waits at most
//! the timeout it is given; no panic crosses the boundary (the probe
//! catches its own, and this layer has no `unwrap`); a bad configuration
//! is a typed `ProbeError`, not a crash.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

uniffi::setup_scaffolding!("synchealth_probe");

/// Why a probe could not be made.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ProbeError {
    /// A configuration value is wrong (which, and why).
    #[error("invalid configuration: {field}: {reason}")]
    InvalidConfig {
        /// The field at fault.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The storage directory cannot be created or written.
    #[error("storage directory {path}: {reason}")]
    Storage {
        /// The directory.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
}

/// The network the device is on.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum Network {
    /// Wi-Fi.
    Wifi,
    /// Mobile data.
    Cellular,
    /// Wired.
    Ethernet,
    /// No network.
    Offline,
    /// Not known.
    Unknown,
}

impl From<Network> for synchealth_probe::Network {
    fn from(n: Network) -> Self {
        match n {
            Network::Wifi => Self::Wifi,
            Network::Cellular => Self::Cellular,
            Network::Ethernet => Self::Ethernet,
            Network::Offline => Self::Offline,
            Network::Unknown => Self::Unknown,
        }
    }
}

/// Why an attempt failed, as the contract names it.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum ErrorKind {
    /// The network failed (no route, reset, DNS).
    Network,
    /// The server did not answer in time.
    Timeout,
    /// The server answered with an error.
    Server,
    /// The credentials were refused.
    Auth,
    /// The server refused the data.
    Validation,
    /// A conflict the engine could not resolve.
    Conflict,
    /// The attempt was cancelled.
    Cancelled,
    /// Anything else.
    Unknown,
}

impl From<ErrorKind> for synchealth_probe::ErrorKind {
    fn from(k: ErrorKind) -> Self {
        match k {
            ErrorKind::Network => Self::Network,
            ErrorKind::Timeout => Self::Timeout,
            ErrorKind::Server => Self::Server,
            ErrorKind::Auth => Self::Auth,
            ErrorKind::Validation => Self::Validation,
            ErrorKind::Conflict => Self::Conflict,
            ErrorKind::Cancelled => Self::Cancelled,
            ErrorKind::Unknown => Self::Unknown,
        }
    }
}

/// How two versions of a record met (the contract's `ConflictKind`).
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum ConflictKind {
    /// Both sides updated the record.
    UpdateUpdate,
    /// This side updated what the other deleted.
    UpdateDelete,
    /// This side deleted what the other updated.
    DeleteUpdate,
    /// Both sides inserted the same key.
    InsertInsert,
    /// A constraint (unique, foreign key, check) refused the change.
    Constraint,
    /// Anything else.
    Other,
}

impl From<ConflictKind> for synchealth_probe::ConflictKind {
    fn from(k: ConflictKind) -> Self {
        match k {
            ConflictKind::UpdateUpdate => Self::UpdateUpdate,
            ConflictKind::UpdateDelete => Self::UpdateDelete,
            ConflictKind::DeleteUpdate => Self::DeleteUpdate,
            ConflictKind::InsertInsert => Self::InsertInsert,
            ConflictKind::Constraint => Self::Constraint,
            ConflictKind::Other => Self::Other,
        }
    }
}

/// How the engine settled a conflict (the contract's `ConflictResolution`).
/// The first three keep one side and drop the other's edit.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum ConflictResolution {
    /// The later write was kept.
    LastWriteWins,
    /// The server's version was kept.
    ServerWins,
    /// The client's version was kept.
    ClientWins,
    /// Both merged (a CRDT).
    CrdtMerge,
    /// A person resolved it.
    Manual,
    /// The app's own merge code.
    Custom,
    /// Not settled yet.
    Unresolved,
}

impl From<ConflictResolution> for synchealth_probe::ConflictResolution {
    fn from(r: ConflictResolution) -> Self {
        match r {
            ConflictResolution::LastWriteWins => Self::LastWriteWins,
            ConflictResolution::ServerWins => Self::ServerWins,
            ConflictResolution::ClientWins => Self::ClientWins,
            ConflictResolution::CrdtMerge => Self::CrdtMerge,
            ConflictResolution::Manual => Self::Manual,
            ConflictResolution::Custom => Self::Custom,
            ConflictResolution::Unresolved => Self::Unresolved,
        }
    }
}

/// When the probe may upload.
#[derive(Debug, Clone, Copy, uniffi::Enum)]
pub enum UploadPolicy {
    /// Whenever the network is not known to be offline (the default).
    Always,
    /// Only on Wi-Fi or ethernet, and not on a low battery.
    UnmeteredOnly,
    /// Not at all, until the policy changes.
    Paused,
}

impl From<UploadPolicy> for synchealth_probe::UploadPolicy {
    fn from(p: UploadPolicy) -> Self {
        match p {
            UploadPolicy::Always => Self::Always,
            UploadPolicy::UnmeteredOnly => Self::UnmeteredOnly,
            UploadPolicy::Paused => Self::Paused,
        }
    }
}

/// How a probe is set up. Optional fields keep the Rust probe's defaults.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ProbeConfig {
    /// The collector's base URL, e.g. `https://sync-health.example.com`.
    pub endpoint: String,
    /// The project's ingest key (public: it ships in the app).
    pub ingest_key: String,
    /// The app's version, e.g. `2.3.0`.
    pub app_version: String,
    /// The OS, e.g. `android`, `ios`, `macos`, `windows`, `linux`.
    pub os: String,
    /// A directory only the probe writes: its buffer and device id live there.
    pub storage_dir: String,
    /// The OS version.
    #[uniffi(default = None)]
    pub os_version: Option<String>,
    /// The device model.
    #[uniffi(default = None)]
    pub device_model: Option<String>,
    /// Share of successes kept, 0.001 to 1 (failures are always kept).
    #[uniffi(default = 1.0)]
    pub sample_rate: f64,
    /// Most events buffered (default 10,000).
    #[uniffi(default = None)]
    pub max_buffered_events: Option<u64>,
    /// Most bytes buffered (default 5 MB).
    #[uniffi(default = None)]
    pub max_buffered_bytes: Option<u64>,
    /// Oldest event kept, in seconds (default 7 days).
    #[uniffi(default = None)]
    pub max_event_age_seconds: Option<u64>,
    /// How often the buffer is uploaded, in milliseconds (default 30 s).
    #[uniffi(default = None)]
    pub upload_interval_ms: Option<u64>,
    /// When uploads may happen.
    #[uniffi(default = None)]
    pub upload_policy: Option<UploadPolicy>,
    /// Custom dimensions on every event (`{"engine": "powersync", "plan":
    /// "pro"}`): at most 8, keys `[a-z][a-z0-9_]*` of at most 32
    /// characters, values 1 to 64 characters; a bad one is dropped (or a
    /// long value cut) and counted in `ProbeStats.adjusted`, not an error.
    #[uniffi(default = None)]
    pub dimensions: Option<HashMap<String, String>>,
}

/// What an attempt moved and met.
#[derive(Debug, Clone, Copy, Default, uniffi::Record)]
pub struct Details {
    /// Conflicts met.
    #[uniffi(default = 0)]
    pub conflicts: u32,
    /// Retries inside the attempt.
    #[uniffi(default = 0)]
    pub retries: u32,
    /// Records pushed.
    #[uniffi(default = 0)]
    pub records_up: u64,
    /// Records pulled.
    #[uniffi(default = 0)]
    pub records_down: u64,
    /// Bytes pushed.
    #[uniffi(default = 0)]
    pub bytes_up: u64,
    /// Bytes pulled.
    #[uniffi(default = 0)]
    pub bytes_down: u64,
}

impl From<Details> for synchealth_probe::Details {
    fn from(d: Details) -> Self {
        synchealth_probe::Details {
            conflicts: d.conflicts,
            retries: d.retries,
            records_up: d.records_up,
            records_down: d.records_down,
            bytes_up: d.bytes_up,
            bytes_down: d.bytes_down,
        }
    }
}

/// What a probe did since it started. With nothing in flight (after a
/// flush): `restored + recorded = sampled_out + thinned + dropped + uploaded + buffered`.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ProbeStats {
    /// Attempts recorded.
    pub recorded: u64,
    /// Successes not kept because of `sample_rate`.
    pub sampled_out: u64,
    /// Events found in the buffer at start, left by a previous run.
    pub restored: u64,
    /// Events the collector acknowledged.
    pub uploaded: u64,
    /// Of those, events the collector already had.
    pub duplicates: u64,
    /// Successes thinned out of a full buffer.
    pub thinned: u64,
    /// Events dropped, by reason.
    pub dropped: HashMap<String, u64>,
    /// Events in the buffer now.
    pub buffered: u64,
    /// Uploads that failed and will be retried.
    pub upload_failures: u64,
    /// Inputs bounded to fit the contract (a cut entity or dimension value,
    /// a dropped dimension, folded conflict details), by reason.
    pub adjusted: HashMap<String, u64>,
}

/// The probe: one per app process, shared by every thread.
#[derive(Debug, uniffi::Object)]
pub struct Probe {
    inner: synchealth_probe::Probe,
}

fn invalid(field: &str, reason: &str) -> ProbeError {
    ProbeError::InvalidConfig { field: field.into(), reason: reason.into() }
}

#[uniffi::export]
impl Probe {
    /// Checks the configuration, creates the storage directory and starts
    /// the probe's worker thread.
    #[uniffi::constructor]
    pub fn new(config: ProbeConfig) -> Result<Arc<Probe>, ProbeError> {
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err(invalid("endpoint", "must start with http:// or https://"));
        }
        for (field, value) in
            [("ingest_key", &config.ingest_key), ("app_version", &config.app_version), ("os", &config.os)]
        {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if !(0.001..=1.0).contains(&config.sample_rate) {
            return Err(invalid("sample_rate", "must be between 0.001 and 1"));
        }
        let dir = PathBuf::from(&config.storage_dir);
        let storage =
            |e: std::io::Error| ProbeError::Storage { path: config.storage_dir.clone(), reason: e.to_string() };
        std::fs::create_dir_all(&dir).map_err(storage)?;
        // The probe would log and go on without a usable buffer; an app
        // asking for one it cannot have should hear it at once instead.
        let check = dir.join(".synchealth-write-check");
        std::fs::write(&check, b"ok").map_err(storage)?;
        let _ = std::fs::remove_file(&check);

        let defaults = synchealth_probe::BufferLimits::default();
        let limits = synchealth_probe::BufferLimits {
            max_events: config.max_buffered_events.map_or(defaults.max_events, |n| n as usize),
            max_bytes: config.max_buffered_bytes.unwrap_or(defaults.max_bytes),
            max_age: config.max_event_age_seconds.map_or(defaults.max_age, Duration::from_secs),
        };
        let mut builder = synchealth_probe::Probe::builder(&config.endpoint, &config.ingest_key)
            .app_version(config.app_version)
            .os(config.os)
            .storage_dir(dir)
            .sample_rate(config.sample_rate)
            .buffer_limits(limits);
        if let Some(v) = config.os_version {
            builder = builder.os_version(v);
        }
        if let Some(m) = config.device_model {
            builder = builder.device_model(m);
        }
        if let Some(ms) = config.upload_interval_ms {
            builder = builder.upload_interval(Duration::from_millis(ms));
        }
        if let Some(policy) = config.upload_policy {
            builder = builder.upload_policy(policy.into());
        }
        if let Some(dimensions) = config.dimensions {
            // A HashMap's order is random; sorted, a ninth key dropped is
            // the same one at every start.
            let mut dimensions: Vec<(String, String)> = dimensions.into_iter().collect();
            dimensions.sort();
            builder = builder.dimensions(dimensions);
        }
        Ok(Arc::new(Probe { inner: builder.build() }))
    }

    /// Starts timing one sync attempt (`sync_type` e.g. `push`, `pull`;
    /// `trigger` one of `app_open`, `resume`, `user`, `local_write`,
    /// `scheduled`, `reconnect`, `other`). Finish it with `succeed` or
    /// `fail`; one never finished counts as cancelled.
    pub fn start(&self, sync_type: String, trigger: String) -> Arc<Attempt> {
        Arc::new(Attempt { inner: Mutex::new(Some(self.inner.start(&sync_type, &trigger))) })
    }

    /// The device's pseudonymous id (kept in the storage directory).
    pub fn device_id(&self) -> String {
        self.inner.device_id().to_string()
    }

    /// The local changes waiting to be pushed, for the next attempts.
    pub fn set_queue_depth(&self, depth: u32) {
        self.inner.set_queue_depth(depth);
    }

    /// The local changes waiting to be pushed and when the oldest of them
    /// was made (`None` when there are none), for the next attempts: the
    /// collector reads the queue's lag from it.
    pub fn set_queue(&self, depth: u32, oldest_at: Option<SystemTime>) {
        self.inner.set_queue(depth, oldest_at);
    }

    /// The network the device is on now.
    pub fn set_network(&self, network: Network) {
        self.inner.set_network(network.into());
    }

    /// Whether the battery is low (the `UnmeteredOnly` policy waits).
    pub fn set_battery_low(&self, low: bool) {
        self.inner.set_battery_low(low);
    }

    /// When uploads may happen from now on.
    pub fn set_upload_policy(&self, policy: UploadPolicy) {
        self.inner.set_upload_policy(policy.into());
    }

    /// Writes what was recorded and uploads what the buffer holds, waiting
    /// at most `timeout_ms`; true when the buffer was emptied.
    pub fn flush(&self, timeout_ms: u64) -> bool {
        let report = self.inner.flush(Duration::from_millis(timeout_ms));
        report.completed && report.pending == 0
    }

    /// What the probe did since it started.
    pub fn stats(&self) -> ProbeStats {
        let s = self.inner.stats();
        ProbeStats {
            recorded: s.recorded,
            sampled_out: s.sampled_out,
            restored: s.restored,
            uploaded: s.uploaded,
            duplicates: s.duplicates,
            thinned: s.thinned,
            dropped: s.dropped.into_iter().collect(),
            buffered: s.buffered,
            upload_failures: s.upload_failures,
            adjusted: s.adjusted.into_iter().collect(),
        }
    }

    /// Stops the worker once everything recorded is on disk; what is not
    /// uploaded goes at the next start.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

/// One sync attempt being timed.
#[derive(Debug, uniffi::Object)]
pub struct Attempt {
    /// Taken by the first of `succeed`, `fail` or `cancel`; later calls do nothing.
    inner: Mutex<Option<synchealth_probe::Attempt>>,
}

impl Attempt {
    fn take(&self) -> Option<synchealth_probe::Attempt> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Runs `f` on the attempt if it is not finished yet.
    fn with(&self, f: impl FnOnce(&mut synchealth_probe::Attempt)) {
        if let Some(a) = self.inner.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            f(a);
        }
    }
}

#[uniffi::export]
impl Attempt {
    /// Reports `count` conflicts on `entity` (a table or record type, cut
    /// to 64 characters), met as `kind` and settled as `resolution`; calls
    /// for the same three add up, and the event's `conflicts` is at least
    /// their total. After `succeed`/`fail` it does nothing.
    pub fn conflict(&self, entity: String, kind: ConflictKind, resolution: ConflictResolution, count: u32) {
        self.with(|a| {
            a.conflict(&entity, kind.into(), resolution.into(), count);
        });
    }

    /// A custom dimension for this attempt only, over the configured ones.
    pub fn dimension(&self, key: String, value: String) {
        self.with(|a| {
            a.dimension(&key, &value);
        });
    }

    /// The attempt succeeded.
    pub fn succeed(&self, details: Details) {
        if let Some(a) = self.take() {
            a.succeed(details.into());
        }
    }

    /// The attempt failed: why, in the contract's words, and the engine's message.
    pub fn fail(&self, error_kind: ErrorKind, message: String, details: Details) {
        if let Some(a) = self.take() {
            a.fail(error_kind.into(), &message, details.into());
        }
    }

    /// The attempt was abandoned: recorded as a failure of kind `cancelled`
    /// (as when the object is released unfinished).
    pub fn cancel(&self) {
        drop(self.take());
    }
}
