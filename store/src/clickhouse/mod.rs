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

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use clickhouse::{Client, Row, RowOwned, RowWrite};
use serde::{Deserialize, Serialize};
use synchealth_schema::migrations::{self, Migration};
use synchealth_schema::{ErrorKind, Network, ProjectName, StoredEvent, SyncEvent, Trigger};
use time::OffsetDateTime;

use uuid::Uuid;

use crate::metrics::{Aggregate, GroupKey, Grouping, Query};
use crate::{Error, IngestKey, InsertOutcome, Result, User};

mod alerting;
mod dedup;
mod device_cache;
mod device_state;
mod devices;
mod sessions;
mod rollup;
mod telemetry_loss;

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

/// The ClickHouse implementation of [`Store`].
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
}

/// Lets the runtime's other tasks run every few thousand rows: encoding a
/// block of 100,000 rows takes tens of milliseconds of CPU and `write`
/// rarely waits on the network over loopback, so without this one insert
/// holds a worker thread and the requests queued on it wait (the ingest
/// acknowledgements' tail latency).
async fn yield_every(row: usize) {
    if row % 2048 == 2047 {
        tokio::task::yield_now().await;
    }
}

impl ClickHouseStore {
    /// Writes rows with one RowBinary insert and no duplicate check: the raw
    /// insert path, which the ingest benchmark measures as the ceiling.
    /// [`Store::insert`] checks for stored duplicates first, then calls this.
    pub async fn insert_unchecked(&self, events: &[StoredEvent]) -> Result<()> {
        self.write_rows(events.iter(), new_insert_id()).await
    }

    /// Writes the rows, every one marked with `insert_id` (which write a
    /// copy of an event came from, `dedup.rs`).
    async fn write_rows<'a>(&self, rows: impl Iterator<Item = &'a StoredEvent> + Clone, insert_id: u64) -> Result<()> {
        // Devices first: that write is idempotent, so an events insert that
        // fails after it, and is retried, leaves nothing wrong behind.
        let mut devices = self.client.insert::<device_state::DeviceHourRow<'_>>("device_hour_input").await?;
        for (i, row) in device_state::device_hours(rows.clone()).iter().enumerate() {
            devices.write(row).await?;
            yield_every(i).await;
        }
        devices.end().await?;
        let mut insert = self.client.insert::<EventRowRef<'_>>("events").await?;
        for (i, event) in rows.enumerate() {
            insert.write(&EventRowRef::from_stored(event, insert_id)).await?;
            yield_every(i).await;
        }
        // `end` returns once the server has written and committed the parts,
        // so the caller may acknowledge the batch.
        insert.end().await?;
        Ok(())
    }

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
        })
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
    fn next_row_version(&self) -> u64 {
        next_row_version(&self.last_row_version, unix_nanos())
    }

    async fn apply_migration(&self, migration: &Migration) -> Result<()> {
        let failed = |reason: String| Error::Migration { version: migration.version, name: migration.name, reason };
        let db = quote_identifier(&self.config.database);
        for statement in migration.statements() {
            let sql = render(&statement, &db, self.version);
            // query_raw: DDL text is sent verbatim, a `?` in it is no bind.
            match self.server.query_raw(&sql).execute().await {
                Ok(()) => {}
                // 18.16 has no `ADD COLUMN IF NOT EXISTS`: a migration that
                // stopped after adding its column finds it there when rerun.
                Err(e) if statement.contains(" ADD COLUMN ") && e.to_string().contains("already exists") => {}
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        // Through the database's client: the table name needs no database
        // prefix, so nothing but the binds goes through `?` parsing.
        self.client
            .query("INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, now()")
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(|e| failed(format!("recording it: {e}")))?;
        tracing::info!(version = migration.version, name = migration.name, "Applied migration.");
        Ok(())
    }

    /// [`Store::insert`]: each id looked up before and after the write
    /// (`dedup.rs`); with `replayed`, what an interrupted earlier write of
    /// these events left behind is repaired first.
    #[tracing::instrument(skip_all, fields(events = events.len(), replayed))]
    async fn insert_checked(&self, events: &[StoredEvent], replayed: bool) -> Result<InsertOutcome> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        // Ids repeated within the batch are duplicates of their first.
        let mut duplicates = Vec::new();
        let mut by_project: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut seen = HashSet::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert((e.project.as_str(), e.event.event_id)) {
                by_project.entry(e.project.as_str()).or_default().push(i);
            } else {
                duplicates.push(i);
            }
        }
        let started = std::time::Instant::now();
        // First look-up: what is stored already is answered as a duplicate
        // and not written (and compensated, if a crash after a racing write
        // left it stored twice). A replay repairs an interrupted earlier
        // write of its events first.
        let mut fresh_by_project: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (&project, indexes) in &by_project {
            let copies = if replayed {
                self.copies_after_repair(project, events, indexes).await?
            } else {
                self.copies(project, events, indexes).await?
            };
            let found = self.settle(project, &copies).await?;
            let (stored, fresh): (Vec<usize>, Vec<usize>) =
                indexes.iter().partition(|&&i| found.contains(&events[i].event.event_id));
            duplicates.extend(stored);
            if !fresh.is_empty() {
                fresh_by_project.insert(project, fresh);
            }
        }
        let fresh: Vec<usize> = fresh_by_project.values().flatten().copied().collect();
        let looked_up = started.elapsed();
        let (mut written, mut rechecked) = (looked_up, looked_up);
        if !fresh.is_empty() {
            self.write_rows(fresh.iter().map(|&i| &events[i]), new_insert_id()).await?;
            written = started.elapsed();
            // Second look-up: a collector that wrote the same events at the
            // same moment is seen now (by this one or by that one, dedup.rs).
            for (&project, indexes) in &fresh_by_project {
                self.settle(project, &self.copies(project, events, indexes).await?).await?;
            }
            rechecked = started.elapsed();
        }
        tracing::debug!(
            rows = events.len(),
            fresh = fresh.len(),
            lookup_ms = looked_up.as_millis() as u64,
            write_ms = (written - looked_up).as_millis() as u64,
            recheck_ms = (rechecked - written).as_millis() as u64,
            "Stored a block."
        );
        duplicates.sort_unstable();
        Ok(InsertOutcome { inserted: fresh.len(), duplicates })
    }

    async fn insert_control<T: RowOwned + RowWrite>(&self, table: &str, row: &T) -> Result<()> {
        let mut insert = self.client.insert::<T>(table).await?;
        insert.write(row).await?;
        insert.end().await?;
        Ok(())
    }
}

#[async_trait]
impl crate::Database for ClickHouseStore {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    #[tracing::instrument(skip_all, fields(database = %self.config.database))]
    async fn migrate(&self) -> Result<()> {
        let db = quote_identifier(&self.config.database);
        self.server.query_raw(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute().await?;
        self.server
            .query_raw(&format!(
                "CREATE TABLE IF NOT EXISTS {db}.schema_migrations \
                 (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
            ))
            .execute()
            .await?;
        // A process migrating concurrently may record a version twice: harmless,
        // every statement is `IF NOT EXISTS`, and versions are read distinct.
        let applied: HashSet<u32> = self
            .client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all::<u32>()
            .await?
            .into_iter()
            .collect();
        for migration in migrations::CLICKHOUSE.iter().filter(|m| !applied.contains(&m.version)) {
            self.apply_migration(migration).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> Result<()> {
        self.server.query("SELECT 1").fetch_one::<u8>().await?;
        Ok(())
    }
}

#[async_trait]
impl crate::Events for ClickHouseStore {
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.insert_checked(events, false).await
    }

    async fn insert_replayed(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.insert_checked(events, true).await
    }

    #[tracing::instrument(skip_all, fields(database = %self.config.database, days = days))]
    async fn apply_retention(&self, days: u32) -> Result<()> {
        let cutoff_s = (unix_nanos() / 1_000_000_000).saturating_sub(u64::from(days) * 86_400);
        // The partition key is `toYYYYMMDD(event_time)` in the server's time
        // zone, so the cutoff day is computed by the server too.
        let cutoff_day = self
            .server
            .query("SELECT toUInt32(toYYYYMMDD(toDateTime(?)))")
            .bind(u32::try_from(cutoff_s).unwrap_or(u32::MAX))
            .fetch_one::<u32>()
            .await?;
        let partitions = self
            .server
            .query("SELECT DISTINCT partition FROM system.parts WHERE active AND database = ? AND table = 'events'")
            .bind(self.config.database.as_str())
            .fetch_all::<String>()
            .await?;
        // A partition is dropped only when its whole day is before the cutoff
        // day: retention keeps at least `days` days, never less.
        let expired =
            partitions.iter().filter_map(|p| p.trim_matches('\'').parse::<u32>().ok()).filter(|&d| d < cutoff_day);
        for day in expired {
            self.client.query("ALTER TABLE events DROP PARTITION ?").bind(day).execute().await?;
            // The dashboard rollups and the copies ledger (migrations 0006-0008)
            // are partitioned by the same day, and must forget what events forgot.
            for rollup in [
                "rollup_minute",
                "rollup_hour",
                "device_hour_latest",
                "event_copies",
                "event_ids",
                "event_duplicates",
                "suspect_hours",
            ] {
                self.client.query(&format!("ALTER TABLE {rollup} DROP PARTITION ?")).bind(day).execute().await?;
            }
            tracing::info!(day, "Dropped expired partition.");
        }
        Ok(())
    }
}

#[async_trait]
impl crate::Aggregates for ClickHouseStore {
    #[tracing::instrument(
        skip_all,
        fields(project = %query.project, from_ms = query.from_ms, to_ms = query.to_ms, grouping = ?grouping)
    )]
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        self.aggregate_impl(query, grouping).await
    }

    async fn devices(&self, query: &Query, list: crate::DeviceList, limit: u32) -> Result<Vec<crate::DeviceSummary>> {
        self.devices_impl(query, list, limit).await
    }

    #[tracing::instrument(skip_all, fields(project = %project, limit = limit))]
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
        let rows = self
            .reader
            .query(&format!(
                "SELECT ?fields FROM events FINAL WHERE project = ? AND device_id = ? AND {} \
                 ORDER BY event_time_ms DESC, toString(event_id) DESC LIMIT ?",
                dedup::NOT_COMPENSATED_SQL
            ))
            .bind(project.as_str())
            .bind(device_id)
            .bind(project.as_str())
            .bind(limit)
            .fetch_all::<EventRow>()
            .await?;
        rows.into_iter().map(EventRow::into_stored).collect()
    }
}

#[async_trait]
impl crate::Accounts for ClickHouseStore {
    #[tracing::instrument(skip_all, fields(project = %project))]
    async fn ensure_project(&self, project: &ProjectName) -> Result<()> {
        let exists = self
            .client
            .query("SELECT toUInt64(count()) FROM projects FINAL WHERE name = ?")
            .bind(project.as_str())
            .fetch_one::<u64>()
            .await?;
        if exists == 0 {
            // Two processes may both get here; the rows share the sorting key
            // and collapse into one project.
            let row = ProjectRow {
                name: project.as_str().to_string(),
                created_at: unix_seconds_u32(unix_nanos() / 1_000_000_000),
                version: self.next_row_version(),
            };
            self.insert_control("projects", &row).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn projects(&self) -> Result<Vec<ProjectName>> {
        let names = self.client.query("SELECT name FROM projects FINAL ORDER BY name").fetch_all::<String>().await?;
        names.iter().map(|n| parse_project(n)).collect()
    }

    #[tracing::instrument(skip_all, fields(project = %key.project))]
    async fn put_ingest_key(&self, key: &IngestKey) -> Result<()> {
        let row = IngestKeyRow {
            key_hash: key.key_hash.clone(),
            project: key.project.as_str().to_string(),
            label: key.label.clone(),
            created_at: unix_seconds_u32(u64::try_from(key.created_at_ms.div_euclid(1000)).unwrap_or(0)),
            created_at_ms: key.created_at_ms,
            revoked: u8::from(key.revoked),
            version: self.next_row_version(),
        };
        self.insert_control("ingest_keys", &row).await
    }

    #[tracing::instrument(skip_all)]
    async fn find_ingest_key(&self, key_hash: &str) -> Result<Option<IngestKey>> {
        let row = self
            .client
            .query(&format!("SELECT {INGEST_KEY_COLUMNS} FROM ingest_keys FINAL WHERE key_hash = ?"))
            .bind(key_hash)
            .fetch_optional::<IngestKeyRead>()
            .await?;
        row.map(IngestKeyRead::into_key).transpose()
    }

    #[tracing::instrument(skip_all, fields(project = %project))]
    async fn ingest_keys(&self, project: &ProjectName) -> Result<Vec<IngestKey>> {
        let rows = self
            .client
            .query(&format!(
                "SELECT {INGEST_KEY_COLUMNS} FROM ingest_keys FINAL WHERE project = ? ORDER BY key_hash"
            ))
            .bind(project.as_str())
            .fetch_all::<IngestKeyRead>()
            .await?;
        rows.into_iter().map(IngestKeyRead::into_key).collect()
    }

    #[tracing::instrument(skip_all, fields(username = %user.username))]
    async fn put_user(&self, user: &User) -> Result<()> {
        let row = UserRow {
            username: user.username.clone(),
            password_hash: user.password_hash.clone(),
            admin: u8::from(user.admin),
            projects: user.projects.iter().map(|p| p.as_str().to_string()).collect(),
            deleted: 0,
            version: self.next_row_version(),
        };
        self.insert_control("users", &row).await
    }

    #[tracing::instrument(skip_all, fields(username = %username))]
    async fn find_user(&self, username: &str) -> Result<Option<User>> {
        // `deleted` is checked here, not in WHERE: a filter on a column outside
        // the sorting key must not see older versions of the row, and keeping
        // it out of the query makes that independent of PREWHERE rules.
        let row = self
            .client
            .query("SELECT ?fields FROM users FINAL WHERE username = ?")
            .bind(username)
            .fetch_optional::<UserRow>()
            .await?;
        let Some(row) = row.filter(|r| r.deleted == 0) else {
            return Ok(None);
        };
        let projects = row.projects.iter().map(|p| parse_project(p)).collect::<Result<_>>()?;
        Ok(Some(User { username: row.username, password_hash: row.password_hash, admin: row.admin != 0, projects }))
    }

    #[tracing::instrument(skip_all, fields(username = %username))]
    async fn remove_user(&self, username: &str) -> Result<bool> {
        if self.find_user(username).await?.is_none() {
            return Ok(false);
        }
        let tombstone = UserRow {
            username: username.to_string(),
            password_hash: String::new(),
            admin: 0,
            projects: Vec::new(),
            deleted: 1,
            version: self.next_row_version(),
        };
        self.insert_control("users", &tombstone).await?;
        Ok(true)
    }

    async fn users(&self) -> Result<Vec<User>> {
        self.users_impl().await
    }
}

#[async_trait]
impl crate::Sessions for ClickHouseStore {
    async fn create_session(&self, session: &crate::Session) -> Result<()> {
        self.create_session_impl(session).await
    }

    async fn find_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<crate::Session>> {
        self.find_session_impl(token_hash, now_ms).await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        self.delete_session_impl(token_hash).await
    }
}

#[async_trait]
impl crate::Alerting for ClickHouseStore {
    async fn alert_instances(&self) -> Result<Vec<crate::AlertInstanceRecord>> {
        self.alert_instances_impl().await
    }

    async fn put_alert_instance(&self, instance: &crate::AlertInstanceRecord) -> Result<()> {
        self.put_alert_instance_impl(instance).await
    }

    async fn notifications(&self, project: Option<&ProjectName>, limit: u32) -> Result<Vec<crate::NotificationRecord>> {
        self.notifications_impl(project, limit).await
    }

    async fn put_notification(&self, notification: &crate::NotificationRecord) -> Result<()> {
        self.put_notification_impl(notification).await
    }

    async fn silences(&self, now_ms: i64) -> Result<Vec<crate::Silence>> {
        self.silences_impl(now_ms).await
    }

    async fn put_silence(&self, silence: &crate::Silence) -> Result<()> {
        self.put_silence_impl(silence).await
    }

    async fn remove_silence(&self, id: &str) -> Result<bool> {
        self.remove_silence_impl(id).await
    }

    async fn try_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        self.try_lease_impl(name, holder, now_ms, ttl_ms).await
    }
}

#[async_trait]
impl crate::LossReports for ClickHouseStore {
    async fn record_telemetry_loss(&self, project: &ProjectName, device_id: &str, dropped: &BTreeMap<String, u64>, reported_at_ms: i64) -> Result<()> {
        self.record_telemetry_loss_impl(project, device_id, dropped, reported_at_ms).await
    }

    async fn telemetry_loss(&self, project: &ProjectName, from_ms: i64, to_ms: i64) -> Result<crate::TelemetryLoss> {
        self.telemetry_loss_impl(project, from_ms, to_ms).await
    }
}

/// A new write's `insert_id`: random, so two collectors' writes differ.
fn new_insert_id() -> u64 {
    Uuid::new_v4().as_u64_pair().1
}

/// The first ClickHouse release (major, minor) where a feature is stable, for
/// the gates below. Conservative on purpose: 20.1 is well past the releases
/// where `LowCardinality` stopped being experimental (19.x) and `TTL` appeared
/// (19.6).
const STABLE_SINCE: ServerVersion = ServerVersion { major: 20, minor: 1 };

/// A ClickHouse server version, as far as the gates care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ServerVersion {
    major: u32,
    minor: u32,
}

impl ServerVersion {
    /// Assumed when the version string is not understood: enable nothing new.
    const OLDEST: ServerVersion = ServerVersion { major: 18, minor: 16 };

    /// Parses `version()` output: `18.16.1`, `24.8.4.13`, `25.3.1.2703-testing`.
    fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits = minor_text.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor_text.len());
        let minor = minor_text[..digits].parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    /// `LowCardinality(String)` without the experimental setting 18.16 wants.
    fn has_low_cardinality(self) -> bool {
        self >= STABLE_SINCE
    }

    /// The `async_insert` setting (21.11; on by default from 26.2). Older
    /// servers refuse a setting they do not know.
    fn has_async_insert(self) -> bool {
        self >= ServerVersion { major: 21, minor: 11 }
    }
}

/// `{label}`: the type of short, repetitive text columns.
fn label_type(version: ServerVersion) -> &'static str {
    if version.has_low_cardinality() {
        "LowCardinality(String)"
    } else {
        "String"
    }
}

/// `{ttl}`: empty on every version, on purpose. Servers from 19.6 (gated
/// here at 20.1) have `TTL`, but retention is a runtime setting
/// ([`Store::apply_retention`]) done by dropping day partitions, which every
/// version can do; a TTL baked in at migration time would be a second,
/// conflicting retention rule that a config change could not move. The
/// placeholder stays so a version-gated table option has one place to go.
fn ttl_clause(_version: ServerVersion) -> &'static str {
    ""
}

/// Fills a migration statement's placeholders for this database and server.
fn render(statement: &str, quoted_db: &str, version: ServerVersion) -> String {
    statement.replace("{db}", quoted_db).replace("{label}", label_type(version)).replace("{ttl}", ttl_clause(version))
}

/// A backquoted ClickHouse identifier.
fn quote_identifier(name: &str) -> String {
    quote(name, '`')
}

/// `text` between `mark`s, with `mark` and `\\` escaped by a backslash:
/// ClickHouse's rule for identifiers (`` ` ``) and string literals (`'`).
fn quote(text: &str, mark: char) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push(mark);
    for c in text.chars() {
        if c == mark || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push(mark);
    quoted
}

fn group_key(grouping: Grouping, time: u64, segment: String) -> GroupKey {
    match grouping {
        Grouping::Total => GroupKey::Total,
        Grouping::Time { .. } => GroupKey::Time(i64::try_from(time).unwrap_or(i64::MAX)),
        Grouping::By(_) => GroupKey::Segment(segment),
    }
}

/// A bound query argument of one of the types the filters use.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Arg {
    Text(String),
    Int(i64),
    Seconds(u32),
}

/// The WHERE clause of an aggregate and its arguments, in order. The
/// `DateTime` bounds let ClickHouse prune partitions and granules by the
/// sorting key; the millisecond bounds are the exact window.
fn window_filter(query: &Query) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "project = ? AND event_time >= toDateTime(?) AND event_time <= toDateTime(?) \
         AND event_time_ms >= ? AND event_time_ms < ?",
    );
    let mut args = vec![
        Arg::Text(query.project.as_str().to_string()),
        Arg::Seconds(event_time_s(query.from_ms)),
        Arg::Seconds(event_time_s(query.to_ms.saturating_add(999))),
        Arg::Int(query.from_ms),
        Arg::Int(query.to_ms),
    ];
    let filters = &query.filters;
    let segments = [
        ("app_version", filters.app_version.clone()),
        ("os", filters.os.clone()),
        ("network", filters.network.map(|n| n.as_str().to_string())),
    ];
    for (column, value) in segments {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Arg::Text(value));
        }
    }
    (sql, args)
}

/// `event_time` of a millisecond time: whole seconds, clamped to what
/// `DateTime` holds (clamping is monotonic, so window bounds stay valid).
fn event_time_s(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

/// `max(previous + 1, now)`, recorded as the new previous.
fn next_row_version(last: &AtomicU64, now: u64) -> u64 {
    let bump = |prev: u64| now.max(prev.saturating_add(1));
    match last.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| Some(bump(prev))) {
        Ok(prev) | Err(prev) => bump(prev),
    }
}

fn unix_seconds_u32(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A `sumMap` result as `(bucket, value)` pairs, without empty buckets.
fn histogram<T: Default + PartialEq + Copy>((buckets, values): (Vec<u16>, Vec<T>)) -> Vec<(u16, T)> {
    buckets.into_iter().zip(values).filter(|(_, v)| *v != T::default()).collect()
}

fn parse_project(name: &str) -> Result<ProjectName> {
    ProjectName::parse(name).map_err(|e| Error::Corrupt(e.to_string()))
}

fn time_from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::Corrupt(format!("time {ms} ms: {e}")))
}

/// Optional text is stored as '' (no Nullable for labels): '' reads as absent.
fn optional_text(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

fn optional_enum<T>(text: &str, parse: impl Fn(&str) -> Option<T>, column: &str) -> Result<Option<T>> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).ok_or_else(|| Error::Corrupt(format!("{column} {text:?}")))
}

/// One `events` row as read back: the columns of `0001_events.sql`, in
/// order and type (RowBinary without validation is positional).
#[derive(Debug, Row, Deserialize)]
struct EventRow {
    project: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    device_id: String,
    // Read because the row is positional; the corrected time is in `event_time_ms`.
    #[allow(dead_code)]
    event_time: u32,
    event_time_ms: i64,
    occurred_at_ms: i64,
    last_success_at_ms: Option<i64>,
    sent_at_ms: i64,
    received_at_ms: i64,
    clock_skew_ms: i64,
    success: u8,
    duration_ms: u64,
    duration_bucket: u16,
    conflicts: u32,
    queue_depth: u32,
    queue_bucket: u16,
    staleness_ms: Option<u64>,
    staleness_bucket: u16,
    app_version: String,
    os: String,
    os_version: String,
    network: String,
    device_model: String,
    sync_type: String,
    trigger: String,
    error_kind: String,
    error_message: String,
    retries: u32,
    records_up: u64,
    records_down: u64,
    bytes_up: u64,
    bytes_down: u64,
    sample_rate: f64,
    weight: f64,
}

/// [`EventRow`] borrowing from the event, for inserts: a row costs no
/// allocation on the way to the wire (at a few hundred thousand rows a
/// second, copying a dozen strings per row was a tenth of the collector's
/// CPU).
#[derive(Row, Serialize)]
struct EventRowRef<'a> {
    project: &'a str,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    device_id: &'a str,
    event_time: u32,
    event_time_ms: i64,
    occurred_at_ms: i64,
    last_success_at_ms: Option<i64>,
    sent_at_ms: i64,
    received_at_ms: i64,
    clock_skew_ms: i64,
    success: u8,
    duration_ms: u64,
    duration_bucket: u16,
    conflicts: u32,
    queue_depth: u32,
    queue_bucket: u16,
    staleness_ms: Option<u64>,
    staleness_bucket: u16,
    app_version: &'a str,
    os: &'a str,
    os_version: &'a str,
    network: &'a str,
    device_model: &'a str,
    sync_type: &'a str,
    trigger: &'a str,
    error_kind: &'a str,
    error_message: &'a str,
    retries: u32,
    records_up: u64,
    records_down: u64,
    bytes_up: u64,
    bytes_down: u64,
    sample_rate: f64,
    weight: f64,
    insert_id: u64,
}

impl<'a> EventRowRef<'a> {
    fn from_stored(s: &'a StoredEvent, insert_id: u64) -> EventRowRef<'a> {
        let e = &s.event;
        EventRowRef {
            project: s.project.as_str(),
            event_id: e.event_id,
            device_id: &e.device_id,
            event_time: event_time_s(s.event_time_ms),
            event_time_ms: s.event_time_ms,
            occurred_at_ms: s.occurred_at_ms(),
            last_success_at_ms: s.last_success_at_ms(),
            sent_at_ms: s.sent_at_ms,
            received_at_ms: s.received_at_ms,
            clock_skew_ms: s.clock_skew_ms,
            success: u8::from(e.success),
            duration_ms: e.duration_ms,
            duration_bucket: s.duration_bucket,
            conflicts: e.conflicts,
            queue_depth: e.queue_depth,
            queue_bucket: s.queue_bucket,
            staleness_ms: s.staleness_ms,
            staleness_bucket: s.staleness_bucket,
            app_version: &e.app_version,
            os: &e.os,
            os_version: e.os_version.as_deref().unwrap_or_default(),
            network: e.network.as_str(),
            device_model: e.device_model.as_deref().unwrap_or_default(),
            sync_type: e.sync_type.as_deref().unwrap_or_default(),
            trigger: e.trigger.map(|t| t.as_str()).unwrap_or_default(),
            error_kind: e.error_kind.map(|k| k.as_str()).unwrap_or_default(),
            error_message: e.error_message.as_deref().unwrap_or_default(),
            retries: e.retries,
            records_up: e.records_up,
            records_down: e.records_down,
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            sample_rate: e.sample_rate,
            weight: s.weight,
            insert_id,
        }
    }
}

impl EventRow {
    fn into_stored(self) -> Result<StoredEvent> {
        let network =
            Network::parse(&self.network).ok_or_else(|| Error::Corrupt(format!("network {:?}", self.network)))?;
        let event = SyncEvent {
            event_id: self.event_id,
            device_id: self.device_id,
            occurred_at: time_from_ms(self.occurred_at_ms)?,
            success: self.success != 0,
            duration_ms: self.duration_ms,
            conflicts: self.conflicts,
            queue_depth: self.queue_depth,
            last_success_at: self.last_success_at_ms.map(time_from_ms).transpose()?,
            app_version: self.app_version,
            os: self.os,
            os_version: optional_text(self.os_version),
            network,
            device_model: optional_text(self.device_model),
            sync_type: optional_text(self.sync_type),
            trigger: optional_enum(&self.trigger, Trigger::parse, "trigger")?,
            error_kind: optional_enum(&self.error_kind, ErrorKind::parse, "error_kind")?,
            error_message: optional_text(self.error_message),
            retries: self.retries,
            records_up: self.records_up,
            records_down: self.records_down,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            sample_rate: self.sample_rate,
        };
        Ok(StoredEvent {
            project: parse_project(&self.project)?,
            event,
            sent_at_ms: self.sent_at_ms,
            received_at_ms: self.received_at_ms,
            clock_skew_ms: self.clock_skew_ms,
            event_time_ms: self.event_time_ms,
            staleness_ms: self.staleness_ms,
            weight: self.weight,
            duration_bucket: self.duration_bucket,
            queue_bucket: self.queue_bucket,
            staleness_bucket: self.staleness_bucket,
        })
    }
}

/// The totals query's row, in its column order.
#[derive(Row, Deserialize)]
struct TotalsRow {
    gt: u64,
    gs: String,
    /// Signed: the compensations for duplicates subtract (`dedup.rs`).
    events: i64,
    attempts: f64,
    successes: f64,
    conflicted: f64,
    duration: (Vec<u16>, Vec<f64>),
    late: i64,
}

/// The per-device-latest query's row, in its column order.
#[derive(Row, Deserialize)]
struct DevicesRow {
    gt: u64,
    gs: String,
    devices: u64,
    queue_sum: u64,
    queue_max: u64,
    queue_over_threshold: u64,
    never_synced: u64,
    queue_histogram: (Vec<u16>, Vec<u64>),
    staleness_histogram: (Vec<u16>, Vec<u64>),
}

#[derive(Row, Serialize, Deserialize)]
struct ProjectRow {
    name: String,
    created_at: u32,
    version: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct IngestKeyRow {
    key_hash: String,
    project: String,
    label: String,
    created_at: u32,
    created_at_ms: i64,
    revoked: u8,
    version: u64,
}

const INGEST_KEY_COLUMNS: &str = "key_hash, project, label, created_at_ms, revoked";

#[derive(Row, Deserialize)]
struct IngestKeyRead {
    key_hash: String,
    project: String,
    label: String,
    created_at_ms: i64,
    revoked: u8,
}

impl IngestKeyRead {
    fn into_key(self) -> Result<IngestKey> {
        Ok(IngestKey {
            key_hash: self.key_hash,
            project: parse_project(&self.project)?,
            label: self.label,
            created_at_ms: self.created_at_ms,
            revoked: self.revoked != 0,
        })
    }
}

#[derive(Row, Serialize, Deserialize)]
struct UserRow {
    username: String,
    password_hash: String,
    admin: u8,
    projects: Vec<String>,
    deleted: u8,
    version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_and_without_build_suffixes() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion { major: 18, minor: 16 }));
        assert_eq!(ServerVersion::parse("24.8.4.13\n"), Some(ServerVersion { major: 24, minor: 8 }));
        assert_eq!(ServerVersion::parse("25.3.1.2703-testing"), Some(ServerVersion { major: 25, minor: 3 }));
        assert_eq!(ServerVersion::parse("19"), None);
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn low_cardinality_is_gated_at_twenty_one() {
        let v = |major, minor| ServerVersion { major, minor };
        assert_eq!(label_type(v(18, 16)), "String");
        assert_eq!(label_type(v(19, 17)), "String");
        assert_eq!(label_type(v(20, 1)), "LowCardinality(String)");
        assert_eq!(label_type(v(24, 8)), "LowCardinality(String)");
        assert_eq!(ttl_clause(v(18, 16)), "");
        assert_eq!(ttl_clause(v(24, 8)), "");
    }

    #[test]
    fn async_insert_is_turned_off_only_where_the_server_knows_the_setting() {
        let v = |major, minor| ServerVersion { major, minor };
        assert!(!v(18, 16).has_async_insert());
        assert!(!v(21, 10).has_async_insert());
        assert!(v(21, 11).has_async_insert());
        assert!(v(26, 9).has_async_insert());
    }

    #[test]
    fn every_placeholder_of_every_migration_is_filled() {
        for version in [ServerVersion::OLDEST, ServerVersion { major: 24, minor: 8 }] {
            for migration in migrations::CLICKHOUSE {
                for statement in migration.statements() {
                    let sql = render(&statement, "`db`", version);
                    assert!(!sql.contains('{') && !sql.contains('}'), "{sql}");
                    assert!(!sql.contains('?'), "a `?` would be taken for a bind: {sql}");
                }
            }
        }
        let events = render(&migrations::CLICKHOUSE[0].statements()[0], "`x`", ServerVersion::OLDEST);
        assert!(events.starts_with("CREATE TABLE IF NOT EXISTS `x`.events"));
        assert!(events.contains("app_version String,"));
        assert!(events.trim_end().ends_with("ORDER BY (project, event_time, event_id)"));
    }

    #[test]
    fn identifiers_are_backquoted_and_escaped() {
        assert_eq!(quote_identifier("synchealth"), "`synchealth`");
        assert_eq!(quote_identifier("a`b\\c"), "`a\\`b\\\\c`");
    }

    #[test]
    fn event_time_is_floored_and_clamped() {
        assert_eq!(event_time_s(1_700_000_000_999), 1_700_000_000);
        assert_eq!(event_time_s(1_700_000_001_000), 1_700_000_001);
        assert_eq!(event_time_s(-1), 0);
        assert_eq!(event_time_s(i64::MAX), u32::MAX);
    }

    #[test]
    fn the_window_filter_binds_every_value() {
        let query = Query {
            project: ProjectName::parse("p").unwrap(),
            from_ms: 1_500,
            to_ms: 2_001,
            filters: crate::Filters { app_version: Some("1' OR 1=1".into()), os: None, network: Some(Network::Wifi) },
            queue_threshold: 10,
        };
        let (sql, args) = window_filter(&query);
        assert_eq!(sql.matches('?').count(), args.len());
        assert!(!sql.contains("OR 1=1"));
        assert!(matches!(args[1], Arg::Seconds(1)));
        assert!(matches!(args[2], Arg::Seconds(3)));
        assert!(sql.ends_with("AND app_version = ? AND network = ?"));
    }

    #[test]
    fn time_buckets_follow_the_step() {
        let (time, segment) = rollup::group_expressions(Grouping::Time { step_seconds: 300 }, "event_time");
        assert_eq!(time, "toUInt64(intDiv(toUInt32(event_time), 300) * 300)");
        assert_eq!(segment, "''");
        assert_eq!(group_key(Grouping::Time { step_seconds: 300 }, 600, String::new()), GroupKey::Time(600));
    }

    #[test]
    fn histograms_drop_empty_buckets() {
        assert_eq!(histogram((vec![1, 2, 3], vec![2u64, 0, 1])), vec![(1, 2), (3, 1)]);
    }

    #[test]
    fn control_plane_versions_increase_even_when_the_clock_does_not() {
        let last = AtomicU64::new(0);
        assert_eq!(next_row_version(&last, 100), 100);
        assert_eq!(next_row_version(&last, 100), 101);
        assert_eq!(next_row_version(&last, 50), 102);
        assert_eq!(next_row_version(&last, 500), 500);
        assert_eq!(last.load(Ordering::Relaxed), 500);
    }
}
