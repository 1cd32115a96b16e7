//! The dashboard's per-device reads of whole hours, from memory.
//!
//! A day's queue-depth and staleness figures need every device's latest
//! event of every hour (`device_hour_latest`: 20,000 devices make 480,000
//! rows a day), and the overview reads them three times per refresh (the
//! window, the window before it, the hourly series). A past hour changes only
//! when a late event lands in it, so this cache keeps, per project and
//! hour, each device's latest time and packed values (12 bytes a device),
//! and checks the hours against `rollup_hour` on every read: an hour whose
//! event count moved (or that retention dropped) is loaded again. The store
//! writes a block's device rows before its events, so a count that moved
//! means the device rows are already there to load. The answer is the same
//! as the SQL path's: the conformance suite runs on both, including a late
//! event into an hour already read.
//!
//! A window's partial hour at its start is the end of an hour, so it comes
//! from that hour's entries too (a device's latest in the whole hour is also
//! its latest after any instant before it). The partial hour at the end of a
//! window ending now (the hour being written) comes from its entries as well,
//! but for the devices with an event after the end, read from `events`
//! ([`LastHour`]); that of a window ending earlier is a prefix of the hour's
//! events held by `edge_hour.rs`. Used for totals and hourly buckets
//! without segment filters, like `device_hour_latest` itself.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use clickhouse::Row;
use serde::Deserialize;

use super::dedup::events_filter;
use super::device_state::{LATEST_SQL, TOP_BIT};
use super::sql::{add_durations, group_key, only_devices, Sql};
use super::ClickHouseStore;
use crate::metrics::{Aggregate, DeviceTally, GroupKey, Grouping, Query};
use crate::pieces::{split, HOUR_MS};
use crate::Result;

/// Device entries kept across all projects (12 bytes each, plus the
/// device-id table): a week of 20,000 devices is 3.4 million.
const MAX_ENTRIES: usize = 6_000_000;
/// Longest window served from memory, in hours; longer ones use SQL.
pub(super) const MAX_HOURS: usize = 31 * 24;

/// A device's latest event in a piece of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Latest {
    pub(super) time_ms: i64,
    /// The packed values of `device_state.rs`.
    packed: u64,
}

impl Latest {
    /// From a latest-event text; `None` if it is not one.
    pub(super) fn parse(text: &str) -> Option<Latest> {
        let time = u64::from_str_radix(text.get(0..16)?, 16).ok()? ^ TOP_BIT;
        let packed = u64::from_str_radix(text.get(52..68)?, 16).ok()?;
        Some(Latest { time_ms: time as i64, packed })
    }

    fn queue_depth(self) -> u64 {
        (self.packed >> 25) & 0xffff_ffff
    }

    fn queue_bucket(self) -> u16 {
        ((self.packed >> 13) & 0xfff) as u16
    }

    fn staleness_bucket(self) -> u16 {
        ((self.packed >> 1) & 0xfff) as u16
    }

    fn never_synced(self) -> bool {
        self.packed & 1 == 1
    }

    /// Counts the device whose latest entry this is.
    pub(super) fn count_into(self, tally: &mut DeviceTally, threshold: u64) {
        let staleness = (!self.never_synced()).then(|| self.staleness_bucket());
        tally.add(self.queue_depth(), self.queue_bucket(), staleness, threshold);
    }
}

/// One hour's devices, each with its latest event of the hour.
type Entries = Arc<Vec<(u32, Latest)>>;

struct Hour {
    /// `rollup_hour`'s event count when the entries were loaded.
    events: u64,
    devices: Entries,
    /// The hour's per-event sums, all segments together.
    totals: HourTotals,
}

/// One hour of `rollup_hour`, summed over segments.
#[derive(Row, Deserialize, Default, Clone)]
struct HourTotals {
    hour: u32,
    events: u64,
    attempts: f64,
    successes: f64,
    conflicted: f64,
    late: u64,
    durations: (Vec<u16>, Vec<f64>),
}

impl HourTotals {
    fn add_to(&self, a: &mut Aggregate) {
        a.events += self.events;
        a.attempts += self.attempts;
        a.successes += self.successes;
        a.conflicted += self.conflicted;
        a.late_events += self.late;
        add_durations(
            &mut a.duration_histogram,
            self.durations.0.iter().copied().zip(self.durations.1.iter().copied()),
        );
    }
}

#[derive(Default)]
struct ProjectCache {
    /// Device ids, numbered in order of first sight.
    ids: HashMap<String, u32>,
    /// By hour start, Unix seconds.
    hours: BTreeMap<u32, Hour>,
}

impl ProjectCache {
    fn id(&mut self, device_id: String) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(device_id).or_insert(next)
    }
}

/// See the module doc.
#[derive(Default)]
pub(super) struct DeviceCache {
    projects: tokio::sync::Mutex<HashMap<String, ProjectCache>>,
}

impl std::fmt::Debug for DeviceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceCache")
    }
}

#[derive(Row, Deserialize)]
struct CountRow {
    hour: u32,
    events: u64,
}

#[derive(Row, Deserialize)]
struct EntryRow {
    hour: u32,
    device_id: String,
    latest: String,
}

#[derive(Row, Deserialize)]
struct EdgeRow {
    device_id: String,
    latest: String,
}

/// Most devices whose latest event of the window's last hour is after the
/// window's end for which that hour is still read from memory.
pub(super) const MAX_OVERFLOW: usize = 2_000;
/// How long before now a window may end and still read its last hour from
/// memory: ending within it, few devices can have events after the end.
const RECENT_MS: i64 = 60_000;

/// The hours a cache reads for a window, from `first` (the start of the
/// hour holding the window's start) to `cached_to` (the end of the hours
/// before the one holding its end), and how that last, partial hour is read.
pub(super) struct Plan {
    pub(super) hours: Vec<u32>,
    /// From memory ([`LastHour`]): the window ends now; `hours` holds it.
    pub(super) recent: bool,
    /// From `events`: the window ends mid-hour, earlier than now.
    pub(super) past_edge: bool,
}

pub(super) fn plan(query: &Query, first: i64, cached_to: i64) -> Plan {
    let partial_end = query.to_ms > cached_to;
    let recent = partial_end && query.to_ms >= unix_ms_now() - RECENT_MS;
    let end = if recent { cached_to + HOUR_MS } else { cached_to };
    let hours = (first..end).step_by(HOUR_MS as usize).map(hour_s).collect();
    Plan { hours, recent, past_edge: partial_end && !recent }
}

fn unix_ms_now() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// How the window's last, partial hour is read. Its entries hold each
/// device's latest event of the hour so far: the device's latest before the
/// window's end too, unless it is at or after the end. A window ending now
/// has next to none of those (an event stored while the answer is computed),
/// so the hour still being written comes from memory like the others, and
/// only those devices' latest before the end are read from `events`. (Its
/// rows, written before their events, may hold a block whose events are
/// being stored at that moment, as a refreshed past hour may.)
enum LastHour {
    /// No entry at or after the end: the entries are the piece.
    Complete(Vec<(u32, Latest)>),
    /// The entries before the end, and the devices to read from `events`.
    Overflow(Vec<(u32, Latest)>, Vec<String>),
    /// Too many entries after the end (a window ending in the past):
    /// the whole piece from `events`.
    FromEvents,
}

fn last_hour(cache: &ProjectCache, hour: u32, to_ms: i64) -> LastHour {
    let Some(cached) = cache.hours.get(&hour) else {
        return LastHour::Complete(Vec::new());
    };
    let (kept, after): (Vec<_>, Vec<_>) = cached.devices.iter().partition(|(_, latest)| latest.time_ms < to_ms);
    if after.is_empty() {
        return LastHour::Complete(kept);
    }
    if after.len() > MAX_OVERFLOW {
        return LastHour::FromEvents;
    }
    let names: HashMap<u32, &String> = {
        let wanted: std::collections::HashSet<u32> = after.iter().map(|(d, _)| *d).collect();
        cache.ids.iter().filter(|(_, id)| wanted.contains(id)).map(|(name, id)| (*id, name)).collect()
    };
    let devices = after.iter().filter_map(|(d, _)| names.get(d).map(|n| (*n).clone())).collect();
    LastHour::Overflow(kept, devices)
}

/// The whole hours of a window the cache serves: totals and hourly buckets
/// without segment filters, with at least one whole hour and at most
/// [`MAX_HOURS`].
pub(super) fn serves(query: &Query, grouping: Grouping) -> Option<(i64, i64)> {
    let hourly = match grouping {
        Grouping::Total => true,
        Grouping::Time { step_seconds } => step_seconds.max(1) % 3600 == 0,
        Grouping::By(_) => false,
    };
    if !hourly || query.filters != crate::metrics::Filters::default() {
        return None;
    }
    let (whole_from, whole_to) = split(query.from_ms, query.to_ms, HOUR_MS).0?;
    let first = if query.from_ms < whole_from { whole_from - HOUR_MS } else { whole_from };
    ((whole_to - first) / HOUR_MS <= MAX_HOURS as i64).then_some((whole_from, whole_to))
}

/// The bucket start of an hour (or of a time in it) under `grouping`.
pub(super) fn bucket(grouping: Grouping, hour_s: u32) -> u64 {
    match grouping {
        Grouping::Time { step_seconds } => {
            let step = step_seconds.max(1);
            u64::from(hour_s / step * step)
        }
        Grouping::Total | Grouping::By(_) => 0,
    }
}

pub(super) fn hour_s(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX) / 3600 * 3600
}

impl ClickHouseStore {
    /// Each group's per-device figures (from memory and the window's last
    /// partial hour) and the per-event sums of its whole hours (the caller
    /// adds those of the partial hours); `None` when the query is not one
    /// the cache serves (see [`serves`]), and the caller reads SQL instead.
    pub(super) async fn cached_devices(
        &self,
        query: &Query,
        grouping: Grouping,
    ) -> Result<Option<Vec<(GroupKey, Aggregate)>>> {
        let Some((whole_from, whole_to)) = serves(query, grouping) else {
            return Ok(None);
        };
        // The hour before the whole ones holds the window's first partial
        // hour; a window ending now has its last one from memory too (see
        // `LastHour`), one ending earlier from `edge_hour.rs`, alongside the
        // refresh.
        let first = if query.from_ms < whole_from { whole_from - HOUR_MS } else { whole_from };
        let Plan { hours, recent, past_edge } = plan(query, first, whole_to);
        let project = query.project.as_str();
        let past_edge = async {
            if past_edge {
                self.past_edge(query, whole_to).await
            } else {
                Ok(Vec::new())
            }
        };
        let (past_edge, ()) = tokio::try_join!(past_edge, self.refresh(project, &hours))?;

        // Under the lock only long enough to take the hours and number the
        // edge's devices (and, rarely, read the devices of the last hour that
        // have events after the end); three reads of one refresh run side by side.
        let mut projects = self.device_cache.projects.lock().await;
        let cache = projects.entry(project.to_string()).or_default();
        let held: Vec<(u64, Entries)> = hours
            .iter()
            .filter(|h| i64::from(**h) * 1000 < whole_to)
            .filter_map(|h| cache.hours.get(h).map(|cached| (bucket(grouping, *h), Arc::clone(&cached.devices))))
            .collect();
        let mut sums: BTreeMap<u64, Aggregate> = BTreeMap::new();
        for hour in hours.iter().filter(|h| (whole_from..whole_to).contains(&(i64::from(**h) * 1000))) {
            if let Some(cached) = cache.hours.get(hour) {
                cached.totals.add_to(sums.entry(bucket(grouping, *hour)).or_default());
            }
        }
        let (mut edge, rows) = match recent.then(|| last_hour(cache, hour_s(whole_to), query.to_ms)) {
            None => (Vec::new(), past_edge),
            Some(LastHour::Complete(entries)) => (entries, Vec::new()),
            Some(LastHour::Overflow(kept, devices)) => (kept, self.end_edge(query, whole_to, Some(&devices)).await?),
            Some(LastHour::FromEvents) => (Vec::new(), self.end_edge(query, whole_to, None).await?),
        };
        edge.extend(rows.into_iter().map(|(device_id, latest)| (cache.id(device_id), latest)));
        let edge_group = bucket(grouping, hour_s(whole_to));
        let devices = cache.ids.len();
        drop(projects);

        // Pieces in time order, so that the last entry seen of a device in a
        // group is its latest there. A group of one hour holds each device
        // once already.
        let threshold = u64::from(query.queue_threshold);
        let pieces =
            held.iter().map(|(group, entries)| (*group, entries.as_slice())).chain([(edge_group, edge.as_slice())]);
        let mut groups: BTreeMap<u64, DeviceTally> = BTreeMap::new();
        if grouping == (Grouping::Time { step_seconds: 3600 }) {
            for (group, entries) in pieces {
                let figures = groups.entry(group).or_default();
                for &(_, entry) in entries.iter().filter(|(_, e)| e.time_ms >= query.from_ms) {
                    entry.count_into(figures, threshold);
                }
            }
        } else {
            let mut latest: Vec<Option<Latest>> = vec![None; devices];
            let mut current: Option<u64> = None;
            let mut flush = |group: Option<u64>, latest: &mut Vec<Option<Latest>>| {
                if let Some(group) = group {
                    let figures = groups.entry(group).or_default();
                    for entry in latest.iter_mut().filter_map(Option::take) {
                        entry.count_into(figures, threshold);
                    }
                }
            };
            for (group, entries) in pieces {
                if current != Some(group) {
                    flush(current, &mut latest);
                    current = Some(group);
                }
                for &(device, entry) in entries.iter().filter(|(_, e)| e.time_ms >= query.from_ms) {
                    if let Some(slot) = latest.get_mut(device as usize) {
                        *slot = Some(entry);
                    }
                }
            }
            flush(current, &mut latest);
        }
        for (group, figures) in groups {
            figures.write_into(sums.entry(group).or_default());
        }
        Ok(Some(sums.into_iter().map(|(group, a)| (group_key(grouping, group, String::new()), a)).collect()))
    }

    /// The last, partial hour of a window ending in the past, starting at
    /// `hour_ms`: from `edge_hour.rs` while it holds the hour, else from
    /// `events`.
    async fn past_edge(&self, query: &Query, hour_ms: i64) -> Result<Vec<(String, Latest)>> {
        let hour = hour_s(hour_ms);
        let events = self.hour_counts(query.project.as_str(), hour, hour).await?.get(&hour).copied().unwrap_or(0);
        match self.past_edge_from_memory(query, hour, events).await? {
            Some(rows) => {
                Ok(rows.into_iter().map(|r| (r.device_id, Latest { time_ms: r.time_ms, packed: r.packed })).collect())
            }
            None => self.end_edge(query, hour_ms, None).await,
        }
    }

    /// The per-device figures of a sub-hour series' partial bucket (the
    /// piece `[query.from_ms, query.to_ms)` of one bucket) from
    /// `edge_hour.rs`, when the series has no segment filter and the piece
    /// lies in one hour that has ended: the bucket a window starts in, six
    /// hours ago for a 6-hour series, is that of the hour the overview's
    /// previous window ends in, so both read one copy. `None` otherwise,
    /// and the caller reads `events`.
    pub(super) async fn bucket_edge(
        &self,
        query: &Query,
        grouping: Grouping,
    ) -> Result<Option<Vec<(GroupKey, Aggregate)>>> {
        let hour = hour_s(query.from_ms);
        let hour_end_ms = i64::from(hour) * 1000 + HOUR_MS;
        let ended = query.to_ms <= hour_end_ms && hour_end_ms <= unix_ms_now();
        if query.filters != crate::metrics::Filters::default() || !ended || query.from_ms >= query.to_ms {
            return Ok(None);
        }
        let events = self.hour_counts(query.project.as_str(), hour, hour).await?.get(&hour).copied().unwrap_or(0);
        let Some(rows) = self.past_edge_from_memory(query, hour, events).await? else {
            return Ok(None);
        };
        if rows.is_empty() {
            // As from SQL: a bucket without events has no row.
            return Ok(Some(Vec::new()));
        }
        let mut tally = DeviceTally::default();
        for row in rows {
            Latest { time_ms: row.time_ms, packed: row.packed }
                .count_into(&mut tally, u64::from(query.queue_threshold));
        }
        let mut figures = Aggregate::default();
        tally.write_into(&mut figures);
        let group = bucket(grouping, u32::try_from(query.from_ms.div_euclid(1000)).unwrap_or(0));
        Ok(Some(vec![(group_key(grouping, group, String::new()), figures)]))
    }

    /// Each device's latest event in `[from_ms, to)`, inside one hour, from
    /// `events`; only of `devices` if given.
    async fn end_edge(&self, query: &Query, from_ms: i64, devices: Option<&[String]>) -> Result<Vec<(String, Latest)>> {
        if from_ms >= query.to_ms {
            return Ok(Vec::new());
        }
        let (mut filter, mut args) = events_filter(query, from_ms, query.to_ms);
        if let Some(devices) = devices {
            let (only, names) = only_devices(devices);
            filter.push_str(&only);
            args.extend(names);
        }
        let mut sql = Sql::default();
        sql.push_with(
            &format!(
                "SELECT device_id, max({LATEST_SQL}) AS latest FROM events WHERE {filter} AND (device_id, event_time_ms) IN \
                 (SELECT device_id, max(event_time_ms) FROM events WHERE {filter} GROUP BY device_id) GROUP BY device_id"
            ),
            [args.clone(), args].concat(),
        );
        let rows = sql.query(&self.reader).fetch_all::<EdgeRow>().await?;
        Ok(rows.into_iter().filter_map(|row| Some((row.device_id, Latest::parse(&row.latest)?))).collect())
    }

    /// `select` with its `{project_and_hours}` the condition that a row is
    /// of `project` and one of `hours` (Unix seconds), bound.
    pub(super) fn in_hours(&self, select: &str, project: &str, hours: &[u32]) -> clickhouse::query::Query {
        let placeholders = vec!["?"; hours.len()].join(", ");
        let condition = format!("project = ? AND toUInt32(hour) IN ({placeholders})");
        let query = self.reader.query(&select.replace("{project_and_hours}", &condition)).bind(project);
        hours.iter().fold(query, |q, h| q.bind(h))
    }

    /// Each hour's event count in `rollup_hour`, from `first` to `last`
    /// (hour starts, Unix seconds, inclusive): what a cached hour is stamped
    /// with, since every insert into an hour moves it.
    pub(super) async fn hour_counts(&self, project: &str, first: u32, last: u32) -> Result<HashMap<u32, u64>> {
        Ok(self
            .reader
            .query(
                "SELECT toUInt32(hour) AS hour, toUInt64(sum(events)) AS events FROM rollup_hour \
                 WHERE project = ? AND hour >= toDateTime(?) AND hour <= toDateTime(?) GROUP BY hour",
            )
            .bind(project)
            .bind(first)
            .bind(last)
            .fetch_all::<CountRow>()
            .await?
            .into_iter()
            .map(|r| (r.hour, r.events))
            .collect())
    }

    /// Brings `hours` of `project` up to date: loads those whose event count
    /// in `rollup_hour` is not the one they were loaded at, forgets those
    /// without events, and keeps the cache within [`MAX_ENTRIES`].
    #[tracing::instrument(skip_all, fields(project, hours = hours.len()))]
    async fn refresh(&self, project: &str, hours: &[u32]) -> Result<()> {
        let (Some(&first), Some(&last)) = (hours.first(), hours.last()) else {
            return Ok(());
        };
        let mut projects = self.device_cache.projects.lock().await;
        let counts = self.hour_counts(project, first, last).await?;
        let cache = projects.entry(project.to_string()).or_default();
        let stale = stale_hours(hours, &counts, |h| cache.hours.get(&h).map(|cached| cached.events));
        if stale.is_empty() {
            return Ok(());
        }
        for hour in &stale {
            cache.hours.remove(hour);
        }
        let rows = self
            .in_hours(
                "SELECT toUInt32(hour) AS hour, device_id, finalizeAggregation(latest) AS latest \
                 FROM device_hour_latest FINAL WHERE {project_and_hours}",
                project,
                &stale,
            )
            .fetch_all::<EntryRow>()
            .await?;
        let mut totals: HashMap<u32, HourTotals> = self
            .in_hours(
                "SELECT toUInt32(hour) AS hour, toUInt64(sum(events)), toFloat64(sum(attempts)), \
                 toFloat64(sum(successes)), toFloat64(sum(conflicted)), toUInt64(sum(late)), \
                 sumMap(durationMap.bucket, durationMap.weight) FROM rollup_hour \
                 WHERE {project_and_hours} GROUP BY hour",
                project,
                &stale,
            )
            .fetch_all::<HourTotals>()
            .await?
            .into_iter()
            .map(|t| (t.hour, t))
            .collect();
        let mut loaded: BTreeMap<u32, Vec<(u32, Latest)>> = BTreeMap::new();
        for row in rows {
            if let Some(entry) = Latest::parse(&row.latest) {
                let device = cache.id(row.device_id);
                loaded.entry(row.hour).or_default().push((device, entry));
            }
        }
        for hour in stale {
            let events = counts.get(&hour).copied().unwrap_or(0);
            if events > 0 {
                let devices = loaded.remove(&hour).unwrap_or_default();
                let totals = totals.remove(&hour).unwrap_or_default();
                cache.hours.insert(hour, Hour { events, devices: Arc::new(devices), totals });
            }
        }
        evict(&mut projects, project, hours);
        Ok(())
    }
}

/// The hours of `hours` to load again: those whose event count now
/// (`counts`, none meaning 0) is not the one they were loaded at
/// (`loaded_at`), and those not loaded that have events.
pub(super) fn stale_hours(
    hours: &[u32],
    counts: &HashMap<u32, u64>,
    loaded_at: impl Fn(u32) -> Option<u64>,
) -> Vec<u32> {
    let changed = |h: &u32| {
        let now = counts.get(h).copied().unwrap_or(0);
        loaded_at(*h).map_or(now > 0, |then| then != now)
    };
    hours.iter().copied().filter(changed).collect()
}

/// Drops the oldest hours not in use until the cache holds at most
/// [`MAX_ENTRIES`], and a project's device-id table once it is mostly ids
/// of devices no cached hour holds.
fn evict(projects: &mut HashMap<String, ProjectCache>, in_use: &str, hours: &[u32]) {
    let entries = |projects: &HashMap<String, ProjectCache>| -> usize {
        projects.values().flat_map(|p| p.hours.values()).map(|h| h.devices.len()).sum()
    };
    let mut total = entries(projects);
    while total > MAX_ENTRIES {
        let oldest = projects
            .iter()
            .flat_map(|(name, p)| p.hours.keys().map(move |h| (*h, name.clone())))
            .filter(|(h, name)| name != in_use || !hours.contains(h))
            .min();
        let Some((hour, name)) = oldest else { break };
        if let Some(removed) = projects.get_mut(&name).and_then(|p| p.hours.remove(&hour)) {
            total -= removed.devices.len();
        }
    }
    projects.retain(|_, p| !p.hours.is_empty() || p.ids.is_empty());
    for p in projects.values_mut() {
        let held: usize = p.hours.values().map(|h| h.devices.len()).sum();
        if p.ids.len() > 4 * held.max(250_000) {
            *p = ProjectCache::default();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_latest_text_parses_back_to_its_time_and_values() {
        let text = format!(
            "{:016X}{}{:016X}",
            (1_764_410_400_123_u64) ^ TOP_BIT,
            "00000000-0000-4000-8000-00000000000a",
            (7_u64 << 25) | (5 << 13) | (9 << 1) | TOP_BIT
        );
        let latest = Latest::parse(&text).unwrap();
        assert_eq!(latest.time_ms, 1_764_410_400_123);
        assert_eq!(
            (latest.queue_depth(), latest.queue_bucket(), latest.staleness_bucket(), latest.never_synced()),
            (7, 5, 9, false)
        );
        assert_eq!(Latest::parse("short"), None);
    }

    #[test]
    fn hours_fall_into_the_buckets_of_their_step() {
        let day = 1_764_374_400; // a midnight
        assert_eq!(bucket(Grouping::Time { step_seconds: 3600 }, day + 7200), u64::from(day + 7200));
        assert_eq!(bucket(Grouping::Time { step_seconds: 21_600 }, day + 7200), u64::from(day));
        assert_eq!(bucket(Grouping::Total, day + 7200), 0);
        assert_eq!(hour_s(i64::from(day) * 1000 + 3_599_999), day);
    }
}
