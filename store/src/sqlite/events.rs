//! The write side of events on SQLite ([`crate::Events`]): the insert, the
//! dashboard rollups (migration 0007) it keeps in its own transaction, and
//! retention.
//!
//! Four tables, written by [`Rollups`] in the transaction that inserts the
//! events, from the rows that insert actually stored, so they never disagree
//! with `events` (a duplicate adds nothing, a failed batch adds nothing):
//! - `rollup_minute` and `rollup_hour`: per minute (per hour), in Unix
//!   seconds, and segment (app version, OS, network): events, weighted
//!   attempts, successes and conflicted attempts, late events, and the
//!   duration histogram as one blob ([`super::sql::encode`]);
//! - `device_hour`: per hour and device, the device's latest event, and
//!   `device_segment_hour` (migration 0010): the same per hour, device and
//!   segment (`device_state.rs`).
//!
//! `aggregate.rs` reads them back.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use synchealth_schema::{error_fingerprint, unix_ms, ErrorKind, StoredEvent, SyncEvent, Trigger};

use super::device_state::DeviceHours;
use super::sql::{encode, merge, DeviceValues, Unit};
use super::{now_ms, opt_str, u64_bits, SqliteStore};
use crate::metrics::LATE_ARRIVAL_MS;
use crate::pieces::{HOUR_MS, MINUTE_MS};
use crate::{Error, InsertOutcome, Result};

/// Rows deleted per retention transaction: the writer lock is released
/// between chunks so that a large purge does not stall ingest.
const RETENTION_CHUNK: i64 = 5_000;

/// `OR IGNORE` on the `(project, event_id)` primary key is the idempotency:
/// a retried event changes no row, and that is how it is told apart.
const INSERT_EVENT: &str = "INSERT OR IGNORE INTO events (project, event_id, device_id, \
    event_time_ms, occurred_at_ms, last_success_at_ms, sent_at_ms, received_at_ms, clock_skew_ms, \
    success, duration_ms, duration_bucket, conflicts, queue_depth, queue_bucket, staleness_ms, \
    staleness_bucket, app_version, os, os_version, network, device_model, sync_type, trigger, \
    error_kind, error_message, retries, records_up, records_down, bytes_up, bytes_down, \
    sample_rate, weight, queue_oldest_at_ms, queue_lag_ms, conflict_details, dimensions, error_fingerprint) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, \
    ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36, ?37, ?38)";

/// `conflict_details` and `dimensions` as stored (migration 0012): their
/// wire format's JSON, `NULL` when empty, so the common event stores no text.
fn details_json(event: &SyncEvent) -> rusqlite::Result<(Option<String>, Option<String>)> {
    let json = |text: serde_json::Result<String>| text.map_err(|e| rusqlite::Error::ToSqlConversionFailure(e.into()));
    let details = (!event.conflict_details.is_empty()).then(|| json(serde_json::to_string(&event.conflict_details)));
    let dimensions = (!event.dimensions.is_empty()).then(|| json(serde_json::to_string(&event.dimensions)));
    Ok((details.transpose()?, dimensions.transpose()?))
}

/// One event, as the rollups see it. Borrowed, so that a batch is summed
/// without copying a string per event.
#[derive(Debug, Clone, Copy)]
pub(super) struct Fact<'a> {
    pub(super) project: &'a str,
    /// The hyphenated text, as stored in `events`: the tie-break.
    pub(super) event_id: &'a str,
    pub(super) device_id: &'a str,
    pub(super) event_time_ms: i64,
    pub(super) received_at_ms: i64,
    pub(super) success: bool,
    pub(super) conflicted: bool,
    pub(super) weight: f64,
    pub(super) duration_bucket: u16,
    pub(super) queue_depth: i64,
    pub(super) queue_bucket: u16,
    pub(super) staleness_bucket: u16,
    pub(super) never_synced: bool,
    pub(super) app_version: &'a str,
    pub(super) os: &'a str,
    pub(super) network: &'a str,
}

impl<'a> Fact<'a> {
    pub(super) fn of(stored: &'a StoredEvent, event_id: &'a str) -> Self {
        let e = &stored.event;
        Fact {
            project: stored.project.as_str(),
            event_id,
            device_id: &e.device_id,
            event_time_ms: stored.event_time_ms,
            received_at_ms: stored.received_at_ms,
            success: e.success,
            conflicted: e.conflicts > 0,
            weight: stored.weight,
            duration_bucket: stored.duration_bucket,
            queue_depth: i64::from(e.queue_depth),
            queue_bucket: stored.queue_bucket,
            staleness_bucket: stored.staleness_bucket,
            never_synced: e.last_success_at.is_none(),
            app_version: &e.app_version,
            os: &e.os,
            network: e.network.as_str(),
        }
    }
}

/// The per-event sums of one rollup row.
#[derive(Debug, Default)]
struct Sums {
    events: i64,
    attempts: f64,
    successes: f64,
    conflicted: f64,
    late: i64,
    durations: BTreeMap<u16, f64>,
}

impl Sums {
    fn add(&mut self, f: &Fact<'_>) {
        self.events += 1;
        self.attempts += f.weight;
        if f.success {
            self.successes += f.weight;
        }
        if f.conflicted {
            self.conflicted += f.weight;
        }
        if f.received_at_ms - f.event_time_ms > LATE_ARRIVAL_MS {
            self.late += 1;
        }
        *self.durations.entry(f.duration_bucket).or_default() += f.weight;
    }
}

/// `(project, unit start in Unix seconds, app_version, os, network)`.
type SegmentKey<'a> = (&'a str, i64, &'a str, &'a str, &'a str);

/// The rollup deltas of a set of events, written with [`Rollups::write`].
#[derive(Debug, Default)]
pub(super) struct Rollups<'a> {
    minutes: HashMap<SegmentKey<'a>, Sums>,
    hours: HashMap<SegmentKey<'a>, Sums>,
    devices: DeviceHours<'a>,
}

impl<'a> Rollups<'a> {
    /// For migration 0007's backfill, which runs before migration 0010
    /// creates `device_segment_hour` (0010 fills it itself).
    fn for_backfill() -> Self {
        Rollups { devices: DeviceHours::without_segments(), ..Rollups::default() }
    }

    pub(super) fn add(&mut self, f: Fact<'a>) {
        let minute = f.event_time_ms.div_euclid(MINUTE_MS) * 60;
        let hour = f.event_time_ms.div_euclid(HOUR_MS) * 3600;
        self.minutes.entry((f.project, minute, f.app_version, f.os, f.network)).or_default().add(&f);
        self.hours.entry((f.project, hour, f.app_version, f.os, f.network)).or_default().add(&f);
        let values = DeviceValues {
            queue_depth: f.queue_depth,
            queue_bucket: f.queue_bucket,
            staleness_bucket: f.staleness_bucket,
            never_synced: f.never_synced,
        };
        let segment = (f.app_version, f.os, f.network);
        self.devices.add(f.project, f.device_id, f.event_time_ms, f.event_id, segment, values);
    }

    /// Adds the deltas to the tables. Meant for the transaction that stored
    /// the events: the histogram blobs are read, merged and written back,
    /// which is exact only while no other writer runs.
    pub(super) fn write(&self, conn: &Connection) -> Result<()> {
        for (unit, sums) in [(Unit::Minute, &self.minutes), (Unit::Hour, &self.hours)] {
            let mut select = conn.prepare_cached(&unit.select_durations())?;
            let mut upsert = conn.prepare_cached(&unit.upsert())?;
            // In key order, so that consecutive upserts land on the same pages.
            let mut keys: Vec<&SegmentKey<'_>> = sums.keys().collect();
            keys.sort_unstable();
            for key in keys {
                let s = &sums[key];
                let (project, start, app_version, os, network) = *key;
                let durations = select
                    .query_row(params![project, start, app_version, os, network], |row| {
                        Ok(match row.get_ref(0)? {
                            ValueRef::Blob(blob) => merge(blob, &s.durations),
                            _ => Err(Error::Corrupt(format!("{} durations is not a blob", unit.table()))),
                        })
                    })
                    .optional()?
                    .transpose()?
                    .unwrap_or_else(|| encode(&s.durations));
                upsert.execute(params![
                    project,
                    start,
                    app_version,
                    os,
                    network,
                    s.events,
                    s.attempts,
                    s.successes,
                    s.conflicted,
                    s.late,
                    durations
                ])?;
            }
        }
        self.devices.write(conn)?;
        Ok(())
    }
}

pub(super) fn insert_events(conn: &mut Connection, events: &[StoredEvent]) -> Result<InsertOutcome> {
    // IMMEDIATE takes the write lock up front: a batch either goes in whole
    // or not at all, and never fails half-way on a lock upgrade.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = InsertOutcome::default();
    // Outside the loop so that the rollups can borrow them.
    let event_ids: Vec<String> = events.iter().map(|e| e.event.event_id.hyphenated().to_string()).collect();
    let mut rollups = Rollups::default();
    {
        let mut stmt = tx.prepare_cached(INSERT_EVENT)?;
        for (index, (stored, event_id)) in events.iter().zip(&event_ids).enumerate() {
            let e = &stored.event;
            let (conflict_details, dimensions) = details_json(e)?;
            let changed = stmt.execute(params![
                stored.project.as_str(),
                event_id,
                e.device_id,
                stored.event_time_ms,
                stored.occurred_at_ms(),
                stored.last_success_at_ms(),
                stored.sent_at_ms,
                stored.received_at_ms,
                stored.clock_skew_ms,
                e.success,
                e.duration_ms,
                stored.duration_bucket,
                e.conflicts,
                e.queue_depth,
                stored.queue_bucket,
                stored.staleness_ms,
                stored.staleness_bucket,
                e.app_version,
                e.os,
                opt_str(e.os_version.as_deref()),
                e.network.as_str(),
                opt_str(e.device_model.as_deref()),
                opt_str(e.sync_type.as_deref()),
                opt_str(e.trigger.map(Trigger::as_str)),
                opt_str(e.error_kind.map(ErrorKind::as_str)),
                opt_str(e.error_message.as_deref()),
                e.retries,
                u64_bits(e.records_up),
                u64_bits(e.records_down),
                u64_bits(e.bytes_up),
                u64_bits(e.bytes_down),
                e.sample_rate,
                stored.weight,
                e.queue_oldest_at.map(unix_ms),
                stored.queue_lag_ms,
                conflict_details,
                dimensions,
                e.error_message.as_deref().map(error_fingerprint),
            ])?;
            // A repeat inside this same batch hits the row its first copy
            // just inserted, so one check covers both kinds of duplicate.
            if changed == 0 {
                outcome.duplicates.push(index);
            } else {
                outcome.inserted += 1;
                rollups.add(Fact::of(stored, event_id));
            }
        }
    }
    // In the same transaction: the rollups hold exactly the stored events.
    rollups.write(&tx)?;
    tx.commit()?;
    Ok(outcome)
}

/// Fills the rollups from the events already stored, an hour of a project
/// at a time so that memory stays bounded. Run once, by the migration that
/// creates the tables, in its transaction; it empties them first, so running
/// it again gives the same tables.
pub(super) fn backfill(conn: &Connection) -> Result<()> {
    for table in ["rollup_minute", "rollup_hour", "device_hour"] {
        conn.execute(&format!("DELETE FROM {table}"), [])?;
    }
    let projects: Vec<String> = conn
        .prepare("SELECT DISTINCT project FROM events")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut next_time =
        conn.prepare("SELECT MIN(event_time_ms) FROM events WHERE project = ?1 AND event_time_ms >= ?2")?;
    let mut hour_rows = conn.prepare(
        "SELECT event_id, device_id, event_time_ms, received_at_ms, success, conflicts > 0, weight,
                duration_bucket, queue_depth, queue_bucket, staleness_bucket, last_success_at_ms IS NULL,
                app_version, os, network
         FROM events WHERE project = ?1 AND event_time_ms >= ?2 AND event_time_ms < ?3",
    )?;
    let mut events = 0usize;
    for project in &projects {
        let mut from = i64::MIN;
        // Hour by hour through the hours that have events, skipping gaps.
        while let Some(first) = next_time.query_row(params![project, from], |row| row.get::<_, Option<i64>>(0))? {
            let hour = first.div_euclid(HOUR_MS) * HOUR_MS;
            let rows: Vec<StoredRow> = hour_rows
                .query_map(params![project, hour, hour + HOUR_MS], StoredRow::from_row)?
                .collect::<rusqlite::Result<_>>()?;
            let mut rollups = Rollups::for_backfill();
            for row in &rows {
                rollups.add(row.fact(project));
            }
            rollups.write(conn)?;
            events += rows.len();
            from = hour + HOUR_MS;
        }
    }
    tracing::info!(events, projects = projects.len(), "backfilled the rollups");
    Ok(())
}

/// One event read back for [`backfill`].
struct StoredRow {
    event_id: String,
    device_id: String,
    event_time_ms: i64,
    received_at_ms: i64,
    success: bool,
    conflicted: bool,
    weight: f64,
    duration_bucket: u16,
    queue_depth: i64,
    queue_bucket: u16,
    staleness_bucket: u16,
    never_synced: bool,
    app_version: String,
    os: String,
    network: String,
}

impl StoredRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(StoredRow {
            event_id: row.get(0)?,
            device_id: row.get(1)?,
            event_time_ms: row.get(2)?,
            received_at_ms: row.get(3)?,
            success: row.get(4)?,
            conflicted: row.get(5)?,
            weight: row.get(6)?,
            duration_bucket: row.get(7)?,
            queue_depth: row.get(8)?,
            queue_bucket: row.get(9)?,
            staleness_bucket: row.get(10)?,
            never_synced: row.get(11)?,
            app_version: row.get(12)?,
            os: row.get(13)?,
            network: row.get(14)?,
        })
    }

    fn fact<'a>(&'a self, project: &'a str) -> Fact<'a> {
        Fact {
            project,
            event_id: &self.event_id,
            device_id: &self.device_id,
            event_time_ms: self.event_time_ms,
            received_at_ms: self.received_at_ms,
            success: self.success,
            conflicted: self.conflicted,
            weight: self.weight,
            duration_bucket: self.duration_bucket,
            queue_depth: self.queue_depth,
            queue_bucket: self.queue_bucket,
            staleness_bucket: self.staleness_bucket,
            never_synced: self.never_synced,
            app_version: &self.app_version,
            os: &self.os,
            network: &self.network,
        }
    }
}

/// Deletes the rollup rows of `project` for units that start before
/// `cutoff_ms`, at most `limit` rows per table; returns how many went. The
/// cutoff is a whole hour, so no row straddles it.
pub(super) fn delete_before(conn: &Connection, project: &str, cutoff_ms: i64, limit: i64) -> Result<usize> {
    let cutoff_s = cutoff_ms.div_euclid(1000);
    let mut deleted = 0;
    // The row-value IN over the key: these tables have no rowid to chunk by.
    for sql in [
        "DELETE FROM rollup_minute WHERE (project, minute, app_version, os, network) IN (
            SELECT project, minute, app_version, os, network FROM rollup_minute
            WHERE project = ?1 AND minute < ?2 LIMIT ?3)",
        "DELETE FROM rollup_hour WHERE (project, hour, app_version, os, network) IN (
            SELECT project, hour, app_version, os, network FROM rollup_hour
            WHERE project = ?1 AND hour < ?2 LIMIT ?3)",
        "DELETE FROM device_hour WHERE (project, hour, device_id) IN (
            SELECT project, hour, device_id FROM device_hour WHERE project = ?1 AND hour < ?2 LIMIT ?3)",
        "DELETE FROM device_segment_hour WHERE (project, hour, device_id, app_version, os, network) IN (
            SELECT project, hour, device_id, app_version, os, network FROM device_segment_hour
            WHERE project = ?1 AND hour < ?2 LIMIT ?3)",
    ] {
        deleted += conn.prepare_cached(sql)?.execute(params![project, cutoff_s, limit])?;
    }
    Ok(deleted)
}

#[async_trait]
impl crate::Events for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite", events = events.len()))]
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let events = events.to_vec();
        self.write(move |conn| insert_events(conn, &events)).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", days))]
    async fn apply_retention(&self, days: u32) -> Result<()> {
        // Cut at a whole hour, so that every rollup row covers either only
        // deleted events or only kept ones, and the two stay equal.
        let cutoff =
            (now_ms() - i64::from(days) * 86_400_000).div_euclid(crate::pieces::HOUR_MS) * crate::pieces::HOUR_MS;
        let projects: Vec<String> = self
            .read(|conn| {
                let mut stmt = conn.prepare("SELECT DISTINCT project FROM events")?;
                let names = stmt.query_map([], |row| row.get(0))?.collect::<rusqlite::Result<_>>()?;
                Ok(names)
            })
            .await?;
        let mut deleted = 0usize;
        // Per project so each chunk walks the (project, event_time_ms) index
        // instead of scanning the table; one chunk per writer turn so ingest
        // gets the lock in between. The rollups go first: a run cut short
        // leaves events that the next run still finds, by their project.
        for project in projects {
            loop {
                let project = project.clone();
                let n = self.write(move |conn| delete_before(conn, &project, cutoff, RETENTION_CHUNK)).await?;
                if n == 0 {
                    break;
                }
            }
            loop {
                let project = project.clone();
                let n = self
                    .write(move |conn| {
                        let mut stmt = conn.prepare_cached(
                            "DELETE FROM events WHERE rowid IN (
                                SELECT rowid FROM events WHERE project = ?1 AND event_time_ms < ?2 LIMIT ?3
                            )",
                        )?;
                        Ok(stmt.execute(params![project, cutoff, RETENTION_CHUNK])?)
                    })
                    .await?;
                deleted += n;
                if (n as i64) < RETENTION_CHUNK {
                    break;
                }
            }
        }
        tracing::info!(deleted, cutoff_ms = cutoff, "applied retention");
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::{Network, ProjectName, SyncEvent};
    use time::OffsetDateTime;

    /// Retention takes an hour's `device_segment_hour` rows with its other
    /// rollup rows, a chunk at a time, and leaves the later hours whole.
    #[test]
    fn retention_deletes_the_segment_hours_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::migrate::migrate_all(&mut conn).unwrap();
        let project = ProjectName::parse("p").unwrap();
        let base = 480_000 * HOUR_MS;
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let events: Vec<StoredEvent> = (0..60i64)
            .map(|i| {
                let time_ms = base + (i % 4) * HOUR_MS + i * 1000;
                let event = SyncEvent {
                    event_id: uuid::Uuid::from_u128(i as u128 + 1),
                    device_id: format!("d{}", i % 5),
                    occurred_at: at(time_ms),
                    queue_depth: i as u32,
                    app_version: ["1.0.0", "1.1.0", "2.0.0"][(i % 3) as usize].into(),
                    os: "ios".into(),
                    network: [Network::Wifi, Network::Cellular][(i % 2) as usize],
                    ..super::super::sql::test_event()
                };
                StoredEvent::new(project.clone(), event, at(time_ms + 1000), at(time_ms + 1000))
            })
            .collect();
        insert_events(&mut conn, &events).unwrap();
        let count = |condition: &str| -> i64 {
            conn.query_row(&format!("SELECT count(*) FROM device_segment_hour WHERE {condition}"), [], |r| r.get(0))
                .unwrap()
        };
        let cutoff = base + 2 * HOUR_MS;
        let (before, kept) =
            (count(&format!("hour < {}", cutoff / 1000)), count(&format!("hour >= {}", cutoff / 1000)));
        assert!(before > 10 && kept > 10, "{before} {kept}");
        while delete_before(&conn, "p", cutoff, 7).unwrap() > 0 {}
        assert_eq!(count(&format!("hour < {}", cutoff / 1000)), 0);
        assert_eq!(count(&format!("hour >= {}", cutoff / 1000)), kept);
    }
}
