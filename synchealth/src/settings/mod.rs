//! Settings of every role: defaults, then an optional TOML file (`--config`),
//! then `SYNCHEALTH_*` environment variables, then command-line flags. The
//! `///` lines on the fields are the configuration reference.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use synchealth_alerts::Rule;

mod channels;

pub use self::channels::{
    ChannelSettings, EmailChannelSettings, JiraChannelSettings, OpsgenieChannelSettings, PagerDutyChannelSettings,
    TeamsChannelSettings, WebhookChannelSettings,
};

/// A secret: deserialized like a string, never printed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret text, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Every setting of a synchealth process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address the HTTP server listens on (ingest API, JSON API and pages).
    pub listen: SocketAddr,
    /// Directory of the embedded store (used when no ClickHouse URL is set).
    pub data_dir: PathBuf,
    /// ClickHouse connection; without `url`, the embedded SQLite store is used.
    pub clickhouse: ClickHouseSettings,
    /// The default project's ingest key. If unset and the project has no key
    /// yet, one is generated and printed once at first start.
    pub ingest_key: Option<Secret>,
    /// Browser origins (CORS) the configured `ingest_key` may be used from,
    /// e.g. `["https://app.example.com"]`; `["*"]` for any. Applied to that
    /// key at every start, so the configuration is the truth for it.
    pub ingest_key_allowed_origins: Vec<String>,
    /// Password of the dashboard user `admin`. If unset and there is no admin
    /// yet, one is generated and printed once at first start.
    pub admin_password: Option<Secret>,
    /// Days of events kept; older ones are deleted (whole day partitions on ClickHouse).
    pub retention_days: u32,
    /// Largest ingest request body in bytes, compressed and decompressed.
    pub max_body_bytes: usize,
    /// Ingest request body bytes held at once across all requests; a body
    /// that would pass it is answered 503 with `Retry-After`.
    pub max_body_bytes_in_flight: usize,
    /// Most events in one ingest batch; a larger batch is refused with a 413.
    pub max_events_per_batch: usize,
    /// Per-ingest-key rate limit.
    pub rate_limit: RateLimitSettings,
    /// Alert evaluation.
    pub alerts: AlertSettings,
    /// The ingest pipeline: batching into the store and the local spool.
    pub ingest: IngestSettings,
    /// The dashboard pages.
    pub dashboard: DashboardSettings,
    /// What `/metrics` shows (`[metrics]`).
    pub metrics: MetricsSettings,
    /// The HTTP server's connection limits (`[server]`).
    pub server: ServerSettings,
    /// How the dashboard and alert queries read ClickHouse: a read-only user
    /// and per-query limits (`[clickhouse_read]`).
    pub clickhouse_read: ClickHouseReadSettings,
}

/// Read-only ClickHouse access for the dashboard and alert queries
/// (`[clickhouse_read]`; README, "Read-only ClickHouse access"). Writes and
/// migrations keep `[clickhouse]`'s user. A limit of 0 is not sent (the
/// server's or the user profile's value applies); sending them needs a user
/// whose profile has `readonly = 2`, since `readonly = 1` forbids any setting.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseReadSettings {
    /// User the read queries run as; unset = `clickhouse.user`.
    pub user: Option<String>,
    /// That user's password.
    pub password: Option<Secret>,
    /// Longest one read query may run, seconds (`max_execution_time`).
    pub max_execution_seconds: u64,
    /// Most rows one read query may read (`max_rows_to_read`).
    pub max_rows_to_read: u64,
    /// Most memory one read query may use, bytes (`max_memory_usage`).
    pub max_memory_bytes: u64,
}

impl Default for ClickHouseReadSettings {
    fn default() -> Self {
        ClickHouseReadSettings {
            user: None,
            password: None,
            // Under the HTTP server's 30 s request timeout.
            max_execution_seconds: 25,
            // 90 days of 10 million events a day.
            max_rows_to_read: 1_000_000_000,
            max_memory_bytes: 4 * 1024 * 1024 * 1024,
        }
    }
}

impl ClickHouseReadSettings {
    /// The limits as the store takes them.
    pub fn limits(&self) -> synchealth_store::QueryLimits {
        synchealth_store::QueryLimits {
            max_execution_seconds: self.max_execution_seconds,
            max_rows_to_read: self.max_rows_to_read,
            max_memory_bytes: self.max_memory_bytes,
        }
    }
}

/// The HTTP server's connection limits (`[server]` in the config file; each
/// key also `SYNCHEALTH_SERVER__<KEY>` in the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Open connections at most; beyond, connections get 503 with
    /// `Retry-After` (but `/healthz` answers). Lowered at start to fit
    /// under the process's open-files limit.
    pub max_connections: usize,
    /// Milliseconds a client has to send a request's headers, and a
    /// keep-alive connection to start its next request; then it is closed.
    pub header_read_timeout_ms: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings { max_connections: 4096, header_read_timeout_ms: 10_000 }
    }
}

impl ServerSettings {
    /// The limits as the server loop takes them.
    pub fn limits(&self) -> crate::serve::ConnectionLimits {
        crate::serve::ConnectionLimits {
            max_connections: self.max_connections,
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
        }
    }
}

/// Dashboard settings (`[dashboard]` in the config file; each key also
/// `SYNCHEALTH_DASHBOARD__<KEY>` in the environment, e.g.
/// `SYNCHEALTH_DASHBOARD__LOGIN_MAX_FAILURES=5`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardSettings {
    /// When the session cookie gets the `Secure` attribute: `"auto"` (when a
    /// TLS-terminating proxy says `X-Forwarded-Proto: https`), `"always"`
    /// (the dashboard is only reached over HTTPS) or `"never"`.
    pub secure_cookies: synchealth_dashboard::SecureCookies,
    /// Failed logins (form or HTTP Basic) of one user name, or from one
    /// client address, within `login_failure_window_seconds` that pause its
    /// logins (429 with `Retry-After`); 0 = no throttle.
    pub login_max_failures: u32,
    /// The span failed logins are counted over, seconds.
    pub login_failure_window_seconds: u64,
    /// The first pause, seconds; each further one before a success doubles it.
    pub login_lockout_seconds: u64,
    /// The longest pause, seconds.
    pub login_max_lockout_seconds: u64,
    /// Password (argon2) verifications running at once at most; 0 = the
    /// number of cores. Each holds 19 MiB while it runs.
    pub max_concurrent_password_checks: usize,
    /// How long a login waits for a verification slot before a 503 with
    /// `Retry-After`, milliseconds.
    pub password_check_wait_ms: u64,
    /// Header a trusted reverse proxy puts the client address in (e.g.
    /// `"x-forwarded-for"`, whose last entry is used), for the per-address
    /// throttle; unset = the connection's peer address. Set it only behind
    /// such a proxy: a client could otherwise name any address.
    pub client_address_header: Option<String>,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        let throttle = synchealth_dashboard::throttle::ThrottlePolicy::default();
        DashboardSettings {
            secure_cookies: synchealth_dashboard::SecureCookies::default(),
            login_max_failures: throttle.max_failures,
            login_failure_window_seconds: throttle.window.as_secs(),
            login_lockout_seconds: throttle.lockout.as_secs(),
            login_max_lockout_seconds: throttle.max_lockout.as_secs(),
            max_concurrent_password_checks: 0,
            password_check_wait_ms: 1000,
            client_address_header: None,
        }
    }
}

impl DashboardSettings {
    /// The dashboard's authentication policy.
    pub fn auth_policy(&self) -> anyhow::Result<synchealth_dashboard::AuthPolicy> {
        use std::time::Duration;
        let client_address_header = match &self.client_address_header {
            Some(name) => Some(
                axum::http::HeaderName::try_from(name.as_str())
                    .with_context(|| format!("dashboard.client_address_header: {name:?} is no header name"))?,
            ),
            None => None,
        };
        let defaults = synchealth_dashboard::AuthPolicy::default();
        Ok(synchealth_dashboard::AuthPolicy {
            throttle: synchealth_dashboard::throttle::ThrottlePolicy {
                max_failures: self.login_max_failures,
                window: Duration::from_secs(self.login_failure_window_seconds),
                lockout: Duration::from_secs(self.login_lockout_seconds),
                max_lockout: Duration::from_secs(self.login_max_lockout_seconds.max(self.login_lockout_seconds)),
            },
            max_concurrent_verifications: match self.max_concurrent_password_checks {
                0 => defaults.max_concurrent_verifications,
                n => n,
            },
            verification_wait: Duration::from_millis(self.password_check_wait_ms),
            client_address_header,
        })
    }
}

/// `/metrics` settings (`[metrics]` in the config file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Label the ingest counters with `project`. Off by default: `/metrics`
    /// is unauthenticated, and project names are the customer's business.
    #[serde(default)]
    pub per_project: bool,
}

/// Alert evaluation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// How often every rule is evaluated, e.g. `"15s"`.
    pub evaluation_interval: String,
    /// The rules (`[[alerts.rules]]`); giving any replaces the shipped defaults.
    pub rules: Vec<Rule>,
    /// The dashboard's address as people reach it, for the links in
    /// notifications, e.g. `https://health.example.com` (env
    /// `SYNCHEALTH_PUBLIC_URL`); empty (the default) = `http://` and the
    /// address `listen` actually binds.
    pub public_url: String,
    /// Notification channels by name (`[alerts.channels.<name>]`), as rules'
    /// `channels` name them. None by default: notifications are then only
    /// logged and stored.
    pub channels: std::collections::BTreeMap<String, ChannelSettings>,
    /// Retries of a failing delivery (`[alerts.retry]`).
    pub retry: RetrySettings,
    /// How long an evaluator replica's lease lasts past its last evaluation
    /// (a standby takes over after it), e.g. `"45s"`; unset = three
    /// evaluation intervals.
    pub lease_ttl: Option<String>,
}

/// `[alerts.retry]`: a delivery failing transiently (connection refused,
/// HTTP 5xx/429, SMTP 4xx) is retried with exponential backoff and jitter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First pause, milliseconds [default: 1000].
    pub initial_delay_ms: u64,
    /// Longest pause, milliseconds; pauses double up to it [default: 60000].
    pub max_delay_ms: u64,
    /// Attempts in all, the first included [default: 10].
    pub max_attempts: u32,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings { initial_delay_ms: 1_000, max_delay_ms: 60_000, max_attempts: 10 }
    }
}

impl AlertSettings {
    /// The evaluation interval as a duration.
    pub fn interval(&self) -> anyhow::Result<std::time::Duration> {
        let d = synchealth_alerts::duration::parse(&self.evaluation_interval).context("alerts.evaluation_interval")?;
        anyhow::ensure!(d.is_positive(), "alerts.evaluation_interval must be positive");
        Ok(d.unsigned_abs())
    }
}

/// Per-ingest-key rate limit, counted in events (a token bucket per key).
/// A batch over the limit is refused whole with a 429 and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// Sustained events per second one ingest key may send; 0 = unlimited.
    pub events_per_second: u32,
    /// Events one key may send at once above the sustained rate (the bucket
    /// size); 0 = one second's worth (`events_per_second`).
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { events_per_second: 20_000, burst: 100_000 }
    }
}

impl RateLimitSettings {
    /// The collector's limit; `None` when unlimited.
    pub fn limit(&self) -> Option<synchealth_collector::RateLimit> {
        synchealth_collector::RateLimit::from_settings(self.events_per_second, self.burst)
    }
}

/// The collector's ingest pipeline (`[ingest]`): requests are batched into
/// large store inserts, and acknowledged once in the store or in the spool,
/// a bounded directory on local disk replayed into the store once it is back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    /// A batch is inserted once it holds this many events...
    pub max_batch_rows: usize,
    /// ...or once its first request has waited this many milliseconds...
    pub max_batch_age_ms: u64,
    /// ...or, while no insert is running, once no request has arrived for
    /// this many milliseconds (so a lone request waits about this long).
    /// Acknowledging spooled, a batch is a spool append and never lingers.
    pub batch_linger_ms: u64,
    /// Requests queued for the batcher; beyond, new requests wait for room.
    pub queue_capacity: usize,
    /// Batches inserted at once; meanwhile the next batch keeps growing.
    pub max_inflight_batches: usize,
    /// A store insert taking longer (milliseconds) is abandoned and its batch
    /// spooled and acknowledged: a slow store does not hold clients.
    pub insert_timeout_ms: u64,
    /// Spool directory; unset = `<data_dir>/spool`. One process per directory.
    pub spool_dir: Option<PathBuf>,
    /// Bound of the spool in bytes on disk; when full, ingest answers 503 with
    /// `Retry-After`. 0 disables the spool (a failed insert is then a 503).
    pub spool_max_bytes: u64,
    /// Fraction of `spool_max_bytes` from which `/readyz` reports not ready.
    pub spool_high_water: f64,
    /// First pause (milliseconds) between replay attempts while the store fails...
    pub replay_backoff_min_ms: u64,
    /// ...doubling up to this many milliseconds.
    pub replay_backoff_max_ms: u64,
    /// When a request is answered: `"stored"` (once the events are in the
    /// store, or the spool if the store fails), `"spooled"` (once they are
    /// in the spool, fsync'd: the spool is the write-ahead log and large
    /// inserts go to the store behind the acknowledgements), or `"auto"`:
    /// spooled for ClickHouse, stored for the embedded store.
    pub acknowledge: AcknowledgeSetting,
    /// With spooled acknowledgements: the longest (milliseconds) an
    /// acknowledged event waits in memory before its insert.
    pub insert_max_delay_ms: u64,
    /// With spooled acknowledgements: acknowledged events held in memory for
    /// insertion at most; beyond, they are inserted from the spool on disk.
    pub max_pending_rows: usize,
}

/// `ingest.acknowledge`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AcknowledgeSetting {
    /// Spooled for ClickHouse, stored for the embedded store.
    Auto,
    /// Once in the store.
    Stored,
    /// Once in the spool.
    Spooled,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_batch_rows: 100_000,
            max_batch_age_ms: 100,
            batch_linger_ms: 5,
            queue_capacity: 256,
            max_inflight_batches: 2,
            insert_timeout_ms: 10_000,
            spool_dir: None,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_high_water: 0.8,
            replay_backoff_min_ms: 100,
            replay_backoff_max_ms: 5_000,
            acknowledge: AcknowledgeSetting::Auto,
            insert_max_delay_ms: 500,
            max_pending_rows: 60_000,
        }
    }
}

impl IngestSettings {
    /// The collector's pipeline configuration, spooling under `data_dir`
    /// unless `spool_dir` is set; `clickhouse` says which store it feeds.
    pub fn pipeline_config(
        &self,
        data_dir: &Path,
        clickhouse: bool,
    ) -> anyhow::Result<synchealth_collector::PipelineConfig> {
        use std::time::Duration;
        use synchealth_collector::Acknowledge;
        let acknowledge = match self.acknowledge {
            AcknowledgeSetting::Stored => Acknowledge::Stored,
            AcknowledgeSetting::Spooled => Acknowledge::Spooled,
            AcknowledgeSetting::Auto if clickhouse => Acknowledge::Spooled,
            AcknowledgeSetting::Auto => Acknowledge::Stored,
        };
        let config = synchealth_collector::PipelineConfig {
            max_batch_rows: self.max_batch_rows,
            max_batch_age: Duration::from_millis(self.max_batch_age_ms),
            batch_linger: Duration::from_millis(self.batch_linger_ms),
            queue_capacity: self.queue_capacity,
            max_inflight_batches: self.max_inflight_batches,
            spool_dir: self.spool_dir.clone().unwrap_or_else(|| data_dir.join("spool")),
            spool_max_bytes: self.spool_max_bytes,
            spool_high_water: self.spool_high_water,
            insert_timeout: Duration::from_millis(self.insert_timeout_ms),
            replay_backoff_min: Duration::from_millis(self.replay_backoff_min_ms),
            replay_backoff_max: Duration::from_millis(self.replay_backoff_max_ms),
            acknowledge,
            insert_max_delay: Duration::from_millis(self.insert_max_delay_ms),
            max_pending_rows: self.max_pending_rows,
        };
        config.validate().map_err(|why| anyhow::anyhow!("ingest: {why}"))?;
        Ok(config)
    }
}

/// How to reach ClickHouse.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClickHouseSettings {
    /// HTTP interface URL, e.g. `http://127.0.0.1:8123`; unset = embedded store.
    pub url: Option<String>,
    /// ClickHouse user.
    pub user: String,
    /// ClickHouse password.
    pub password: Option<Secret>,
    /// Database (created by `migrate` if missing).
    pub database: String,
    /// Cluster mode: the cluster's name in the servers' `remote_servers`;
    /// `migrate` then creates every table `ON CLUSTER` (README, "Cluster
    /// mode"). Unset = one server.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Cluster mode: an insert returns once this many replicas of its shard
    /// have it (`insert_quorum`); 0 = once one has.
    #[serde(default)]
    pub insert_quorum: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            clickhouse: ClickHouseSettings {
                url: None,
                user: "default".into(),
                password: None,
                database: "synchealth".into(),
                cluster: None,
                insert_quorum: 0,
            },
            ingest_key: None,
            ingest_key_allowed_origins: Vec::new(),
            admin_password: None,
            retention_days: 30,
            max_body_bytes: 5 * 1024 * 1024,
            max_body_bytes_in_flight: synchealth_collector::DEFAULT_BODY_BYTES_IN_FLIGHT,
            max_events_per_batch: synchealth_schema::MAX_BATCH_EVENTS,
            rate_limit: RateLimitSettings::default(),
            alerts: AlertSettings {
                evaluation_interval: "15s".into(),
                rules: Rule::defaults(),
                public_url: String::new(),
                channels: std::collections::BTreeMap::new(),
                retry: RetrySettings::default(),
                lease_ttl: None,
            },
            ingest: IngestSettings::default(),
            dashboard: DashboardSettings::default(),
            metrics: MetricsSettings::default(),
            server: ServerSettings::default(),
            clickhouse_read: ClickHouseReadSettings::default(),
        }
    }
}

/// Flags common to every subcommand; each is also `SYNCHEALTH_<NAME>` in the
/// environment and a key of the `--config` file.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct CommonArgs {
    /// TOML configuration file.
    #[arg(long, env = "SYNCHEALTH_CONFIG", global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Listen address [default: 127.0.0.1:8080].
    #[arg(long, env = "SYNCHEALTH_LISTEN", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Embedded store directory [default: ./data].
    #[arg(long, env = "SYNCHEALTH_DATA_DIR", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// ClickHouse HTTP URL; without it the embedded store is used.
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_URL", global = true)]
    #[serde(skip)]
    pub clickhouse_url: Option<String>,
    /// ClickHouse user [default: default].
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_USER", global = true)]
    #[serde(skip)]
    pub clickhouse_user: Option<String>,
    /// ClickHouse password.
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_PASSWORD", global = true, hide_env_values = true)]
    #[serde(skip)]
    pub clickhouse_password: Option<String>,
    /// ClickHouse database [default: synchealth].
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_DATABASE", global = true)]
    #[serde(skip)]
    pub clickhouse_database: Option<String>,
    /// ClickHouse cluster name: sharded, replicated tables `ON CLUSTER` (README, "Cluster mode").
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_CLUSTER", global = true)]
    #[serde(skip)]
    pub clickhouse_cluster: Option<String>,
    /// Replicas of a shard an insert waits for, on a cluster [default: 0, one].
    #[arg(long, env = "SYNCHEALTH_CLICKHOUSE_INSERT_QUORUM", global = true)]
    #[serde(skip)]
    pub clickhouse_insert_quorum: Option<u64>,
    /// The default project's ingest key (generated and printed once if not given).
    #[arg(long, env = "SYNCHEALTH_INGEST_KEY", global = true, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest_key: Option<String>,
    /// Browser origin the configured ingest key may be used from (CORS); repeatable, `*` for any.
    #[arg(
        long = "ingest-key-allowed-origin",
        env = "SYNCHEALTH_INGEST_KEY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        global = true
    )]
    #[serde(rename = "ingest_key_allowed_origins", skip_serializing_if = "Vec::is_empty")]
    pub ingest_key_allowed_origin: Vec<String>,
    /// Password of dashboard user `admin` (generated and printed once if not given).
    #[arg(long, env = "SYNCHEALTH_ADMIN_PASSWORD", global = true, hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_password: Option<String>,
    /// Days of events kept [default: 30].
    #[arg(long, env = "SYNCHEALTH_RETENTION_DAYS", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// Largest ingest body in bytes [default: 5242880].
    #[arg(long, env = "SYNCHEALTH_MAX_BODY_BYTES", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Ingest body bytes held at once across all requests [default: 134217728].
    #[arg(long, env = "SYNCHEALTH_MAX_BODY_BYTES_IN_FLIGHT", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes_in_flight: Option<usize>,
    /// Most events in one ingest batch [default: 5000].
    #[arg(long, env = "SYNCHEALTH_MAX_EVENTS_PER_BATCH", global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_events_per_batch: Option<usize>,
    /// Events per second per ingest key, 0 = unlimited [default: 20000].
    #[arg(long, env = "SYNCHEALTH_RATE_LIMIT_EVENTS_PER_SECOND", global = true)]
    #[serde(skip)]
    pub rate_limit_events_per_second: Option<u32>,
    /// Burst of events per ingest key, 0 = one second's worth [default: 100000].
    #[arg(long, env = "SYNCHEALTH_RATE_LIMIT_BURST", global = true)]
    #[serde(skip)]
    pub rate_limit_burst: Option<u32>,
    /// The dashboard's public address, for links in alert notifications [default: http:// and the bound listen address].
    #[arg(long, env = "SYNCHEALTH_PUBLIC_URL", global = true)]
    #[serde(skip)]
    pub public_url: Option<String>,
}

impl Settings {
    /// `alerts.public_url`, or when unset `http://` and `bound`, the address
    /// the server listens on (`127.0.0.1` standing for an unspecified
    /// `0.0.0.0`, which is no address to link to).
    pub fn public_url_for(&self, bound: SocketAddr) -> String {
        if !self.alerts.public_url.is_empty() {
            return self.alerts.public_url.clone();
        }
        let mut bound = bound;
        if bound.ip().is_unspecified() {
            bound.set_ip(match bound {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{bound}")
    }

    /// Defaults, then the config file, then environment and flags (clap has
    /// already put the environment under the flags).
    pub fn load(args: &CommonArgs) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &args.config {
            anyhow::ensure!(Path::new(path).is_file(), "config file {} does not exist", path.display());
            figment = figment.merge(Toml::file(path));
        }
        // The sections without flags take `SYNCHEALTH_<SECTION>__<KEY>`.
        for section in ["dashboard", "server"] {
            let prefix = format!("SYNCHEALTH_{}__", section.to_uppercase());
            figment = figment.merge(Env::prefixed(&prefix).map(move |key| format!("{section}.{key}").into()));
        }
        figment = figment.merge(Serialized::defaults(args));
        let clickhouse = [
            ("clickhouse.url", &args.clickhouse_url),
            ("clickhouse.user", &args.clickhouse_user),
            ("clickhouse.password", &args.clickhouse_password),
            ("clickhouse.database", &args.clickhouse_database),
            ("clickhouse.cluster", &args.clickhouse_cluster),
        ];
        for (key, value) in clickhouse {
            if let Some(value) = value {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        if let Some(quorum) = args.clickhouse_insert_quorum {
            figment = figment.merge(Serialized::default("clickhouse.insert_quorum", quorum));
        }
        let rate_limit = [
            ("rate_limit.events_per_second", args.rate_limit_events_per_second),
            ("rate_limit.burst", args.rate_limit_burst),
        ];
        for (key, value) in rate_limit {
            if let Some(value) = value {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        if let Some(url) = &args.public_url {
            figment = figment.merge(Serialized::default("alerts.public_url", url));
        }
        let settings: Settings = figment.extract().context("invalid configuration")?;
        anyhow::ensure!(settings.max_events_per_batch > 0, "max_events_per_batch must be at least 1");
        synchealth_alerts::validate_all(&settings.alerts.rules).context("invalid alert rule")?;
        settings.alerts.interval()?;
        settings.ingest.pipeline_config(&settings.data_dir, settings.clickhouse.url.is_some())?;
        settings.dashboard.auth_policy()?;
        anyhow::ensure!(settings.server.max_connections > 0, "server.max_connections must be at least 1");
        anyhow::ensure!(settings.server.header_read_timeout_ms > 0, "server.header_read_timeout_ms must be positive");
        Ok(settings)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nretention_days = 7\n[clickhouse]\nurl = \"http://127.0.0.1:8123\"\n",
        )
        .unwrap();
        let args = CommonArgs { config: Some(file), retention_days: Some(3), ..Default::default() };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.listen.port(), 9000);
        assert_eq!(settings.retention_days, 3);
        assert_eq!(settings.clickhouse.url.as_deref(), Some("http://127.0.0.1:8123"));
        assert_eq!(settings.clickhouse.database, "synchealth");
        assert_eq!(settings.alerts.rules, Rule::defaults(), "the shipped default rules stay when the file names none");
    }

    #[test]
    fn cluster_mode_comes_from_the_file_and_the_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "[clickhouse]\ncluster = \"from_file\"\ninsert_quorum = 2\n").unwrap();
        let settings = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!((settings.clickhouse.cluster.as_deref(), settings.clickhouse.insert_quorum), (Some("from_file"), 2));
        let args = CommonArgs {
            config: Some(file.clone()),
            clickhouse_cluster: Some("from_flag".into()),
            clickhouse_insert_quorum: Some(0),
            ..Default::default()
        };
        let settings = Settings::load(&args).unwrap();
        assert_eq!((settings.clickhouse.cluster.as_deref(), settings.clickhouse.insert_quorum), (Some("from_flag"), 0));
        assert_eq!(Settings::default().clickhouse.cluster, None, "one server unless asked");
        // deny_unknown_fields still holds in the section.
        std::fs::write(&file, "[clickhouse]\nclustr = \"typo\"\n").unwrap();
        assert!(Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).is_err());
    }

    #[test]
    fn rules_in_the_file_replace_the_defaults_and_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        let rule = "[[alerts.rules]]\nname = \"ios-success\"\nmetric = \"success_rate\"\ncomparison = \"<\"\nthreshold = 0.9\nwindow = \"5m\"\nfor = \"1m\"\nseverity = \"page\"\nchannels = [\"email\"]\nfilters = { os = \"ios\" }\n";
        std::fs::write(&file, format!("[alerts]\nevaluation_interval = \"5s\"\n{rule}")).unwrap();
        let settings = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.alerts.rules.len(), 1);
        assert_eq!(settings.alerts.rules[0].name, "ios-success");
        assert_eq!(settings.alerts.interval().unwrap(), std::time::Duration::from_secs(5));
        std::fs::write(&file, rule.replace("0.9", "90")).unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("ios-success"), "{err:#}");
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "retention_dayz = 7\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("retention_dayz"), "{err:#}");
    }

    #[test]
    fn the_rate_limit_comes_from_the_file_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "max_events_per_batch = 100\n[rate_limit]\nevents_per_second = 50\nburst = 200\n")
            .unwrap();
        let settings = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.max_events_per_batch, 100);
        assert_eq!(settings.rate_limit, RateLimitSettings { events_per_second: 50, burst: 200 });
        let args =
            CommonArgs { config: Some(file.clone()), rate_limit_events_per_second: Some(0), ..Default::default() };
        let unlimited = Settings::load(&args).unwrap();
        assert_eq!(unlimited.rate_limit.limit(), None);
        assert_eq!(Settings::default().rate_limit, RateLimitSettings { events_per_second: 20_000, burst: 100_000 });
        std::fs::write(&file, "[rate_limit]\nevents_per_secnd = 50\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("events_per_secnd"), "{err:#}");
    }

    #[test]
    fn the_ingest_section_overrides_its_defaults_key_by_key_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(
            &file,
            "data_dir = \"/var/lib/sh\"\n[ingest]\nmax_batch_age_ms = 50\nspool_max_bytes = 1048576\n",
        )
        .unwrap();
        let settings = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap();
        assert_eq!(settings.ingest.max_batch_age_ms, 50);
        assert_eq!(settings.ingest.max_batch_rows, 100_000, "keys not in the file keep their defaults");
        let config = settings.ingest.pipeline_config(&settings.data_dir, false).unwrap();
        assert_eq!(config.spool_dir, PathBuf::from("/var/lib/sh/spool"));
        assert_eq!(
            config.acknowledge,
            synchealth_collector::Acknowledge::Stored,
            "auto: stored for the embedded store"
        );
        let config = settings.ingest.pipeline_config(&settings.data_dir, true).unwrap();
        assert_eq!(config.acknowledge, synchealth_collector::Acknowledge::Spooled, "auto: spooled for ClickHouse");
        assert_eq!(config.spool_max_bytes, 1 << 20);
        assert_eq!(config.max_batch_age, std::time::Duration::from_millis(50));
        std::fs::write(&file, "[ingest]\nspool_high_water = 1.5\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file.clone()), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("spool_high_water"), "{err:#}");
        std::fs::write(&file, "[ingest]\nspool_max_byte = 5\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("spool_max_byte"), "{err:#}");
    }

    #[test]
    fn the_login_throttle_comes_from_the_file_and_the_environment_overrides_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("synchealth.toml");
        std::fs::write(&file, "[dashboard]\nlogin_max_failures = 5\nclient_address_header = \"x-forwarded-for\"\n")
            .unwrap();
        let args = CommonArgs { config: Some(file.clone()), ..Default::default() };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.dashboard.login_max_failures, 5);
        assert_eq!(settings.dashboard.login_lockout_seconds, 60, "keys not in the file keep their defaults");
        let policy = settings.dashboard.auth_policy().unwrap();
        assert_eq!(policy.throttle.max_failures, 5);
        assert!(policy.max_concurrent_verifications >= 1, "0 means the number of cores");
        assert_eq!(policy.client_address_header.unwrap().as_str(), "x-forwarded-for");
        // Another test loading settings meanwhile sees 7 too; none asserts on it.
        std::env::set_var("SYNCHEALTH_DASHBOARD__LOGIN_MAX_FAILURES", "7");
        let from_env = Settings::load(&args);
        std::env::remove_var("SYNCHEALTH_DASHBOARD__LOGIN_MAX_FAILURES");
        assert_eq!(from_env.unwrap().dashboard.login_max_failures, 7);
        std::fs::write(&file, "[dashboard]\nclient_address_header = \"not a header\"\n").unwrap();
        let err = Settings::load(&CommonArgs { config: Some(file), ..Default::default() }).unwrap_err();
        assert!(format!("{err:#}").contains("client_address_header"), "{err:#}");
    }

    #[test]
    fn the_public_url_defaults_to_the_bound_address_unless_set() {
        let mut settings = Settings::default();
        assert_eq!(settings.public_url_for("127.0.0.1:9123".parse().unwrap()), "http://127.0.0.1:9123");
        assert_eq!(settings.public_url_for("0.0.0.0:8081".parse().unwrap()), "http://127.0.0.1:8081");
        assert_eq!(settings.public_url_for("[::]:8081".parse().unwrap()), "http://[::1]:8081");
        settings.alerts.public_url = "https://health.example.com".into();
        assert_eq!(settings.public_url_for("127.0.0.1:9123".parse().unwrap()), "https://health.example.com");
    }

    #[test]
    fn secrets_never_print() {
        let settings = Settings { admin_password: Some(Secret("hunter2".into())), ..Default::default() };
        assert!(!format!("{settings:?}").contains("hunter2"));
    }
}
