//! [`crate::Accounts`] for ClickHouse: projects, ingest keys, users and
//! projects' declared dimensions, each a `ReplacingMergeTree(version)`: a
//! write is a new row with a larger version, a delete is a tombstone row,
//! and reads use `FINAL`.

use async_trait::async_trait;
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use synchealth_schema::ProjectName;

use super::sql::{parse_project, unix_nanos, unix_seconds_u32};
use super::ClickHouseStore;
use crate::{IngestKey, Result, User};

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
            allowed_origins: key.allowed_origins.clone(),
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
            .query(&format!("SELECT {INGEST_KEY_COLUMNS} FROM ingest_keys FINAL WHERE project = ? ORDER BY key_hash"))
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

    #[tracing::instrument(skip_all)]
    async fn users(&self) -> Result<Vec<User>> {
        // Tombstones are dropped here, not in WHERE, for the reason given in
        // `find_user`: a filter outside the sorting key must not see older
        // versions of a row.
        let rows =
            self.client.query("SELECT ?fields FROM users FINAL ORDER BY username").fetch_all::<UserRow>().await?;
        rows.into_iter()
            .filter(|r| r.deleted == 0)
            .map(|row| {
                let projects = row.projects.iter().map(|p| parse_project(p)).collect::<Result<_>>()?;
                Ok(User { username: row.username, password_hash: row.password_hash, admin: row.admin != 0, projects })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(project = %project))]
    async fn set_project_dimensions(&self, project: &ProjectName, keys: &[String]) -> Result<()> {
        // The whole list in one row: the newest version replaces the list at
        // once, an empty one included (it declares none).
        let row = ProjectDimensionsRow {
            project: project.as_str().to_string(),
            dimension_keys: crate::dimensions::declared_keys(keys)?,
            version: self.next_row_version(),
        };
        self.insert_control("project_dimensions", &row).await
    }

    #[tracing::instrument(skip_all, fields(project = %project))]
    async fn project_dimensions(&self, project: &ProjectName) -> Result<Vec<String>> {
        let keys = self
            .client
            .query("SELECT dimension_keys FROM project_dimensions FINAL WHERE project = ?")
            .bind(project.as_str())
            .fetch_optional::<Vec<String>>()
            .await?;
        let mut keys = keys.unwrap_or_default();
        keys.sort();
        Ok(keys)
    }
}

#[derive(Row, Serialize, Deserialize)]
struct ProjectDimensionsRow {
    project: String,
    dimension_keys: Vec<String>,
    version: u64,
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
    allowed_origins: Vec<String>,
}

const INGEST_KEY_COLUMNS: &str = "key_hash, project, label, created_at_ms, revoked, allowed_origins";

#[derive(Row, Deserialize)]
struct IngestKeyRead {
    key_hash: String,
    project: String,
    label: String,
    created_at_ms: i64,
    revoked: u8,
    allowed_origins: Vec<String>,
}

impl IngestKeyRead {
    fn into_key(self) -> Result<IngestKey> {
        Ok(IngestKey {
            key_hash: self.key_hash,
            project: parse_project(&self.project)?,
            label: self.label,
            created_at_ms: self.created_at_ms,
            revoked: self.revoked != 0,
            allowed_origins: self.allowed_origins,
        })
    }
}

#[derive(Row, Serialize, Deserialize)]
pub(super) struct UserRow {
    username: String,
    password_hash: String,
    admin: u8,
    projects: Vec<String>,
    deleted: u8,
    version: u64,
}
