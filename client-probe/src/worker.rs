//! The probe's worker thread: everything that touches the disk or the
//! network happens here, never on the app's threads.
//!
//! One loop: wait for work (recorded attempts, a flush, a due upload or
//! retry, periodic expiry); append what was recorded to the buffer (turning
//! raw attempts into `SyncEvent`s: event id, device fields,
//! `last_success_at`, sampling); then upload at most one batch per turn,
//! so new attempts and commands are taken in between batches of a backlog.
//!
//! Every event, timed by the probe or made by the app, is brought within
//! the contract's bounds here before it is buffered (`bounds.rs`), so the
//! collector never rejects what an app's strings or counts made of it.
//!
//! Uploads go when the interval has passed or a full batch is waiting, the
//! upload policy allows, and no backoff is pending; a backlog after a
//! reconnect goes batch after batch. Events leave the buffer only after a
//! 2xx (see `upload`).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use synchealth_schema::{SyncEvent, TelemetryLossReport};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::bounds;
use crate::buffer::{Buffer, Removed};
use crate::config::{BufferLimits, ProbeBuilder};
use crate::record::{Incoming, RawAttempt};
use crate::shared::{lock, FlushReport, Shared};
use crate::state::{self, ProbeState};
use crate::upload::backoff::Backoff;
use crate::upload::{gzip_body, Outcome, Uploader};

/// A flush asked for: its deadline and where to answer.
type FlushRequest = (Instant, std::sync::mpsc::Sender<FlushReport>);

/// How often old events are checked for expiry.
const EXPIRY_EVERY: Duration = Duration::from_secs(60);
/// The storage directory's lock file: one probe per directory.
const LOCK_FILE: &str = "lock";

/// Runs the worker until the probe stops.
pub(crate) fn run(config: ProbeBuilder, shared: &Shared) {
    let mut worker = Worker::open(config, shared);
    worker.run();
}

/// The worker's state, owned by its thread.
struct Worker<'a> {
    shared: &'a Shared,
    config: ProbeBuilder,
    dir: Option<PathBuf>,
    /// Held while the worker runs; released when it is dropped.
    _lock: Option<File>,
    buffer: Buffer,
    state: ProbeState,
    state_dirty: bool,
    uploader: Uploader,
    backoff: Backoff,
    retry_at: Option<Instant>,
    next_upload_at: Instant,
    next_expiry_at: Instant,
    batch_size: usize,
    /// The loss counts the collector last acknowledged.
    reported_loss: Option<BTreeMap<String, u64>>,
    /// The configured dimensions, checked once.
    dimensions: BTreeMap<String, String>,
    #[cfg(feature = "otlp")]
    otlp: Option<crate::otlp::Exporter>,
}

impl<'a> Worker<'a> {
    fn open(config: ProbeBuilder, shared: &'a Shared) -> Worker<'a> {
        let (dir, lock, buffer) = open_storage(config.storage_dir.as_deref(), config.limits, shared);
        let state = state::load(dir.as_deref());
        let uploader = Uploader::new(config.events_url(), &config.ingest_key, config.request_timeout);
        let now = Instant::now();
        #[cfg(feature = "otlp")]
        let otlp = config
            .otlp_endpoint
            .as_deref()
            .map(|url| crate::otlp::Exporter::new(url, &config.ingest_key, config.request_timeout));
        let dimensions = bounds::dimensions(
            &BTreeMap::new(),
            config.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &shared.counters,
        );
        let worker = Worker {
            shared,
            dimensions,
            backoff: Backoff::new(config.backoff_min, config.backoff_max),
            batch_size: config.batch_size,
            // A backlog left by the previous run goes out at once.
            next_upload_at: now,
            next_expiry_at: now,
            config,
            dir,
            _lock: lock,
            buffer,
            state,
            state_dirty: false,
            uploader,
            retry_at: None,
            reported_loss: None,
            #[cfg(feature = "otlp")]
            otlp,
        };
        worker.publish_buffered();
        worker
    }

    fn run(&mut self) {
        loop {
            let (items, flushes, stop) = self.wait();
            self.absorb(items);
            if Instant::now() >= self.next_expiry_at {
                self.expire();
            }
            for (deadline, reply) in flushes {
                let report = self.flush(deadline);
                let _ = reply.send(report);
            }
            if stop {
                self.finish();
                return;
            }
            if self.upload_due(Instant::now()) {
                self.upload_one();
            }
            self.save_state();
        }
    }

    /// Blocks until there is something to do; returns the inbox's content.
    fn wait(&mut self) -> (Vec<Incoming>, Vec<FlushRequest>, bool) {
        let deadline = self.next_wake();
        let mut inbox = lock(&self.shared.inbox);
        let mut woken_by_items = false;
        let now = Instant::now();
        // One wait: any wake-up (an item, a command, a network or policy
        // change, a timeout) sends the loop round once more, which is cheap.
        if inbox.items.is_empty() && inbox.flushes.is_empty() && !inbox.stop && now < deadline {
            inbox.worker_idle = true;
            inbox = match self.shared.wake.wait_timeout(inbox, deadline - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            inbox.worker_idle = false;
            woken_by_items = !inbox.items.is_empty();
        }
        if woken_by_items && inbox.flushes.is_empty() && !inbox.stop && !self.config.persist_delay.is_zero() {
            // Let a burst of attempts gather, so it costs one write and one
            // wake-up instead of one each.
            drop(inbox);
            std::thread::sleep(self.config.persist_delay);
            inbox = lock(&self.shared.inbox);
        }
        (std::mem::take(&mut inbox.items), std::mem::take(&mut inbox.flushes), inbox.stop)
    }

    /// The next moment the worker has something to do without being woken.
    fn next_wake(&self) -> Instant {
        let now = Instant::now();
        let mut at = self.next_expiry_at;
        // While the policy holds uploads back there is no upload to wait
        // for (waking for one would spin); a policy or network change wakes
        // the worker, and a network callback is read again every interval.
        if (!self.buffer.is_empty() || self.loss_unreported()) && self.shared.upload_allowed() {
            let upload = match self.retry_at {
                Some(retry) => retry.max(self.next_upload_at),
                None => self.next_upload_at,
            };
            at = at.min(upload);
        }
        at.min(now + self.config.upload_interval.max(Duration::from_millis(10))).max(now)
    }

    /// Turns recorded attempts into events and appends them to the buffer.
    fn absorb(&mut self, items: Vec<Incoming>) {
        let queue_full = self.shared.counters.queue_full_unpersisted.swap(0, Ordering::Relaxed);
        if queue_full > 0 {
            self.state.add_dropped("queue_full", queue_full);
            self.state_dirty = true;
        }
        if items.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(items.len());
        for item in items {
            if let Some(event) = self.make_event(item) {
                events.push(event);
            }
        }
        match self.buffer.append(&events) {
            Ok(removed) => self.count_removed(removed),
            Err(error) => {
                tracing::warn!(%error, events = events.len(), "Could not write events to the probe buffer; dropped.");
                self.state.add_dropped("disk_error", events.len() as u64);
                self.shared.counters.add_dropped("disk_error", events.len() as u64);
            }
        }
        // After the buffer write: the durable path comes first.
        #[cfg(feature = "otlp")]
        if let Some(otlp) = &self.otlp {
            otlp.export(&events);
        }
        self.state_dirty = true;
        self.publish_buffered();
    }

    /// The event for one recorded attempt; `None` if sampled out.
    fn make_event(&mut self, item: Incoming) -> Option<SyncEvent> {
        let mut event = match item {
            Incoming::Attempt(raw) => self.event_of(raw),
            Incoming::Event(event) => {
                let mut event = *event;
                if event.device_id.is_empty() {
                    event.device_id = self.shared.device_id.clone();
                }
                if event.app_version.is_empty() {
                    event.app_version = self.config.app_version.clone();
                }
                if event.os.is_empty() {
                    event.os = self.config.os.clone();
                }
                if event.last_success_at.is_none() {
                    event.last_success_at = self.last_success_at();
                }
                let own = std::mem::take(&mut event.dimensions);
                event.dimensions = bounds::dimensions(
                    &self.dimensions,
                    own.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    &self.shared.counters,
                );
                event
            }
        };
        bounds::conflict_details(&mut event, &self.shared.counters);
        bounds::queue_oldest_at(&mut event, &self.shared.counters);
        if event.success {
            let at = unix_ms(event.occurred_at);
            if self.state.last_success_at_ms.is_none_or(|last| at > last) {
                self.state.last_success_at_ms = Some(at);
            }
            let rate = self.config.sample_rate;
            if rate < 1.0 {
                if fastrand::f64() >= rate {
                    self.shared.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                event.sample_rate = (event.sample_rate * rate).max(f64::MIN_POSITIVE);
            }
        }
        Some(event)
    }

    fn event_of(&self, raw: RawAttempt) -> SyncEvent {
        let dimensions = bounds::dimensions(
            &self.dimensions,
            raw.dimensions.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            &self.shared.counters,
        );
        let (error_kind, error_message) = match raw.failure {
            None => (None, None),
            Some((kind, message)) => (Some(kind), Some(message)),
        };
        SyncEvent {
            // Time-ordered (UUIDv7): a store indexing events by id appends
            // new ones at the end of that index instead of all over it.
            event_id: Uuid::now_v7(),
            device_id: self.shared.device_id.clone(),
            occurred_at: to_millis(OffsetDateTime::from(raw.started_at)),
            success: error_kind.is_none(),
            duration_ms: raw.duration_ms,
            conflicts: raw.details.conflicts,
            queue_depth: raw.queue_depth,
            last_success_at: self.last_success_at(),
            app_version: self.config.app_version.clone(),
            os: self.config.os.clone(),
            os_version: self.config.os_version.clone(),
            network: raw.network,
            device_model: self.config.device_model.clone(),
            sync_type: Some(raw.sync_type).filter(|t| !t.is_empty()),
            trigger: Some(raw.trigger),
            error_kind,
            error_message,
            retries: raw.details.retries,
            records_up: raw.details.records_up,
            records_down: raw.details.records_down,
            bytes_up: raw.details.bytes_up,
            bytes_down: raw.details.bytes_down,
            sample_rate: 1.0,
            conflict_details: raw.conflict_details,
            queue_oldest_at: raw.queue_oldest_ms.and_then(from_unix_ms),
            dimensions,
        }
    }

    fn last_success_at(&self) -> Option<OffsetDateTime> {
        from_unix_ms(self.state.last_success_at_ms?)
    }

    fn count_removed(&mut self, removed: Removed) {
        let counters = &self.shared.counters;
        counters.thinned.fetch_add(removed.thinned, Ordering::Relaxed);
        counters.add_dropped("buffer_full", removed.buffer_full);
        counters.add_dropped("expired", removed.expired);
        self.state.thinned += removed.thinned;
        self.state.add_dropped("buffer_full", removed.buffer_full);
        self.state.add_dropped("expired", removed.expired);
        if removed != Removed::default() {
            self.state_dirty = true;
        }
    }

    fn expire(&mut self) {
        self.next_expiry_at = Instant::now() + EXPIRY_EVERY;
        match self.buffer.expire(unix_ms(OffsetDateTime::now_utc())) {
            Ok(removed) => {
                if removed.expired > 0 {
                    tracing::info!(expired = removed.expired, "Dropped events older than the buffer's age bound.");
                }
                self.count_removed(removed);
            }
            Err(error) => tracing::warn!(%error, "Could not expire old events."),
        }
        self.publish_buffered();
    }

    fn upload_due(&self, now: Instant) -> bool {
        let waiting = !self.buffer.is_empty() || self.loss_unreported();
        let backing_off = self.retry_at.is_some_and(|at| now < at);
        let ready = now >= self.next_upload_at || self.buffer.len() >= self.batch_size;
        waiting && !backing_off && ready && self.shared.upload_allowed()
    }

    /// Whether the collector has not acknowledged the current loss counts.
    fn loss_unreported(&self) -> bool {
        !self.state.dropped.is_empty() && self.reported_loss.as_ref() != Some(&self.state.dropped)
    }

    /// Uploads the oldest batch (or, with an empty buffer, just the loss report).
    fn upload_one(&mut self) {
        let now = Instant::now();
        let batch = match self.buffer.peek(self.batch_size) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "Could not read the probe buffer.");
                self.retry_at = Some(now + self.backoff.next_delay(None));
                return;
            }
        };
        let loss = self.loss_unreported().then(|| TelemetryLossReport {
            device_id: self.shared.device_id.clone(),
            dropped: self.state.dropped.clone(),
        });
        let body = match gzip_body(OffsetDateTime::now_utc(), &batch, loss.as_ref()) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, "Could not build an upload body.");
                self.retry_at = Some(now + self.backoff.next_delay(None));
                return;
            }
        };
        let seqs: Vec<u64> = batch.iter().map(|(seq, _)| *seq).collect();
        let outcome = self.uploader.send(&body);
        // Waits count from the answer: a Retry-After means "after this response".
        let now = Instant::now();
        match outcome {
            Outcome::Accepted { accepted, duplicates, rejected } => {
                for r in &rejected {
                    tracing::warn!(index = r.index, field = %r.field, reason = %r.reason, "The collector rejected an event; dropped.");
                }
                let rejected = rejected.len() as u64;
                let counters = &self.shared.counters;
                counters.uploaded.fetch_add(seqs.len() as u64 - rejected.min(seqs.len() as u64), Ordering::Relaxed);
                counters.duplicates.fetch_add(duplicates, Ordering::Relaxed);
                counters.add_dropped("rejected", rejected);
                self.state.add_dropped("rejected", rejected);
                tracing::debug!(events = seqs.len(), accepted, duplicates, rejected, "Uploaded a batch.");
                self.remove(&seqs);
                self.backoff.reset();
                self.retry_at = None;
                if let Some(loss) = loss {
                    self.reported_loss = Some(loss.dropped);
                }
                self.next_upload_at = if self.buffer.is_empty() { now + self.config.upload_interval } else { now };
                self.state_dirty = true;
            }
            Outcome::Retry { retry_after, reason } => {
                let delay = self.backoff.next_delay(retry_after);
                self.shared.counters.upload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%reason, retry_in_ms = delay.as_millis() as u64, failures = self.backoff.failures(), "Upload failed; will retry.");
                self.retry_at = Some(now + delay);
            }
            Outcome::TooLarge if seqs.len() > 1 => {
                self.batch_size = (seqs.len() / 2).max(1);
                tracing::info!(batch_size = self.batch_size, "The collector found the batch too large; halving it.");
            }
            Outcome::TooLarge | Outcome::NotABatch { .. } => {
                // Retrying the same bytes cannot succeed; keeping them would
                // block every later event behind them.
                tracing::error!(events = seqs.len(), "The collector refused the batch as a whole; dropped.");
                self.shared.counters.add_dropped("rejected", seqs.len() as u64);
                self.state.add_dropped("rejected", seqs.len() as u64);
                self.remove(&seqs);
                self.state_dirty = true;
            }
            Outcome::Unauthorized { status } => {
                tracing::warn!(status, "The collector refused the ingest key; keeping events and waiting.");
                self.shared.counters.upload_failures.fetch_add(1, Ordering::Relaxed);
                self.retry_at = Some(now + self.config.backoff_max);
            }
        }
        self.publish_buffered();
    }

    fn remove(&mut self, seqs: &[u64]) {
        if let Err(error) = self.buffer.remove(seqs) {
            // The events stay and go again: the collector dedups them.
            tracing::warn!(%error, "Could not mark uploaded events in the probe buffer.");
        }
    }

    /// Uploads until the buffer is empty, the deadline passes, or the policy
    /// says no; waits out a backoff that ends before the deadline.
    fn flush(&mut self, deadline: Instant) -> FlushReport {
        loop {
            let now = Instant::now();
            if (self.buffer.is_empty() && !self.loss_unreported()) || now >= deadline || !self.shared.upload_allowed() {
                break;
            }
            if let Some(at) = self.retry_at.filter(|at| *at > now) {
                if at >= deadline {
                    break;
                }
                std::thread::sleep(at - now);
            }
            self.next_upload_at = Instant::now();
            self.upload_one();
        }
        if let Err(error) = self.buffer.sync() {
            tracing::warn!(%error, "Could not sync the probe buffer.");
        }
        self.save_state();
        FlushReport { pending: self.buffer.len() as u64, completed: true }
    }

    fn finish(&mut self) {
        let leftovers = std::mem::take(&mut lock(&self.shared.inbox).items);
        self.absorb(leftovers);
        if let Err(error) = self.buffer.sync() {
            tracing::warn!(%error, "Could not sync the probe buffer.");
        }
        self.save_state();
    }

    fn save_state(&mut self) {
        if !self.state_dirty {
            return;
        }
        self.state_dirty = false;
        if let Some(dir) = &self.dir {
            if let Err(error) = state::save(dir, &self.state) {
                tracing::warn!(%error, "Could not save the probe's state.");
            }
        }
    }

    fn publish_buffered(&self) {
        self.shared.counters.buffered.store(self.buffer.len() as u64, Ordering::Relaxed);
    }
}

/// Locks and opens the storage directory; on any failure, a memory buffer.
fn open_storage(dir: Option<&Path>, limits: BufferLimits, shared: &Shared) -> (Option<PathBuf>, Option<File>, Buffer) {
    let Some(dir) = dir else {
        tracing::warn!("The probe has no storage directory; events are kept in memory only.");
        return (None, None, Buffer::in_memory(limits));
    };
    let lock = match File::create(dir.join(LOCK_FILE))
        .and_then(|f| f.try_lock().map(|()| f).map_err(std::io::Error::other))
    {
        Ok(file) => file,
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "The probe's storage directory is in use or unusable; keeping events in memory only.");
            return (None, None, Buffer::in_memory(limits));
        }
    };
    match Buffer::open(dir, limits) {
        Ok((buffer, opened)) => {
            shared.counters.restored.store(opened.events as u64, Ordering::Relaxed);
            if opened.events > 0 {
                tracing::info!(events = opened.events, "Found events left by the previous run.");
            }
            (Some(dir.to_path_buf()), Some(lock), buffer)
        }
        Err(error) => {
            tracing::error!(dir = %dir.display(), %error, "Cannot open the probe buffer; keeping events in memory only.");
            (None, None, Buffer::in_memory(limits))
        }
    }
}

/// Milliseconds are what the collector keeps; nanoseconds would only cost
/// bytes on the wire.
fn to_millis(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(t.nanosecond() / 1_000_000 * 1_000_000).unwrap_or(t)
}

fn from_unix_ms(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, SystemTime};

    use synchealth_schema::{
        ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, SyncEvent, MAX_CONFLICT_DETAILS,
    };

    use crate::{Details, Probe, UploadPolicy};

    use super::*;

    /// What a paused probe in `dir` wrote to its buffer, as the collector
    /// would read it: each event must pass the schema's own validation.
    fn buffered(dir: &Path) -> Vec<SyncEvent> {
        let (mut buffer, _) = Buffer::open(dir, BufferLimits::default()).unwrap();
        buffer
            .peek(100)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| {
                let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let event: SyncEvent = serde_json::from_value(value.clone()).unwrap();
                let checked = SyncEvent::from_json(value).unwrap_or_else(|e| panic!("the collector refuses {e:?}"));
                assert_eq!(checked, event);
                let again = SyncEvent::from_json(serde_json::to_value(&event).unwrap()).unwrap();
                assert_eq!(again, event);
                event
            })
            .collect()
    }

    fn paused(dir: &Path) -> crate::ProbeBuilder {
        Probe::builder("http://127.0.0.1:9", "k").storage_dir(dir).upload_policy(UploadPolicy::Paused)
    }

    #[test]
    fn an_attempts_conflicts_queue_age_and_dimensions_reach_its_event_within_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let probe = paused(dir.path()).dimension("engine", "powersync").dimension("plan", "free").build();
        let oldest = SystemTime::now() - Duration::from_secs(300);
        probe.set_queue(4, Some(oldest));
        let mut attempt = probe.start("push", "local_write");
        attempt
            .conflict("todo", ConflictKind::UpdateUpdate, ConflictResolution::LastWriteWins, 2)
            .conflict("todo", ConflictKind::UpdateUpdate, ConflictResolution::LastWriteWins, 1)
            .conflict("list", ConflictKind::UpdateDelete, ConflictResolution::ServerWins, 1)
            .dimension("plan", "pro");
        // The app says 1 conflict, its details say 4: the event says 4.
        attempt.fail(ErrorKind::Conflict, "rejected", Details { conflicts: 1, ..Details::default() });
        probe.set_queue(0, None);
        probe.start("pull", "scheduled").succeed(Details::default());
        probe.shutdown();

        let events = buffered(dir.path());
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.conflicts, 4);
        let details: Vec<(&str, ConflictKind, u32)> =
            e.conflict_details.iter().map(|d| (d.entity.as_str(), d.kind, d.count)).collect();
        assert_eq!(details, vec![("todo", ConflictKind::UpdateUpdate, 3), ("list", ConflictKind::UpdateDelete, 1)]);
        assert_eq!(e.queue_depth, 4);
        let lag_ms = unix_ms(e.occurred_at) - unix_ms(e.queue_oldest_at.unwrap());
        assert!((299_000..=301_000).contains(&lag_ms), "about five minutes: {lag_ms} ms");
        assert_eq!(e.dimensions.get("plan").map(String::as_str), Some("pro"), "the attempt's value wins");
        assert_eq!(e.dimensions.get("engine").map(String::as_str), Some("powersync"));
        let empty = &events[1];
        assert_eq!((empty.conflicts, empty.queue_oldest_at, empty.conflict_details.len()), (0, None, 0));
        assert_eq!(empty.dimensions.get("plan").map(String::as_str), Some("free"));
    }

    #[test]
    fn over_long_and_invalid_inputs_are_bounded_and_counted_not_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let probe = paused(dir.path())
            .dimension("Region", "eu")
            .dimension("region", "é".repeat(100))
            .dimensions((0..10).map(|i| (format!("d{i}"), "x")))
            .build();
        probe.set_queue(2, Some(SystemTime::UNIX_EPOCH));
        let mut attempt = probe.start("push", "user");
        for i in 0..50u32 {
            let entity = format!("{i:02}{}", "e".repeat(80));
            attempt.conflict(&entity, ConflictKind::InsertInsert, ConflictResolution::CrdtMerge, i + 1);
        }
        attempt.dimension("", "x").dimension("plan", "");
        attempt.succeed(Details::default());
        // An app-made event breaking every bound goes too.
        let mut made = serde_json::from_value::<SyncEvent>(serde_json::json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a", "device_id": "", "app_version": "",
            "os": "", "occurred_at": "2026-11-21T10:00:00Z", "success": false, "duration_ms": 5, "queue_depth": 1,
        }))
        .unwrap();
        // Recent: a week-old event would expire from the buffer.
        made.occurred_at = to_millis(OffsetDateTime::now_utc());
        made.conflict_details = vec![
            ConflictDetail {
                entity: String::new(),
                kind: ConflictKind::Other,
                resolution: ConflictResolution::Manual,
                count: 0,
            },
            ConflictDetail {
                entity: "x".repeat(65),
                kind: ConflictKind::Other,
                resolution: ConflictResolution::Manual,
                count: 2,
            },
        ];
        made.dimensions.insert("Bad Key".into(), "v".into());
        made.queue_oldest_at = Some(made.occurred_at + time::Duration::days(3));
        probe.record(made);
        probe.flush(Duration::from_secs(5));
        let adjusted = probe.stats().adjusted;
        probe.shutdown();

        let events = buffered(dir.path());
        let e = &events[0];
        assert_eq!(e.conflict_details.len(), MAX_CONFLICT_DETAILS);
        assert_eq!(e.conflicts, (1..=50).sum::<u32>(), "folding loses no conflict");
        assert!(e.conflict_details.iter().all(|d| d.entity.chars().count() <= synchealth_schema::MAX_ENTITY_CHARS));
        assert_eq!(e.queue_oldest_at, None, "1970 is before the collector's floor");
        assert_eq!(e.dimensions.len(), synchealth_schema::MAX_DIMENSIONS);
        assert_eq!(e.dimensions["region"].chars().count(), synchealth_schema::MAX_DIMENSION_VALUE_CHARS);
        let made = &events[1];
        assert_eq!(made.conflict_details.len(), 1);
        assert_eq!((made.conflicts, made.conflict_details[0].entity.len()), (2, 64));
        assert_eq!(made.queue_oldest_at, Some(made.occurred_at + time::Duration::milliseconds(5)));
        assert!(!made.dimensions.contains_key("Bad Key"));
        for reason in [
            "entity_truncated",
            "conflict_details_folded",
            "dimension_key_invalid",
            "dimension_value_truncated",
            "dimension_value_empty",
            "too_many_dimensions",
            "queue_oldest_at_out_of_range",
            "queue_oldest_at_after_attempt",
            "entity_empty",
            "conflict_count_zero",
        ] {
            assert!(adjusted.get(reason).is_some_and(|n| *n >= 1), "{reason} counted: {adjusted:?}");
        }
    }
}
