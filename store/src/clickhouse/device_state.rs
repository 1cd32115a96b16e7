//! Each device's latest event per hour (`device_hour_latest`, migration
//! 0007), written by [`crate::Events::insert`] rather than by a materialized
//! view: every block of events is reduced here to one row per (project,
//! hour, device), so ClickHouse groups those few rows instead of every event
//! with a generic tuple `argMax`.
//!
//! The state is one fixed-width text, [`latest_key`], whose text order is the
//! "latest" order the reads define (greatest `event_time_ms`, then greatest
//! event id as text), so `max` keeps the latest and merges by plain string
//! comparison. [`LATEST_SQL`] computes the same text from `events` for the
//! partial hours at a window's edges, and [`DECODED_SQL`] takes the values
//! back out; the migration's comment has the layout.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Serialize;
use synchealth_schema::StoredEvent;
use uuid::Uuid;

use super::sql::event_time_s;

/// Flips the sign bit, so that the unsigned hex of a signed time sorts as
/// the time does; also set on the packed values, to fix their hex width.
pub(super) const TOP_BIT: u64 = 1 << 63;

/// The packed values of an `events` row, in SQL: a macro so that
/// [`LATEST_SQL`] and [`PACKED_SQL`] are one text.
macro_rules! packed_sql {
    () => {
        "bitOr(bitOr(bitOr(bitOr(bitShiftLeft(toUInt64(queue_depth), 25), \
         bitShiftLeft(toUInt64(queue_bucket), 13)), bitShiftLeft(toUInt64(staleness_bucket), 1)), \
         toUInt64(isNull(last_success_at_ms))), 9223372036854775808)"
    };
}

/// The latest-event text of an `events` row, in SQL (identical to
/// [`latest_key`]).
pub(super) const LATEST_SQL: &str = concat!(
    "concat(hex(bitXor(toUInt64(event_time_ms), 9223372036854775808)), toString(event_id), hex(",
    packed_sql!(),
    "))"
);

/// The packed values alone (the last 16 hex digits of [`LATEST_SQL`], as a
/// `UInt64`).
pub(super) const PACKED_SQL: &str = packed_sql!();

/// Columns `q` (queue depth), `qb` (queue bucket), `sb` (staleness bucket)
/// and `n` (never synced, 0 or 1) from a latest-event text `v`.
pub(super) const DECODED_SQL: &str = "reinterpretAsUInt64(reverse(unhex(substring(v, 53, 16)))) AS p, \
    toUInt64(bitAnd(bitShiftRight(p, 25), 4294967295)) AS q, toUInt16(bitAnd(bitShiftRight(p, 13), 4095)) AS qb, \
    toUInt16(bitAnd(bitShiftRight(p, 1), 4095)) AS sb, toUInt8(bitAnd(p, 1)) AS n";

/// The latest-event text of an event (see the module doc).
pub(super) fn latest_key(event: &StoredEvent) -> String {
    let time = (event.event_time_ms as u64) ^ TOP_BIT;
    let packed = (u64::from(event.event.queue_depth) << 25)
        | (u64::from(event.queue_bucket & 0xfff) << 13)
        | (u64::from(event.staleness_bucket & 0xfff) << 1)
        | u64::from(event.last_success_at_ms().is_none())
        | TOP_BIT;
    format!("{time:016X}{}{packed:016X}", Uuid::hyphenated(event.event.event_id))
}

/// One row of `device_hour_input`.
#[derive(Row, Serialize)]
pub(super) struct DeviceHourRow<'a> {
    project: &'a str,
    hour: u32,
    device_id: &'a str,
    latest: String,
}

/// One row of `device_segment_hour_input` (migration 0010).
#[derive(Row, Serialize)]
pub(super) struct DeviceSegmentHourRow<'a> {
    project: &'a str,
    hour: u32,
    device_id: &'a str,
    app_version: &'a str,
    os: &'a str,
    network: &'a str,
    latest: String,
}

/// The latest of `events` per key.
fn latest_by<'a, K: std::hash::Hash + Eq>(
    events: impl Iterator<Item = &'a StoredEvent>,
    key: impl Fn(&'a StoredEvent, u32) -> K,
) -> HashMap<K, &'a StoredEvent> {
    // The latest event is chosen on (time, id bytes): a UUID's bytes order as
    // its hyphenated lowercase text does, so this is the order of
    // `latest_key`, which is then formatted once per row rather than per event.
    let order = |e: &StoredEvent| (e.event_time_ms, *e.event.event_id.as_bytes());
    let mut latest: HashMap<K, &'a StoredEvent> = HashMap::new();
    for event in events {
        let hour = event_time_s(event.event_time_ms) / 3600 * 3600;
        latest
            .entry(key(event, hour))
            .and_modify(|held| {
                if order(event) > order(held) {
                    *held = event;
                }
            })
            .or_insert(event);
    }
    latest
}

/// The latest event of each (project, hour, device) among `events`.
pub(super) fn device_hours<'a>(events: impl Iterator<Item = &'a StoredEvent>) -> Vec<DeviceHourRow<'a>> {
    latest_by(events, |e, hour| (e.project.as_str(), hour, e.event.device_id.as_str()))
        .into_iter()
        .map(|((project, hour, device_id), event)| DeviceHourRow {
            project,
            hour,
            device_id,
            latest: latest_key(event),
        })
        .collect()
}

/// The latest event of each (project, hour, device, segment) among `events`.
pub(super) fn device_segment_hours<'a>(events: impl Iterator<Item = &'a StoredEvent>) -> Vec<DeviceSegmentHourRow<'a>> {
    let key = |e: &'a StoredEvent, hour| {
        let sync = &e.event;
        (e.project.as_str(), hour, sync.device_id.as_str(), sync.app_version.as_str(), sync.os.as_str(), sync.network)
    };
    latest_by(events, key)
        .into_iter()
        .map(|((project, hour, device_id, app_version, os, network), event)| DeviceSegmentHourRow {
            project,
            hour,
            device_id,
            app_version,
            os,
            network: network.as_str(),
            latest: latest_key(event),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;
    use synchealth_schema::{ProjectName, SyncEvent};

    fn event(time_ms: i64, id: &str, queue_depth: u32, synced: bool) -> StoredEvent {
        let mut raw = json!({
            "event_id": id, "device_id": "d1", "occurred_at": "2026-11-29T10:00:00Z",
            "sent_at": "2026-11-29T10:00:01Z", "success": true, "duration_ms": 10,
            "queue_depth": queue_depth, "app_version": "1.0", "os": "ios", "network": "wifi",
        });
        if synced {
            raw["last_success_at"] = json!("2026-11-29T09:00:00Z");
        }
        let sync: SyncEvent = serde_json::from_value(raw).unwrap();
        let at = time::OffsetDateTime::from_unix_timestamp(1_764_410_401).unwrap();
        let mut stored = StoredEvent::new(ProjectName::parse("p").unwrap(), sync, at, at);
        stored.event_time_ms = time_ms;
        stored
    }

    #[test]
    fn the_text_is_fixed_width_and_sorts_by_time_then_event_id_text() {
        let a = event(1_764_410_400_000, "00000000-0000-4000-8000-00000000000a", 7, true);
        let b = event(1_764_410_400_000, "00000000-0000-4000-8000-00000000000b", 1, false);
        let earlier = event(1_764_410_399_999, "ffffffff-ffff-4fff-bfff-ffffffffffff", 9, true);
        let negative = event(-1, "ffffffff-ffff-4fff-bfff-ffffffffffff", 9, true);
        let keys: Vec<String> = [&negative, &earlier, &a, &b].iter().map(|e| latest_key(e)).collect();
        assert!(keys.iter().all(|k| k.len() == 68), "{keys:?}");
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(&keys[2][16..52], "00000000-0000-4000-8000-00000000000a");
    }

    #[test]
    fn the_packed_values_come_back_out() {
        let e = event(1_764_410_400_000, "00000000-0000-4000-8000-00000000000a", 4_000_000_000, false);
        let packed = u64::from_str_radix(&latest_key(&e)[52..], 16).unwrap();
        assert_eq!((packed >> 25) & 0xffff_ffff, 4_000_000_000);
        assert_eq!((packed >> 13) & 0xfff, u64::from(e.queue_bucket));
        assert_eq!((packed >> 1) & 0xfff, u64::from(e.staleness_bucket));
        assert_eq!(packed & 1, 1);
    }

    #[test]
    fn a_block_keeps_one_row_per_device_and_hour_with_its_latest_event() {
        let older = event(1_764_410_400_000, "00000000-0000-4000-8000-00000000000a", 7, true);
        let newer = event(1_764_410_500_000, "00000000-0000-4000-8000-000000000001", 3, true);
        let next_hour = event(1_764_414_000_000, "00000000-0000-4000-8000-000000000002", 5, true);
        let rows = device_hours([&newer, &older, &next_hour].into_iter());
        assert_eq!(rows.len(), 2);
        let first = rows.iter().find(|r| r.hour == 1_764_410_400).unwrap();
        assert_eq!(first.latest, latest_key(&newer));
    }

    #[test]
    fn a_block_keeps_one_row_per_device_hour_and_segment() {
        let wifi = event(1_764_410_400_000, "00000000-0000-4000-8000-00000000000a", 7, true);
        let wifi_later = event(1_764_410_500_000, "00000000-0000-4000-8000-000000000001", 3, true);
        let mut cellular = event(1_764_410_450_000, "00000000-0000-4000-8000-000000000002", 5, true);
        cellular.event.network = synchealth_schema::Network::Cellular;
        let rows = device_segment_hours([&wifi, &cellular, &wifi_later].into_iter());
        assert_eq!(rows.len(), 2);
        let on = |network: &str| rows.iter().find(|r| r.network == network).unwrap();
        assert_eq!(on("wifi").latest, latest_key(&wifi_later));
        assert_eq!(on("cellular").latest, latest_key(&cellular));
        assert_eq!((on("wifi").app_version, on("wifi").os), ("1.0", "ios"));
    }
}
