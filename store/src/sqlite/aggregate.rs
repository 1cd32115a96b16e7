//! The read side on SQLite ([`crate::Aggregates`]): [`crate::Store::aggregate`]
//! over the dashboard rollups that `events.rs` writes.
//!
//! The per-event totals of a window are read the way ClickHouse reads them
//! ([`crate::pieces`]): whole hours and whole minutes from the rollups, the
//! partial minutes at the edges from `events`. The per-device values come
//! from `device_hour` when the grouping is the total or buckets of whole
//! hours and there are no filters (the table has no segment columns), for
//! every hour the window touches, partial ones included: an hour's latest
//! event says whether the device has one in the window's part of that hour,
//! except in the last hour, where devices with a later event are looked up
//! in `events` ([`Answer::add_device_hours`]); past hours' rows come from
//! an in-memory copy while their event count is unchanged
//! ([`super::device_cache`]). Those groupings with filters, and breakdowns
//! ([`Grouping::By`]), take them from `device_segment_hour` (migration 0010)
//! the same way, per device and segment, through [`super::segment_cache`]
//! ([`Answer::add_segment_hours`]): a device's latest event in a group is the
//! latest of its rows whose segment the filters select and whose value of
//! the breakdown's dimension is the group's. Buckets that are not whole
//! hours read the devices from `events`. Everything is merged here, in
//! Rust: sums add up, histograms add bucket by bucket, and each device's
//! latest event is the latest of its pieces'. The answer is the one
//! `events` alone gives, up to the order in which float weights are summed;
//! the conformance suite checks it against brute force.
//!
//! Also here: a device's own latest events; the device lists
//! ([`crate::DeviceList`]) are `lists.rs`'s.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};
use synchealth_schema::{ErrorKind, Network, ProjectName, StoredEvent, SyncEvent, Trigger};
use uuid::Uuid;

use super::device_cache::{DeviceCache, HourDevices, Names};
use super::segment_cache::{SegmentCache, SegmentHour};
use super::sql::{bound_query, decode, DeviceValues, Unit};
use super::{bits_u64, non_empty, project_of, time_of_ms, SqliteStore};
use crate::bucket_cache::{self, Bucket, BucketCache};
use crate::devices::{DeviceList, DeviceSummary};
use crate::metrics::{bump, entries, Aggregate, DeviceTally, Filters, GroupKey, Grouping, Query, LATE_ARRIVAL_MS};
use crate::pieces::{aligned, pieces, Piece, HOUR_MS};
use crate::{Error, Result};

/// How many raw rows one device lookup in `events` is worth, deciding between
/// the two for a window's last, partial hour. Since migration 0008 `events` has
/// no per-device index (it cost ingest more than anything else), so a lookup
/// reads every row of the part itself: the part is always read raw once any
/// device needs it. Lookups stay for a row that a concurrent insert added
/// after the count, and tests run both paths.
const LOOKUP_COST: i64 = i64::MAX;

/// One group's sums and histograms while pieces are added up.
#[derive(Debug, Default)]
struct Group {
    aggregate: Aggregate,
    durations: Vec<f64>,
    devices: DeviceTally,
    /// The devices counted so far, when devices are read from
    /// `device_hour` latest hour first (see [`Answer::add_device_hours`]).
    taken: Names,
}

impl Group {
    /// Counts one device by the values of its latest event in this group.
    fn count_device(&mut self, latest: DeviceValues, queue_threshold: u64) {
        let depth = u64::try_from(latest.queue_depth).unwrap_or(0);
        let staleness = (!latest.never_synced).then_some(latest.staleness_bucket);
        self.devices.add(depth, latest.queue_bucket, staleness, queue_threshold);
    }
}

/// A device's latest event among the raw rows seen so far.
#[derive(Debug, Clone, Default)]
struct DeviceLatest {
    time_ms: i64,
    event_id: String,
    values: DeviceValues,
}

/// A text column, borrowed from the row.
fn text<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r str> {
    row.get_ref(index)?.as_str().map_err(|e| Error::Corrupt(format!("column {index}: {e}")))
}

/// A blob column, borrowed from the row.
fn blob<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r [u8]> {
    row.get_ref(index)?.as_blob().map_err(|e| Error::Corrupt(format!("column {index}: {e}")))
}

/// The answer being built: groups by key, and, for raw rows, each (group,
/// device)'s latest event.
struct Answer {
    grouping: Grouping,
    step: i64,
    queue_threshold: u64,
    keys: Vec<GroupKey>,
    groups: Vec<Group>,
    by_time: HashMap<i64, usize>,
    by_segment: HashMap<String, usize>,
    /// Device ids as small numbers, so that the per-device map is keyed by
    /// two integers rather than a string per row.
    device_ids: HashMap<String, u32>,
    device_names: Vec<Box<str>>,
    devices: HashMap<(usize, u32), DeviceLatest>,
    /// [`LOOKUP_COST`], or another ratio in tests.
    lookup_cost: i64,
}

impl Answer {
    fn new(grouping: Grouping, queue_threshold: u32, lookup_cost: i64) -> Self {
        let step = match grouping {
            Grouping::Time { step_seconds } => i64::from(step_seconds.max(1)),
            Grouping::Total | Grouping::By(_) => 1,
        };
        Answer {
            grouping,
            step,
            queue_threshold: u64::from(queue_threshold),
            keys: Vec::new(),
            groups: Vec::new(),
            by_time: HashMap::new(),
            by_segment: HashMap::new(),
            device_ids: HashMap::new(),
            device_names: Vec::new(),
            devices: HashMap::new(),
            lookup_cost,
        }
    }

    /// The group of a row at `time_s` (Unix seconds) in `segment` (the
    /// grouping dimension's value, ignored otherwise).
    fn group(&mut self, time_s: i64, segment: &str) -> usize {
        let next = self.groups.len();
        let start = time_s.div_euclid(self.step) * self.step;
        let index = match self.grouping {
            Grouping::Total => *self.by_time.entry(0).or_insert(next),
            Grouping::Time { .. } => *self.by_time.entry(start).or_insert(next),
            Grouping::By(_) => match self.by_segment.get(segment) {
                Some(index) => *index,
                None => {
                    self.by_segment.insert(segment.to_string(), next);
                    next
                }
            },
        };
        if index == next {
            self.keys.push(match self.grouping {
                Grouping::Total => GroupKey::Total,
                Grouping::Time { .. } => GroupKey::Time(start),
                Grouping::By(_) => GroupKey::Segment(segment.to_string()),
            });
            self.groups.push(Group::default());
        }
        index
    }

    /// Offers the raw event of `row` as the latest of `device` in `group`;
    /// its columns from `first` on are the time, the event id, and the
    /// [`DeviceValues`].
    fn offer(&mut self, group: usize, device: &str, row: &Row<'_>, first: usize) -> Result<()> {
        let id = match self.device_ids.get(device) {
            Some(id) => *id,
            None => {
                let id = u32::try_from(self.device_names.len())
                    .map_err(|_| Error::Corrupt("more than 2^32 devices in one window".into()))?;
                self.device_ids.insert(device.to_string(), id);
                self.device_names.push(device.into());
                id
            }
        };
        let time_ms: i64 = row.get(first)?;
        let latest = self
            .devices
            .entry((group, id))
            .or_insert_with(|| DeviceLatest { time_ms: i64::MIN, ..DeviceLatest::default() });
        // The id only breaks ties, so it is read only then; its buffer is
        // reused.
        if time_ms > latest.time_ms || (time_ms == latest.time_ms && text(row, first + 1)? > latest.event_id.as_str()) {
            latest.time_ms = time_ms;
            latest.event_id.clear();
            latest.event_id.push_str(text(row, first + 1)?);
            latest.values = DeviceValues::from_row(row, first + 2)?;
        }
        Ok(())
    }

    /// Counts the devices offered so far. With `take`, they also become the
    /// groups' taken devices (they are the window's latest part).
    fn count_offered(&mut self, take: bool) {
        let mut taken: HashMap<usize, Vec<&str>> = HashMap::new();
        for ((g, id), latest) in std::mem::take(&mut self.devices) {
            self.groups[g].count_device(latest.values, self.queue_threshold);
            if take {
                if let Some(name) = self.device_names.get(id as usize) {
                    taken.entry(g).or_default().push(name);
                }
            }
        }
        for (g, mut names) in taken {
            names.sort_unstable_by(|a, b| b.cmp(a));
            let mut fresh = Names::default();
            for name in names {
                fresh.push(name.as_bytes());
            }
            self.groups[g].taken.merge(&fresh);
        }
    }

    /// Adds the rows of a per-segment rollup over `[from_ms, to_ms)`.
    fn add_rollup(&mut self, conn: &Connection, unit: Unit, query: &Query, from_ms: i64, to_ms: i64) -> Result<()> {
        let column = unit.column();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {column}, {segment}, events, attempts, successes, conflicted, late, durations
             FROM {table}
             WHERE project = :project AND {column} >= :from AND {column} < :to
               AND (:app_version IS NULL OR app_version = :app_version)
               AND (:os IS NULL OR os = :os)
               AND (:network IS NULL OR network = :network)",
            segment = segment_column(self.grouping),
            table = unit.table(),
        ))?;
        let params = params_of(query, from_ms.div_euclid(1000), to_ms.div_euclid(1000));
        let mut rows = bound_query(&mut stmt, &params)?;
        while let Some(row) = rows.next()? {
            let g = self.group(row.get(0)?, text(row, 1)?);
            let group = &mut self.groups[g];
            let a = &mut group.aggregate;
            a.events += u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0);
            a.attempts += row.get::<_, f64>(3)?;
            a.successes += row.get::<_, f64>(4)?;
            a.conflicted += row.get::<_, f64>(5)?;
            a.late_events += u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0);
            for (bucket, weight) in decode(blob(row, 7)?)? {
                bump(&mut group.durations, bucket, weight);
            }
        }
        Ok(())
    }

    /// The devices of the whole window from `device_hour`, for groupings
    /// whose buckets are whole hours and no filters.
    ///
    /// An hour's row is the device's latest event in that hour, so for the
    /// part `[a, b)` of the window inside the hour: a row before `a` means
    /// no event in the part, a row inside it is the part's latest event, and
    /// only a row at or after `b` (in the window's last hour, when the
    /// window ends inside it) needs `events`: that device is looked up, or,
    /// when there are many such devices, the whole part is read raw.
    ///
    /// Hours are taken latest first, so a device's first row in a group is
    /// its latest there: later rows for it are dismissed by a merge against
    /// the group's taken devices, in decreasing id order like the rows of
    /// each hour, with no map lookup per row. With `disjoint` (hourly
    /// buckets) every row is its own device and bucket and is counted at
    /// once. The hours' rows come from `cache` while their event counts are
    /// unchanged.
    fn add_device_hours(
        &mut self,
        conn: &Connection,
        cache: &DeviceCache,
        query: &Query,
        disjoint: bool,
    ) -> Result<()> {
        let (from, to) = (query.from_ms, query.to_ms);
        let project = query.project.as_str();
        let first_hour = from.div_euclid(HOUR_MS) * HOUR_MS;
        let last_hour = (to - 1).div_euclid(HOUR_MS) * HOUR_MS;
        let mut end = last_hour.saturating_add(HOUR_MS);
        if to < end {
            let after: i64 = conn
                .prepare_cached(
                    "SELECT count(*) FROM device_hour WHERE project = ?1 AND hour = ?2 AND latest_time_ms >= ?3",
                )?
                .query_row(params![project, last_hour / 1000, to], |row| row.get(0))?;
            if after > 0 {
                let part = (from.max(last_hour), to);
                let raw: i64 = conn
                    .prepare_cached(
                        "SELECT count(*) FROM events WHERE project = ?1 AND event_time_ms >= ?2 AND event_time_ms < ?3",
                    )?
                    .query_row(params![project, part.0, part.1], |row| row.get(0))?;
                if after.saturating_mul(self.lookup_cost) > raw {
                    self.add_events(conn, query, part, &[], true)?;
                    self.count_offered(!disjoint);
                    end = last_hour;
                }
            }
        }
        let stamps: Vec<(i64, i64)> = conn
            .prepare_cached(
                "SELECT hour, SUM(events) FROM rollup_hour WHERE project = ?1 AND hour >= ?2 AND hour < ?3
                 GROUP BY hour ORDER BY hour DESC",
            )?
            .query_map(params![project, first_hour / 1000, end / 1000], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut lookup = conn.prepare_cached(
            "SELECT queue_depth, queue_bucket, staleness_bucket, last_success_at_ms IS NULL
             FROM events
             WHERE project = ?1 AND device_id = ?2 AND event_time_ms >= ?3 AND event_time_ms < ?4
             ORDER BY event_time_ms DESC, event_id DESC LIMIT 1",
        )?;
        for (hour_s, events) in stamps {
            let hour = match cache.get(project, hour_s, events) {
                Some(hour) => hour,
                None => {
                    let hour = Arc::new(HourDevices::load(conn, project, hour_s, events)?);
                    cache.put(project, hour_s, Arc::clone(&hour));
                    hour
                }
            };
            let g = self.group(hour_s, "");
            let a = from.max(hour_s * 1000);
            let b = to.min(hour_s * 1000 + HOUR_MS);
            let mut fresh = Names::default();
            let mut cursor = 0;
            for (i, (time_ms, values)) in hour.rows.iter().enumerate() {
                if *time_ms < a {
                    continue;
                }
                let device = hour.names.get(i);
                if !disjoint {
                    let taken = &self.groups[g].taken;
                    while cursor < taken.len() && taken.get(cursor) > device {
                        cursor += 1;
                    }
                    if cursor < taken.len() && taken.get(cursor) == device {
                        continue;
                    }
                }
                let values = if *time_ms < b {
                    *values
                } else {
                    let device = std::str::from_utf8(device)
                        .map_err(|e| Error::Corrupt(format!("device_hour device_id: {e}")))?;
                    match lookup
                        .query_row(params![project, device, a, b], |r| Ok(DeviceValues::from_row(r, 0)))
                        .optional()?
                    {
                        Some(values) => values?,
                        None => continue,
                    }
                };
                if !disjoint {
                    fresh.push(device);
                }
                self.groups[g].count_device(values, self.queue_threshold);
            }
            if fresh.len() > 0 {
                self.groups[g].taken.merge(&fresh);
            }
        }
        Ok(())
    }

    /// The devices of the whole window from `device_segment_hour`, for
    /// groupings whose buckets are whole hours or a dimension's values, with
    /// or without filters.
    ///
    /// As in [`Answer::add_device_hours`], for the part `[a, b)` of the
    /// window inside an hour, a segment's row before `a` means no event of
    /// that segment in the part and a row inside it is the segment's latest
    /// there; when the window ends inside its last hour and a selected row
    /// is at or after the end, that part is read from `events` instead.
    /// A device's rows of one hour are adjacent: for each group, its latest
    /// among those the group takes is the greatest (time, event id text),
    /// so ties between segments break as on `events`. Hours are taken
    /// latest first, so across hours a device's first latest in a group is
    /// its latest there, and later hours' devices are dismissed by a merge
    /// against the group's taken devices, as in [`Answer::add_device_hours`].
    /// With `disjoint` (hourly buckets) a device's latest of an hour is
    /// counted at once.
    fn add_segment_hours(
        &mut self,
        conn: &Connection,
        cache: &SegmentCache,
        query: &Query,
        disjoint: bool,
    ) -> Result<()> {
        let (from, to) = (query.from_ms, query.to_ms);
        let project = query.project.as_str();
        let first_hour = from.div_euclid(HOUR_MS) * HOUR_MS;
        let last_hour = (to - 1).div_euclid(HOUR_MS) * HOUR_MS;
        let dimension = match self.grouping {
            Grouping::By(dimension) => Some(dimension),
            Grouping::Total | Grouping::Time { .. } => None,
        };
        let stamps: Vec<(i64, i64)> = conn
            .prepare_cached(
                "SELECT hour, SUM(events) FROM rollup_hour WHERE project = ?1 AND hour >= ?2 AND hour < ?3
                 GROUP BY hour ORDER BY hour DESC",
            )?
            .query_map(params![project, first_hour / 1000, (last_hour + HOUR_MS) / 1000], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        // (group, index of the device's latest entry there), for one device.
        let mut best: Vec<(usize, usize)> = Vec::new();
        for (hour_s, events) in stamps {
            let hour = match cache.get(project, hour_s, events) {
                Some(hour) => hour,
                None => {
                    let hour = Arc::new(SegmentHour::load(conn, project, hour_s, events)?);
                    cache.put(project, hour_s, Arc::clone(&hour));
                    hour
                }
            };
            let a = from.max(hour_s * 1000);
            let b = to.min(hour_s * 1000 + HOUR_MS);
            // Each segment's group, or none when the filters leave it out.
            let slots: Vec<Option<usize>> = hour
                .segments
                .iter()
                .map(|segment| {
                    segment
                        .matches(&query.filters)
                        .then(|| self.group(hour_s, dimension.map_or("", |d| segment.value(d))))
                })
                .collect();
            let selected = |e: &super::segment_cache::Entry| slots[e.segment as usize].is_some();
            if b < hour_s * 1000 + HOUR_MS && hour.entries.iter().any(|e| e.time_ms >= b && selected(e)) {
                self.add_events(conn, query, (a, b), &[], true)?;
                self.count_offered(!disjoint);
                continue;
            }
            let mut cursors = vec![0usize; self.groups.len()];
            let mut fresh = vec![Names::default(); self.groups.len()];
            let entries = &hour.entries;
            let mut i = 0;
            while i < entries.len() {
                let device = entries[i].device;
                best.clear();
                while i < entries.len() && entries[i].device == device {
                    let e = &entries[i];
                    let slot = slots[e.segment as usize].filter(|_| (a..b).contains(&e.time_ms));
                    if let Some(g) = slot {
                        match best.iter_mut().find(|(bg, _)| *bg == g) {
                            Some(slot) => {
                                if e.later_than(&entries[slot.1]) {
                                    slot.1 = i;
                                }
                            }
                            None => best.push((g, i)),
                        }
                    }
                    i += 1;
                }
                let name = hour.names.get(device as usize);
                for &(g, k) in &best {
                    if !disjoint {
                        let taken = &self.groups[g].taken;
                        let cursor = &mut cursors[g];
                        while *cursor < taken.len() && taken.get(*cursor) > name {
                            *cursor += 1;
                        }
                        if *cursor < taken.len() && taken.get(*cursor) == name {
                            continue;
                        }
                        fresh[g].push(name);
                    }
                    self.groups[g].count_device(entries[k].values, self.queue_threshold);
                }
            }
            for (g, names) in fresh.iter().enumerate() {
                if names.len() > 0 {
                    self.groups[g].taken.merge(names);
                }
            }
        }
        Ok(())
    }

    /// Reads `events` over `[from_ms, to_ms)` with the query's filters: the
    /// per-event sums of the rows inside one of `totals` (raw pieces of the
    /// totals), and, with `devices`, each device's latest event.
    fn add_events(
        &mut self,
        conn: &Connection,
        query: &Query,
        (from_ms, to_ms): (i64, i64),
        totals: &[(i64, i64)],
        devices: bool,
    ) -> Result<()> {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT event_time_ms, {segment}, device_id, event_time_ms, event_id, queue_depth, queue_bucket,
                    staleness_bucket, last_success_at_ms IS NULL, weight, success, conflicts > 0,
                    duration_bucket, received_at_ms
             FROM events
             WHERE project = :project AND event_time_ms >= :from AND event_time_ms < :to
               AND (:app_version IS NULL OR app_version = :app_version)
               AND (:os IS NULL OR os = :os)
               AND (:network IS NULL OR network = :network)",
            segment = segment_column(self.grouping),
        ))?;
        let params = params_of(query, from_ms, to_ms);
        let mut rows = bound_query(&mut stmt, &params)?;
        while let Some(row) = rows.next()? {
            let time_ms: i64 = row.get(0)?;
            let g = self.group(time_ms.div_euclid(1000), text(row, 1)?);
            if totals.iter().any(|(a, b)| (*a..*b).contains(&time_ms)) {
                let weight: f64 = row.get(9)?;
                let group = &mut self.groups[g];
                let a = &mut group.aggregate;
                a.events += 1;
                a.attempts += weight;
                if row.get::<_, bool>(10)? {
                    a.successes += weight;
                }
                if row.get::<_, bool>(11)? {
                    a.conflicted += weight;
                }
                if row.get::<_, i64>(13)? - time_ms > LATE_ARRIVAL_MS {
                    a.late_events += 1;
                }
                bump(&mut group.durations, row.get(12)?, weight);
            }
            if devices {
                self.offer(g, text(row, 2)?, row, 3)?;
            }
        }
        Ok(())
    }

    /// Every group's per-device figures, events or not: what a read for
    /// the devices alone gives.
    fn device_groups(mut self) -> Vec<(GroupKey, Aggregate)> {
        self.count_offered(false);
        self.keys
            .into_iter()
            .zip(self.groups)
            .map(|(key, group)| {
                let mut a = Aggregate::default();
                group.devices.write_into(&mut a);
                (key, a)
            })
            .collect()
    }

    /// The groups with events, in key order.
    fn finish(mut self) -> Vec<(GroupKey, Aggregate)> {
        self.count_offered(false);
        let mut out: Vec<(GroupKey, Aggregate)> = self
            .keys
            .into_iter()
            .zip(self.groups)
            .filter(|(_, group)| group.aggregate.events > 0)
            .map(|(key, group)| {
                let mut a = group.aggregate;
                a.duration_histogram = entries(group.durations);
                group.devices.write_into(&mut a);
                (key, a)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The column holding the grouping's segment value, or an empty string.
/// Only whitelisted column names reach the SQL text.
fn segment_column(grouping: Grouping) -> &'static str {
    match grouping {
        Grouping::By(dimension) => dimension.column(),
        Grouping::Total | Grouping::Time { .. } => "''",
    }
}

/// The project, a range and the filters, as named parameters. An absent
/// filter is NULL, so the statement text never depends on which are set.
fn params_of(query: &Query, from: i64, to: i64) -> Vec<(&'static str, Value)> {
    let Filters { app_version, os, network } = &query.filters;
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    vec![
        (":project", Value::Text(query.project.as_str().to_string())),
        (":from", Value::Integer(from)),
        (":to", Value::Integer(to)),
        (":app_version", text(app_version)),
        (":os", text(os)),
        (":network", network.map_or(Value::Null, |n| Value::Text(n.as_str().to_string()))),
    ]
}

/// [`crate::Store::aggregate`] for SQLite.
pub(super) fn aggregate(
    conn: &Connection,
    cache: &DeviceCache,
    segments: &SegmentCache,
    buckets: &BucketCache,
    query: &Query,
    grouping: Grouping,
) -> Result<Vec<(GroupKey, Aggregate)>> {
    aggregate_with(conn, (cache, segments, buckets), query, grouping, LOOKUP_COST)
}

fn aggregate_with(
    conn: &Connection,
    (cache, segments, buckets): (&DeviceCache, &SegmentCache, &BucketCache),
    query: &Query,
    grouping: Grouping,
    lookup_cost: i64,
) -> Result<Vec<(GroupKey, Aggregate)>> {
    if query.from_ms >= query.to_ms {
        return Ok(Vec::new());
    }
    // One snapshot for every piece, so that an insert committing meanwhile
    // is in all of them or in none (and the cache's stamps match its rows).
    let snapshot = conn.unchecked_transaction()?;
    let conn = &*snapshot;
    let mut answer = Answer::new(grouping, query.queue_threshold, lookup_cost);
    let mut raw_totals = Vec::new();
    for piece in pieces(query.from_ms, query.to_ms, grouping) {
        match piece {
            Piece::Hours(from, to) => answer.add_rollup(conn, Unit::Hour, query, from, to)?,
            Piece::Minutes(from, to) => answer.add_rollup(conn, Unit::Minute, query, from, to)?,
            Piece::Raw(from, to) => raw_totals.push((from, to)),
        }
    }
    // Hourly buckets never share a (bucket, device) between hours.
    let disjoint = grouping == Grouping::Time { step_seconds: 3600 };
    let whole_hours = aligned(grouping, 3600);
    if whole_hours && !matches!(grouping, Grouping::By(_)) && query.filters == Filters::default() {
        answer.add_device_hours(conn, cache, query, disjoint)?;
    } else if whole_hours {
        answer.add_segment_hours(conn, segments, query, disjoint)?;
    }
    let mut series = None;
    if whole_hours {
        for &range in &raw_totals {
            answer.add_events(conn, query, range, &[range], false)?;
        }
    } else if let Some(step_ms) = bucket_cache::serves(query, grouping) {
        // A sub-hour series: its per-device half from `crate::bucket_cache`,
        // stamped in this snapshot, and `events` only for what it lacks.
        for &range in &raw_totals {
            answer.add_events(conn, query, range, &[range], false)?;
        }
        let counts = bucket_counts(conn, query, step_ms)?;
        let plan = buckets.plan(query, step_ms, &counts);
        let mut read = Answer::new(grouping, query.queue_threshold, lookup_cost);
        for range in plan.reads() {
            read.add_events(conn, query, range, &[], true)?;
        }
        series = Some(buckets.answer(query, plan, &counts, read.device_groups()));
    } else {
        // One pass over the window serves both halves: the totals' raw
        // pieces are inside it.
        answer.add_events(conn, query, (query.from_ms, query.to_ms), &raw_totals, true)?;
    }
    snapshot.commit()?;
    let mut out = answer.finish();
    if let Some(series) = series {
        let mut devices: HashMap<GroupKey, Aggregate> = series.into_iter().collect();
        for (key, a) in &mut out {
            if let Some(figures) = devices.remove(key) {
                a.set_devices_from(figures);
            }
        }
    }
    Ok(out)
}

/// The stamps of a series' whole buckets: each one's event count in
/// `rollup_minute`, all segments.
fn bucket_counts(conn: &Connection, query: &Query, step_ms: i64) -> Result<HashMap<Bucket, u64>> {
    let Some((first, last)) = bucket_cache::stamp_span(query, step_ms) else { return Ok(HashMap::new()) };
    let mut stmt = conn.prepare_cached(
        "SELECT (minute / ?4) * ?4 * 1000, SUM(events) FROM rollup_minute
         WHERE project = ?1 AND minute >= ?2 AND minute < ?3 GROUP BY 1",
    )?;
    let mut rows =
        stmt.query(params![query.project.as_str(), first.div_euclid(1000), last.div_euclid(1000), step_ms / 1000])?;
    let mut counts = HashMap::new();
    while let Some(row) = rows.next()? {
        counts.insert(row.get::<_, i64>(0)?, u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0));
    }
    Ok(counts)
}

/// Every column of `events`, in the order of `events.rs`'s `INSERT_EVENT`
/// placeholders and of [`event_from_row`]'s indexes.
const EVENT_COLUMNS: &str = "project, event_id, device_id, event_time_ms, occurred_at_ms, \
    last_success_at_ms, sent_at_ms, received_at_ms, clock_skew_ms, success, duration_ms, \
    duration_bucket, conflicts, queue_depth, queue_bucket, staleness_ms, staleness_bucket, \
    app_version, os, os_version, network, device_model, sync_type, trigger, error_kind, \
    error_message, retries, records_up, records_down, bytes_up, bytes_down, sample_rate, weight, \
    queue_oldest_at_ms, queue_lag_ms, conflict_details, dimensions";

#[async_trait]
impl crate::Aggregates for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite", project = %query.project, ?grouping))]
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        let query = query.clone();
        let inner = Arc::clone(&self.inner);
        self.read(move |conn| {
            aggregate(conn, &inner.device_hours, &inner.segment_hours, &inner.buckets, &query, grouping)
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", project = %query.project, list = list.name(), limit))]
    async fn devices(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
        if query.from_ms >= query.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let query = query.clone();
        let inner = Arc::clone(&self.inner);
        self.read(move |conn| super::lists::devices(conn, &inner.device_runs, &query, list, limit)).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", %project, limit))]
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
        let project = project.as_str().to_string();
        let device_id = device_id.to_string();
        self.read(move |conn| device_events(conn, &project, &device_id, limit)).await
    }
}

/// A device's latest events, newest first: `device_hour` names the hours the
/// device has events in, and each is read through `events_by_time` until
/// `limit` are found (there is no per-device index on `events`: migration
/// 0008). Hours are disjoint, so newest-first per hour is newest-first overall.
fn device_events(conn: &Connection, project: &str, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let hours: Vec<i64> = conn
        .prepare_cached("SELECT hour FROM device_hour WHERE project = ?1 AND device_id = ?2 ORDER BY hour DESC")?
        .query_map(params![project, device_id], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM events
         WHERE project = ?1 AND event_time_ms >= ?2 AND event_time_ms < ?3 AND device_id = ?4
         ORDER BY event_time_ms DESC, event_id DESC LIMIT ?5"
    ))?;
    let mut events = Vec::new();
    for hour in hours {
        if events.len() >= limit {
            break;
        }
        let from_ms = hour * 1000;
        let left = i64::try_from(limit - events.len()).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![project, from_ms, from_ms + crate::pieces::HOUR_MS, device_id, left])?;
        while let Some(row) = rows.next()? {
            events.push(event_from_row(row)?);
        }
    }
    Ok(events)
}

fn event_from_row(row: &Row<'_>) -> Result<StoredEvent> {
    let project: String = row.get(0)?;
    let event_id: String = row.get(1)?;
    let event_id = Uuid::parse_str(&event_id).map_err(|e| Error::Corrupt(format!("event_id {event_id:?}: {e}")))?;
    let network: String = row.get(20)?;
    let network = Network::parse(&network).ok_or_else(|| Error::Corrupt(format!("network {network:?}")))?;
    let trigger: String = row.get(23)?;
    let trigger = match trigger.as_str() {
        "" => None,
        text => Some(Trigger::parse(text).ok_or_else(|| Error::Corrupt(format!("trigger {text:?}")))?),
    };
    let error_kind: String = row.get(24)?;
    let error_kind = match error_kind.as_str() {
        "" => None,
        text => Some(ErrorKind::parse(text).ok_or_else(|| Error::Corrupt(format!("error_kind {text:?}")))?),
    };
    let last_success_at = row.get::<_, Option<i64>>(5)?.map(time_of_ms).transpose()?;
    // Migration 0012's JSON columns, NULL when the event had none.
    let conflict_details = match row.get::<_, Option<String>>(35)? {
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("conflict_details {text:?}: {e}")))?
        }
        None => Vec::new(),
    };
    let dimensions = match row.get::<_, Option<String>>(36)? {
        Some(text) => serde_json::from_str(&text).map_err(|e| Error::Corrupt(format!("dimensions {text:?}: {e}")))?,
        None => Default::default(),
    };
    let event = SyncEvent {
        event_id,
        device_id: row.get(2)?,
        occurred_at: time_of_ms(row.get(4)?)?,
        success: row.get(9)?,
        duration_ms: row.get(10)?,
        conflicts: row.get(12)?,
        queue_depth: row.get(13)?,
        last_success_at,
        app_version: row.get(17)?,
        os: row.get(18)?,
        os_version: non_empty(row.get(19)?),
        network,
        device_model: non_empty(row.get(21)?),
        sync_type: non_empty(row.get(22)?),
        trigger,
        error_kind,
        error_message: non_empty(row.get(25)?),
        retries: row.get(26)?,
        records_up: bits_u64(row.get(27)?),
        records_down: bits_u64(row.get(28)?),
        bytes_up: bits_u64(row.get(29)?),
        bytes_down: bits_u64(row.get(30)?),
        sample_rate: row.get(31)?,
        conflict_details,
        queue_oldest_at: row.get::<_, Option<i64>>(33)?.map(time_of_ms).transpose()?,
        dimensions,
    };
    Ok(StoredEvent {
        project: project_of(&project)?,
        event,
        sent_at_ms: row.get(6)?,
        received_at_ms: row.get(7)?,
        clock_skew_ms: row.get(8)?,
        event_time_ms: row.get(3)?,
        staleness_ms: row.get(15)?,
        queue_lag_ms: row.get(34)?,
        weight: row.get(32)?,
        duration_bucket: row.get(11)?,
        queue_bucket: row.get(14)?,
        staleness_bucket: row.get(16)?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::pieces::MINUTE_MS;
    use synchealth_schema::Network;

    /// A small deterministic fleet over five hours: ties in time, sampled
    /// devices, events in every minute, inserted in batches out of order.
    fn fleet(project: &synchealth_schema::ProjectName, base_ms: i64) -> Vec<StoredEvent> {
        use synchealth_schema::{Network, SyncEvent};
        use time::OffsetDateTime;
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut events = Vec::new();
        let mut previous = base_ms;
        for i in 0..1500u64 {
            let device = next(30);
            let time_ms = if next(20) == 0 { previous } else { base_ms + next(5 * 3_600_000) as i64 };
            previous = time_ms;
            let event = SyncEvent {
                event_id: uuid::Uuid::from_u64_pair(next(u64::MAX), i),
                device_id: format!("dev-{device:02}"),
                occurred_at: at(time_ms),
                success: next(5) > 0,
                duration_ms: next(100_000),
                conflicts: u32::from(next(10) == 0),
                queue_depth: next(3000) as u32,
                last_success_at: (device % 7 != 0).then(|| at(time_ms - next(1_000_000) as i64)),
                app_version: "2.0.0".into(),
                os: ["android", "ios"][(device % 2) as usize].into(),
                network: [Network::Wifi, Network::Cellular][next(2) as usize],
                sample_rate: if device % 3 == 0 { 0.5 } else { 1.0 },
                ..super::super::sql::test_event()
            };
            let received = time_ms + 1_000 + next(2) as i64 * 600_000;
            events.push(StoredEvent::new(project.clone(), event, at(received - 10), at(received)));
        }
        events
    }

    /// The answer of `events` alone: every piece of the window read raw.
    fn brute_force(conn: &Connection, query: &Query, grouping: Grouping) -> Vec<(GroupKey, Aggregate)> {
        let mut answer = Answer::new(grouping, query.queue_threshold, LOOKUP_COST);
        let window = (query.from_ms, query.to_ms);
        answer.add_events(conn, query, window, &[window], true).unwrap();
        answer.finish()
    }

    fn assert_same(got: Vec<(GroupKey, Aggregate)>, reference: Vec<(GroupKey, Aggregate)>, context: &str) {
        assert_eq!(got.len(), reference.len(), "{context}");
        for ((k, a), (l, b)) in got.into_iter().zip(reference) {
            assert_eq!(k, l, "{context}");
            assert_eq!(a.normalized(), b.normalized(), "{context}, {k:?}");
        }
    }

    /// Events of a few devices that change segment (app version, network)
    /// within an hour, with many events of one device at the same time in
    /// different segments, whose ids decide which is the latest.
    fn segment_fleet(project: &synchealth_schema::ProjectName, base_ms: i64, seed: u64) -> Vec<StoredEvent> {
        use synchealth_schema::{Network, SyncEvent};
        use time::OffsetDateTime;
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let mut seed = seed;
        let mut next = move |n: u64| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) % n
        };
        let mut events = Vec::new();
        let (mut previous_time, mut previous_device) = (base_ms, 0);
        for i in 0..1200u64 {
            // One event in four repeats the previous one's device and time:
            // a tie between segments, broken by the id.
            let (device, time_ms) = if next(4) == 0 {
                (previous_device, previous_time)
            } else {
                (next(12), base_ms + next(4 * 3_600_000) as i64)
            };
            (previous_time, previous_device) = (time_ms, device);
            let event = SyncEvent {
                event_id: uuid::Uuid::from_u64_pair(next(u64::MAX), i),
                device_id: format!("seg-{device:02}"),
                occurred_at: at(time_ms),
                success: next(5) > 0,
                duration_ms: next(100_000),
                conflicts: u32::from(next(10) == 0),
                queue_depth: next(3000) as u32,
                last_success_at: (next(6) != 0).then(|| at(time_ms - next(1_000_000) as i64)),
                app_version: ["1.0.0", "1.1.0", "2.0.0"][next(3) as usize].into(),
                os: ["android", "ios"][(device % 2) as usize].into(),
                network: [Network::Wifi, Network::Cellular][next(2) as usize],
                sample_rate: if device % 3 == 0 { 0.5 } else { 1.0 },
                ..super::super::sql::test_event()
            };
            let received = time_ms + 1_000;
            events.push(StoredEvent::new(project.clone(), event, at(received - 10), at(received)));
        }
        events
    }

    fn segment_queries(project: &synchealth_schema::ProjectName, base: i64) -> Vec<Query> {
        let windows = [
            (base + 17 * MINUTE_MS + 13_500, base + 3 * HOUR_MS + 41 * MINUTE_MS),
            (base + HOUR_MS + 5 * MINUTE_MS, base + HOUR_MS + 50 * MINUTE_MS),
            (base + HOUR_MS, base + 3 * HOUR_MS),
            (base - HOUR_MS, base + 2 * HOUR_MS + 1),
            (base, base + 4 * HOUR_MS),
        ];
        let filters = [
            Filters::default(),
            Filters { os: Some("ios".into()), ..Filters::default() },
            Filters { network: Some(Network::Cellular), ..Filters::default() },
            Filters { app_version: Some("1.1.0".into()), network: Some(Network::Wifi), ..Filters::default() },
            Filters { app_version: Some("9.9.9".into()), ..Filters::default() },
        ];
        let mut queries = Vec::new();
        for (from_ms, to_ms) in windows {
            for filters in &filters {
                queries.push(Query {
                    project: project.clone(),
                    from_ms,
                    to_ms,
                    filters: filters.clone(),
                    queue_threshold: 1000,
                });
            }
        }
        queries
    }

    const SEGMENT_GROUPINGS: [Grouping; 6] = [
        Grouping::Total,
        Grouping::Time { step_seconds: 3600 },
        Grouping::Time { step_seconds: 7200 },
        Grouping::By(crate::metrics::Dimension::AppVersion),
        Grouping::By(crate::metrics::Dimension::Os),
        Grouping::By(crate::metrics::Dimension::Network),
    ];

    /// Filtered queries and breakdowns read through `device_segment_hour`
    /// and its cache give the answer of `events` alone, after every batch
    /// (later batches change hours already cached, old events among them).
    #[test]
    fn segment_hours_match_events_alone_after_every_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::migrate::migrate_all(&mut conn).unwrap();
        let project = synchealth_schema::ProjectName::parse("p").unwrap();
        let base = 480_000 * HOUR_MS;
        let (cache, segments) = (DeviceCache::default(), SegmentCache::default());
        let queries = segment_queries(&project, base);
        for (b, batch) in segment_fleet(&project, base, 7).chunks(300).enumerate() {
            super::super::events::insert_events(&mut conn, batch).unwrap();
            for query in &queries {
                for grouping in SEGMENT_GROUPINGS {
                    let got = aggregate(&conn, &cache, &segments, &BucketCache::default(), query, grouping).unwrap();
                    let context =
                        format!("batch {b}, {}..{}, {:?}, {grouping:?}", query.from_ms, query.to_ms, query.filters);
                    assert_same(got, brute_force(&conn, query, grouping), &context);
                }
            }
        }
    }

    /// Two events of one device at the same time in different segments:
    /// the one with the greater id text is its latest, whichever segment
    /// sorts first, and a filter or group that leaves it out takes the other.
    #[test]
    fn a_tie_between_segments_breaks_on_the_event_id_text() {
        use synchealth_schema::SyncEvent;
        use time::OffsetDateTime;
        let at = |ms: i64| OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
        let project = synchealth_schema::ProjectName::parse("p").unwrap();
        let base = 480_000 * HOUR_MS;
        let event = |device: &str, app_version: &str, network: Network, queue_depth: u32, id: u128| {
            let e = SyncEvent {
                event_id: uuid::Uuid::from_u128(id),
                device_id: device.into(),
                occurred_at: at(base + 10 * MINUTE_MS),
                queue_depth,
                last_success_at: Some(at(base)),
                app_version: app_version.into(),
                network,
                ..super::super::sql::test_event()
            };
            let received = at(base + 10 * MINUTE_MS + 1000);
            StoredEvent::new(project.clone(), e, received, received)
        };
        // "a": the later id is in the segment that sorts last; "b": first.
        // The ids differ first in a digit against a letter (9 < a), which
        // the text's order and a number's agree on only when read as hex.
        let events = vec![
            event("a", "1.0.0", Network::Cellular, 10, 0x9000_0000_0000_0000_0000_0000_0000_0000),
            event("a", "2.0.0", Network::Wifi, 20, 0xa000_0000_0000_0000_0000_0000_0000_0000),
            event("b", "1.0.0", Network::Cellular, 30, 0xb000_0000_0000_0000_0000_0000_0000_0001),
            event("b", "2.0.0", Network::Wifi, 40, 0xb000_0000_0000_0000_0000_0000_0000_0000),
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::migrate::migrate_all(&mut conn).unwrap();
        super::super::events::insert_events(&mut conn, &events).unwrap();
        let (cache, segments) = (DeviceCache::default(), SegmentCache::default());
        let whole = Query {
            project: project.clone(),
            from_ms: base,
            to_ms: base + HOUR_MS,
            filters: Filters { os: Some("ios".into()), ..Filters::default() },
            queue_threshold: 1000,
        };
        let total = aggregate(&conn, &cache, &segments, &BucketCache::default(), &whole, Grouping::Total).unwrap();
        assert_eq!(total.len(), 1);
        assert_eq!((total[0].1.devices, total[0].1.queue_sum, total[0].1.queue_max), (2, 20 + 30, 30));
        let by = aggregate(
            &conn,
            &cache,
            &segments,
            &BucketCache::default(),
            &whole,
            Grouping::By(crate::metrics::Dimension::Network),
        )
        .unwrap();
        let sums: Vec<(GroupKey, u64)> = by.into_iter().map(|(k, a)| (k, a.queue_sum)).collect();
        assert_eq!(
            sums,
            vec![(GroupKey::Segment("cellular".into()), 10 + 30), (GroupKey::Segment("wifi".into()), 20 + 40)]
        );
        for grouping in SEGMENT_GROUPINGS {
            for filters in [whole.filters.clone(), Filters { app_version: Some("2.0.0".into()), ..Filters::default() }]
            {
                let q = Query { filters, ..whole.clone() };
                let got = aggregate(&conn, &cache, &segments, &BucketCache::default(), &q, grouping).unwrap();
                assert_same(got, brute_force(&conn, &q, grouping), &format!("{grouping:?}, {:?}", q.filters));
            }
        }
    }

    /// Both ways of reading a window's last, partial hour (looking devices
    /// up, reading the part raw) give the answer of reading the devices
    /// from `events` alone, which a filter that every event matches forces.
    #[test]
    fn device_hours_with_lookups_or_a_raw_last_hour_match_events_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("t.db")).unwrap();
        super::super::migrate::migrate_all(&mut conn).unwrap();
        let project = synchealth_schema::ProjectName::parse("p").unwrap();
        let base = 480_000 * HOUR_MS;
        for batch in fleet(&project, base).chunks(100) {
            super::super::events::insert_events(&mut conn, batch).unwrap();
        }
        let windows = [
            (base + 17 * MINUTE_MS + 13_500, base + 4 * HOUR_MS + 41 * MINUTE_MS),
            (base + HOUR_MS + 5 * MINUTE_MS, base + HOUR_MS + 50 * MINUTE_MS),
            (base + HOUR_MS, base + 4 * HOUR_MS),
            (base - HOUR_MS, base + 2 * HOUR_MS + 1),
        ];
        let (cache, segments) = (DeviceCache::default(), SegmentCache::default());
        for (from_ms, to_ms) in windows {
            let query =
                Query { project: project.clone(), from_ms, to_ms, filters: Filters::default(), queue_threshold: 1000 };
            let everything =
                Query { filters: Filters { app_version: Some("2.0.0".into()), ..Filters::default() }, ..query.clone() };
            for grouping in
                [Grouping::Total, Grouping::Time { step_seconds: 3600 }, Grouping::Time { step_seconds: 7200 }]
            {
                let reference = brute_force(&conn, &everything, grouping);
                assert!(!reference.is_empty());
                for lookup_cost in [0, i64::MAX] {
                    let got = aggregate_with(
                        &conn,
                        (&cache, &segments, &BucketCache::default()),
                        &query,
                        grouping,
                        lookup_cost,
                    )
                    .unwrap();
                    let context = format!("{from_ms}..{to_ms}, {grouping:?}, cost {lookup_cost}");
                    assert_eq!(got.len(), reference.len(), "{context}");
                    for ((k, a), (l, b)) in got.into_iter().zip(reference.iter().cloned()) {
                        assert_eq!(k, l, "{context}");
                        assert_eq!(a.normalized(), b.normalized(), "{context}, {k:?}");
                    }
                }
            }
        }
    }
}
