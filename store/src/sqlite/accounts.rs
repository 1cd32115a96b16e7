//! Projects, ingest keys, dashboard users and projects' declared dimensions
//! on SQLite ([`crate::Accounts`]): plain tables with primary keys and
//! upserts. A key is stored as its hash, never the key.

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension, Row, TransactionBehavior};
use synchealth_schema::ProjectName;

use super::{now_ms, project_of, SqliteStore};
use crate::{Error, IngestKey, Result, User};

fn ingest_key_from_row(row: &Row<'_>) -> Result<IngestKey> {
    let project: String = row.get(1)?;
    let origins: String = row.get(5)?;
    let allowed_origins = serde_json::from_str(&origins)
        .map_err(|e| Error::Corrupt(format!("ingest key allowed_origins {origins:?}: {e}")))?;
    Ok(IngestKey {
        key_hash: row.get(0)?,
        project: project_of(&project)?,
        label: row.get(2)?,
        created_at_ms: row.get(3)?,
        revoked: row.get(4)?,
        allowed_origins,
    })
}

#[async_trait]
impl crate::Accounts for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite", %project))]
    async fn ensure_project(&self, project: &ProjectName) -> Result<()> {
        let project = project.as_str().to_string();
        self.write(move |conn| {
            conn.prepare_cached("INSERT OR IGNORE INTO projects (name, created_at_ms) VALUES (?1, ?2)")?
                .execute(params![project, now_ms()])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn projects(&self) -> Result<Vec<ProjectName>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT name FROM projects ORDER BY name")?;
            let names: Vec<String> = stmt.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
            names.iter().map(|name| project_of(name)).collect()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", project = %key.project))]
    async fn put_ingest_key(&self, key: &IngestKey) -> Result<()> {
        let key = key.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // The foreign key wants the project to exist; ClickHouse has no
            // such constraint, so to answer the same on both stores a key
            // for a new project creates it rather than failing.
            tx.prepare_cached("INSERT OR IGNORE INTO projects (name, created_at_ms) VALUES (?1, ?2)")?
                .execute(params![key.project.as_str(), now_ms()])?;
            tx.prepare_cached(
                "INSERT INTO ingest_keys (key_hash, project, label, created_at_ms, revoked, allowed_origins)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (key_hash) DO UPDATE SET project = excluded.project, label = excluded.label,
                     created_at_ms = excluded.created_at_ms, revoked = excluded.revoked,
                     allowed_origins = excluded.allowed_origins",
            )?
            .execute(params![
                key.key_hash,
                key.project.as_str(),
                key.label,
                key.created_at_ms,
                key.revoked,
                serde_json::Value::from(key.allowed_origins.clone()).to_string()
            ])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn find_ingest_key(&self, key_hash: &str) -> Result<Option<IngestKey>> {
        let key_hash = key_hash.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key_hash, project, label, created_at_ms, revoked, allowed_origins FROM ingest_keys WHERE key_hash = ?1",
            )?;
            let mut rows = stmt.query([key_hash])?;
            rows.next()?.map(ingest_key_from_row).transpose()
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %project))]
    async fn ingest_keys(&self, project: &ProjectName) -> Result<Vec<IngestKey>> {
        let project = project.as_str().to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key_hash, project, label, created_at_ms, revoked, allowed_origins FROM ingest_keys
                 WHERE project = ?1 ORDER BY created_at_ms, key_hash",
            )?;
            let mut rows = stmt.query([project])?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                keys.push(ingest_key_from_row(row)?);
            }
            Ok(keys)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", username = %user.username))]
    async fn put_user(&self, user: &User) -> Result<()> {
        let user = user.clone();
        let projects =
            serde_json::Value::from(user.projects.iter().map(ProjectName::as_str).collect::<Vec<_>>()).to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO users (username, password_hash, admin, projects) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash,
                     admin = excluded.admin, projects = excluded.projects",
            )?
            .execute(params![user.username, user.password_hash, user.admin, projects])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %username))]
    async fn find_user(&self, username: &str) -> Result<Option<User>> {
        let username = username.to_string();
        self.read(move |conn| {
            let row = conn
                .prepare_cached("SELECT username, password_hash, admin, projects FROM users WHERE username = ?1")?
                .query_row([username], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, bool>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                })
                .optional()?;
            let Some((username, password_hash, admin, projects)) = row else {
                return Ok(None);
            };
            let projects: Vec<ProjectName> = serde_json::from_str(&projects)
                .map_err(|e| Error::Corrupt(format!("projects of user {username}: {e}")))?;
            Ok(Some(User { username, password_hash, admin, projects }))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %username))]
    async fn remove_user(&self, username: &str) -> Result<bool> {
        let username = username.to_string();
        self.write(move |conn| {
            let removed = conn.prepare_cached("DELETE FROM users WHERE username = ?1")?.execute([username])?;
            Ok(removed > 0)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn users(&self) -> Result<Vec<User>> {
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

    #[tracing::instrument(skip_all, fields(store = "sqlite", %project))]
    async fn set_project_dimensions(&self, project: &ProjectName, keys: &[String]) -> Result<()> {
        let keys = serde_json::Value::from(crate::dimensions::declared_keys(keys)?).to_string();
        let project = project.as_str().to_string();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO project_dimensions (project, dimension_keys) VALUES (?1, ?2)
                 ON CONFLICT (project) DO UPDATE SET dimension_keys = excluded.dimension_keys",
            )?
            .execute(params![project, keys])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %project))]
    async fn project_dimensions(&self, project: &ProjectName) -> Result<Vec<String>> {
        let project = project.as_str().to_string();
        self.read(move |conn| {
            let keys: Option<String> = conn
                .prepare_cached("SELECT dimension_keys FROM project_dimensions WHERE project = ?1")?
                .query_row([&project], |row| row.get(0))
                .optional()?;
            let Some(keys) = keys else { return Ok(Vec::new()) };
            let mut keys: Vec<String> = serde_json::from_str(&keys)
                .map_err(|e| Error::Corrupt(format!("dimensions of project {project}: {e}")))?;
            // Written sorted; sorted again so a hand-edited row reads the same.
            keys.sort();
            Ok(keys)
        })
        .await
    }
}
