//! The embedded SQLite store (single-binary default). SKELETON: to be implemented.

use std::path::Path;

use async_trait::async_trait;
use synchealth_schema::{ProjectName, StoredEvent};

use crate::metrics::{Aggregate, GroupKey, Grouping, Query};
use crate::{IngestKey, InsertOutcome, Result, Store, User};

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        todo!("{path:?}")
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str { "sqlite" }
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
