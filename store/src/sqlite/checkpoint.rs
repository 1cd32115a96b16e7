//! Checkpoints the write-ahead log on a thread of its own, so that ingest
//! does not pay for them.
//!
//! SQLite's default is for the connection that commits to checkpoint once
//! the WAL passes 1,000 pages: the writer then copies pages into the
//! database file and fsyncs it before its caller hears back, and every
//! acknowledgement waits on it (measured in `synchealth bench ingest`: about
//! a third of the embedded store's ingest time). Here a background
//! connection runs a `PASSIVE` checkpoint every [`INTERVAL`]: it copies what
//! is committed while the writer goes on appending, and never blocks a
//! writer or a reader. The writer keeps a high auto-checkpoint as a backstop
//! ([`BACKSTOP_PAGES`]) so that the WAL stays bounded even if this thread
//! falls behind; by then most frames are already copied, so that checkpoint
//! is short.
//!
//! Durability is unchanged: a commit is durable once its WAL frames are
//! fsync'd (`synchronous=FULL`), before any checkpoint.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the background connection checkpoints.
pub(super) const INTERVAL: Duration = Duration::from_millis(250);

/// The writer's auto-checkpoint threshold, in pages (64 MiB of 4 KiB pages).
pub(super) const BACKSTOP_PAGES: i64 = 16_384;

/// The size the WAL file is truncated back to after it was reset, in bytes,
/// so that a burst does not leave a large file behind.
pub(super) const WAL_SIZE_LIMIT: i64 = 64 << 20;

/// The checkpoint thread; dropping it stops the thread and waits for it.
pub(super) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` (already in WAL mode).
    pub(super) fn start(path: &Path, busy_timeout: Duration) -> rusqlite::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &signal))
            .map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(format!("starting the checkpoint thread: {e}")),
                )
            })?;
        Ok(Checkpointer { stop, thread: Some(thread) })
    }
}

fn run(conn: &Connection, signal: &(Mutex<bool>, Condvar)) {
    let (stopped, wake) = signal;
    let mut guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        guard = wake.wait_timeout(guard, INTERVAL).unwrap_or_else(PoisonError::into_inner).0;
        if *guard {
            return;
        }
        // Not while holding the flag: a drop must not wait out a checkpoint
        // to set it.
        drop(guard);
        // (busy, frames in the WAL, frames copied); busy is normal under load.
        let result = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)));
        match result {
            Ok((frames, copied)) => tracing::trace!(frames, copied, "Checkpointed the WAL."),
            Err(error) => tracing::warn!(%error, "Background WAL checkpoint failed; the writer's backstop covers it."),
        }
        guard = stopped.lock().unwrap_or_else(PoisonError::into_inner);
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_copies_committed_frames_that_the_writer_left_in_the_wal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let writer = Connection::open(&path).unwrap();
        writer.pragma_update(None, "journal_mode", "WAL").unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        writer.execute_batch("CREATE TABLE t (x BLOB)").unwrap();
        for _ in 0..200 {
            writer.execute("INSERT INTO t VALUES (randomblob(3000))", []).unwrap();
        }
        // Until a checkpoint, the pages are in the WAL only and the database
        // file stays a few pages long.
        let db_bytes = || std::fs::metadata(&path).unwrap().len();
        assert!(db_bytes() < 100_000, "nothing checkpointed yet: {} bytes", db_bytes());
        let checkpointer = Checkpointer::start(&path, Duration::from_secs(1)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while db_bytes() < 600_000 {
            assert!(std::time::Instant::now() < deadline, "not checkpointed: {} bytes", db_bytes());
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(checkpointer);
        assert_eq!(writer.query_row("SELECT count(*) FROM t", [], |row| row.get::<_, i64>(0)).unwrap(), 200);
    }
}
