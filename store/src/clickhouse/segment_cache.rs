//! The dashboard's filtered and broken-down per-device reads of whole
//! hours, from memory: what `device_cache.rs` is for the unfiltered ones.
//!
//! A segment filter (app version, OS, network) or a breakdown by one of them
//! needs each device's latest event among the matching events only. Read
//! from `events`, that is every event of the window (seconds at ten million
//! a day); `device_segment_hour` (migration 0010) holds it per hour, device
//! and segment, and this cache keeps those rows per project and hour,
//! stamped, as in `device_cache.rs`, with the hour's event count in
//! `rollup_hour`, which every insert moves (the store writes the device rows
//! before the events, so a moved count means the rows are there to load).
//!
//! A filter keeps the entries of the matching segments, a breakdown groups
//! them by the dimension's value, and a device's latest in a group is the
//! greatest (time, event id) among its entries there. The id is kept (16 of
//! an entry's 40 bytes) because two segments of one device can hold events
//! of the same millisecond, and the reads break that tie on the id's text,
//! which orders as its bytes do.
//!
//! A window's pieces: the hour holding its start (only entries at or after
//! the start: a device's latest in that hour, if at or after an instant, is
//! also its latest after it, and if before, the device has no event after
//! it), the hours after it up to the hour holding the end, all from memory,
//! then that last partial hour: from memory too for a window ending now, but
//! for the devices with an event after the end (`LastHour`), from `events`
//! for a window ending earlier. The conformance suite checks
//! the answers against brute force with filters, breakdowns, ties and late
//! events into an hour already read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::dedup::events_filter;
use super::device_cache::{bucket, hour_s, plan, stale_hours, Latest, Plan, MAX_HOURS, MAX_OVERFLOW};
use super::device_state::LATEST_SQL;
use super::sql::{group_key, only_devices, Sql};
use super::ClickHouseStore;
use crate::metrics::{Aggregate, DeviceTally, Dimension, Filters, GroupKey, Grouping, Query};
use crate::pieces::HOUR_MS;
use crate::Result;

/// Entries kept across all projects, 40 bytes each (a day at ten million
/// events and 20,000 devices, mostly one or two segments a device-hour, is
/// some 700,000).
const MAX_ENTRIES: usize = 6_000_000;
/// Most (device, group) slots one breakdown may take, 40 bytes each; a
/// breakdown over more is read from SQL.
const MAX_SLOTS: usize = 16_000_000;

/// A device's latest event in one segment of a piece of a window.
#[derive(Debug, Clone, Copy)]
struct Entry {
    device: u32,
    segment: u32,
    latest: Latest,
    /// The event id, whose order is its text's.
    id: u128,
}

impl Entry {
    fn order(&self) -> (i64, u128) {
        (self.latest.time_ms, self.id)
    }
}

type Entries = Arc<Vec<Entry>>;

struct Hour {
    /// `rollup_hour`'s event count when the entries were loaded.
    events: u64,
    entries: Entries,
}

/// A segment: app version, OS, network (the order of [`Dimension::ALL`]).
type Segment = [String; 3];

#[derive(Default)]
struct ProjectCache {
    /// Device ids, numbered in order of first sight.
    devices: HashMap<String, u32>,
    /// Segments, numbered in order of first sight; `segments[n]` is number n.
    numbers: HashMap<Segment, u32>,
    segments: Vec<Segment>,
    /// By hour start, Unix seconds.
    hours: BTreeMap<u32, Hour>,
}

impl ProjectCache {
    /// The entry of a latest-event text, numbering its device and segment;
    /// `None` if the text is not one.
    fn entry(&mut self, device_id: String, segment: Segment, latest: &str) -> Option<Entry> {
        let parsed = Latest::parse(latest)?;
        let id = Uuid::parse_str(latest.get(16..52)?).ok()?.as_u128();
        let next = self.devices.len() as u32;
        let device = *self.devices.entry(device_id).or_insert(next);
        let segment = match self.numbers.get(&segment) {
            Some(n) => *n,
            None => {
                let n = self.segments.len() as u32;
                self.segments.push(segment.clone());
                self.numbers.insert(segment, n);
                n
            }
        };
        Some(Entry { device, segment, latest: parsed, id })
    }

    fn entries(&self) -> usize {
        self.hours.values().map(|h| h.entries.len()).sum()
    }
}

/// See the module doc.
#[derive(Default)]
pub(super) struct SegmentCache {
    projects: tokio::sync::Mutex<HashMap<String, ProjectCache>>,
}

impl std::fmt::Debug for SegmentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SegmentCache")
    }
}

#[derive(Row, Deserialize)]
struct EntryRow {
    hour: u32,
    device_id: String,
    app_version: String,
    os: String,
    network: String,
    latest: String,
}

#[derive(Row, Deserialize)]
struct EdgeRow {
    device_id: String,
    app_version: String,
    os: String,
    network: String,
    latest: String,
}

/// The hours `[first, to)` (Unix ms) a filtered or broken-down query reads
/// from memory: totals, breakdowns and buckets of whole hours with a segment
/// filter or by a segment, when the window reaches past the end of the hour
/// holding its start, for at most [`MAX_HOURS`]. Unfiltered totals and
/// buckets are `device_cache.rs`'s.
pub(super) fn serves(query: &Query, grouping: Grouping) -> Option<(i64, i64)> {
    let hourly = match grouping {
        Grouping::Total | Grouping::By(_) => true,
        Grouping::Time { step_seconds } => step_seconds.max(1) % 3600 == 0,
    };
    let segmented = query.filters != Filters::default() || matches!(grouping, Grouping::By(_));
    if !hourly || !segmented || query.from_ms < 0 {
        return None;
    }
    let first = query.from_ms.div_euclid(HOUR_MS) * HOUR_MS;
    let to = query.to_ms.div_euclid(HOUR_MS) * HOUR_MS;
    (to > first && (to - first) / HOUR_MS <= MAX_HOURS as i64).then_some((first, to))
}

/// How the window's last, partial hour is read (`device_cache.rs`'s
/// `LastHour`, per device and segment): an entry at or after the end makes
/// its device's entries of the hour unusable, and that device is read from
/// `events`, all its segments.
enum LastHour {
    Complete(Vec<Entry>),
    Overflow(Vec<Entry>, Vec<String>),
    FromEvents,
}

fn last_hour(cache: &ProjectCache, hour: u32, to_ms: i64) -> LastHour {
    let Some(cached) = cache.hours.get(&hour) else {
        return LastHour::Complete(Vec::new());
    };
    let after: HashSet<u32> = cached.entries.iter().filter(|e| e.latest.time_ms >= to_ms).map(|e| e.device).collect();
    let kept = cached.entries.iter().filter(|e| !after.contains(&e.device)).copied().collect();
    if after.is_empty() {
        return LastHour::Complete(kept);
    }
    if after.len() > MAX_OVERFLOW {
        return LastHour::FromEvents;
    }
    let devices = cache.devices.iter().filter(|(_, d)| after.contains(d)).map(|(name, _)| name.clone()).collect();
    LastHour::Overflow(kept, devices)
}

fn matches(segment: &Segment, filters: &Filters) -> bool {
    let is = |wanted: Option<&str>, value: &String| wanted.is_none_or(|w| w == value);
    is(filters.app_version.as_deref(), &segment[0])
        && is(filters.os.as_deref(), &segment[1])
        && is(filters.network.map(|n| n.as_str()), &segment[2])
}

/// Each segment's group (`None`: filtered out) and each group's label (the
/// dimension's value in a breakdown, else one unnamed group).
fn groups(segments: &[Segment], filters: &Filters, grouping: Grouping) -> (Vec<Option<u32>>, Vec<String>) {
    let column = match grouping {
        Grouping::By(dimension) => Dimension::ALL.iter().position(|d| *d == dimension),
        Grouping::Total | Grouping::Time { .. } => None,
    };
    let mut labels: Vec<String> = Vec::new();
    let mut numbers: HashMap<&str, u32> = HashMap::new();
    let mut of = Vec::with_capacity(segments.len());
    for segment in segments {
        if !matches(segment, filters) {
            of.push(None);
            continue;
        }
        let label = column.map_or("", |c| segment[c].as_str());
        let group = *numbers.entry(label).or_insert_with(|| {
            labels.push(label.to_string());
            labels.len() as u32 - 1
        });
        of.push(Some(group));
    }
    if labels.is_empty() {
        labels.push(String::new());
    }
    (of, labels)
}

impl ClickHouseStore {
    /// Each group's per-device figures, from memory and the window's last
    /// partial hour (the per-event sums are the caller's, from SQL); `None`
    /// when the query is not one this cache serves (see [`serves`]).
    pub(super) async fn cached_segment_devices(
        &self,
        query: &Query,
        grouping: Grouping,
    ) -> Result<Option<Vec<(GroupKey, Aggregate)>>> {
        let Some((first, cached_to)) = serves(query, grouping) else {
            return Ok(None);
        };
        // As in `device_cache.rs`: the last, partial hour of a window ending
        // now from memory but for the devices with events after the end, of
        // a window ending earlier from `events`, alongside the refresh.
        let Plan { hours, recent, past_edge } = plan(query, first, cached_to);
        let project = query.project.as_str();
        let past_edge = async {
            if past_edge {
                self.segment_edge(query, cached_to, None).await
            } else {
                Ok(Vec::new())
            }
        };
        let (past_edge, ()) = tokio::try_join!(past_edge, self.refresh_segments(project, &hours))?;

        let mut projects = self.segment_cache.projects.lock().await;
        let cache = projects.entry(project.to_string()).or_default();
        let mut pieces: Vec<(u32, Entries)> = hours
            .iter()
            .filter(|h| i64::from(**h) * 1000 < cached_to)
            .filter_map(|h| cache.hours.get(h).map(|cached| (*h, Arc::clone(&cached.entries))))
            .collect();
        let (mut edge, rows) = match recent.then(|| last_hour(cache, hour_s(cached_to), query.to_ms)) {
            None => (Vec::new(), past_edge),
            Some(LastHour::Complete(entries)) => (entries, Vec::new()),
            Some(LastHour::Overflow(kept, devices)) => {
                (kept, self.segment_edge(query, cached_to, Some(&devices)).await?)
            }
            Some(LastHour::FromEvents) => (Vec::new(), self.segment_edge(query, cached_to, None).await?),
        };
        edge.extend(
            rows.into_iter().filter_map(|r| cache.entry(r.device_id, [r.app_version, r.os, r.network], &r.latest)),
        );
        pieces.push((hour_s(cached_to), Arc::new(edge)));
        let (group_of, labels) = groups(&cache.segments, &query.filters, grouping);
        let devices = cache.devices.len();
        drop(projects);

        let Some(slots) = devices.checked_mul(labels.len()).filter(|n| *n <= MAX_SLOTS) else {
            return Ok(None);
        };
        let threshold = u64::from(query.queue_threshold);
        let mut latest: Vec<Option<Entry>> = vec![None; slots];
        let mut tallies: BTreeMap<(u64, u32), DeviceTally> = BTreeMap::new();
        let mut flush = |bucket: u64, latest: &mut Vec<Option<Entry>>| {
            for (slot, entry) in latest.iter_mut().enumerate() {
                if let Some(entry) = entry.take() {
                    let group = (slot / devices.max(1)) as u32;
                    entry.latest.count_into(tallies.entry((bucket, group)).or_default(), threshold);
                }
            }
        };
        let mut current: Option<u64> = None;
        for (hour, entries) in &pieces {
            let here = bucket(grouping, *hour);
            if let Some(previous) = current.filter(|c| *c != here) {
                flush(previous, &mut latest);
            }
            current = Some(here);
            for entry in entries.iter().filter(|e| e.latest.time_ms >= query.from_ms) {
                let Some(Some(group)) = group_of.get(entry.segment as usize) else {
                    continue;
                };
                let slot = &mut latest[*group as usize * devices + entry.device as usize];
                if slot.is_none_or(|held| entry.order() > held.order()) {
                    *slot = Some(*entry);
                }
            }
        }
        if let Some(last) = current {
            flush(last, &mut latest);
        }
        Ok(Some(
            tallies
                .into_iter()
                .map(|((bucket, group), tally)| {
                    let mut figures = Aggregate::default();
                    tally.write_into(&mut figures);
                    (group_key(grouping, bucket, labels[group as usize].clone()), figures)
                })
                .collect(),
        ))
    }

    /// Each device's latest event per segment in `[from_ms, to)`, inside
    /// one hour, from `events`; only of `devices` if given.
    async fn segment_edge(&self, query: &Query, from_ms: i64, devices: Option<&[String]>) -> Result<Vec<EdgeRow>> {
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
                "SELECT device_id, CAST(app_version AS String) AS a, CAST(os AS String) AS o, \
                 CAST(network AS String) AS n, max({LATEST_SQL}) AS latest FROM events \
                 WHERE {filter} AND (device_id, app_version, os, network, event_time_ms) IN \
                 (SELECT device_id, app_version, os, network, max(event_time_ms) FROM events WHERE {filter} \
                 GROUP BY device_id, app_version, os, network) GROUP BY device_id, app_version, os, network"
            ),
            [args.clone(), args].concat(),
        );
        Ok(sql.query(&self.reader).fetch_all::<EdgeRow>().await?)
    }

    /// Brings `hours` of `project` up to date, as `device_cache.rs` does:
    /// loads those whose event count moved, forgets those without events,
    /// and keeps the cache within [`MAX_ENTRIES`].
    #[tracing::instrument(skip_all, fields(project, hours = hours.len()))]
    async fn refresh_segments(&self, project: &str, hours: &[u32]) -> Result<()> {
        let (Some(&first), Some(&last)) = (hours.first(), hours.last()) else {
            return Ok(());
        };
        let mut projects = self.segment_cache.projects.lock().await;
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
                "SELECT toUInt32(hour) AS hour, device_id, app_version, os, network, \
                 finalizeAggregation(latest) AS latest FROM device_segment_hour FINAL WHERE {project_and_hours}",
                project,
                &stale,
            )
            .fetch_all::<EntryRow>()
            .await?;
        let mut loaded: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        for r in rows {
            if let Some(entry) = cache.entry(r.device_id, [r.app_version, r.os, r.network], &r.latest) {
                loaded.entry(r.hour).or_default().push(entry);
            }
        }
        for hour in stale {
            let events = counts.get(&hour).copied().unwrap_or(0);
            if events > 0 {
                let entries = Arc::new(loaded.remove(&hour).unwrap_or_default());
                cache.hours.insert(hour, Hour { events, entries });
            }
        }
        evict(&mut projects, project, hours);
        Ok(())
    }
}

/// Drops the oldest hours not in use until the cache holds at most
/// [`MAX_ENTRIES`], and renumbers a project (forgets it) once its device and
/// segment tables mostly name what no cached hour holds.
fn evict(projects: &mut HashMap<String, ProjectCache>, in_use: &str, hours: &[u32]) {
    let mut total: usize = projects.values().map(ProjectCache::entries).sum();
    while total > MAX_ENTRIES {
        let oldest = projects
            .iter()
            .flat_map(|(name, p)| p.hours.keys().map(move |h| (*h, name.clone())))
            .filter(|(h, name)| name != in_use || !hours.contains(h))
            .min();
        let Some((hour, name)) = oldest else { break };
        if let Some(removed) = projects.get_mut(&name).and_then(|p| p.hours.remove(&hour)) {
            total -= removed.entries.len();
        }
    }
    projects.retain(|_, p| !p.hours.is_empty() || p.devices.is_empty());
    for p in projects.values_mut() {
        let held = p.entries().max(250_000);
        if p.devices.len() > 4 * held || p.segments.len() > 4 * held {
            *p = ProjectCache::default();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::{Network, ProjectName};

    fn query(from_ms: i64, to_ms: i64, filters: Filters) -> Query {
        Query { project: ProjectName::parse("p").unwrap(), from_ms, to_ms, filters, queue_threshold: 10 }
    }

    #[test]
    fn only_filtered_or_broken_down_hourly_queries_reaching_past_their_first_hour_are_served() {
        let hour = 1_764_374_400_000;
        let ios = Filters { os: Some("ios".into()), ..Filters::default() };
        let by_os = Grouping::By(Dimension::Os);
        assert_eq!(
            serves(&query(hour + 60_000, hour + 2 * HOUR_MS + 5, ios.clone()), Grouping::Total),
            Some((hour, hour + 2 * HOUR_MS))
        );
        assert_eq!(serves(&query(hour, hour + HOUR_MS, Filters::default()), by_os), Some((hour, hour + HOUR_MS)));
        assert_eq!(serves(&query(hour, hour + HOUR_MS, Filters::default()), Grouping::Total), None);
        assert_eq!(serves(&query(hour + 1, hour + HOUR_MS - 1, ios.clone()), Grouping::Total), None);
        assert_eq!(serves(&query(hour, hour + HOUR_MS, ios.clone()), Grouping::Time { step_seconds: 300 }), None);
        let long = query(hour, hour + (MAX_HOURS as i64 + 1) * HOUR_MS, ios);
        assert_eq!(serves(&long, Grouping::Total), None);
    }

    #[test]
    fn segments_fall_into_the_groups_of_their_filter_and_breakdown() {
        let seg = |a: &str, o: &str, n: &str| [a.to_string(), o.to_string(), n.to_string()];
        let segments = vec![seg("1.0", "ios", "wifi"), seg("1.0", "android", "wifi"), seg("2.0", "ios", "cellular")];
        let ios = Filters { os: Some("ios".into()), ..Filters::default() };
        let (of, labels) = groups(&segments, &ios, Grouping::By(Dimension::AppVersion));
        assert_eq!((of, labels), (vec![Some(0), None, Some(1)], vec!["1.0".to_string(), "2.0".to_string()]));
        let wifi = Filters { network: Some(Network::Wifi), ..Filters::default() };
        let (of, labels) = groups(&segments, &wifi, Grouping::Total);
        assert_eq!((of, labels), (vec![Some(0), Some(0), None], vec![String::new()]));
        let (of, _) = groups(&segments, &Filters::default(), Grouping::By(Dimension::Network));
        assert_eq!(of, vec![Some(0), Some(0), Some(1)]);
    }

    #[test]
    fn an_entry_keeps_its_event_id_in_text_order() {
        let mut cache = ProjectCache::default();
        let text = |id: &str| {
            format!(
                "{:016X}{id}{:016X}",
                1_764_410_400_123_u64 ^ super::super::device_state::TOP_BIT,
                (7_u64 << 25) | super::super::device_state::TOP_BIT
            )
        };
        let seg = || ["1.0".to_string(), "ios".to_string(), "wifi".to_string()];
        let low = cache.entry("d".into(), seg(), &text("0fffffff-ffff-4fff-bfff-ffffffffffff")).unwrap();
        let high = cache.entry("d".into(), seg(), &text("a0000000-0000-4000-8000-000000000000")).unwrap();
        assert!(high.order() > low.order());
        assert_eq!((low.device, low.segment, cache.segments.len()), (0, 0, 1));
        assert!(cache.entry("d".into(), seg(), "not a latest text").is_none());
    }
}
