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
//!
//! Layout, one file per job and named as in `clickhouse/`: this file holds
//! the store, its connections and the conversions every file uses;
//! `migrate.rs` the [`crate::Database`] impl and migrations; `events.rs` the
//! [`crate::Events`] impl (insert, the rollups written in its transaction,
//! their backfill, retention), with `device_state.rs` writing `device_hour`;
//! `aggregate.rs` the [`crate::Aggregates`] impl (aggregates, device lists,
//! device pages), with `device_cache.rs` its copy of past hours and
//! `lists.rs` the device lists;
//! `accounts.rs`, `sessions.rs`, `alerting.rs` and `telemetry_loss.rs` their
//! traits; `sql.rs` the helpers shared by several files; `checkpoint.rs` the
//! WAL checkpoints. Files use this one and `sql.rs`, never each other back.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use synchealth_schema::{unix_ms, ProjectName};
use time::OffsetDateTime;

use crate::{Error, Result};

mod accounts;
mod aggregate;
mod alerting;
mod checkpoint;
mod device_cache;
mod device_state;
mod events;
mod lists;
mod migrate;
mod segment_cache;
mod sessions;
mod signals;
mod sql;
mod telemetry_loss;

/// How long a connection waits for a lock held by another process (a second
/// `synchealth` on the same file, the `sqlite3` shell, a backup) before
/// giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Reader connections kept open between calls; more are opened on demand
/// when more reads run at once, and closed afterwards.
const IDLE_READERS: usize = 4;

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
    segment_hours: segment_cache::SegmentCache,
    /// The device lists' runs of whole hours and minutes (`lists.rs`).
    device_runs: crate::device_runs::RunCache,
    /// Sub-hour series' per-device figures per bucket (`series.rs`).
    buckets: crate::bucket_cache::BucketCache,
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
                segment_hours: segment_cache::SegmentCache::default(),
                device_runs: crate::device_runs::RunCache::default(),
                buckets: crate::bucket_cache::BucketCache::default(),
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
