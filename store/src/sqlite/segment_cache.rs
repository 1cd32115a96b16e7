//! An in-memory copy of `device_segment_hour` (migration 0010), an hour of a
//! project at a time, for the per-device values of filtered and broken-down
//! dashboard queries (issue 16).
//!
//! Why: those queries need each device's latest event among the events of
//! some segments (the filter's, or one value of the breakdown's dimension);
//! `device_hour` cannot say which that is, and reading `events` for it costs
//! a second and more a day at a million events a day. A device's latest
//! event in a set of segments is the latest of its rows for those segments
//! ([`Entry`]), so an hour's rows serve every filter and every breakdown.
//!
//! Exactness: as in `device_cache.rs`, an hour is stamped with its event
//! count in `rollup_hour`, read in the snapshot its rows were read in, and
//! served only while the count is unchanged: every insert into the hour
//! moves it, in the transaction that moves the rows. The latest of two rows
//! breaks ties on time by the event id's text; the id is kept as the 128-bit
//! number of its canonical text (lowercase, hyphenated, as the store writes
//! it), whose order is the text's, and any other text is reported corrupt
//! rather than compared differently.
//!
//! Memory: at most [`CAPACITY`] entries over all hours; beyond it the oldest
//! hours go first (by hour, not by use, so that a window longer than the
//! cache keeps its newest hours rather than evicting each hour before it is
//! read again). An entry is 48 bytes, plus the hour's device ids once per
//! device (about 20 bytes for a 13-byte id) and its few distinct segments:
//! some 60–70 bytes an entry, 100 MB when full. A day at a million events a
//! day should be some 400,000 entries (`device_hour`'s 380,000 rows plus the
//! segments devices switch to within an hour; estimated, not measured), so a
//! day's window and the one before it fit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{params, Connection};

use super::device_cache::Names;
use super::sql::{bytes, DeviceValues};
use crate::metrics::{Dimension, Filters};
use crate::{Error, Result};

/// Entries kept, over all cached hours.
const CAPACITY: usize = 1_500_000;

/// One segment (app version, OS, network) that a device of the hour had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Segment {
    app_version: Box<str>,
    os: Box<str>,
    network: Box<str>,
}

impl Segment {
    /// Whether the segment passes every given filter.
    pub(super) fn matches(&self, filters: &Filters) -> bool {
        filters.app_version.as_deref().is_none_or(|v| v == &*self.app_version)
            && filters.os.as_deref().is_none_or(|v| v == &*self.os)
            && filters.network.is_none_or(|n| n.as_str() == &*self.network)
    }

    /// The segment's value of `dimension`.
    pub(super) fn value(&self, dimension: Dimension) -> &str {
        match dimension {
            Dimension::AppVersion => &self.app_version,
            Dimension::Os => &self.os,
            Dimension::Network => &self.network,
        }
    }
}

/// A device's latest event of the hour among its events in one segment.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Entry {
    /// Index into [`SegmentHour::names`].
    pub(super) device: u32,
    /// Index into [`SegmentHour::segments`].
    pub(super) segment: u32,
    pub(super) time_ms: i64,
    /// The event id's text as a number ([`id_key`]): the tie-break.
    pub(super) id: u128,
    pub(super) values: DeviceValues,
}

impl Entry {
    /// The metrics' order of "latest": time, then the event id's text.
    pub(super) fn later_than(&self, other: &Entry) -> bool {
        (self.time_ms, self.id) > (other.time_ms, other.id)
    }
}

/// One hour's `device_segment_hour` rows.
#[derive(Debug, Default)]
pub(super) struct SegmentHour {
    /// The hour's event count in `rollup_hour` when the rows were read.
    events: i64,
    /// The hour's devices, in decreasing id order.
    pub(super) names: Names,
    pub(super) segments: Vec<Segment>,
    /// By device, in the order of `names`: a device's entries are adjacent.
    pub(super) entries: Vec<Entry>,
}

impl SegmentHour {
    /// Reads the rows of `hour_s`, to be stamped with `events`: in the
    /// snapshot the count was read in, or the stamp would not match.
    pub(super) fn load(conn: &Connection, project: &str, hour_s: i64, events: i64) -> Result<Self> {
        // The key's order read backwards: no sort.
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, app_version, os, network, latest_time_ms, latest_event_id,
                    queue_depth, queue_bucket, staleness_bucket, never_synced
             FROM device_segment_hour WHERE project = ?1 AND hour = ?2
             ORDER BY device_id DESC, app_version DESC, os DESC, network DESC",
        )?;
        let mut rows = stmt.query(params![project, hour_s])?;
        let mut hour = SegmentHour { events, ..SegmentHour::default() };
        // Segments by their three texts joined, looked up through a reused
        // buffer so that a row allocates nothing once its segment is known.
        let mut segment_ids: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut joined = Vec::new();
        while let Some(row) = rows.next()? {
            let device = bytes(row, 0)?;
            if hour.names.len() == 0 || hour.names.get(hour.names.len() - 1) != device {
                hour.names.push(device);
            }
            let device = u32::try_from(hour.names.len() - 1)
                .map_err(|_| Error::Corrupt("more than 2^32 devices in one hour".into()))?;
            joined.clear();
            for column in 1..=3 {
                joined.extend_from_slice(bytes(row, column)?);
                joined.push(0);
            }
            let segment = match segment_ids.get(&joined) {
                Some(id) => *id,
                None => {
                    let id = u32::try_from(hour.segments.len())
                        .map_err(|_| Error::Corrupt("more than 2^32 segments in one hour".into()))?;
                    let text = |column: usize| -> Result<Box<str>> { Ok(row.get::<_, String>(column)?.into()) };
                    hour.segments.push(Segment { app_version: text(1)?, os: text(2)?, network: text(3)? });
                    segment_ids.insert(joined.clone(), id);
                    id
                }
            };
            hour.entries.push(Entry {
                device,
                segment,
                time_ms: row.get(4)?,
                id: id_key(bytes(row, 5)?)?,
                values: DeviceValues::from_row(row, 6)?,
            });
        }
        Ok(hour)
    }
}

/// The number whose order is that of the canonical text of an event id
/// (36 bytes: lowercase hex digits and four hyphens at fixed places): the
/// hyphens are in the same places in every id, and the digits' byte order is
/// their value's.
pub(super) fn id_key(text: &[u8]) -> Result<u128> {
    let corrupt =
        || Error::Corrupt(format!("event id {:?} is not a lowercase hyphenated UUID", String::from_utf8_lossy(text)));
    if text.len() != 36 {
        return Err(corrupt());
    }
    let mut key = 0u128;
    for (i, &c) in text.iter().enumerate() {
        let digit = match c {
            b'-' if matches!(i, 8 | 13 | 18 | 23) => continue,
            b'0'..=b'9' if !matches!(i, 8 | 13 | 18 | 23) => c - b'0',
            b'a'..=b'f' if !matches!(i, 8 | 13 | 18 | 23) => c - b'a' + 10,
            _ => return Err(corrupt()),
        };
        key = (key << 4) | u128::from(digit);
    }
    Ok(key)
}

/// The cache, shared by the store's readers.
#[derive(Debug, Default)]
pub(super) struct SegmentCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// By (hour in Unix seconds, project), so that the first is the oldest.
    hours: BTreeMap<(i64, String), Arc<SegmentHour>>,
    entries: usize,
}

impl SegmentCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is only ever changed whole under the lock: a panic
        // elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hour's rows if cached with this event count.
    pub(super) fn get(&self, project: &str, hour_s: i64, events: i64) -> Option<Arc<SegmentHour>> {
        let state = self.state();
        let hour = state.hours.get(&(hour_s, project.to_string()))?;
        (hour.events == events).then(|| Arc::clone(hour))
    }

    /// Keeps `hour`, replacing what was cached for it, and evicts the
    /// oldest hours beyond the capacity (possibly this one).
    pub(super) fn put(&self, project: &str, hour_s: i64, hour: Arc<SegmentHour>) {
        let mut state = self.state();
        let added = hour.entries.len();
        if let Some(old) = state.hours.insert((hour_s, project.to_string()), hour) {
            state.entries -= old.entries.len();
        }
        state.entries += added;
        while state.entries > CAPACITY {
            let Some((_, old)) = state.hours.pop_first() else {
                break;
            };
            state.entries -= old.entries.len();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::Network;

    #[test]
    fn an_id_key_orders_as_the_ids_text() {
        let mut ids: Vec<String> = (0..200u64)
            .map(|i| {
                let n = (u128::from(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 64) | u128::from(i * 7919);
                uuid::Uuid::from_u128(n.rotate_left((i % 128) as u32)).hyphenated().to_string()
            })
            .collect();
        ids.push("ffffffff-ffff-ffff-ffff-ffffffffffff".into());
        ids.push("00000000-0000-0000-0000-000000000000".into());
        for a in &ids {
            for b in &ids {
                let (ka, kb) = (id_key(a.as_bytes()).unwrap(), id_key(b.as_bytes()).unwrap());
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a} {b}");
            }
        }
        for bad in [
            "",
            "00000000-0000-0000-0000-00000000000",
            "0000000000000-0000-0000-000000000000",
            "A0000000-0000-0000-0000-000000000000",
        ] {
            assert!(id_key(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_segment_matches_its_filters_and_names_its_values() {
        let s = Segment { app_version: "2.1.0".into(), os: "ios".into(), network: "wifi".into() };
        assert!(s.matches(&Filters::default()));
        assert!(s.matches(&Filters { os: Some("ios".into()), network: Some(Network::Wifi), ..Filters::default() }));
        assert!(!s.matches(&Filters {
            os: Some("ios".into()),
            network: Some(Network::Cellular),
            ..Filters::default()
        }));
        assert!(!s.matches(&Filters { app_version: Some("2.1".into()), ..Filters::default() }));
        assert_eq!(s.value(Dimension::AppVersion), "2.1.0");
        assert_eq!(s.value(Dimension::Os), "ios");
        assert_eq!(s.value(Dimension::Network), "wifi");
    }

    #[test]
    fn an_entry_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn an_hour_is_served_only_with_its_stamp_and_the_oldest_hours_go_first() {
        let cache = SegmentCache::default();
        let hour = |events: i64, entries: usize| {
            Arc::new(SegmentHour { events, entries: vec![Entry::default(); entries], ..SegmentHour::default() })
        };
        cache.put("p", 7200, hour(10, 900_000));
        assert!(cache.get("p", 7200, 10).is_some());
        assert!(cache.get("p", 7200, 11).is_none(), "a late event changed the hour");
        assert!(cache.get("q", 7200, 10).is_none(), "another project");
        cache.put("p", 10_800, hour(5, 500_000));
        // Over the capacity: 3600 is the oldest, however recently put.
        cache.put("p", 3600, hour(1, 200_000));
        assert!(cache.get("p", 3600, 1).is_none());
        assert!(cache.get("p", 7200, 10).is_some() && cache.get("p", 10_800, 5).is_some());
        cache.put("p", 14_400, hour(2, 200_000));
        assert!(cache.get("p", 7200, 10).is_none(), "the oldest went to make room");
        assert!(cache.get("p", 10_800, 5).is_some() && cache.get("p", 14_400, 2).is_some());
    }
}
