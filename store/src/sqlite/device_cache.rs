//! An in-memory copy of `device_hour`, an hour of a project at a time, for
//! the dashboard's per-device values.
//!
//! Why: a day's overview reads each device's latest event of every hour of
//! two windows, three times (window, previous window, hourly buckets): over
//! a million rows of SQLite per refresh at a million events a day, nearly
//! all of them unchanged since the last refresh, as past hours only change
//! when a late event arrives.
//!
//! Exactness: an entry is stamped with its hour's event count in
//! `rollup_hour`, read in the same snapshot as its rows, and is used only
//! while the count is the same. Every insert into an hour adds to its count
//! (the store writes both in one transaction, whichever process writes), and
//! retention removes an hour's rows whole, so an unchanged count means
//! unchanged rows. The current hour changes with every insert and is simply
//! read again.
//!
//! Memory: at most [`CAPACITY`] device rows, least recently used hours
//! evicted first; about 40 bytes a row (a day at a million events a day is
//! some 380,000 rows).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{params, Connection};

use super::sql::{bytes, DeviceValues};
use crate::Result;

/// Device rows kept, over all cached hours.
const CAPACITY: usize = 1_000_000;

/// Device ids in decreasing order, stored end to end, so that a merge walks
/// them in memory order rather than chasing a pointer per id.
#[derive(Debug, Default, Clone)]
pub(super) struct Names {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Names {
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(super) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub(super) fn push(&mut self, name: &[u8]) {
        self.bytes.extend_from_slice(name);
        self.ends.push(self.bytes.len());
    }

    /// Both in decreasing order, with no name in both.
    pub(super) fn merge(&mut self, fresh: &Names) {
        let old = std::mem::take(self);
        self.bytes.reserve(old.bytes.len() + fresh.bytes.len());
        self.ends.reserve(old.len() + fresh.len());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < fresh.len() {
            if j == fresh.len() || (i < old.len() && old.get(i) > fresh.get(j)) {
                self.push(old.get(i));
                i += 1;
            } else {
                self.push(fresh.get(j));
                j += 1;
            }
        }
    }
}

/// One hour's `device_hour` rows, in decreasing device id order.
#[derive(Debug, Default)]
pub(super) struct HourDevices {
    /// The hour's event count in `rollup_hour` when the rows were read.
    events: i64,
    pub(super) names: Names,
    /// Per device, the time of its latest event and its values.
    pub(super) rows: Vec<(i64, DeviceValues)>,
}

impl HourDevices {
    /// Reads the rows of `hour_s`, to be stamped with `events`: in the
    /// snapshot the count was read in, or the stamp would not match.
    pub(super) fn load(conn: &Connection, project: &str, hour_s: i64, events: i64) -> Result<Self> {
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, latest_time_ms, queue_depth, queue_bucket, staleness_bucket, never_synced
             FROM device_hour WHERE project = ?1 AND hour = ?2 ORDER BY device_id DESC",
        )?;
        let mut rows = stmt.query(params![project, hour_s])?;
        let mut hour = HourDevices { events, ..HourDevices::default() };
        while let Some(row) = rows.next()? {
            hour.names.push(bytes(row, 0)?);
            hour.rows.push((row.get(1)?, DeviceValues::from_row(row, 2)?));
        }
        Ok(hour)
    }
}

/// The cache, shared by the store's readers.
#[derive(Debug, Default)]
pub(super) struct DeviceCache {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// By (project, hour in Unix seconds): the rows and when last used.
    hours: HashMap<(String, i64), (Arc<HourDevices>, u64)>,
    rows: usize,
    clock: u64,
}

impl DeviceCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is only ever replaced whole under the lock: a panic
        // elsewhere leaves it consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The hour's rows if cached with this event count.
    pub(super) fn get(&self, project: &str, hour_s: i64, events: i64) -> Option<Arc<HourDevices>> {
        let mut state = self.state();
        state.clock += 1;
        let clock = state.clock;
        let (hour, used) = state.hours.get_mut(&(project.to_string(), hour_s))?;
        if hour.events != events {
            return None;
        }
        *used = clock;
        Some(Arc::clone(hour))
    }

    /// Keeps `hour`, replacing what was cached for it, and evicts the least
    /// recently used hours beyond the capacity.
    pub(super) fn put(&self, project: &str, hour_s: i64, hour: Arc<HourDevices>) {
        let mut state = self.state();
        state.clock += 1;
        let clock = state.clock;
        let added = hour.rows.len();
        if let Some((old, _)) = state.hours.insert((project.to_string(), hour_s), (hour, clock)) {
            state.rows -= old.rows.len();
        }
        state.rows += added;
        while state.rows > CAPACITY {
            let Some(oldest) = state.hours.iter().min_by_key(|(_, (_, used))| *used).map(|(key, _)| key.clone()) else {
                break;
            };
            if let Some((old, _)) = state.hours.remove(&oldest) {
                state.rows -= old.rows.len();
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_merge_in_decreasing_order() {
        let names = |list: &[&str]| {
            let mut n = Names::default();
            for name in list {
                n.push(name.as_bytes());
            }
            n
        };
        let mut taken = names(&["d", "b"]);
        taken.merge(&names(&["e", "c", "a"]));
        let got: Vec<&[u8]> = (0..taken.len()).map(|i| taken.get(i)).collect();
        assert_eq!(got, vec![&b"e"[..], b"d", b"c", b"b", b"a"]);
    }

    #[test]
    fn an_hour_is_served_only_with_its_stamp_and_the_oldest_go_first() {
        let cache = DeviceCache::default();
        let hour = |events: i64, rows: usize| {
            Arc::new(HourDevices { events, rows: vec![(0, DeviceValues::default()); rows], ..HourDevices::default() })
        };
        cache.put("p", 3600, hour(10, 600_000));
        assert!(cache.get("p", 3600, 10).is_some());
        assert!(cache.get("p", 3600, 11).is_none(), "a late event changed the hour");
        assert!(cache.get("q", 3600, 10).is_none(), "another project");
        cache.put("p", 7200, hour(5, 300_000));
        assert!(cache.get("p", 3600, 10).is_some());
        // Over the capacity: 7200 was used least recently.
        cache.put("p", 10_800, hour(1, 200_000));
        assert!(cache.get("p", 7200, 5).is_none());
        assert!(cache.get("p", 3600, 10).is_some() && cache.get("p", 10_800, 1).is_some());
    }
}
