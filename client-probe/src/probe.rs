//! The [`Probe`] handle the app holds: its public API, the worker thread it
//! starts and stops, and [`ProbeStats`]. What it shares with the worker is in
//! `shared.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use synchealth_schema::{Network, SyncEvent};

use crate::config::{ProbeBuilder, UploadPolicy};
use crate::record::{Attempt, Incoming};
use crate::shared::{lock, network_code, read, write, Counters, FlushReport, Shared, NO_TIME};
use crate::worker;

/// Most recorded attempts waiting for the worker: reached only if the worker
/// is stuck (a slow disk); beyond it attempts are dropped as `queue_full`.
pub(crate) const MAX_INBOX: usize = 10_000;
/// How long [`Probe::shutdown`] waits for the worker to finish writing.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// The probe: records sync attempts, buffers them on disk, uploads them.
///
/// Cheap to clone (clones share one worker), `Send + Sync`. Nothing it does
/// panics into the app or blocks the caller on I/O; internal errors are
/// logged (`tracing`) and swallowed. The worker stops when the last clone is
/// dropped (what it holds stays on disk) or at [`Probe::shutdown`].
#[derive(Clone)]
pub struct Probe {
    handle: Arc<Handle>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe").field("device_id", &self.handle.shared.device_id).finish_non_exhaustive()
    }
}

/// Owned by the clones of one probe; dropping the last one stops the worker.
struct Handle {
    shared: Arc<Shared>,
    done: Mutex<Option<mpsc::Receiver<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_stop();
    }
}

/// What a probe did since it started. With nothing in flight (after a
/// flush): `restored + recorded = sampled_out + thinned + dropped + uploaded + buffered`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeStats {
    /// Attempts recorded (timed or handed to [`Probe::record`]).
    pub recorded: u64,
    /// Successes not kept because of `sample_rate` (their weight is on the kept ones).
    pub sampled_out: u64,
    /// Events found in the buffer at start, left by a previous run.
    pub restored: u64,
    /// Events the collector acknowledged (stored now or before).
    pub uploaded: u64,
    /// Of those, events the collector already had (a retry after a lost answer).
    pub duplicates: u64,
    /// Successes thinned out of a full buffer (their weight is on the kept ones).
    pub thinned: u64,
    /// Events dropped, by reason (`buffer_full`, `expired`, `rejected`, `queue_full`, ...).
    pub dropped: BTreeMap<String, u64>,
    /// Events in the buffer now.
    pub buffered: u64,
    /// Uploads that failed and will be retried.
    pub upload_failures: u64,
    /// Inputs the probe bounded to fit the contract instead of sending an
    /// event the collector would reject, by reason (`entity_truncated`,
    /// `conflict_details_folded`, `conflicts_raised`, `dimension_key_invalid`,
    /// `dimension_value_truncated`, `too_many_dimensions`, ...). Not events:
    /// outside the balance above.
    pub adjusted: BTreeMap<String, u64>,
}

impl ProbeStats {
    /// All events dropped, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

impl Probe {
    /// Starts configuring a probe that uploads to `endpoint` (the collector's
    /// base URL, e.g. `https://sync-health.example.com`) with the project's
    /// ingest key.
    pub fn builder(endpoint: &str, ingest_key: &str) -> ProbeBuilder {
        ProbeBuilder::new(endpoint, ingest_key)
    }

    pub(crate) fn start_with(config: ProbeBuilder) -> Probe {
        let dir = config.storage_dir.clone();
        if let Some(dir) = &dir {
            if let Err(error) = std::fs::create_dir_all(dir) {
                tracing::warn!(dir = %dir.display(), %error, "Cannot create the probe's storage directory.");
            }
        }
        let device_id = crate::state::device_id(dir.as_deref(), config.device_id.as_deref());
        let shared = Arc::new(Shared::new(device_id, config.network, config.upload_policy.clone()));
        let (done_tx, done_rx) = mpsc::channel();
        let worker_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().name("synchealth-probe".into()).spawn(move || {
            // The worker must never unwind into nothing silently: a panic
            // (a bug) is logged, and the probe degrades to dropping events.
            if std::panic::catch_unwind(AssertUnwindSafe(|| worker::run(config, &worker_shared))).is_err() {
                tracing::error!("The probe's worker panicked; recording stops.");
                worker_shared.stopped.store(true, Ordering::Release);
            }
            let _ = done_tx.send(());
        });
        if let Err(error) = spawned {
            tracing::error!(%error, "Cannot start the probe's worker thread; events will not be kept.");
            shared.stopped.store(true, Ordering::Release);
        }
        Probe { handle: Arc::new(Handle { shared, done: Mutex::new(Some(done_rx)) }) }
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.handle.shared.counters
    }

    /// The pseudonymous device id on this probe's events.
    pub fn device_id(&self) -> &str {
        &self.shared().device_id
    }

    /// Starts timing a sync attempt. `sync_type` is free text up to 32
    /// characters (`push`, `pull`, `full`, ...); `trigger` one of the
    /// contract's triggers (`app_open`, `resume`, `user`, `local_write`,
    /// `scheduled`, `reconnect`), anything else is recorded as `other`.
    pub fn start(&self, sync_type: &str, trigger: &str) -> Attempt {
        Attempt::new(self.clone(), sync_type, trigger)
    }

    /// Records an attempt the app timed itself. Empty device fields
    /// (`device_id`, `app_version`, `os`) and a missing `last_success_at`
    /// are filled in by the probe; `sample_rate` applies as for timed ones.
    pub fn record(&self, event: SyncEvent) {
        self.push(Incoming::Event(Box::new(event)));
    }

    /// The app's pending local mutations, put on the next events. The
    /// oldest change's time stays as last set ([`Probe::set_queue`]).
    pub fn set_queue_depth(&self, depth: u32) {
        self.shared().queue_depth.store(depth, Ordering::Relaxed);
    }

    /// The app's pending local mutations and when the oldest of them was
    /// made (device clock; `None` when the queue is empty), put on the next
    /// events: the collector reads `occurred_at - queue_oldest_at` as the
    /// queue's lag. An event with an empty queue carries no oldest time.
    pub fn set_queue(&self, depth: u32, oldest_at: Option<SystemTime>) {
        let shared = self.shared();
        shared.queue_depth.store(depth, Ordering::Relaxed);
        shared.queue_oldest_ms.store(oldest_at.map_or(NO_TIME, system_ms), Ordering::Relaxed);
    }

    /// Reads the queue depth from the app at the end of every attempt
    /// instead (on the thread that finishes it); a panic in it reads as 0.
    /// The oldest change's time stays as last set ([`Probe::set_queue`]).
    pub fn set_queue_depth_source(&self, source: impl Fn() -> u32 + Send + Sync + 'static) {
        write(&self.shared().queue_source, None);
        write(&self.shared().depth_source, Some(Arc::new(source)));
    }

    /// Reads the queue depth and its oldest change's time from the app at
    /// the end of every attempt (on the thread that finishes it: keep it
    /// cheap, e.g. a counter and the head of the outbox); a panic in it
    /// reads as an empty queue.
    pub fn set_queue_source(&self, source: impl Fn() -> (u32, Option<SystemTime>) + Send + Sync + 'static) {
        write(&self.shared().depth_source, None);
        let source = move || {
            let (depth, oldest) = source();
            (depth, oldest.map(system_ms))
        };
        write(&self.shared().queue_source, Some(Arc::new(source)));
    }

    /// The current network type, put on the next events and read by the
    /// upload policy (`offline` holds uploads back).
    pub fn set_network(&self, network: Network) {
        let code = network_code(network);
        // A change may let held-back uploads go: tell the worker.
        if self.shared().network.swap(code, Ordering::Relaxed) != code {
            self.shared().wake.notify_all();
        }
    }

    /// Reads the network type from the app instead; a panic in it reads as `unknown`.
    pub fn set_network_source(&self, source: impl Fn() -> Network + Send + Sync + 'static) {
        write(&self.shared().network_source, Some(Arc::new(source)));
    }

    /// Tells the probe whether the battery is low, for [`UploadPolicy::UnmeteredOnly`]
    /// and custom policies.
    pub fn set_battery_low(&self, low: bool) {
        if self.shared().battery_low.swap(low, Ordering::Relaxed) != low {
            self.shared().wake.notify_all();
        }
    }

    /// Changes when uploads may run; recording goes on regardless.
    pub fn set_upload_policy(&self, policy: UploadPolicy) {
        write(&self.shared().policy, policy);
        self.shared().wake.notify_all();
    }

    /// Writes what was recorded to disk and uploads what the buffer holds
    /// (if the upload policy allows), waiting at most `timeout`, retries
    /// within it included (a `Retry-After` past the deadline ends the wait).
    pub fn flush(&self, timeout: Duration) -> FlushReport {
        let shared = self.shared();
        let pending = || shared.counters.buffered.load(Ordering::Relaxed);
        if shared.stopped.load(Ordering::Acquire) {
            return FlushReport { pending: pending(), completed: false };
        }
        let (tx, rx) = mpsc::channel();
        lock(&shared.inbox).flushes.push((Instant::now() + timeout, tx));
        shared.wake.notify_all();
        // A little beyond the worker's own deadline: it may be finishing an
        // upload that started just before it.
        match rx.recv_timeout(timeout + Duration::from_millis(500)) {
            Ok(report) => report,
            Err(_) => FlushReport { pending: pending(), completed: false },
        }
    }

    /// Stops the worker after it has written everything recorded to disk
    /// (what is not uploaded yet goes at the next start), waiting at most a
    /// few seconds. Recording after this drops events (`after_shutdown`).
    /// Applies to every clone of this probe.
    pub fn shutdown(&self) {
        self.shared().request_stop();
        let done = lock(&self.handle.done).take();
        if let Some(done) = done {
            if done.recv_timeout(SHUTDOWN_WAIT).is_err() {
                tracing::warn!("The probe's worker did not stop in time; leaving it.");
            }
        }
    }

    /// What the probe did since it started.
    pub fn stats(&self) -> ProbeStats {
        let c = &self.shared().counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProbeStats {
            recorded: get(&c.recorded),
            sampled_out: get(&c.sampled_out),
            restored: get(&c.restored),
            uploaded: get(&c.uploaded),
            duplicates: get(&c.duplicates),
            thinned: get(&c.thinned),
            dropped: lock(&c.dropped).clone(),
            buffered: get(&c.buffered),
            upload_failures: get(&c.upload_failures),
            adjusted: c.adjusted(),
        }
    }

    /// Queue depth, the oldest pending change (Unix ms) and network for an
    /// attempt finishing now.
    pub(crate) fn current_conditions(&self) -> (u32, Option<i64>, Network) {
        let shared = self.shared();
        let stored_oldest = || Some(shared.queue_oldest_ms.load(Ordering::Relaxed)).filter(|ms| *ms != NO_TIME);
        let (depth, oldest) = if let Some(source) = read(&shared.queue_source) {
            std::panic::catch_unwind(AssertUnwindSafe(|| source())).unwrap_or((0, None))
        } else if let Some(source) = read(&shared.depth_source) {
            (std::panic::catch_unwind(AssertUnwindSafe(|| source())).unwrap_or(0), stored_oldest())
        } else {
            (shared.queue_depth.load(Ordering::Relaxed), stored_oldest())
        };
        (depth, oldest, shared.network())
    }

    /// Hands a recorded attempt to the worker: a lock and a push, and a
    /// wake-up only when the worker sleeps with an empty inbox.
    pub(crate) fn push(&self, item: Incoming) {
        let shared = self.shared();
        shared.counters.recorded.fetch_add(1, Ordering::Relaxed);
        if shared.stopped.load(Ordering::Acquire) {
            shared.counters.add_dropped("after_shutdown", 1);
            return;
        }
        let mut inbox = lock(&shared.inbox);
        if inbox.items.len() >= MAX_INBOX {
            drop(inbox);
            shared.counters.add_dropped("queue_full", 1);
            shared.counters.queue_full_unpersisted.fetch_add(1, Ordering::Relaxed);
            return;
        }
        inbox.items.push(item);
        let wake = inbox.worker_idle && inbox.items.len() == 1;
        drop(inbox);
        if wake {
            shared.wake.notify_one();
        }
    }
}

/// Unix milliseconds of a device-clock time (negative before 1970).
fn system_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(NO_TIME + 1, |ms| -ms),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::record::Details;

    fn paused(dir: &std::path::Path) -> Probe {
        Probe::builder("http://127.0.0.1:9", "k").storage_dir(dir).upload_policy(UploadPolicy::Paused).build()
    }

    #[test]
    fn the_probe_is_clone_send_and_sync() {
        fn shareable<T: Clone + Send + Sync + 'static>() {}
        shareable::<Probe>();
    }

    #[test]
    fn a_panicking_app_callback_does_not_unwind_into_the_app() {
        let dir = tempfile::tempdir().unwrap();
        let probe = paused(dir.path());
        probe.set_queue_depth_source(|| panic!("app bug in the depth callback"));
        probe.set_network_source(|| panic!("app bug in the network callback"));
        probe.start("push", "user").succeed(Details::default());
        assert_eq!(probe.flush(Duration::from_secs(5)).pending, 1);
        assert_eq!(probe.current_conditions(), (0, None, Network::Unknown));
        probe.set_queue_source(|| panic!("app bug in the queue callback"));
        assert_eq!(probe.current_conditions(), (0, None, Network::Unknown));
    }

    #[test]
    fn recording_after_shutdown_is_counted_not_kept_and_the_buffer_survives() {
        let dir = tempfile::tempdir().unwrap();
        let probe = paused(dir.path());
        let clone = probe.clone();
        probe.start("pull", "resume").fail(synchealth_schema::ErrorKind::Auth, "401", Details::default());
        probe.shutdown();
        clone.start("pull", "resume").succeed(Details::default());
        let stats = clone.stats();
        assert_eq!(stats.recorded, 2);
        assert_eq!(stats.dropped.get("after_shutdown"), Some(&1));
        assert_eq!(stats.buffered, 1);
        drop((probe, clone));
        let again = paused(dir.path());
        assert_eq!(again.flush(Duration::from_secs(5)).pending, 1);
        assert_eq!(again.stats().restored, 1);
    }

    #[test]
    fn a_second_probe_on_a_directory_in_use_keeps_working_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let first = paused(dir.path());
        assert_eq!(first.flush(Duration::from_secs(5)).pending, 0);
        let second = paused(dir.path());
        assert_eq!(second.device_id(), first.device_id(), "the stored device id is shared");
        second.start("push", "user").succeed(Details::default());
        assert_eq!(second.flush(Duration::from_secs(5)).pending, 1);
        first.shutdown();
        second.shutdown();
        // The second one's event was in memory only: the file holds nothing.
        assert_eq!(paused(dir.path()).flush(Duration::from_secs(5)).pending, 0);
    }

    #[test]
    fn sampling_keeps_a_fraction_of_successes_with_their_weight_and_every_failure() {
        let probe =
            Probe::builder("http://127.0.0.1:9", "k").upload_policy(UploadPolicy::Paused).sample_rate(0.25).build();
        for i in 0..400 {
            let attempt = probe.start("push", "user");
            if i % 4 == 0 {
                attempt.fail(synchealth_schema::ErrorKind::Server, "500", Details::default());
            } else {
                attempt.succeed(Details::default());
            }
        }
        let report = probe.flush(Duration::from_secs(5));
        let stats = probe.stats();
        assert_eq!(stats.recorded, 400);
        assert_eq!(report.pending + stats.sampled_out, 400);
        let kept_successes = report.pending - 100;
        assert!((40..=110).contains(&kept_successes), "about a quarter of 300: {kept_successes}");
    }
}
