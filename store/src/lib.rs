//! Storage for synchealth: one interface ([`Store`]) with two implementations,
//! ClickHouse for production and scale-out, embedded SQLite for the
//! single-binary default, plus the metric definitions ([`metrics`]) that the
//! dashboard and the alerts share.
//!
//! [`Store`] is the union of one trait per concern ([`Database`], [`Events`],
//! [`Aggregates`], [`Signals`], [`Accounts`], [`Sessions`], [`Alerting`],
//! [`LossReports`]), with a blanket impl. `clickhouse/` and `sqlite/` each
//! implement each concern in a file of its own, with the same names
//! (`migrate.rs`, `events.rs`, `aggregate.rs`, `accounts.rs`, `sessions.rs`,
//! `alerting.rs`, `telemetry_loss.rs`, `signals.rs`, plus `device_state.rs`,
//! `device_cache.rs` and `sql.rs`), so the two backends compare file by
//! file; a role may ask for only the concerns it uses. One trait per file
//! rather than three broad ones (events, accounts, alerting) because a trait `impl` cannot span
//! files: a broader trait would bring back a layer of methods that only
//! forward to the file doing the work.
//!
//! The split of work: a store answers [`Aggregates::aggregate`] with raw
//! aggregates ([`metrics::Aggregate`]: sums, counts, histograms by bucket,
//! per-device latest values), and [`metrics::Summary::from_aggregate`]
//! derives every metric from them in Rust. So a metric is defined once, and
//! the same data gives the same answer on both stores; the conformance suite
//! in `tests/it` checks exactly that.

pub mod alerting;
mod bucket_cache;
mod clickhouse;
mod device_runs;
pub mod devices;
pub mod dimensions;
mod error;
pub mod metrics;
mod pieces;
mod sessions;
pub mod signals;
mod sqlite;
mod telemetry_loss;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use synchealth_schema::{ProjectName, StoredEvent};

pub use crate::alerting::{AlertInstanceRecord, NotificationRecord, Silence, TicketRecord};
pub use crate::clickhouse::{ClickHouseConfig, ClickHouseStore, ClusterConfig, QueryLimits};
pub use crate::devices::{DeviceList, DeviceSummary};
pub use crate::error::{Error, Result};
pub use crate::metrics::{Aggregate, Dimension, Filters, GroupKey, Grouping, Query, Summary};
pub use crate::sessions::Session;
pub use crate::signals::{ConflictAggregate, ErrorAggregate, Signals};
pub use crate::sqlite::SqliteStore;
pub use crate::telemetry_loss::TelemetryLoss;

/// What an insert did with each event it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsertOutcome {
    /// Events newly stored.
    pub inserted: usize,
    /// Indexes (into the input slice) of events that were already stored,
    /// or repeated earlier in the same input: stored once, counted once.
    pub duplicates: Vec<usize>,
}

/// An ingest key as stored: its hash, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestKey {
    /// SHA-256 of the key, lowercase hex.
    pub key_hash: String,
    /// The project the key writes to.
    pub project: ProjectName,
    /// A human label ("ios app 2.x", "generated at first start").
    pub label: String,
    /// Creation time, Unix milliseconds.
    pub created_at_ms: i64,
    /// A revoked key authenticates nothing.
    pub revoked: bool,
    /// Browser origins (`https://app.example.com`, or `*` for any) the key
    /// may be used from; empty = none, so browsers are refused (CORS).
    /// Requests without an `Origin` header (native apps) are not affected.
    pub allowed_origins: Vec<String>,
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub username: String,
    /// argon2 PHC string.
    pub password_hash: String,
    /// An admin sees every project.
    pub admin: bool,
    /// Projects a non-admin user may read.
    pub projects: Vec<ProjectName>,
}

/// What every store is, whatever it stores: its name, its schema, and
/// whether it answers.
#[async_trait]
pub trait Database: Send + Sync {
    /// Short name for logs and `/readyz`: `clickhouse` or `sqlite`.
    fn kind(&self) -> &'static str;

    /// Applies every pending migration; safe to run again and concurrently
    /// with another process doing the same.
    async fn migrate(&self) -> Result<()>;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<()>;
}

/// The write side of events: what the collector and the retention task use.
#[async_trait]
pub trait Events: Send + Sync {
    /// Stores a batch of events (any projects). Idempotent: an event whose
    /// `(project, event_id)` is already stored is reported as a duplicate and
    /// not counted again. Returns only after the events are durable.
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome>;

    /// [`Events::insert`] of events that an earlier, failed insert may have
    /// stored in part (a replay from the collector's spool). A store whose
    /// writes are atomic needs nothing more; ClickHouse repairs what such a
    /// write left behind first (`clickhouse/dedup.rs`).
    async fn insert_replayed(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.insert(events).await
    }

    /// Deletes events older than `days` days (by corrected time).
    async fn apply_retention(&self, days: u32) -> Result<()>;
}

/// The read side of events: every metric, device list and device page of the
/// dashboard and the alerts.
#[async_trait]
pub trait Aggregates: Send + Sync {
    /// The raw aggregates behind every metric, per group (one group for
    /// [`Grouping::Total`], one per time bucket or per segment otherwise,
    /// ordered by key). Groups with no events are absent.
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>>;

    /// Devices of the query's window and filters, listed and ordered as
    /// [`DeviceList`] says (see [`devices`] for the definitions), at most
    /// `limit` of them.
    async fn devices(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>>;

    /// The most recent events of one device (by corrected time, newest first).
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>>;
}

/// The control plane: projects, ingest keys and dashboard users.
#[async_trait]
pub trait Accounts: Send + Sync {
    /// Creates the project if it does not exist.
    async fn ensure_project(&self, project: &ProjectName) -> Result<()>;

    /// Every project, by name.
    async fn projects(&self) -> Result<Vec<ProjectName>>;

    /// Stores (or replaces) an ingest key record.
    async fn put_ingest_key(&self, key: &IngestKey) -> Result<()>;

    /// Looks up a key by its hash, revoked or not.
    async fn find_ingest_key(&self, key_hash: &str) -> Result<Option<IngestKey>>;

    /// Every key of a project, revoked ones included.
    async fn ingest_keys(&self, project: &ProjectName) -> Result<Vec<IngestKey>>;

    /// Stores (or replaces) a user.
    async fn put_user(&self, user: &User) -> Result<()>;

    /// Looks up a user.
    async fn find_user(&self, username: &str) -> Result<Option<User>>;

    /// Removes a user; `false` if there was none.
    async fn remove_user(&self, username: &str) -> Result<bool>;

    /// Every user, by name.
    async fn users(&self) -> Result<Vec<User>>;

    /// Declares the custom dimensions a project keeps, replacing its list
    /// (empty: it keeps none). Keys follow the contract's key rule and there
    /// are at most 8 ([`dimensions::declared_keys`]); otherwise nothing is
    /// stored and the error names the key. The project need not exist.
    async fn set_project_dimensions(&self, project: &ProjectName, keys: &[String]) -> Result<()>;

    /// The dimension keys a project declared, sorted; empty when none.
    async fn project_dimensions(&self, project: &ProjectName) -> Result<Vec<String>>;
}

/// Dashboard login sessions.
#[async_trait]
pub trait Sessions: Send + Sync {
    /// Stores a new login [`Session`].
    async fn create_session(&self, session: &Session) -> Result<()>;

    /// The session with this token hash, unless it was deleted or has
    /// expired at `now_ms`.
    async fn find_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<Session>>;

    /// Ends a session (logout); `false` if there was none.
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;
}

/// The alerts role's state: instances, notifications, silences and leases.
#[async_trait]
pub trait Alerting: Send + Sync {
    /// Every alert instance's last evaluated state (alerts role, dashboard).
    async fn alert_instances(&self) -> Result<Vec<AlertInstanceRecord>>;

    /// Stores (or replaces) an alert instance, keyed by
    /// `(project, fingerprint)`.
    async fn put_alert_instance(&self, instance: &AlertInstanceRecord) -> Result<()>;

    /// The latest notifications (of one project, or all), newest first.
    async fn notifications(&self, project: Option<&ProjectName>, limit: u32) -> Result<Vec<NotificationRecord>>;

    /// Stores (or replaces, by `id`) a notification and its delivery status.
    async fn put_notification(&self, notification: &NotificationRecord) -> Result<()>;

    /// Silences that have not ended at `now_ms` (active and future), by start.
    async fn silences(&self, now_ms: i64) -> Result<Vec<Silence>>;

    /// Stores (or replaces, by `id`) a silence.
    async fn put_silence(&self, silence: &Silence) -> Result<()>;

    /// Removes a silence; `false` if there was none.
    async fn remove_silence(&self, id: &str) -> Result<bool>;

    /// Claims the lease `name` for `holder` until `now_ms + ttl_ms`, or
    /// renews it if `holder` already holds it; `false` while another holder's
    /// lease runs. At most one holder gets `true` for a lease at a time, within
    /// the limits each store documents (see `store/src/clickhouse/alerting.rs`).
    async fn try_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool>;

    /// The ticket of an alert instance's firing episode in a channel, if
    /// one was recorded (the first one, if several were).
    async fn ticket(
        &self,
        project: &ProjectName,
        fingerprint: &str,
        channel: &str,
        episode_ms: i64,
    ) -> Result<Option<TicketRecord>>;

    /// Records a ticket; a second one for the same episode does not replace
    /// the first.
    async fn put_ticket(&self, ticket: &TicketRecord) -> Result<()>;
}

/// The telemetry-loss reports devices send beside their events.
#[async_trait]
pub trait LossReports: Send + Sync {
    /// Records a device's telemetry-loss report: cumulative dropped counts by
    /// reason since the device's probe storage was created. Keeps the largest
    /// value per `(project, device, reason)`, so a repeated or reordered
    /// report changes nothing; `reported_at_ms` stamps the update.
    async fn record_telemetry_loss(
        &self,
        project: &ProjectName,
        device_id: &str,
        dropped: &BTreeMap<String, u64>,
        reported_at_ms: i64,
    ) -> Result<()>;

    /// Telemetry loss of the devices whose report was updated within
    /// `[from_ms, to_ms)`, each at its latest cumulative value.
    async fn telemetry_loss(&self, project: &ProjectName, from_ms: i64, to_ms: i64) -> Result<TelemetryLoss>;
}

/// The storage interface every role talks to: every concern at once.
///
/// Both implementations must give the same answers on the same data; the
/// conformance suite (`store/tests/it/conformance.rs`) runs against each.
/// Nothing to implement: anything with every concern is a `Store`, so each
/// backend writes one `impl` per concern, in that concern's file, and a role
/// that needs fewer concerns may ask for just those.
pub trait Store:
    Database + Events + Aggregates + Signals + Accounts + Sessions + Alerting + LossReports + Debug
{
}

impl<T> Store for T where
    T: Database + Events + Aggregates + Signals + Accounts + Sessions + Alerting + LossReports + Debug + ?Sized
{
}

/// A store shared by every role of one process.
pub type SharedStore = Arc<dyn Store>;
