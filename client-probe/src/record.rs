//! Timing sync attempts on the app's thread: the only probe code that runs
//! there. An [`Attempt`] captures two clock readings and the outcome, and
//! hands a small [`RawAttempt`] to the worker's inbox; turning it into a
//! `SyncEvent` (event id, device fields, `last_success_at`, sampling) happens
//! on the worker thread, so the caller pays for a lock and a push, not for
//! random ids, string copies or I/O.

use std::time::{Instant, SystemTime};

use synchealth_schema::{ErrorKind, Network, SyncEvent, Trigger};

use crate::Probe;

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

/// An attempt as captured on the caller's thread.
#[derive(Debug)]
pub(crate) struct RawAttempt {
    pub(crate) started_at: SystemTime,
    pub(crate) duration_ms: u64,
    /// `None` for a success.
    pub(crate) failure: Option<(ErrorKind, String)>,
    pub(crate) details: Details,
    pub(crate) sync_type: String,
    pub(crate) trigger: Trigger,
    pub(crate) queue_depth: u32,
    pub(crate) network: Network,
}

/// What the app hands the worker.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// Timed by the probe.
    Attempt(RawAttempt),
    /// Timed by the app ([`Probe::record`]).
    Event(Box<SyncEvent>),
}

/// One sync attempt being timed; from [`Probe::start`].
///
/// Finish it with [`Attempt::succeed`] or [`Attempt::fail`]. Dropping it
/// unfinished (an early return, a `?`, a panic unwinding through the sync
/// code) records a failure with `error_kind = cancelled`: a sync that never
/// reported back is exactly what must not vanish from the statistics.
#[derive(Debug)]
#[must_use = "an attempt dropped unfinished is recorded as cancelled"]
pub struct Attempt {
    probe: Probe,
    started_at: SystemTime,
    started: Instant,
    sync_type: String,
    trigger: Trigger,
    finished: bool,
}

impl Attempt {
    pub(crate) fn new(probe: Probe, sync_type: &str, trigger: &str) -> Self {
        Attempt {
            probe,
            started_at: SystemTime::now(),
            started: Instant::now(),
            sync_type: truncate_chars(sync_type, 32),
            trigger: Trigger::parse(trigger).unwrap_or(Trigger::Other),
            finished: false,
        }
    }

    /// The attempt succeeded.
    pub fn succeed(mut self, details: Details) {
        self.finish(None, details);
    }

    /// The attempt failed; `message` is kept up to 1024 characters.
    pub fn fail(mut self, kind: ErrorKind, message: &str, details: Details) {
        self.finish(Some((kind, truncate_chars(message, synchealth_schema::MAX_ERROR_MESSAGE_CHARS))), details);
    }

    fn finish(&mut self, failure: Option<(ErrorKind, String)>, details: Details) {
        self.finished = true;
        let duration_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (queue_depth, network) = self.probe.current_conditions();
        self.probe.push(Incoming::Attempt(RawAttempt {
            started_at: self.started_at,
            duration_ms,
            failure,
            details,
            sync_type: std::mem::take(&mut self.sync_type),
            trigger: self.trigger,
            queue_depth,
            network,
        }));
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Some((ErrorKind::Cancelled, "attempt dropped before it finished".into())), Details::default());
        }
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => text[..at].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_cut_at_a_character_boundary() {
        assert_eq!(truncate_chars("pushpull", 4), "push");
        assert_eq!(truncate_chars("ééé", 2), "éé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
