//! Timing sync attempts on the app's thread: the only probe code that runs
//! there. An [`Attempt`] captures two clock readings and the outcome, and
//! hands a small [`RawAttempt`] to the worker's inbox; turning it into a
//! `SyncEvent` (event id, device fields, `last_success_at`, sampling) happens
//! on the worker thread, so the caller pays for a lock and a push, not for
//! random ids, string copies or I/O. Conflict details and dimensions an
//! attempt gathers are kept as given (entities cut to length, equal entries
//! merged); bounding them to the contract is the worker's (`bounds.rs`).

use std::time::{Instant, SystemTime};

use synchealth_schema::{
    ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, Network, SyncEvent, Trigger, MAX_DIMENSIONS,
    MAX_DIMENSION_KEY_CHARS, MAX_DIMENSION_VALUE_CHARS, MAX_ENTITY_CHARS,
};

use crate::bounds::{add_conflict, truncate_chars};
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
    /// The oldest pending change, Unix ms on the device clock.
    pub(crate) queue_oldest_ms: Option<i64>,
    pub(crate) network: Network,
    pub(crate) conflict_details: Vec<ConflictDetail>,
    /// As the app gave them (values cut to one character past the bound,
    /// so the worker still sees and counts the cut).
    pub(crate) dimensions: Vec<(String, String)>,
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
/// Finish it with [`Attempt::succeed`] or [`Attempt::fail`]; before that,
/// [`Attempt::conflict`] reports the conflicts it met by entity, kind and
/// resolution, and [`Attempt::dimension`] sets a custom dimension for this
/// attempt only. Dropping it
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
    conflict_details: Vec<ConflictDetail>,
    dimensions: Vec<(String, String)>,
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
            conflict_details: Vec::new(),
            dimensions: Vec::new(),
            finished: false,
        }
    }

    /// Reports `count` conflicts on `entity` (a table, collection or record
    /// type; cut to 64 characters), met as `kind` and settled as
    /// `resolution`. Calls for the same entity, kind and resolution add up.
    /// The event's `conflicts` is raised to the total when the `Details`
    /// given at the end say fewer; past 32 distinct entries the smallest are
    /// folded into one of entity `other`, so no count is lost.
    ///
    /// ```
    /// # use synchealth_probe::{ConflictKind, ConflictResolution, Details, Probe};
    /// # let probe = Probe::builder("http://127.0.0.1:9", "k").build();
    /// let mut attempt = probe.start("pull", "scheduled");
    /// attempt.conflict("todo", ConflictKind::UpdateUpdate, ConflictResolution::LastWriteWins, 3);
    /// attempt.succeed(Details { records_down: 40, ..Details::default() }); // conflicts = 3
    /// ```
    pub fn conflict(
        &mut self,
        entity: &str,
        kind: ConflictKind,
        resolution: ConflictResolution,
        count: u32,
    ) -> &mut Self {
        add_conflict(&mut self.conflict_details, entity, MAX_ENTITY_CHARS + 1, kind, resolution, count);
        self
    }

    /// Sets a custom dimension for this attempt only, over the probe's
    /// configured ones ([`crate::ProbeBuilder::dimension`]); same rules.
    pub fn dimension(&mut self, key: &str, value: &str) -> &mut Self {
        // One past each bound: enough for the worker to see and count a cut.
        let key = truncate_chars(key, MAX_DIMENSION_KEY_CHARS + 1);
        let value = truncate_chars(value, MAX_DIMENSION_VALUE_CHARS + 1);
        let room = self.dimensions.len() < 2 * MAX_DIMENSIONS;
        match self.dimensions.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            // Beyond twice the bound none could be kept anyway.
            None if room => self.dimensions.push((key, value)),
            None => self.probe.counters().note_adjusted("too_many_dimensions"),
        }
        self
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
        let (queue_depth, queue_oldest_ms, network) = self.probe.current_conditions();
        self.probe.push(Incoming::Attempt(RawAttempt {
            started_at: self.started_at,
            duration_ms,
            failure,
            details,
            sync_type: std::mem::take(&mut self.sync_type),
            trigger: self.trigger,
            queue_depth,
            queue_oldest_ms,
            network,
            conflict_details: std::mem::take(&mut self.conflict_details),
            dimensions: std::mem::take(&mut self.dimensions),
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
