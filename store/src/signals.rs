//! Conflicts and errors over a window: what the Conflicts and Errors pages
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

/// Conflicts and errors, read from the events themselves.
#[async_trait::async_trait]
pub trait Signals: Send + Sync {
    /// Conflicts over `query`'s window in buckets of `step_seconds` (at
    /// least 1), and its `entities` entities with the most conflicts.
    async fn conflicts(&self, query: &Query, step_seconds: u32, entities: u32) -> Result<ConflictAggregate>;

    /// Failed attempts over `query`'s window by kind, and its `groups`
    /// largest error groups with their releases and series in buckets of
    /// `step_seconds`.
    async fn errors(&self, query: &Query, step_seconds: u32, groups: u32) -> Result<ErrorAggregate>;
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
