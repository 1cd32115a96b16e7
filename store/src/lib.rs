//! Storage for synchealth: one interface ([`Store`]) with two implementations,
//! ClickHouse for production and scale-out, embedded SQLite for the
//! single-binary default, plus the metric definitions ([`metrics`]) that the
//! dashboard and the alerts share.
//!
//! The split of work: a store answers [`Store::aggregate`] with raw
//! aggregates ([`metrics::Aggregate`]: sums, counts, histograms by bucket,
//! per-device latest values), and [`metrics::Summary::from_aggregate`]
//! derives every metric from them in Rust. So a metric is defined once, and
//! the same data gives the same answer on both stores; the conformance suite
//! in `tests/it` checks exactly that.

mod clickhouse;
mod error;
pub mod metrics;
mod recent_ids;
mod sqlite;

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use synchealth_schema::{ProjectName, StoredEvent};

pub use crate::clickhouse::{ClickHouseConfig, ClickHouseStore};
pub use crate::error::{Error, Result};
pub use crate::metrics::{Aggregate, Dimension, Filters, GroupKey, Grouping, Query, Summary};
pub use crate::sqlite::SqliteStore;

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

/// The storage interface every role talks to.
///
/// Both implementations must give the same answers on the same data; the
/// conformance suite (`store/tests/it/conformance.rs`) runs against each.
#[async_trait]
pub trait Store: Send + Sync + Debug {
    /// Short name for logs and `/readyz`: `clickhouse` or `sqlite`.
    fn kind(&self) -> &'static str;

    /// Applies every pending migration; safe to run again and concurrently
    /// with another process doing the same.
    async fn migrate(&self) -> Result<()>;

    /// Cheap reachability check.
    async fn ping(&self) -> Result<()>;

    /// Stores a batch of events (any projects). Idempotent: an event whose
    /// `(project, event_id)` is already stored is reported as a duplicate and
    /// not counted again. Returns only after the events are durable.
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome>;

    /// The raw aggregates behind every metric, per group (one group for
    /// [`Grouping::Total`], one per time bucket or per segment otherwise,
    /// ordered by key). Groups with no events are absent.
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>>;

    /// The most recent events of one device (by corrected time, newest first).
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>>;

    /// Deletes events older than `days` days (by corrected time).
    async fn apply_retention(&self, days: u32) -> Result<()>;

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
}

/// A store shared by every role of one process.
pub type SharedStore = Arc<dyn Store>;
