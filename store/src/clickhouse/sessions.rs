//! [`crate::Sessions`] in ClickHouse: dashboard login sessions. Sessions are a
//! `ReplacingMergeTree(version)` like the rest of the control plane: a logout
//! writes a tombstone row with a larger version, and reads use `FINAL`, so
//! every replica sees the logout on its next request.

use clickhouse::Row;
use serde::{Deserialize, Serialize};

use async_trait::async_trait;

use super::ClickHouseStore;
use crate::{Result, Session};

#[derive(Row, Serialize, Deserialize)]
struct SessionRow {
    token_hash: String,
    username: String,
    credential_tag: String,
    created_at_ms: i64,
    expires_at_ms: i64,
    deleted: u8,
    version: u64,
}

#[async_trait]
impl crate::Sessions for ClickHouseStore {
    #[tracing::instrument(skip_all, fields(username = %session.username))]
    async fn create_session(&self, session: &Session) -> Result<()> {
        let row = SessionRow {
            token_hash: session.token_hash.clone(),
            username: session.username.clone(),
            credential_tag: session.credential_tag.clone(),
            created_at_ms: session.created_at_ms,
            expires_at_ms: session.expires_at_ms,
            deleted: 0,
            version: self.next_row_version(),
        };
        self.insert_control("sessions", &row).await
    }

    #[tracing::instrument(skip_all)]
    async fn find_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<Session>> {
        let row = self
            .client
            .query("SELECT ?fields FROM sessions FINAL WHERE token_hash = ?")
            .bind(token_hash)
            .fetch_optional::<SessionRow>()
            .await?;
        Ok(row.filter(|r| r.deleted == 0 && r.expires_at_ms > now_ms).map(|r| Session {
            token_hash: r.token_hash,
            username: r.username,
            credential_tag: r.credential_tag,
            created_at_ms: r.created_at_ms,
            expires_at_ms: r.expires_at_ms,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        // Any timestamp works for the check: a tombstone only matters for a
        // session that is still there.
        if self.find_session(token_hash, i64::MIN).await?.is_none() {
            return Ok(false);
        }
        let tombstone = SessionRow {
            token_hash: token_hash.to_string(),
            username: String::new(),
            credential_tag: String::new(),
            created_at_ms: 0,
            expires_at_ms: 0,
            deleted: 1,
            version: self.next_row_version(),
        };
        self.insert_control("sessions", &tombstone).await?;
        Ok(true)
    }
}
