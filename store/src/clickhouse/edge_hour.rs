//! The last, partial hour of a window that ends in the past, from memory:
//! each device's latest event before the window's end, within that hour.
//!
//! Why: every overview compares its window with the one before it, which
//! ends mid-hour (six hours ago for a 6-hour window). The whole hours come
//! from `device_cache.rs`, but a device's latest event of an hour is not its
//! latest before an instant inside it, so that partial hour was read from
//! `events` on every request: two passes over up to an hour of events, 220
//! ms on average of a 6-hour page of 260 ms at ten million events a day
//! (issue 16, `system.query_log`). The end moves with the clock, but the
//! hour does not, and a past hour changes only when a late event lands in
//! it. So the hour's events are loaded once, as (time, device, packed
//! values) sorted in the "latest" order of `device_state.rs` (time, then
//! event id), and any end inside it is a prefix of that list.
//!
//! The hour is stamped with its event count in `rollup_hour` (which every
//! insert into it moves) and loaded again when that moves. The rows are
//! those of [`events_filter`] (recorded copies left out), and the callers
//! use this only for windows `dedup.rs` calls safe, as for the hours of
//! `device_cache.rs`. At 24 bytes an event, an hour of ten million events a
//! day is about 10 MB; hours over [`MAX_HOUR_EVENTS`] are read from `events`
//! as before, and the rows held across hours stay within [`MAX_EVENTS`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::dedup::events_filter;
use super::device_state::PACKED_SQL;
use super::sql::Sql;
use super::ClickHouseStore;
use crate::metrics::Query;
use crate::pieces::HOUR_MS;
use crate::Result;

/// Most events of one hour held; a busier hour is read from `events`.
const MAX_HOUR_EVENTS: u64 = 1_500_000;
/// Most events held across all hours and projects (24 bytes each).
const MAX_EVENTS: usize = 4_000_000;

/// A device's latest event before the end, within the hour.
pub(super) struct EdgeLatest {
    pub(super) device_id: String,
    pub(super) time_ms: i64,
    /// The packed values of `device_state.rs`.
    pub(super) packed: u64,
}

/// One hour's events in the latest order.
struct Hour {
    /// `rollup_hour`'s count when loaded.
    events: u64,
    devices: Vec<String>,
    /// (time, packed values, index into `devices`), sorted by time and
    /// then event id, so a device's last row before an end is its latest.
    rows: Vec<(i64, u64, u32)>,
}

impl Hour {
    fn from_rows(events: u64, mut loaded: Vec<EventRow>) -> Hour {
        loaded.sort_unstable_by_key(|row| (row.event_time_ms, row.event_id));
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut devices = Vec::new();
        let rows = loaded
            .into_iter()
            .map(|row| {
                let device = *ids.entry(row.device_id).or_insert_with_key(|name| {
                    devices.push(name.clone());
                    (devices.len() - 1) as u32
                });
                (row.event_time_ms, row.packed, device)
            })
            .collect();
        Hour { events, devices, rows }
    }

    /// Each device's latest row in `[from_ms, to_ms)`.
    fn between(&self, from_ms: i64, to_ms: i64) -> Vec<EdgeLatest> {
        let start = self.rows.partition_point(|(time, _, _)| *time < from_ms);
        let end = self.rows.partition_point(|(time, _, _)| *time < to_ms).max(start);
        let mut latest: Vec<Option<(i64, u64)>> = vec![None; self.devices.len()];
        for &(time, packed, device) in &self.rows[start..end] {
            latest[device as usize] = Some((time, packed));
        }
        latest
            .into_iter()
            .zip(&self.devices)
            .filter_map(|(l, name)| l.map(|(time_ms, packed)| EdgeLatest { device_id: name.clone(), time_ms, packed }))
            .collect()
    }
}

#[derive(Row, Deserialize)]
struct EventRow {
    device_id: String,
    event_time_ms: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    packed: u64,
}

/// An hour of a project: (project, hour start in Unix seconds).
type Key = (String, u32);

#[derive(Default)]
struct Slot {
    hour: Option<Arc<Hour>>,
    /// When last read (a tick of [`EdgeHours::tick`]): the least recent
    /// go first.
    used: u64,
}

/// See the module doc. One lock per (project, hour), so that loading an
/// hour holds up only the reads of that hour.
#[derive(Default)]
pub(super) struct EdgeHours {
    slots: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<Slot>>>>,
    tick: AtomicU64,
}

impl std::fmt::Debug for EdgeHours {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeHours")
    }
}

impl EdgeHours {
    fn slot(&self, project: &str, hour: u32) -> Arc<tokio::sync::Mutex<Slot>> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(slots.entry((project.to_string(), hour)).or_default())
    }

    /// Drops the least recently read hours (those not being read now)
    /// until at most [`MAX_EVENTS`] rows are held.
    fn trim(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let mut held: Vec<(Key, u64, usize)> = slots
            .iter()
            .filter_map(|(key, slot)| {
                let slot = slot.try_lock().ok()?;
                Some((key.clone(), slot.used, slot.hour.as_ref().map_or(0, |h| h.rows.len())))
            })
            .collect();
        let mut total: usize = held.iter().map(|(_, _, n)| n).sum();
        held.sort_by_key(|(_, used, _)| *used);
        for (key, _, rows) in held {
            if total <= MAX_EVENTS {
                break;
            }
            slots.remove(&key);
            total -= rows;
        }
    }
}

impl ClickHouseStore {
    /// Each device's latest event in `[query.from_ms, query.to_ms)`, clipped
    /// to the hour starting at `hour_s` (Unix seconds) and holding `events`
    /// events in `rollup_hour` now; `None` when the hour is too busy to hold
    /// (read it from `events`).
    pub(super) async fn past_edge_from_memory(
        &self,
        query: &Query,
        hour_s: u32,
        events: u64,
    ) -> Result<Option<Vec<EdgeLatest>>> {
        if events > MAX_HOUR_EVENTS {
            return Ok(None);
        }
        let hour_ms = i64::from(hour_s) * 1000;
        let slot = self.edge_hours.slot(query.project.as_str(), hour_s);
        let mut slot = slot.lock().await;
        slot.used = self.edge_hours.tick.fetch_add(1, Ordering::Relaxed);
        let hour = match &slot.hour {
            Some(hour) if hour.events == events => Arc::clone(hour),
            _ => {
                let (filter, args) = events_filter(query, hour_ms, hour_ms + HOUR_MS);
                let mut sql = Sql::default();
                sql.push_with(
                    &format!(
                        "SELECT device_id, event_time_ms, event_id, {PACKED_SQL} AS packed FROM events WHERE {filter}"
                    ),
                    args,
                );
                let rows = sql.query(&self.reader).fetch_all::<EventRow>().await?;
                let hour = Arc::new(Hour::from_rows(events, rows));
                slot.hour = Some(Arc::clone(&hour));
                drop(slot);
                self.edge_hours.trim();
                hour
            }
        };
        Ok(Some(hour.between(query.from_ms, query.to_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device: &str, time: i64, id: u128, packed: u64) -> EventRow {
        EventRow { device_id: device.into(), event_time_ms: time, event_id: Uuid::from_u128(id), packed }
    }

    #[test]
    fn a_devices_latest_before_the_end_is_its_last_row_in_time_then_id_order() {
        let hour = Hour::from_rows(
            5,
            vec![row("a", 30, 1, 3), row("b", 10, 1, 1), row("a", 10, 2, 2), row("a", 30, 9, 4), row("b", 40, 1, 5)],
        );
        let between = |from, to| {
            let mut v: Vec<(String, i64, u64)> =
                hour.between(from, to).into_iter().map(|l| (l.device_id, l.time_ms, l.packed)).collect();
            v.sort();
            v
        };
        let at = |to| between(0, to);
        assert_eq!(at(10), vec![]);
        assert_eq!(at(11), vec![("a".into(), 10, 2), ("b".into(), 10, 1)]);
        // Two events of `a` at 30: the greater id is the latest.
        assert_eq!(at(31), vec![("a".into(), 30, 4), ("b".into(), 10, 1)]);
        assert_eq!(at(41), vec![("a".into(), 30, 4), ("b".into(), 40, 5)]);
        // A range inside the hour (a series' partial bucket) leaves out what
        // came before it: `b` has nothing in [11, 40).
        assert_eq!(between(11, 40), vec![("a".into(), 30, 4)]);
        assert_eq!(between(30, 30), vec![]);
        assert_eq!(between(40, 30), vec![]);
    }
}
