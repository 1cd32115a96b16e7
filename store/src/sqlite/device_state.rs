//! Each device's latest event per hour (`device_hour`, migration 0007) and
//! per hour and segment (`device_segment_hour`, migration 0010), the
//! counterpart of ClickHouse's `device_state.rs`: written by
//! [`crate::Events::insert`] in the transaction that stores the events (and
//! by the migrations' backfills), one upsert per (project, hour, device) and
//! one per (project, hour, device, app version, OS, network) of the batch,
//! from the rows the insert actually stored.
//!
//! A row is the device's latest event of the hour (of the hour's events in
//! that segment), the greatest `(event_time_ms, event_id text)`; the upsert
//! replaces it only with a later one, so an old event arriving late changes
//! nothing. `aggregate.rs`, `device_cache.rs` and `segment_cache.rs` read
//! the tables back.

use std::collections::HashMap;

use rusqlite::{params, Connection};

use super::sql::DeviceValues;
use crate::pieces::HOUR_MS;
use crate::Result;

/// `(project, hour in Unix seconds, device_id)`.
type DeviceKey<'a> = (&'a str, i64, &'a str);

/// `(project, hour in Unix seconds, device_id, app_version, os, network)`.
type SegmentKey<'a> = (&'a str, i64, &'a str, &'a str, &'a str, &'a str);

/// The segment of an event: app version, OS, network.
pub(super) type Segment<'a> = (&'a str, &'a str, &'a str);

/// A device's latest event of an hour among those added.
#[derive(Debug, Clone, Copy)]
struct Latest<'a> {
    time_ms: i64,
    /// The hyphenated text, as stored in `events`: the tie-break.
    event_id: &'a str,
    values: DeviceValues,
}

/// The `device_hour` rows of a set of events, written with
/// [`DeviceHours::write`].
#[derive(Debug, Default)]
pub(super) struct DeviceHours<'a> {
    latest: HashMap<DeviceKey<'a>, Latest<'a>>,
    segments: HashMap<SegmentKey<'a>, Latest<'a>>,
    /// Migration 0007's backfill runs before `device_segment_hour` exists;
    /// migration 0010 fills that table itself.
    without_segments: bool,
}

/// Keeps the later of `latest` and `f`: by time, then by the id's text,
/// the metrics' "latest".
fn keep_later<'a>(latest: &mut Latest<'a>, f: Latest<'a>) {
    if (f.time_ms, f.event_id) > (latest.time_ms, latest.event_id) {
        *latest = f;
    }
}

impl<'a> DeviceHours<'a> {
    /// For migration 0007's backfill: `device_hour` only.
    pub(super) fn without_segments() -> Self {
        DeviceHours { without_segments: true, ..DeviceHours::default() }
    }

    /// Offers an event as its device's latest of its hour, and of its hour
    /// in its segment.
    pub(super) fn add(
        &mut self,
        project: &'a str,
        device_id: &'a str,
        time_ms: i64,
        event_id: &'a str,
        segment: Segment<'a>,
        values: DeviceValues,
    ) {
        let hour = time_ms.div_euclid(HOUR_MS) * 3600;
        let f = Latest { time_ms, event_id, values };
        self.latest.entry((project, hour, device_id)).and_modify(|latest| keep_later(latest, f)).or_insert(f);
        if !self.without_segments {
            let (app_version, os, network) = segment;
            self.segments
                .entry((project, hour, device_id, app_version, os, network))
                .and_modify(|latest| keep_later(latest, f))
                .or_insert(f);
        }
    }

    /// Upserts the rows, in key order so that consecutive upserts land on
    /// the same pages.
    pub(super) fn write(&self, conn: &Connection) -> Result<()> {
        let mut upsert = conn.prepare_cached(UPSERT_DEVICE_HOUR)?;
        let mut keys: Vec<&DeviceKey<'_>> = self.latest.keys().collect();
        keys.sort_unstable();
        for key in keys {
            let f = &self.latest[key];
            let (project, hour, device_id) = *key;
            upsert.execute(params![
                project,
                hour,
                device_id,
                f.time_ms,
                f.event_id,
                f.values.queue_depth,
                f.values.queue_bucket,
                f.values.staleness_bucket,
                f.values.never_synced
            ])?;
        }
        let mut upsert = conn.prepare_cached(UPSERT_DEVICE_SEGMENT_HOUR)?;
        let mut keys: Vec<&SegmentKey<'_>> = self.segments.keys().collect();
        keys.sort_unstable();
        for key in keys {
            let f = &self.segments[key];
            let (project, hour, device_id, app_version, os, network) = *key;
            upsert.execute(params![
                project,
                hour,
                device_id,
                app_version,
                os,
                network,
                f.time_ms,
                f.event_id,
                f.values.queue_depth,
                f.values.queue_bucket,
                f.values.staleness_bucket,
                f.values.never_synced
            ])?;
        }
        Ok(())
    }
}

/// The row-value comparison keeps the stored event when it is the later
/// one: an upsert never moves a device's latest event back in time.
const UPSERT_DEVICE_HOUR: &str = "INSERT INTO device_hour (project, hour, device_id, latest_time_ms, \
    latest_event_id, queue_depth, queue_bucket, staleness_bucket, never_synced)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
    ON CONFLICT (project, hour, device_id) DO UPDATE SET latest_time_ms = excluded.latest_time_ms,
        latest_event_id = excluded.latest_event_id, queue_depth = excluded.queue_depth,
        queue_bucket = excluded.queue_bucket, staleness_bucket = excluded.staleness_bucket,
        never_synced = excluded.never_synced
    WHERE (excluded.latest_time_ms, excluded.latest_event_id)
        > (device_hour.latest_time_ms, device_hour.latest_event_id)";

/// As [`UPSERT_DEVICE_HOUR`], per segment.
const UPSERT_DEVICE_SEGMENT_HOUR: &str = "INSERT INTO device_segment_hour (project, hour, device_id, \
    app_version, os, network, latest_time_ms, latest_event_id, queue_depth, queue_bucket, staleness_bucket, \
    never_synced)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
    ON CONFLICT (project, hour, device_id, app_version, os, network) DO UPDATE SET
        latest_time_ms = excluded.latest_time_ms, latest_event_id = excluded.latest_event_id,
        queue_depth = excluded.queue_depth, queue_bucket = excluded.queue_bucket,
        staleness_bucket = excluded.staleness_bucket, never_synced = excluded.never_synced
    WHERE (excluded.latest_time_ms, excluded.latest_event_id)
        > (device_segment_hour.latest_time_ms, device_segment_hour.latest_event_id)";
