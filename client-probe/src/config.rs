//! Configuring a probe: [`ProbeBuilder`] and the knobs it sets, the buffer
//! bounds ([`BufferLimits`]) and when uploads may run ([`UploadPolicy`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use synchealth_schema::Network;

use crate::Probe;

/// Bounds of the on-disk buffer. Past one, successes are thinned first
/// (their weight raised through `sample_rate`), failures dropped last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    /// Most events held (default 10,000).
    pub max_events: usize,
    /// Most bytes of event records held (default 5 MB).
    pub max_bytes: u64,
    /// Events older than this are dropped as `expired` (default 7 days).
    pub max_age: Duration,
}

impl Default for BufferLimits {
    fn default() -> Self {
        BufferLimits { max_events: 10_000, max_bytes: 5 * 1024 * 1024, max_age: Duration::from_secs(7 * 24 * 3600) }
    }
}

/// What an upload policy can look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadConditions {
    /// The network type the app last set.
    pub network: Network,
    /// Whether the app said the battery is low.
    pub battery_low: bool,
}

/// When the probe may upload. Recording and buffering go on regardless;
/// held-back events wait in the buffer (within its bounds).
#[derive(Clone, Default)]
pub enum UploadPolicy {
    /// Whenever the network is not known to be offline (the default).
    #[default]
    Always,
    /// Only on wifi or ethernet, and not on a low battery.
    UnmeteredOnly,
    /// Not at all, until the policy changes.
    Paused,
    /// The app decides; a panic in it counts as "not now".
    Custom(Arc<dyn Fn(UploadConditions) -> bool + Send + Sync>),
}

impl fmt::Debug for UploadPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UploadPolicy::Always => f.write_str("Always"),
            UploadPolicy::UnmeteredOnly => f.write_str("UnmeteredOnly"),
            UploadPolicy::Paused => f.write_str("Paused"),
            UploadPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl UploadPolicy {
    /// Whether an upload may run now. Offline never uploads.
    pub(crate) fn allows(&self, conditions: UploadConditions) -> bool {
        if conditions.network == Network::Offline {
            return false;
        }
        match self {
            UploadPolicy::Always => true,
            UploadPolicy::UnmeteredOnly => {
                matches!(conditions.network, Network::Wifi | Network::Ethernet) && !conditions.battery_low
            }
            UploadPolicy::Paused => false,
            UploadPolicy::Custom(decide) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decide(conditions))).unwrap_or_else(|_| {
                    tracing::warn!("The app's upload policy panicked; holding uploads back.");
                    false
                })
            }
        }
    }
}

/// Everything a probe is built from; see [`Probe::builder`].
#[derive(Clone)]
pub struct ProbeBuilder {
    pub(crate) endpoint: String,
    pub(crate) ingest_key: String,
    pub(crate) app_version: String,
    pub(crate) os: String,
    pub(crate) os_version: Option<String>,
    pub(crate) device_model: Option<String>,
    pub(crate) device_id: Option<String>,
    pub(crate) storage_dir: Option<PathBuf>,
    pub(crate) sample_rate: f64,
    pub(crate) limits: BufferLimits,
    pub(crate) upload_interval: Duration,
    pub(crate) batch_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) persist_delay: Duration,
    pub(crate) upload_policy: UploadPolicy,
    pub(crate) network: Network,
    /// As the app gave them; checked when the probe starts (`bounds.rs`).
    pub(crate) dimensions: Vec<(String, String)>,
    #[cfg(feature = "otlp")]
    pub(crate) otlp_endpoint: Option<String>,
}

impl fmt::Debug for ProbeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ingest key is public by design (it ships in the app), but logs
        // are no place for it either.
        f.debug_struct("ProbeBuilder")
            .field("endpoint", &self.endpoint)
            .field("app_version", &self.app_version)
            .field("os", &self.os)
            .field("storage_dir", &self.storage_dir)
            .field("sample_rate", &self.sample_rate)
            .field("limits", &self.limits)
            .field("upload_interval", &self.upload_interval)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

/// The most events one upload carries.
pub const MAX_UPLOAD_BATCH: usize = 500;

impl ProbeBuilder {
    pub(crate) fn new(endpoint: &str, ingest_key: &str) -> Self {
        ProbeBuilder {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            ingest_key: ingest_key.to_string(),
            app_version: "unknown".into(),
            os: std::env::consts::OS.into(),
            os_version: None,
            device_model: None,
            device_id: None,
            storage_dir: None,
            sample_rate: 1.0,
            limits: BufferLimits::default(),
            upload_interval: Duration::from_secs(30),
            batch_size: MAX_UPLOAD_BATCH,
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            persist_delay: Duration::from_millis(20),
            upload_policy: UploadPolicy::Always,
            network: Network::Unknown,
            dimensions: Vec::new(),
            #[cfg(feature = "otlp")]
            otlp_endpoint: None,
        }
    }

    /// The app's version, on every event (required by the contract; default `unknown`).
    pub fn app_version(mut self, version: impl Into<String>) -> Self {
        self.app_version = version.into();
        self
    }

    /// The OS family (`android`, `ios`, ...; default: the compile target's).
    pub fn os(mut self, os: impl Into<String>) -> Self {
        self.os = os.into();
        self
    }

    /// The OS version.
    pub fn os_version(mut self, version: impl Into<String>) -> Self {
        self.os_version = Some(version.into());
        self
    }

    /// The device model.
    pub fn device_model(mut self, model: impl Into<String>) -> Self {
        self.device_model = Some(model.into());
        self
    }

    /// Uses the app's own pseudonymous device id instead of generating one
    /// (1..=128 characters; anything else is ignored with a warning).
    pub fn device_id(mut self, id: impl Into<String>) -> Self {
        self.device_id = Some(id.into());
        self
    }

    /// Where the buffer, the device id and the probe's state live. Without
    /// it (or if it cannot be used) the probe buffers in memory only, and
    /// loses what it holds when the app is killed.
    pub fn storage_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage_dir = Some(dir.into());
        self
    }

    /// Fraction of successful attempts kept (0 < rate <= 1, default 1); each
    /// kept one stands for `1 / rate`. Failures are always kept.
    pub fn sample_rate(mut self, rate: f64) -> Self {
        self.sample_rate = if rate.is_finite() && rate > 0.0 { rate.min(1.0) } else { 1.0 };
        self
    }

    /// Buffer bounds (default 10,000 events, 5 MB, 7 days; at least 10
    /// events and 16 KB, at most 1 GB).
    pub fn buffer_limits(mut self, limits: BufferLimits) -> Self {
        self.limits = BufferLimits {
            max_events: limits.max_events.max(10),
            // The buffer addresses its file with 32-bit offsets.
            max_bytes: limits.max_bytes.clamp(16 * 1024, 1 << 30),
            max_age: limits.max_age,
        };
        self
    }

    /// How often buffered events are uploaded (default 30 s). A full batch
    /// and a backlog after reconnecting go at once.
    pub fn upload_interval(mut self, interval: Duration) -> Self {
        self.upload_interval = interval;
        self
    }

    /// Events per upload, 1..=500 (default 500).
    pub fn batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.clamp(1, MAX_UPLOAD_BATCH);
        self
    }

    /// Longest an upload request may take, connection included (default 30 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Bounds of the exponential backoff after a failed upload (default
    /// 1 s to 5 min, full jitter; a `Retry-After` is always honoured).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        // A zero floor would let a failing collector be retried in a tight loop.
        self.backoff_min = min.max(Duration::from_millis(1));
        self.backoff_max = max.max(self.backoff_min);
        self
    }

    /// The initial upload policy (default [`UploadPolicy::Always`]).
    pub fn upload_policy(mut self, policy: UploadPolicy) -> Self {
        self.upload_policy = policy;
        self
    }

    /// A custom dimension on every event (`engine` = `powersync`, `plan` =
    /// `pro`, `region` = `eu`): low-cardinality values the dashboard
    /// segments by, never ids. At most 8; a key is `[a-z][a-z0-9_]*` of at
    /// most 32 characters and a value 1 to 64 characters. The probe does not
    /// fail on a bad one: an invalid key, an empty value or a ninth key is
    /// dropped and a long value cut, each counted in `ProbeStats::adjusted`
    /// and logged. Setting a key again replaces its value; an attempt's own
    /// ([`crate::Attempt::dimension`]) wins over these.
    pub fn dimension(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.dimensions.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.dimensions.push((key, value)),
        }
        self
    }

    /// [`ProbeBuilder::dimension`] for each pair.
    pub fn dimensions<K: Into<String>, V: Into<String>>(mut self, pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        for (key, value) in pairs {
            self = self.dimension(key, value);
        }
        self
    }

    /// The initial network type (default `unknown`).
    pub fn network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// Also exports every event as an OTLP log record to this OTLP/HTTP
    /// base URL (e.g. `http://otel-collector:4318`; `/v1/logs` is added).
    #[cfg(feature = "otlp")]
    pub fn otlp_endpoint(mut self, url: impl Into<String>) -> Self {
        self.otlp_endpoint = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// Starts the probe: opens its storage and starts its worker thread.
    /// Never fails: a storage problem is logged and the probe buffers in
    /// memory instead.
    pub fn build(self) -> Probe {
        Probe::start_with(self)
    }

    /// The URL batches are posted to.
    pub(crate) fn events_url(&self) -> String {
        if self.endpoint.ends_with("/v1/events") {
            self.endpoint.clone()
        } else {
            format!("{}/v1/events", self.endpoint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conditions(network: Network, battery_low: bool) -> UploadConditions {
        UploadConditions { network, battery_low }
    }

    #[test]
    fn policies_decide_on_network_and_battery_and_offline_never_uploads() {
        assert!(UploadPolicy::Always.allows(conditions(Network::Cellular, true)));
        assert!(!UploadPolicy::Always.allows(conditions(Network::Offline, false)));
        assert!(UploadPolicy::UnmeteredOnly.allows(conditions(Network::Wifi, false)));
        assert!(!UploadPolicy::UnmeteredOnly.allows(conditions(Network::Cellular, false)));
        assert!(!UploadPolicy::UnmeteredOnly.allows(conditions(Network::Wifi, true)));
        assert!(!UploadPolicy::Paused.allows(conditions(Network::Wifi, false)));
        let custom = UploadPolicy::Custom(Arc::new(|c: UploadConditions| c.network == Network::Cellular));
        assert!(custom.allows(conditions(Network::Cellular, false)));
        assert!(!custom.allows(conditions(Network::Wifi, false)));
    }

    #[test]
    fn a_panicking_custom_policy_holds_uploads_back_instead_of_unwinding() {
        let policy = UploadPolicy::Custom(Arc::new(|_| panic!("app bug")));
        assert!(!policy.allows(conditions(Network::Wifi, false)));
    }

    #[test]
    fn the_events_url_is_derived_from_a_base_or_taken_as_given() {
        assert_eq!(ProbeBuilder::new("http://h:8080/", "k").events_url(), "http://h:8080/v1/events");
        assert_eq!(ProbeBuilder::new("http://h/v1/events", "k").events_url(), "http://h/v1/events");
        assert_eq!(ProbeBuilder::new("x", "k").sample_rate(0.0).sample_rate, 1.0);
        assert_eq!(ProbeBuilder::new("x", "k").sample_rate(0.25).sample_rate, 0.25);
        assert_eq!(ProbeBuilder::new("x", "k").batch_size(9000).batch_size, 500);
    }
}
