//! The ClickHouse store (production, scale-out). SKELETON: to be implemented.

use async_trait::async_trait;
use synchealth_schema::{ProjectName, StoredEvent};

use crate::metrics::{Aggregate, GroupKey, Grouping, Query};
use crate::{IngestKey, InsertOutcome, Result, Store, User};

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

/// The ClickHouse implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct ClickHouseStore {
    config: ClickHouseConfig,
}

impl ClickHouseStore {
    /// Connects (asks the server its version, to gate newer features).
    pub async fn connect(config: ClickHouseConfig) -> Result<Self> {
        todo!("{config:?}")
    }
}

#[async_trait]
impl Store for ClickHouseStore {
    fn kind(&self) -> &'static str { "clickhouse" }
    async fn migrate(&self) -> Result<()> { todo!() }
    async fn ping(&self) -> Result<()> { todo!() }
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome> { todo!("{events:?}") }
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> { todo!("{query:?}{grouping:?}") }
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> { todo!("{project}{device_id}{limit}") }
    async fn apply_retention(&self, days: u32) -> Result<()> { todo!("{days}") }
    async fn ensure_project(&self, project: &ProjectName) -> Result<()> { todo!("{project}") }
    async fn projects(&self) -> Result<Vec<ProjectName>> { todo!() }
    async fn put_ingest_key(&self, key: &IngestKey) -> Result<()> { todo!("{key:?}") }
    async fn find_ingest_key(&self, key_hash: &str) -> Result<Option<IngestKey>> { todo!("{key_hash}") }
    async fn ingest_keys(&self, project: &ProjectName) -> Result<Vec<IngestKey>> { todo!("{project}") }
    async fn put_user(&self, user: &User) -> Result<()> { todo!("{user:?}") }
    async fn find_user(&self, username: &str) -> Result<Option<User>> { todo!("{username}") }
    async fn remove_user(&self, username: &str) -> Result<bool> { todo!("{username}") }
}
