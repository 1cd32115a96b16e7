//! The ingest pipeline: between the handlers and the store, it turns many
//! small requests into few large inserts and makes "acknowledged" mean
//! "durable" even when the store is down or slow.
//!
//! ```text
//! acknowledge = stored (embedded store):
//! handlers ──(events, reply)──▶ bounded queue ──▶ batcher ──▶ store insert (with a timeout) ──▶ reply
//!                                                   │  failed, timed out, or store unhealthy
//!                                                   ▼
//!                                   spool on local disk (fsync'd) ──▶ reply; replayer ──▶ store
//!
//! acknowledge = spooled (ClickHouse):
//! handlers ──▶ bounded queue ──▶ batcher ──▶ spool (fsync'd) ──▶ reply
//!                                              │ in memory (≤ max_pending_rows)      │ on disk
//!                                              ▼                                     ▼
//!                                  inserter: blocks of max_batch_rows    replayer (store failed,
//!                                  ──▶ store, then segment deleted       memory full, restart)
//! ```
//!
//! - **Batching.** A handler sends its events and a reply channel over a
//!   bounded queue ([`PipelineConfig::queue_capacity`] requests: a full queue
//!   makes handlers wait, memory stays bounded). The batcher concatenates
//!   requests until [`PipelineConfig::max_batch_rows`] or
//!   [`PipelineConfig::max_batch_age`], and keeps growing the batch while the
//!   previous inserts are still running; with the store idle, a batch goes as
//!   soon as requests pause ([`PipelineConfig::batch_linger`]). So a lone
//!   request waits a few milliseconds, while under load batches grow large,
//!   which is what ClickHouse needs (it takes large inserts several times
//!   faster than small ones, and small ones cost it merges) and what SQLite
//!   needs (one transaction, one fsync, per batch). The insert's outcome is
//!   split back per request: each gets its own `inserted` count and its
//!   duplicate indexes re-based to its own events.
//! - **Spool.** If the insert fails or times out, the batch goes to the spool
//!   ([`spool`]: checksummed records, file and directory fsync'd) and is
//!   acknowledged from there. While the store is unhealthy, batches skip it
//!   and go to the spool directly, so clients are answered within the spool's
//!   fsync rather than the insert timeout.
//! - **Bound.** The spool has a size bound; a request that would exceed it is
//!   refused whole with [`SubmitError::SpoolFull`] (a 503 with
//!   `Retry-After`): the collector never acknowledges what it cannot keep.
//! - **Replay.** The replayer inserts the oldest spool segment into the store,
//!   in order and in batches, retrying with exponential backoff, and deletes a
//!   segment only once the store confirmed every event in it. Replays are
//!   idempotent (both stores deduplicate by `event_id`), so a replay after a
//!   crash, or of a batch whose timed-out insert did land, stores nothing
//!   twice. Segments left by a previous process (even `kill -9`ed) are
//!   replayed at start.
//! - **Spool-first** ([`Acknowledge::Spooled`]). The spool doubles as a
//!   write-ahead log: a batch of requests is appended with one fsync (group
//!   commit) and answered at once, and the inserter ([`inserter`]) stores the
//!   events from memory in blocks of up to `max_batch_rows`, deleting each
//!   segment once all of it is stored. Acknowledgement latency is then one
//!   fsync whatever the store does, and ClickHouse gets the large inserts it
//!   is fastest with. Memory is a cache of the spool: when an insert fails,
//!   or more than `max_pending_rows` events wait, the replayer takes the
//!   segments over from disk.
//! - **Shutdown.** [`Pipeline::shutdown`] stops taking requests, flushes what
//!   is queued (to the store or the spool), answers every waiting handler,
//!   and inserts what the inserter holds.

mod batcher;
mod inserter;
mod replay;
mod spool;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use synchealth_schema::StoredEvent;
use synchealth_store::{InsertOutcome, SharedStore};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;

use self::spool::Spool;

/// How the pipeline batches and spools.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// A batch is inserted once it has this many events...
    pub max_batch_rows: usize,
    /// ...or once its first request has waited this long...
    pub max_batch_age: Duration,
    /// ...or, while no insert is running, once no request has arrived for
    /// this long (the clients are waiting for their answers). With
    /// [`Acknowledge::Spooled`] a batch is a spool append and never lingers.
    pub batch_linger: Duration,
    /// Requests waiting for the batcher; beyond, handlers wait.
    pub queue_capacity: usize,
    /// Batches being inserted (or spooled) at once; the next batch keeps
    /// growing meanwhile.
    pub max_inflight_batches: usize,
    /// Directory of the spool.
    pub spool_dir: PathBuf,
    /// Bound of the spool in bytes on disk; 0 disables the spool (a failed
    /// insert is then a 503).
    pub spool_max_bytes: u64,
    /// Fraction of `spool_max_bytes` above which the collector reports not
    /// ready, so load moves elsewhere before the spool is full.
    pub spool_high_water: f64,
    /// An insert (batch or replay) taking longer is abandoned and the batch
    /// spooled: a slow store must not hold acknowledgements.
    pub insert_timeout: Duration,
    /// First pause between replay attempts while the store fails...
    pub replay_backoff_min: Duration,
    /// ...doubling up to this.
    pub replay_backoff_max: Duration,
    /// When a request is answered: once its events are stored, or once they
    /// are in the spool (see [`Acknowledge`]).
    pub acknowledge: Acknowledge,
    /// With [`Acknowledge::Spooled`]: the longest an acknowledged event waits
    /// in memory before its insert (inserts also go at `max_batch_rows`).
    pub insert_max_delay: Duration,
    /// With [`Acknowledge::Spooled`]: acknowledged events held in memory for
    /// the inserter at most; beyond, new appends are left to the replayer,
    /// which reads them back from the spool. Bounds memory under a slow store.
    pub max_pending_rows: usize,
}

/// When the collector answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acknowledge {
    /// Once the store has the events (or, if it fails, the spool). The
    /// answer says which events were already stored; the events are
    /// queryable when the client hears back. Right for the embedded store,
    /// whose inserts are one local transaction anyway.
    Stored,
    /// Once the events are in the spool (written and fsync'd): the spool is
    /// the write-ahead log, and inserts of up to `max_batch_rows` go to the
    /// store behind the acknowledgements, from memory. The answer is as
    /// durable, comes in milliseconds whatever the store's insert latency,
    /// and lets inserts grow as large as ClickHouse likes them; `duplicates`
    /// then counts only repeats within the request (the store still stores
    /// every event once).
    Spooled,
}

impl PipelineConfig {
    /// Defaults, spooling into `spool_dir`.
    pub fn new(spool_dir: PathBuf) -> Self {
        PipelineConfig {
            max_batch_rows: 100_000,
            max_batch_age: Duration::from_millis(100),
            batch_linger: Duration::from_millis(5),
            queue_capacity: 256,
            max_inflight_batches: 2,
            spool_dir,
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_high_water: 0.8,
            insert_timeout: Duration::from_secs(10),
            replay_backoff_min: Duration::from_millis(100),
            replay_backoff_max: Duration::from_secs(5),
            acknowledge: Acknowledge::Stored,
            insert_max_delay: Duration::from_millis(500),
            max_pending_rows: 60_000,
        }
    }

    /// Why this configuration cannot work, if it cannot.
    pub fn validate(&self) -> Result<(), String> {
        let problems = [
            (self.max_batch_rows == 0, "max_batch_rows must be at least 1"),
            (self.queue_capacity == 0, "queue_capacity must be at least 1"),
            (self.max_inflight_batches == 0, "max_inflight_batches must be at least 1"),
            (!(self.spool_high_water > 0.0 && self.spool_high_water <= 1.0), "spool_high_water must be in (0, 1]"),
            (self.insert_timeout.is_zero(), "insert_timeout must be positive"),
            (
                self.acknowledge == Acknowledge::Spooled && self.spool_max_bytes == 0,
                "acknowledging spooled events needs the spool (spool_max_bytes > 0)",
            ),
            (self.insert_max_delay.is_zero(), "insert_max_delay must be positive"),
            (self.max_pending_rows == 0, "max_pending_rows must be at least 1"),
            (self.replay_backoff_min.is_zero(), "replay_backoff_min must be positive"),
            (
                self.replay_backoff_min > self.replay_backoff_max,
                "replay_backoff_min must not exceed replay_backoff_max",
            ),
        ];
        match problems.iter().find(|(bad, _)| *bad) {
            Some((_, why)) => Err((*why).to_string()),
            None => Ok(()),
        }
    }
}

/// Why submitted events were not acknowledged. In every case nothing of the
/// request was stored or spooled by this call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The store cannot take the events and the spool is full: retry later.
    #[error("the spool is full")]
    SpoolFull {
        /// When a retry has a chance (the replayer's next attempt).
        retry_after: Duration,
    },
    /// The pipeline is stopping (or has stopped).
    #[error("the collector is shutting down")]
    ShuttingDown,
    /// The store failed and the spool could not take the events either.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// What `/readyz` and operators want to know.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStatus {
    /// Whether the last store operation succeeded.
    pub store_healthy: bool,
    /// Bytes spooled on disk.
    pub spool_bytes: u64,
    /// The spool's bound.
    pub spool_max_bytes: u64,
    /// Above this many bytes the collector reports not ready.
    pub spool_high_water_bytes: u64,
    /// Spool segment files waiting for replay.
    pub spool_segments: usize,
    /// Age of the oldest spool segment.
    pub spool_oldest_age: Option<Duration>,
    /// Requests waiting in the queue.
    pub queued_requests: usize,
}

impl PipelineStatus {
    /// Whether the spool is below its high-water mark (always, without a spool).
    pub fn spool_below_high_water(&self) -> bool {
        self.spool_max_bytes == 0 || self.spool_bytes < self.spool_high_water_bytes
    }
}

/// Semaphore permits for `max_pending_rows` (the semaphore's own ceiling).
fn config_pending_permits(config: &PipelineConfig) -> usize {
    config.max_pending_rows.min(tokio::sync::Semaphore::MAX_PERMITS)
}

/// A handler's events on their way to the batcher.
#[derive(Debug)]
struct Request {
    events: Vec<StoredEvent>,
    reply: oneshot::Sender<Result<InsertOutcome, SubmitError>>,
}

/// What the batcher, the replayer and the handles share.
#[derive(Debug)]
struct Shared {
    store: SharedStore,
    config: PipelineConfig,
    spool: Option<Arc<Spool>>,
    /// Whether the last store operation succeeded. While false, batches go to
    /// the spool without trying the store, and the replayer probes it.
    healthy: AtomicBool,
    /// The replayer's current backoff (ms): when a retry can next succeed.
    backoff_ms: AtomicU64,
    /// Wakes the replayer: something was spooled or the store failed.
    wake_replayer: Notify,
    /// Rows acknowledged and held in memory for the inserter
    /// ([`Acknowledge::Spooled`]), `max_pending_rows` permits.
    pending_rows: Arc<tokio::sync::Semaphore>,
    /// Inserts given up on after `insert_timeout` that may still land (see
    /// [`Shared::insert`]); replays wait for them.
    abandoned: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// The longest a replay waits for abandoned inserts to finish before it
/// goes ahead anyway (a connection that never answers nor closes).
const ABANDONED_INSERT_WAIT: Duration = Duration::from_secs(300);

/// Why an insert did not confirm its events.
#[derive(Debug)]
enum InsertFailure {
    /// The store refused it: nothing of it was stored.
    Failed(String),
    /// No answer within `insert_timeout`: it may still land.
    TimedOut,
}

impl std::fmt::Display for InsertFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InsertFailure::Failed(why) => f.write_str(why),
            InsertFailure::TimedOut => f.write_str("timed out"),
        }
    }
}

impl Shared {
    /// Inserts `events`, giving up after `insert_timeout`.
    ///
    /// A given-up insert is not cancelled: its request may already be with
    /// the store (a hung ClickHouse resumes and commits it). Dropping it
    /// would let a replay of the same events check for duplicates before
    /// that insert lands and write them a second time, which `FINAL` reads
    /// would hide but the dashboard's rollups would count. So it keeps
    /// running in the background, and [`Shared::settle_abandoned`] makes
    /// replays wait for it to finish either way.
    ///
    /// `replayed`: the events come back from the spool, where an insert that
    /// failed put them; it may have stored them in part, which the store
    /// repairs first ([`Store::insert_replayed`]).
    async fn insert(&self, events: Arc<Vec<StoredEvent>>, replayed: bool) -> Result<InsertOutcome, InsertFailure> {
        let store = Arc::clone(&self.store);
        let (done, outcome) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = if replayed { store.insert_replayed(&events).await } else { store.insert(&events).await };
            let _ = done.send(result);
        });
        match tokio::time::timeout(self.config.insert_timeout, outcome).await {
            Ok(Ok(Ok(outcome))) => Ok(outcome),
            Ok(Ok(Err(e))) => Err(InsertFailure::Failed(e.to_string())),
            Ok(Err(_)) => Err(InsertFailure::Failed("the insert task ended without an answer".into())),
            Err(_) => {
                let mut abandoned = self.abandoned.lock().unwrap_or_else(|p| p.into_inner());
                abandoned.retain(|t| !t.is_finished());
                abandoned.push(task);
                Err(InsertFailure::TimedOut)
            }
        }
    }

    /// Waits until no abandoned insert can still land (bounded by
    /// [`ABANDONED_INSERT_WAIT`]), so a replay's duplicate check sees them.
    async fn settle_abandoned(&self) {
        let pending: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.abandoned.lock().unwrap_or_else(|p| p.into_inner()));
        for task in pending {
            if tokio::time::timeout(ABANDONED_INSERT_WAIT, task).await.is_err() {
                tracing::warn!(
                    wait_s = ABANDONED_INSERT_WAIT.as_secs(),
                    "An abandoned insert is still unanswered; replaying anyway (its rows may be written twice, which FINAL reads collapse)."
                );
            }
        }
    }

    fn store_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_store_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::Relaxed);
        if was != healthy {
            if healthy {
                tracing::info!("Store is taking inserts again.");
            } else {
                tracing::warn!("Store is failing; spooling until it recovers.");
                self.wake_replayer.notify_one();
            }
        }
    }

    fn retry_after(&self) -> Duration {
        let ms = self.backoff_ms.load(Ordering::Relaxed);
        // Whole seconds for the header, at least one.
        Duration::from_secs(ms.div_ceil(1000).clamp(1, 60))
    }

    fn status(&self, queued_requests: usize) -> PipelineStatus {
        let usage = self.spool.as_ref().map(|s| s.usage()).unwrap_or_default();
        let max = self.spool.as_ref().map_or(0, |s| s.max_bytes());
        PipelineStatus {
            store_healthy: self.store_healthy(),
            spool_bytes: usage.bytes,
            spool_max_bytes: max,
            spool_high_water_bytes: (max as f64 * self.config.spool_high_water) as u64,
            spool_segments: usage.segments,
            spool_oldest_age: usage.oldest_created_ms.map(|created| {
                Duration::from_millis(u64::try_from(spool::now_ms().saturating_sub(created)).unwrap_or(0))
            }),
            queued_requests,
        }
    }
}

/// The running pipeline: owns its tasks. Hand out [`Pipeline::handle`]s,
/// and call [`Pipeline::shutdown`] once nothing submits any more.
#[derive(Debug)]
pub struct Pipeline {
    handle: PipelineHandle,
    stop: watch::Sender<bool>,
    batcher: JoinHandle<()>,
    inserter: JoinHandle<()>,
    replayer: JoinHandle<()>,
}

/// Submits events and reports status; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    requests: mpsc::Sender<Request>,
    shared: Arc<Shared>,
}

impl Pipeline {
    /// Opens the spool (taking its lock, finding what a previous process left
    /// to replay) and starts the batcher and the replayer.
    #[tracing::instrument(skip_all, fields(spool_dir = %config.spool_dir.display()))]
    pub async fn start(store: SharedStore, config: PipelineConfig) -> io::Result<Pipeline> {
        config.validate().map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
        let spool = if config.spool_max_bytes > 0 {
            let (dir, max) = (config.spool_dir.clone(), config.spool_max_bytes);
            let spool =
                tokio::task::spawn_blocking(move || Spool::open(&dir, max)).await.map_err(io::Error::other)??;
            Some(Arc::new(spool))
        } else {
            tracing::warn!("The spool is disabled: a failed store insert is answered with a 503.");
            None
        };
        let (requests, queue) = mpsc::channel(config.queue_capacity);
        let shared = Arc::new(Shared {
            store,
            backoff_ms: AtomicU64::new(u64::try_from(config.replay_backoff_min.as_millis()).unwrap_or(u64::MAX)),
            spool,
            healthy: AtomicBool::new(true),
            wake_replayer: Notify::new(),
            pending_rows: Arc::new(tokio::sync::Semaphore::new(config_pending_permits(&config))),
            abandoned: std::sync::Mutex::new(Vec::new()),
            config,
        });
        let (stop, stopped) = watch::channel(false);
        // The inserter ends once the batcher (and with it every sender) is gone.
        let (to_inserter, inserter_queue) = mpsc::unbounded_channel();
        let inserter = tokio::spawn(inserter::run(Arc::clone(&shared), inserter_queue));
        let batcher = tokio::spawn(batcher::run(Arc::clone(&shared), queue, to_inserter, stopped.clone()));
        let replayer = tokio::spawn(replay::run(Arc::clone(&shared), stopped));
        Ok(Pipeline { handle: PipelineHandle { requests, shared }, stop, batcher, inserter, replayer })
    }

    /// A handle for handlers and `/readyz`.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Stops taking requests, flushes everything queued (into the store, or
    /// the spool), answers every waiting handler, then stops the replayer
    /// (what it has not replayed stays spooled for the next start).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.batcher.await {
            tracing::error!(error = %e, "The batcher failed while draining.");
        }
        // The inserter then inserts what it holds; the replayer stops at its
        // next step. An insert in progress may take up to the insert timeout,
        // and abandoning it is safe (nothing is deleted from the spool before
        // the store confirms it).
        let grace = self.handle.shared.config.insert_timeout + Duration::from_secs(1);
        let mut inserter = self.inserter;
        if tokio::time::timeout(grace, &mut inserter).await.is_err() {
            inserter.abort();
        }
        let mut replayer = self.replayer;
        if tokio::time::timeout(grace, &mut replayer).await.is_err() {
            replayer.abort();
        }
        let status = self.handle.status();
        tracing::info!(spool_bytes = status.spool_bytes, "Ingest pipeline drained.");
    }
}

#[cfg(test)]
impl Pipeline {
    /// Stops its tasks at once, as if the process died: no drain.
    async fn abort(self) {
        self.batcher.abort();
        self.inserter.abort();
        self.replayer.abort();
        let _ = self.batcher.await;
        let _ = self.inserter.await;
        let _ = self.replayer.await;
    }
}

impl PipelineHandle {
    /// Hands events to the batcher and waits until they are durable: in the
    /// store, or in the spool. With the spool, `inserted` counts every
    /// event but those repeated within this request: whether one was stored
    /// before is only known when it is replayed.
    pub async fn submit(&self, events: Vec<StoredEvent>) -> Result<InsertOutcome, SubmitError> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let (reply, answer) = oneshot::channel();
        self.requests.send(Request { events, reply }).await.map_err(|_| SubmitError::ShuttingDown)?;
        // The batcher answers every request it took, even while draining; a
        // dropped reply means it is gone.
        answer.await.map_err(|_| SubmitError::ShuttingDown)?
    }

    /// Store health and spool usage.
    pub fn status(&self) -> PipelineStatus {
        let queued = self.requests.max_capacity() - self.requests.capacity();
        self.shared.status(queued)
    }
}
