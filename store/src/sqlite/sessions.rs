//! [`crate::Sessions`] in SQLite: dashboard login sessions, one row per session, deleted
//! at logout; expired rows are refused on read and purged at the next login.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};

use super::SqliteStore;
use crate::{Result, Session};

#[async_trait]
impl crate::Sessions for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite", username = %session.username))]
    async fn create_session(&self, session: &Session) -> Result<()> {
        let session = session.clone();
        self.write(move |conn| {
            // Logins are rare: a good moment to drop sessions that expired.
            conn.prepare_cached("DELETE FROM sessions WHERE expires_at_ms <= ?1")?.execute([session.created_at_ms])?;
            conn.prepare_cached(
                "INSERT INTO sessions (token_hash, username, credential_tag, created_at_ms, expires_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                session.token_hash,
                session.username,
                session.credential_tag,
                session.created_at_ms,
                session.expires_at_ms
            ])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn find_session(&self, token_hash: &str, now_ms: i64) -> Result<Option<Session>> {
        let token_hash = token_hash.to_string();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT token_hash, username, credential_tag, created_at_ms, expires_at_ms FROM sessions
                     WHERE token_hash = ?1 AND expires_at_ms > ?2",
                )?
                .query_row(params![token_hash, now_ms], |row| {
                    Ok(Session {
                        token_hash: row.get(0)?,
                        username: row.get(1)?,
                        credential_tag: row.get(2)?,
                        created_at_ms: row.get(3)?,
                        expires_at_ms: row.get(4)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        let token_hash = token_hash.to_string();
        self.write(move |conn| {
            let removed = conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([token_hash])?;
            Ok(removed > 0)
        })
        .await
    }
}
