//! The ClickHouse store: production and scale-out, from the 18.16 that Debian
//! ships to current releases, over the HTTP interface with the official
//! `clickhouse` crate (RowBinary, schema validation off because 18.16 does not
//! know the setting the crate's validation sends).
//!
//! How the contract maps onto ClickHouse, and why:
//! - **Exactly once without unique keys.** ClickHouse cannot refuse a
//!   duplicate row, and the rollups count every row inserted. Every event id
//!   is looked up before it is written, and again after, and a copy that two
//!   collectors wrote at the same moment is compensated before the insert
//!   returns (`dedup.rs`), so an event counts once in every aggregate.
//! - **Retention by partition.** `events` is partitioned by day, and retention
//!   drops whole partitions: cheap, and available on every version (`TTL` is a
//!   syntax error on 18.16).
//! - **Version gates.** `connect` asks `SELECT version()`; the migrations'
//!   placeholders are filled from it (see [`ServerVersion`]), and every query
//!   here sticks to what 18.16 has (no `toStartOfInterval`, no `DateTime64`,
//!   no window functions) with explicit casts, so the row types do not depend
//!   on the server's type inference.
//! - **Control plane.** Projects, ingest keys and users are
//!   `ReplacingMergeTree(version)`: a write is a new row with a larger version,
//!   a delete is a tombstone row, and reads use `FINAL`.
//!
//! Layout, one file per job, the same names as `sqlite/` where the job is
//! the same: this file holds the struct and connecting; `migrate.rs` the
//! migrations and version gates ([`crate::Database`]); `sql.rs` the shared
//! SQL helpers; `events.rs` insert and retention ([`crate::Events`]) with
//! `dedup.rs` (the id look-ups) and `device_state.rs` (the device rows it
//! writes); `aggregate.rs` the reads ([`crate::Aggregates`]) with
//! `device_cache.rs` (and `edge_hour.rs`) and `segment_cache.rs`, and the device lists in
//! `lists.rs`; `accounts.rs`, `sessions.rs`, `alerting.rs` and
//! `telemetry_loss.rs` one trait each.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use clickhouse::{Client, RowOwned, RowWrite};

use self::sql::{next_row_version, unix_nanos};
use crate::Result;

mod accounts;
mod aggregate;
mod alerting;
mod cluster;
mod dedup;
mod device_cache;
mod device_state;
mod edge_hour;
mod events;
mod lists;
mod migrate;
mod segment_cache;
mod sessions;
mod signals;
mod sql;
mod telemetry_loss;

pub use cluster::ClusterConfig;
use migrate::ServerVersion;

/// Where and as whom to reach ClickHouse.
#[derive(Clone)]
pub struct ClickHouseConfig {
    /// HTTP interface URL, e.g. `http://127.0.0.1:8123`.
    pub url: String,
    /// User name.
    pub user: String,
    /// Password (never logged).
    pub password: Option<String>,
    /// Database; created by `migrate` if missing.
    pub database: String,
}

impl std::fmt::Debug for ClickHouseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickHouseConfig")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

/// Per-query limits of the read queries (see [`ClickHouseStore::with_reader`]);
/// a zero is not sent, leaving the server's (or the user profile's) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueryLimits {
    /// `max_execution_time`, seconds.
    pub max_execution_seconds: u64,
    /// `max_rows_to_read`.
    pub max_rows_to_read: u64,
    /// `max_memory_usage`, bytes.
    pub max_memory_bytes: u64,
}

impl QueryLimits {
    /// The settings to send: all of these exist on 18.16 and current
    /// ClickHouse, and a user whose profile says `readonly = 2` may set them
    /// per query (`readonly = 1` forbids changing any setting).
    fn settings(&self) -> Vec<(&'static str, u64)> {
        [
            ("max_execution_time", self.max_execution_seconds),
            ("max_rows_to_read", self.max_rows_to_read),
            ("max_memory_usage", self.max_memory_bytes),
        ]
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .collect()
    }
}

/// The ClickHouse implementation of [`crate::Store`].
#[derive(Debug, Clone)]
pub struct ClickHouseStore {
    config: ClickHouseConfig,
    /// Without a database: `version()`, `ping` and `CREATE DATABASE` must work
    /// before the database exists.
    server: Client,
    /// With the database: everything else.
    client: Client,
    /// The dashboard's and alerts' reads (aggregates, device lists, device
    /// events): the same as `client` unless [`ClickHouseStore::with_reader`]
    /// set a read-only user and query limits.
    reader: Client,
    version: ServerVersion,
    /// The last control-plane row version this process wrote.
    last_row_version: Arc<AtomicU64>,
    /// The event id look-ups (`dedup.rs`): external tables in a multipart
    /// body, which the `clickhouse` crate does not send.
    http: reqwest::Client,
    /// Whole hours of per-device latest values, for the dashboard's reads.
    device_cache: Arc<device_cache::DeviceCache>,
    segment_cache: Arc<segment_cache::SegmentCache>,
    /// The events of the partial hours at the end of past windows.
    edge_hours: Arc<edge_hour::EdgeHours>,
    /// The device lists' runs of whole hours and minutes (`lists.rs`).
    device_runs: Arc<crate::device_runs::RunCache>,
    /// Sub-hour series' per-device figures per bucket (`series.rs`).
    buckets: Arc<crate::bucket_cache::BucketCache>,
    /// Cluster mode (`cluster.rs`): set by [`ClickHouseStore::with_cluster`].
    cluster: Option<ClusterConfig>,
}

impl ClickHouseStore {
    /// Connects (asks the server its version, to gate newer features).
    #[tracing::instrument(skip_all, fields(url = %config.url, database = %config.database))]
    pub async fn connect(config: ClickHouseConfig) -> Result<Self> {
        let mut server = Client::default()
            .with_url(config.url.clone())
            .with_user(config.user.clone())
            // The crate's schema validation sends a setting 18.16 rejects; the
            // row structs below mirror the tables column by column instead.
            .with_validation(false);
        if let Some(password) = &config.password {
            server = server.with_password(password.clone());
        }
        let client = server.clone().with_database(config.database.clone());
        let text = server.query("SELECT version()").fetch_one::<String>().await?;
        let version = ServerVersion::parse(&text).unwrap_or_else(|| {
            tracing::warn!(version = %text, "Unrecognised ClickHouse version; assuming the oldest supported.");
            ServerVersion::OLDEST
        });
        tracing::info!(version = %text, "Connected to ClickHouse.");
        let reader = client.clone();
        let client = if version.has_async_insert() {
            // On by default since 26.2: the server would buffer an insert and
            // answer later (or, with `wait_for_async_insert = 0`, before it is
            // written), and the second id look-up must see the rows at once.
            client.with_setting("async_insert", "0")
        } else {
            client
        };
        Ok(ClickHouseStore {
            config,
            server,
            reader,
            client,
            version,
            last_row_version: Arc::new(AtomicU64::new(0)),
            http: reqwest::Client::new(),
            device_cache: Arc::default(),
            segment_cache: Arc::default(),
            edge_hours: Arc::default(),
            device_runs: Arc::default(),
            buckets: Arc::default(),
            cluster: None,
        })
    }

    /// Cluster mode (`cluster.rs`): `migrate` creates every table `ON
    /// CLUSTER`, writes wait for the shards (and for `insert_quorum`
    /// replicas), and `ping` checks every shard has a live replica. Call
    /// before [`ClickHouseStore::with_reader`], which starts from the reader
    /// this sets up.
    pub fn with_cluster(mut self, cluster: ClusterConfig) -> Self {
        for (name, value) in cluster::read_settings() {
            self.client = self.client.with_setting(name, value);
            self.reader = self.reader.with_setting(name, value);
        }
        self.client = self.client.with_setting("insert_distributed_sync", "1");
        if cluster.insert_quorum > 1 {
            self.client = self.client.with_setting("insert_quorum", cluster.insert_quorum.to_string());
        }
        self.cluster = Some(cluster);
        self
    }

    /// Runs the read queries of the dashboard and the alerts (aggregates,
    /// device lists, device events) as `user` (a read-only user: README,
    /// "Read-only ClickHouse access") with `limits` sent as per-query
    /// settings; writes and the control plane keep the main user.
    pub fn with_reader(mut self, user: Option<String>, password: Option<String>, limits: &QueryLimits) -> Self {
        // From the reader as connected: the write client's insert settings
        // are nothing a read-only user may set.
        let mut reader = self.reader.clone();
        if let Some(user) = user {
            reader = reader.with_user(user);
            // A read user without a password must not inherit the main one.
            reader = reader.with_password(password.unwrap_or_default());
        }
        for (name, value) in limits.settings() {
            reader = reader.with_setting(name, value.to_string());
        }
        self.reader = reader;
        self
    }

    /// A control-plane row version: Unix nanoseconds, but always above the
    /// previous one from this process, so two writes within one clock tick (or
    /// across a clock step back) still replace each other in order.
    pub(super) fn next_row_version(&self) -> u64 {
        next_row_version(&self.last_row_version, unix_nanos())
    }

    pub(super) async fn insert_control<T: RowOwned + RowWrite>(&self, table: &str, row: &T) -> Result<()> {
        let mut insert = self.client.insert::<T>(table).await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }
}
