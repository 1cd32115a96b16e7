//! Users listing and login sessions in SQLite: one row per session, deleted
//! at logout; expired rows are refused on read and purged at the next login.

use rusqlite::{params, OptionalExtension};
use synchealth_schema::ProjectName;

use super::SqliteStore;
use crate::{Error, Result, Session, User};

impl SqliteStore {
    /// [`crate::Store::users`] for SQLite.
    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    pub(super) async fn users_impl(&self) -> Result<Vec<User>> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT username, password_hash, admin, projects FROM users ORDER BY username")?;
            let mut rows = stmt.query([])?;
            let mut users = Vec::new();
            while let Some(row) = rows.next()? {
                let username: String = row.get(0)?;
                let projects: String = row.get(3)?;
                let projects: Vec<ProjectName> = serde_json::from_str(&projects)
                    .map_err(|e| Error::Corrupt(format!("projects of user {username}: {e}")))?;
                users.push(User { username, password_hash: row.get(1)?, admin: row.get(2)?, projects });
            }
            Ok(users)
        })
        .await
    }

    /// [`crate::Store::create_session`] for SQLite.
    #[tracing::instrument(skip_all, fields(store = "sqlite", username = %session.username))]
    pub(super) async fn create_session_impl(&self, session: &Session) -> Result<()> {
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

    /// [`crate::Store::find_session`] for SQLite.
    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    pub(super) async fn find_session_impl(&self, token_hash: &str, now_ms: i64) -> Result<Option<Session>> {
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

    /// [`crate::Store::delete_session`] for SQLite.
    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    pub(super) async fn delete_session_impl(&self, token_hash: &str) -> Result<bool> {
        let token_hash = token_hash.to_string();
        self.write(move |conn| {
            let removed = conn.prepare_cached("DELETE FROM sessions WHERE token_hash = ?1")?.execute([token_hash])?;
            Ok(removed > 0)
        })
        .await
    }
}
