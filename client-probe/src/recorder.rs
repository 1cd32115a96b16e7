//! Turning sync attempts into events, in memory.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use synchealth_schema::{ErrorKind, Network, SyncEvent, Trigger};
use time::OffsetDateTime;
use uuid::Uuid;

/// What the probe knows about the device and app, stamped on every event.
#[derive(Debug, Clone)]
pub struct DeviceContext {
    /// Pseudonymous device id.
    pub device_id: String,
    /// App version.
    pub app_version: String,
    /// OS family.
    pub os: String,
    /// OS version.
    pub os_version: Option<String>,
    /// Device model.
    pub device_model: Option<String>,
}

impl DeviceContext {
    /// The three required facts; the rest can be set on the struct.
    pub fn new(device_id: impl Into<String>, app_version: impl Into<String>, os: impl Into<String>) -> Self {
        DeviceContext {
            device_id: device_id.into(),
            app_version: app_version.into(),
            os: os.into(),
            os_version: None,
            device_model: None,
        }
    }
}

/// What an attempt moved and met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Details {
    /// Conflicts met.
    pub conflicts: u32,
    /// Retries inside the attempt.
    pub retries: u32,
    /// Records pushed.
    pub records_up: u64,
    /// Records pulled.
    pub records_down: u64,
    /// Bytes pushed.
    pub bytes_up: u64,
    /// Bytes pulled.
    pub bytes_down: u64,
}

#[derive(Debug)]
struct Shared {
    context: DeviceContext,
    last_success_at: Option<OffsetDateTime>,
    queue_depth: u32,
    network: Network,
    events: Vec<SyncEvent>,
}

/// Records attempts; cheap to clone, safe to share between threads.
#[derive(Debug, Clone)]
pub struct Recorder {
    shared: Arc<Mutex<Shared>>,
}

impl Recorder {
    /// A recorder for one device.
    pub fn new(context: DeviceContext) -> Self {
        Recorder {
            shared: Arc::new(Mutex::new(Shared {
                context,
                last_success_at: None,
                queue_depth: 0,
                network: Network::Unknown,
                events: Vec::new(),
            })),
        }
    }

    /// Starts timing an attempt. `trigger` is one of the contract's triggers;
    /// anything else is recorded as `other`.
    pub fn start(&self, sync_type: &str, trigger: &str) -> Attempt {
        Attempt {
            recorder: self.clone(),
            started_at: OffsetDateTime::now_utc(),
            started: Instant::now(),
            sync_type: sync_type.chars().take(32).collect(),
            trigger: Trigger::parse(trigger).unwrap_or(Trigger::Other),
            finished: false,
        }
    }

    /// The app's pending local mutations, reported on the next events.
    pub fn set_queue_depth(&self, depth: u32) {
        self.with(|s| s.queue_depth = depth);
    }

    /// The current network type, reported on the next events.
    pub fn set_network(&self, network: Network) {
        self.with(|s| s.network = network);
    }

    /// Takes the recorded events, oldest first.
    pub fn drain(&self) -> Vec<SyncEvent> {
        self.with(|s| std::mem::take(&mut s.events)).unwrap_or_default()
    }

    /// Runs `f` on the shared state; a poisoned lock (a panic elsewhere)
    /// must not take the host app down, so it is recovered, not propagated.
    fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Option<T> {
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(f(&mut guard))
    }

    fn finish(&self, attempt: &Attempt, outcome: Result<(), (ErrorKind, String)>, details: Details) {
        let duration_ms = u64::try_from(attempt.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.with(|s| {
            let success = outcome.is_ok();
            let (error_kind, error_message) = match outcome {
                Ok(()) => (None, None),
                Err((kind, message)) => (Some(kind), Some(message.chars().take(1024).collect())),
            };
            s.events.push(SyncEvent {
                event_id: Uuid::new_v4(),
                device_id: s.context.device_id.clone(),
                occurred_at: attempt.started_at,
                success,
                duration_ms,
                conflicts: details.conflicts,
                queue_depth: s.queue_depth,
                last_success_at: s.last_success_at,
                app_version: s.context.app_version.clone(),
                os: s.context.os.clone(),
                os_version: s.context.os_version.clone(),
                network: s.network,
                device_model: s.context.device_model.clone(),
                sync_type: Some(attempt.sync_type.clone()).filter(|t| !t.is_empty()),
                trigger: Some(attempt.trigger),
                error_kind,
                error_message,
                retries: details.retries,
                records_up: details.records_up,
                records_down: details.records_down,
                bytes_up: details.bytes_up,
                bytes_down: details.bytes_down,
                sample_rate: 1.0,
            });
            if success {
                s.last_success_at = Some(attempt.started_at);
            }
        });
    }
}

/// One sync attempt being timed. Dropping it unfinished records a failure
/// with `error_kind = cancelled`: a sync that never reported back is exactly
/// what must not vanish from the statistics.
#[derive(Debug)]
pub struct Attempt {
    recorder: Recorder,
    started_at: OffsetDateTime,
    started: Instant,
    sync_type: String,
    trigger: Trigger,
    finished: bool,
}

impl Attempt {
    /// The attempt succeeded.
    pub fn succeed(mut self, details: Details) {
        self.finished = true;
        self.recorder.finish(&self, Ok(()), details);
    }

    /// The attempt failed.
    pub fn fail(mut self, kind: ErrorKind, message: &str, details: Details) {
        self.finished = true;
        self.recorder.finish(&self, Err((kind, message.to_string())), details);
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            let recorder = self.recorder.clone();
            recorder.finish(self, Err((ErrorKind::Cancelled, "attempt dropped before it finished".into())), Details::default());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn recorder() -> Recorder {
        Recorder::new(DeviceContext::new("d1", "2.3.0", "ios"))
    }

    #[test]
    fn a_success_sets_last_success_at_for_the_next_attempt() {
        let r = recorder();
        r.start("pull", "app_open").succeed(Details::default());
        r.set_queue_depth(7);
        r.start("push", "local_write").fail(ErrorKind::Timeout, "gateway timeout", Details { retries: 2, ..Default::default() });
        let events = r.drain();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].last_success_at, None);
        assert_eq!(events[1].last_success_at, Some(events[0].occurred_at));
        assert_eq!(events[1].queue_depth, 7);
        assert_eq!(events[1].error_kind, Some(ErrorKind::Timeout));
        assert_eq!(events[1].retries, 2);
        assert!(r.drain().is_empty());
    }

    #[test]
    fn dropping_an_unfinished_attempt_records_a_cancelled_failure() {
        let r = recorder();
        drop(r.start("full", "user"));
        let events = r.drain();
        assert_eq!(events.len(), 1);
        assert!(!events[0].success);
        assert_eq!(events[0].error_kind, Some(ErrorKind::Cancelled));
    }

    #[test]
    fn recorded_events_pass_the_collectors_validation() {
        let r = recorder();
        r.set_network(Network::Cellular);
        r.start("delta", "not-a-trigger").succeed(Details { conflicts: 1, ..Default::default() });
        let event = r.drain().remove(0);
        assert_eq!(event.trigger, Some(Trigger::Other));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(SyncEvent::from_json(json).unwrap(), event);
    }

    #[test]
    fn many_threads_record_without_losing_events() {
        let r = recorder();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        r.start("push", "scheduled").succeed(Details::default());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let events = r.drain();
        assert_eq!(events.len(), 800);
        let mut ids: Vec<_> = events.iter().map(|e| e.event_id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 800);
    }
}
