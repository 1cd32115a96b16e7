//! The embedded SQLite store: the single-binary default, for a deployment
//! that does not want to run ClickHouse.
//!
//! Durability first: the database runs in WAL mode with `synchronous=FULL`,
//! so an insert that has returned survives `kill -9` and power loss (WAL with
//! `NORMAL` may lose the last transactions on power loss, and the collector
//! acknowledges a batch only after [`Store::insert`] returns).
//!
//! Concurrency: SQLite has one writer at a time whatever we do, so every
//! write goes through a single connection behind a mutex (no `SQLITE_BUSY`
//! dance between our own writers), while reads use their own connections
//! from a small pool; under WAL a reader sees a consistent snapshot and never
//! waits for the writer, so a slow dashboard query does not hold up ingest.
//! rusqlite is synchronous: every call runs on tokio's blocking pool, never on
//! the async runtime's worker threads.
//!
//! The dashboard's aggregates read per-minute, per-hour and per-device-hour
//! rollups that every insert keeps in its own transaction (`events.rs`),
//! rather than every event of the window (`aggregate.rs`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior};
use synchealth_schema::{migrations, unix_ms, ErrorKind, Network, ProjectName, StoredEvent, SyncEvent, Trigger};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::{Aggregate, GroupKey, Grouping, Query};
use crate::{Error, IngestKey, Result, User};

mod aggregate;
mod alerting;
mod checkpoint;
mod device_cache;
mod device_state;
mod devices;
mod events;
mod sessions;
mod sql;
mod telemetry_loss;

/// How long a connection waits for a lock held by another process (a second
/// `synchealth` on the same file, the `sqlite3` shell, a backup) before
/// giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections kept open between calls; more are opened on demand
/// when more reads run at once, and closed afterwards.
const IDLE_READERS: usize = 4;

/// Every column of `events`, in the order of `events.rs`'s `INSERT_EVENT` placeholders
/// and of [`event_from_row`]'s indexes.
const EVENT_COLUMNS: &str = "project, event_id, device_id, event_time_ms, occurred_at_ms, \
    last_success_at_ms, sent_at_ms, received_at_ms, clock_skew_ms, success, duration_ms, \
    duration_bucket, conflicts, queue_depth, queue_bucket, staleness_ms, staleness_bucket, \
    app_version, os, os_version, network, device_model, sync_type, trigger, error_kind, \
    error_message, retries, records_up, records_down, bytes_up, bytes_down, sample_rate, weight";

/// The SQLite implementation of [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    device_hours: device_cache::DeviceCache,
    /// Declared last: dropped after the writer, so its final checkpoint
    /// sees every commit.
    _checkpointer: checkpoint::Checkpointer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.inner.path).finish_non_exhaustive()
    }
}

/// A poisoned lock only means another thread panicked while holding the
/// connection; an open transaction was rolled back when its guard dropped
/// during the unwind, so the connection is still sound to use.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let open_error = |source| Error::Open { path: path.to_path_buf(), source };
        let writer = Connection::open(path).map_err(open_error)?;
        configure_writer(&writer).map_err(open_error)?;
        // One reader up front, so that a file we cannot read is reported at
        // start-up rather than by the first dashboard request.
        let reader = open_reader(path).map_err(open_error)?;
        let checkpointer = checkpoint::Checkpointer::start(path, BUSY_TIMEOUT).map_err(open_error)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                readers: Mutex::new(vec![reader]),
                device_hours: device_cache::DeviceCache::default(),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// Runs `f` with the writer connection on the blocking pool.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&mut lock(&inner.writer)))
            .await
            .map_err(|e| Error::Task(e.to_string()))?
    }

    /// Runs `f` with a reader connection on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let pooled = lock(&inner.readers).pop();
            let conn = match pooled {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = f(&conn);
            let mut idle = lock(&inner.readers);
            if idle.len() < IDLE_READERS {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
    }
}

/// The writer connection's page cache, as SQLite takes it (negative: KiB).
const WRITER_CACHE_KIB: i64 = -64 * 1024;

fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that switching to WAL waits for another process's lock
    // instead of failing at once.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers with the mode in force; anything but WAL (a
    // filesystem without shared memory, say) would let readers block ingest.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!("the database refused WAL mode and stays in {mode} mode")),
        ));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints run on their own thread (checkpoint.rs); this is the backstop.
    conn.pragma_update(None, "wal_autocheckpoint", checkpoint::BACKSTOP_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT)?;
    // Every insert touches four B-trees (the table, its primary key on the
    // random event id, two indexes) and the rollups; with SQLite's 2 MB default cache they spill to
    // disk reads once the table outgrows it, and ingest slows with the size
    // of the store. The writer's cache only (readers keep the default).
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    // The insert statement plus the control-plane ones; the default (16)
    // would be enough today, this leaves room.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    // Read-only at the SQLite level: a bug in a read path cannot write.
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

fn now_ms() -> i64 {
    unix_ms(OffsetDateTime::now_utc())
}

/// SQLite integers are signed 64-bit. The contract accepts counters
/// (records, bytes) up to `u64::MAX`; storing their two's-complement bits
/// keeps such an absurd value round-tripping instead of failing, and so
/// poisoning, the whole batch it came in.
fn u64_bits(value: u64) -> i64 {
    value as i64
}

fn bits_u64(value: i64) -> u64 {
    value as u64
}

fn opt_str(value: Option<&str>) -> &str {
    value.unwrap_or("")
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

fn time_of_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::Corrupt(format!("time {ms} ms: {e}")))
}

fn project_of(name: &str) -> Result<ProjectName> {
    ProjectName::parse(name).map_err(|e| Error::Corrupt(e.to_string()))
}

/// A device's latest events, newest first: `device_hour` names the hours the
/// device has events in, and each is read through `events_by_time` until
/// `limit` are found (there is no per-device index on `events`: migration
/// 0008). Hours are disjoint, so newest-first per hour is newest-first overall.
fn device_events(conn: &Connection, project: &str, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let hours: Vec<i64> = conn
        .prepare_cached("SELECT hour FROM device_hour WHERE project = ?1 AND device_id = ?2 ORDER BY hour DESC")?
        .query_map(params![project, device_id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE project = ?1 AND event_time_ms >= ?2 AND event_time_ms < ?3 AND device_id = ?4
         ORDER BY event_time_ms DESC, event_id DESC LIMIT ?5"
    ))?;
    let mut events = Vec::new();
    for hour in hours {
        if events.len() >= limit {
            break;
        }
        let from_ms = hour * 1000;
        let left = i64::try_from(limit - events.len()).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![project, from_ms, from_ms + crate::pieces::HOUR_MS, device_id, left])?;
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
    }
    Ok(events)
}

fn event_from_row(row: &Row<'_>) -> Result<StoredEvent> {
    let project: String = row.get(0)?;
    let event_id: String = row.get(1)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| Error::Corrupt(format!("event_id {event_id:?}: {e}")))?;
    let network: String = row.get(20)?;
    let network = Network::parse(&network).ok_or_else(|| Error::Corrupt(format!("network {network:?}")))?;
    let trigger: String = row.get(23)?;
    let trigger = match trigger.as_str() {
        "" => None,
        text => Some(Trigger::parse(text).ok_or_else(|| Error::Corrupt(format!("trigger {text:?}")))?),
    };
    let error_kind: String = row.get(24)?;
    let error_kind = match error_kind.as_str() {
        "" => None,
        text => Some(ErrorKind::parse(text).ok_or_else(|| Error::Corrupt(format!("error_kind {text:?}")))?),
    };
    let last_success_at = row.get::<_, Option<i64>>(5)?.map(time_of_ms).transpose()?;
    let event = SyncEvent {
        event_id,
        device_id: row.get(2)?,
        occurred_at: time_of_ms(row.get(4)?)?,
        success: row.get(9)?,
        duration_ms: row.get(10)?,
        conflicts: row.get(12)?,
        queue_depth: row.get(13)?,
        last_success_at,
        app_version: row.get(17)?,
        os: row.get(18)?,
        os_version: non_empty(row.get(19)?),
        network,
        device_model: non_empty(row.get(21)?),
        sync_type: non_empty(row.get(22)?),
        trigger,
        error_kind,
        error_message: non_empty(row.get(25)?),
        retries: row.get(26)?,
        records_up: bits_u64(row.get(27)?),
        records_down: bits_u64(row.get(28)?),
        bytes_up: bits_u64(row.get(29)?),
        bytes_down: bits_u64(row.get(30)?),
        sample_rate: row.get(31)?,
    };
    Ok(StoredEvent {
        project: project_of(&project)?,
        event,
        sent_at_ms: row.get(6)?,
        received_at_ms: row.get(7)?,
        clock_skew_ms: row.get(8)?,
        event_time_ms: row.get(3)?,
        staleness_ms: row.get(15)?,
        weight: row.get(32)?,
        duration_bucket: row.get(11)?,
        queue_bucket: row.get(14)?,
        staleness_bucket: row.get(16)?,
    })
}

fn ingest_key_from_row(row: &Row<'_>) -> Result<IngestKey> {
    let project: String = row.get(1)?;
    Ok(IngestKey {
        key_hash: row.get(0)?,
        project: project_of(&project)?,
        label: row.get(2)?,
        created_at_ms: row.get(3)?,
        revoked: row.get(4)?,
    })
}

fn migrate_all(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )?;
    for migration in migrations::SQLITE {
        let failed = |e: rusqlite::Error| Error::Migration {
            version: migration.version,
            name: migration.name,
            reason: e.to_string(),
        };
        // IMMEDIATE makes check-apply-record atomic against another process
        // migrating the same file at the same time: the second one waits on
        // the lock, then finds the version recorded and skips it.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
        let applied = tx
            .query_row("SELECT 1 FROM schema_migrations WHERE version = ?1", [migration.version], |_| Ok(()))
            .optional()
            .map_err(failed)?
            .is_some();
        if applied {
            continue;
        }
        for statement in migration.statements() {
            tx.execute_batch(&statement).map_err(failed)?;
        }
        if migration.version == events::MIGRATION {
            events::backfill(&tx).map_err(|e| Error::Migration {
                version: migration.version,
                name: migration.name,
                reason: e.to_string(),
            })?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}

#[async_trait]
impl crate::Database for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn migrate(&self) -> Result<()> {
        self.write(migrate_all).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn ping(&self) -> Result<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }
}

#[async_trait]
impl crate::Aggregates for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite", project = %query.project, ?grouping))]
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        let query = query.clone();
        let inner = Arc::clone(&self.inner);
        self.read(move |conn| aggregate::aggregate(conn, &inner.device_hours, &query, grouping)).await
    }

    async fn devices(&self, query: &Query, list: crate::DeviceList, limit: u32) -> Result<Vec<crate::DeviceSummary>> {
        self.devices_impl(query, list, limit).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %project, limit))]
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
        let project = project.as_str().to_string();
        let device_id = device_id.to_string();
        self.read(move |conn| device_events(conn, &project, &device_id, limit)).await
    }
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
                "INSERT INTO ingest_keys (key_hash, project, label, created_at_ms, revoked)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (key_hash) DO UPDATE SET project = excluded.project, label = excluded.label,
                     created_at_ms = excluded.created_at_ms, revoked = excluded.revoked",
            )?
            .execute(params![
                key.key_hash,
                key.project.as_str(),
                key.label,
                key.created_at_ms,
                key.revoked
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
                "SELECT key_hash, project, label, created_at_ms, revoked FROM ingest_keys WHERE key_hash = ?1",
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
                "SELECT key_hash, project, label, created_at_ms, revoked FROM ingest_keys
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
}
