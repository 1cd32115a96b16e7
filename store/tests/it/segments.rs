//! Filtered and broken-down per-device figures against brute force, where
//! a store that keeps each device's latest per hour and segment could go
//! wrong: one device in several segments within an hour, ties on the time
//! broken across segments by the event id, late events into hours already
//! read, and windows cut mid-hour at either end.

use synchealth_schema::{Network, StoredEvent};
use synchealth_store::{Dimension, Filters, Grouping, Query, SharedStore};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, fixture_base_ms, insert_all, project, query, simple_event_with_id, HOUR_MS,
};

on_both_stores!(a_device_in_several_segments_of_an_hour_is_counted_in_each_with_its_latest_there);

/// An event of `device` at `at` in the segment (app version, OS, network).
fn event(
    p: &synchealth_schema::ProjectName,
    device: &str,
    at: i64,
    queue_depth: u32,
    id: u128,
    segment: (&str, &str, Network),
) -> StoredEvent {
    let mut e = simple_event_with_id(p, device, at, queue_depth, Uuid::from_u128(id));
    e.event.app_version = segment.0.into();
    e.event.os = segment.1.into();
    e.event.network = segment.2;
    e
}

async fn a_device_in_several_segments_of_an_hour_is_counted_in_each_with_its_latest_there(store: SharedStore) {
    let p = project("segments");
    let hour = fixture_base_ms() + 5 * HOUR_MS;
    let at = hour + 30 * 60_000;
    let (old_wifi, old_cell) = (("1.0", "ios", Network::Wifi), ("1.0", "ios", Network::Cellular));
    let (new_wifi, android) = (("2.0", "ios", Network::Wifi), ("2.0", "android", Network::Cellular));
    // Ids are the tie-breakers: larger ids win a tie on the time.
    let batches: Vec<Vec<StoredEvent>> = vec![
        vec![
            // Roams from wifi to cellular; the two latest tie on the time and
            // the cellular one has the larger id.
            event(&p, "roamer", at - 60_000, 3, 0x10, old_wifi),
            event(&p, "roamer", at, 40, 0x20, old_wifi),
            event(&p, "roamer", at, 50, 0x90, old_cell),
            // Upgrades mid-hour: its latest of 1.0 is older than that of 2.0.
            event(&p, "upgrader", at - 120_000, 7, 0x30, old_wifi),
            event(&p, "upgrader", at + 60_000, 0, 0x31, new_wifi),
            // Next hour, and the hour after, so windows span several.
            event(&p, "steady", at + HOUR_MS, 12, 0x40, android),
            event(&p, "roamer", at + HOUR_MS + 5, 9, 0x41, old_wifi),
            event(&p, "steady", at + 2 * HOUR_MS, 13, 0x42, android),
        ],
        // Late, into the hour already read: a new latest for the roamer on
        // wifi only (still tied with cellular, now with the larger id), and
        // an older event that must change nothing.
        vec![event(&p, "roamer", at, 60, 0xa0, old_wifi), event(&p, "upgrader", at - 600_000, 99, 0xff, new_wifi)],
        // A new device in a segment no earlier hour had.
        vec![event(&p, "newcomer", hour + 1, 5, 0x50, ("3.0", "ios", Network::Ethernet))],
    ];
    let filters = [
        Filters::default(),
        Filters { os: Some("ios".into()), ..Filters::default() },
        Filters { network: Some(Network::Wifi), ..Filters::default() },
        Filters { app_version: Some("1.0".into()), network: Some(Network::Cellular), ..Filters::default() },
        Filters { app_version: Some("9.9".into()), ..Filters::default() },
    ];
    let windows = [
        (hour, hour + HOUR_MS),
        (hour - 2 * HOUR_MS, hour + 3 * HOUR_MS),
        (hour + 60_000, hour + 2 * HOUR_MS),
        (at, hour + HOUR_MS + 30 * 60_000),
        (at + 1, hour + 3 * HOUR_MS - 1),
    ];
    let groupings = [
        Grouping::Total,
        Grouping::Time { step_seconds: 3600 },
        Grouping::Time { step_seconds: 7200 },
        Grouping::By(Dimension::AppVersion),
        Grouping::By(Dimension::Os),
        Grouping::By(Dimension::Network),
    ];
    let mut events: Vec<StoredEvent> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        insert_all(store.as_ref(), batch).await;
        events.extend(batch.iter().cloned());
        for window in windows {
            for filters in &filters {
                let q = Query { filters: filters.clone(), ..query(&p, window) };
                for grouping in groupings {
                    let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                    let context = format!("batch {i}, {window:?}, {filters:?}, {grouping:?}");
                    assert_answer_matches(&answer, &events, &q, grouping, &context);
                }
            }
        }
    }
}
