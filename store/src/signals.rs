//! Conflicts, errors and queue lag over a window: what the Conflicts and Errors pages
//! and `/api/v1/conflicts`, `/api/v1/errors` show (issue 19), defined here
//! once for both stores.
//!
//! Every figure is sample-weighted (an event with `sample_rate = r` counts
//! `1/r`), over the events of `[from, to)` (corrected event time) that the
//! query's filters keep, each event once:
//! - **Conflicts** are `conflict_details[].count`, by time bucket, kind and
//!   resolution. An event's conflicts beyond its details' sum (an older
//!   probe, or details cut at 32) count as *unclassified*, so the series'
//!   total is the fleet's conflict count.
//! - **The overwrite share** is the conflicts resolved by `last_write_wins`,
//!   `server_wins` or `client_wins` over the classified conflicts: edits one
//!   side may have silently lost ([`ConflictResolution::overwrites`]).
//! - **An entity's** conflicts and overwrites are its details' counts; its
//!   attempts are the attempts that name it at least once, and its devices
//!   the devices whose events name it.
//! - **Errors** are failed attempts (`success = false`), by `error_kind`
//!   and by `(error_kind, fingerprint)`, the message's
//!   [`synchealth_schema::error_fingerprint`] stored with the event. Rows
//!   stored before the fingerprint existed (migration 13) group under their
//!   kind with an empty fingerprint. A group's example is the message of
//!   one of its latest events.
//!
//! - **Queue lag** is, per device, the lag of its latest event in the
//!   window (`StoredEvent::queue_lag_ms`: `occurred_at - queue_oldest_at`,
//!   both on the device clock). A latest event without `queue_oldest_at`
//!   whose `queue_depth` is 0 has an empty queue: lag 0. One with pending
//!   changes but no `queue_oldest_at` (a probe older than the field) has no
//!   known lag and is left out. Percentiles are exact (nearest rank) over
//!   the devices with a known lag, and the over-threshold share is those
//!   above the threshold over the same devices. Devices are not weighted:
//!   as for queue depth, a device counts once.
//!
//! Stores group in SQL (ClickHouse: `ARRAY JOIN` of the detail arrays;
//! SQLite: `json_each` of the stored details) and return at most the asked
//! number of entities and error groups, largest first, ties by name.

use serde::Serialize;
use synchealth_schema::ConflictResolution;

use crate::metrics::Query;
use crate::Result;

/// What a conflicts read returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ConflictAggregate {
    /// Conflicts by time bucket, kind and resolution, any order.
    pub series: Vec<ConflictCell>,
    /// Entities by conflicts, largest first (ties by name), at most the
    /// asked number.
    pub entities: Vec<EntityConflicts>,
    /// Entities by attempts naming them (their conflict rate), largest
    /// first (ties by name), at most the asked number: read on their own,
    /// so an entity that conflicts in many attempts, once each, is found
    /// even when others have more conflicts.
    pub entities_by_attempts: Vec<EntityConflicts>,
}

/// Conflicts of one kind and resolution in one time bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConflictCell {
    /// Bucket start, Unix seconds, a multiple of the step.
    pub bucket: i64,
    /// Wire spelling (`update_update`, ...); `None` for unclassified ones.
    pub kind: Option<String>,
    /// Wire spelling (`last_write_wins`, ...); `None` for unclassified ones.
    pub resolution: Option<String>,
    /// Sample-weighted conflicts.
    pub conflicts: f64,
}

/// One entity's conflicts over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EntityConflicts {
    /// As the device sent it (hostile: escape it wherever it is shown).
    pub entity: String,
    /// Sample-weighted conflicts.
    pub conflicts: f64,
    /// Of those, resolved by overwriting one side.
    pub overwrites: f64,
    /// Sample-weighted attempts naming the entity.
    pub attempts: f64,
    /// Distinct devices whose events name it.
    pub devices: u64,
}

/// What an errors read returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ErrorAggregate {
    /// Failed attempts by error kind, largest first (ties by kind); the
    /// kind is `None` for failures that named none.
    pub kinds: Vec<ErrorKindCount>,
    /// Error groups by attempts, largest first, at most the asked number.
    pub groups: Vec<ErrorGroup>,
}

/// Failed attempts of one error kind.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorKindCount {
    /// Wire spelling (`timeout`, ...), `None` when not given.
    pub kind: Option<String>,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
    /// Stored events.
    pub events: u64,
    /// Distinct devices.
    pub devices: u64,
}

/// The failures of one `(error kind, fingerprint)`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorGroup {
    /// Wire spelling, `None` when not given.
    pub kind: Option<String>,
    /// The messages' fingerprint (empty: no message, or stored before
    /// fingerprints).
    pub fingerprint: String,
    /// The message of one of the group's latest events (hostile: escape it).
    pub example: String,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
    /// Stored events.
    pub events: u64,
    /// Distinct devices.
    pub devices: u64,
    /// Earliest and latest corrected event time in the window, Unix ms.
    pub first_seen_ms: i64,
    /// See `first_seen_ms`.
    pub last_seen_ms: i64,
    /// Sample-weighted attempts by app version, largest first (ties by
    /// version).
    pub releases: Vec<(String, f64)>,
    /// Sample-weighted attempts by time bucket (start, Unix seconds),
    /// oldest first, empty buckets left out.
    pub series: Vec<(i64, f64)>,
}

/// Default queue lag above which a device counts as behind: 5 minutes.
pub const DEFAULT_QUEUE_LAG_THRESHOLD_MS: u64 = 5 * 60 * 1000;

/// Each device's latest queue lag over a window: what a queue-lag read returns.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueLags {
    /// Devices with an event in the window.
    pub devices: u64,
    /// The known latest lags, one per device, ms, ascending.
    pub lags_ms: Vec<u64>,
}

/// The queue-lag figures of a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueLagSummary {
    /// Median over devices with a known lag, ms.
    pub p50: Option<f64>,
    /// 90th percentile, ms.
    pub p90: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
    /// Devices above the threshold over devices with a known lag.
    pub over_threshold_share: Option<f64>,
    /// The threshold, ms.
    pub threshold_ms: u64,
    /// Devices with a known lag.
    pub devices_reporting: u64,
    /// Devices in the window.
    pub devices: u64,
}

impl QueueLags {
    /// The figures, with `threshold_ms` for the over-threshold share.
    pub fn summary(&self, threshold_ms: u64) -> QueueLagSummary {
        let n = self.lags_ms.len();
        let rank = |q: f64| -> Option<f64> {
            // Nearest rank: the smallest lag with at least q of devices at or below it.
            let index = ((q * n as f64).ceil() as usize).clamp(1, n.max(1)) - 1;
            self.lags_ms.get(index).map(|v| *v as f64)
        };
        let over = self.lags_ms.iter().filter(|l| **l > threshold_ms).count();
        QueueLagSummary {
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            over_threshold_share: (n > 0).then(|| over as f64 / n as f64),
            threshold_ms,
            devices_reporting: n as u64,
            devices: self.devices,
        }
    }
}

/// Conflicts, errors and queue lag, read from the events themselves.
#[async_trait::async_trait]
pub trait Signals: Send + Sync {
    /// Conflicts over `query`'s window in buckets of `step_seconds` (at
    /// least 1), and its `entities` entities with the most conflicts and
    /// with the most attempts naming them.
    async fn conflicts(&self, query: &Query, step_seconds: u32, entities: u32) -> Result<ConflictAggregate>;

    /// Failed attempts over `query`'s window by kind, and its `groups`
    /// largest error groups with their releases and series in buckets of
    /// `step_seconds`.
    async fn errors(&self, query: &Query, step_seconds: u32, groups: u32) -> Result<ErrorAggregate>;

    /// Each device's latest queue lag over `query`'s window.
    async fn queue_lags(&self, query: &Query) -> Result<QueueLags>;
}

/// The resolutions [`ConflictResolution::overwrites`] says overwrite, in
/// wire spelling: the stores' SQL filters on these.
pub(crate) fn overwriting_resolutions() -> Vec<&'static str> {
    ConflictResolution::ALL.iter().filter(|r| r.overwrites()).map(|r| r.as_str()).collect()
}

/// Sorts `rows` largest first by `key`, ties by `name`, and keeps `limit`.
pub(crate) fn top<T>(rows: &mut Vec<T>, limit: u32, key: impl Fn(&T) -> f64, name: impl Fn(&T) -> String) {
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| name(a).cmp(&name(b))));
    rows.truncate(limit as usize);
}

impl ConflictAggregate {
    /// All conflicts, classified or not.
    pub fn total(&self) -> f64 {
        self.series.iter().map(|c| c.conflicts).sum()
    }

    /// Overwritten over classified conflicts; `None` without classified ones.
    pub fn overwrite_share(&self) -> Option<f64> {
        let overwriting = overwriting_resolutions();
        let (mut classified, mut overwrites) = (0.0, 0.0);
        for cell in &self.series {
            if let Some(resolution) = &cell.resolution {
                classified += cell.conflicts;
                if overwriting.contains(&resolution.as_str()) {
                    overwrites += cell.conflicts;
                }
            }
        }
        (classified > 0.0).then(|| overwrites / classified)
    }
}
