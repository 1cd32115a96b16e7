//! The per-device figures of filtered queries and breakdowns (issue 16)
//! against brute force: each device's latest event among the events a
//! filter or a group selects, when its latest events of an hour are in
//! different segments, tie on time and differ only by id, arrive late into
//! hours already read, and when windows cut hours in the middle.

use serde_json::json;
use synchealth_schema::StoredEvent;
use synchealth_store::{Aggregates, Database, Dimension, Filters, Grouping, Query, SharedStore, SqliteStore};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, fixture, fixture_base_ms, fixture_window, fresh_store, insert_all, project, query, rfc3339,
    stamp, Backend, TestStore, HOUR_MS,
};

on_both_stores!(
    ties_between_segments_break_on_the_event_id_text,
    filters_and_breakdowns_follow_late_events_into_hours_already_read,
);

/// An event of `device` at `at` in the segment (`app_version`, android,
/// `network`).
fn segment_event(
    p: &synchealth_schema::ProjectName,
    device: &str,
    at: i64,
    (app_version, network): (&str, &str),
    queue_depth: u32,
    id: u128,
) -> StoredEvent {
    let json = json!({
        "event_id": Uuid::from_u128(id).to_string(),
        "device_id": device,
        "occurred_at": rfc3339(at),
        "last_success_at": (!queue_depth.is_multiple_of(3)).then(|| rfc3339(at - 1000 * i64::from(queue_depth))),
        "success": true,
        "duration_ms": 250,
        "queue_depth": queue_depth,
        "app_version": app_version,
        "os": "android",
        "network": network,
    });
    stamp(p, json, at + 1_000, at + 1_020)
}

fn filter_list() -> Vec<Filters> {
    vec![
        Filters::default(),
        Filters { os: Some("android".into()), ..Filters::default() },
        Filters { network: Some(synchealth_schema::Network::Cellular), ..Filters::default() },
        Filters {
            app_version: Some("2.0.0".into()),
            network: Some(synchealth_schema::Network::Wifi),
            ..Filters::default()
        },
    ]
}

const GROUPINGS: [Grouping; 6] = [
    Grouping::Total,
    Grouping::Time { step_seconds: 3600 },
    Grouping::Time { step_seconds: 7200 },
    Grouping::By(Dimension::AppVersion),
    Grouping::By(Dimension::Os),
    Grouping::By(Dimension::Network),
];

/// Every filter and grouping over every window, against brute force.
async fn assert_all_match(
    store: &SharedStore,
    events: &[StoredEvent],
    p: &synchealth_schema::ProjectName,
    windows: &[(i64, i64)],
    context: &str,
) {
    for &window in windows {
        for filters in filter_list() {
            let q = Query { filters, ..query(p, window) };
            for grouping in GROUPINGS {
                let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                assert_answer_matches(
                    &answer,
                    events,
                    &q,
                    grouping,
                    &format!("{context}, {window:?}, {:?}, {grouping:?}", q.filters),
                );
            }
        }
    }
}

async fn ties_between_segments_break_on_the_event_id_text(store: SharedStore) {
    let p = project("segments");
    let hour = fixture_base_ms() + 7 * HOUR_MS;
    let at = hour + 20 * 60_000;
    // Per device, events at the same instant in different segments; the
    // greatest id text is in the first, the last or a middle segment of the
    // key's order, and the ids differ where a digit meets a letter.
    let events = vec![
        segment_event(&p, "first", at, ("1.0.0", "cellular"), 11, 0xa0 << 120),
        segment_event(&p, "first", at, ("2.0.0", "wifi"), 12, 0x90 << 120),
        segment_event(&p, "first", at, ("2.0.0", "cellular"), 13, 0x9f << 120),
        segment_event(&p, "last", at, ("1.0.0", "cellular"), 21, 0x10 << 120),
        segment_event(&p, "last", at, ("2.0.0", "wifi"), 22, (0x10 << 120) + 1),
        segment_event(&p, "middle", at, ("1.0.0", "wifi"), 31, 5),
        segment_event(&p, "middle", at, ("2.0.0", "cellular"), 32, 7),
        segment_event(&p, "middle", at, ("2.0.0", "wifi"), 33, 6),
        // Earlier in the hour, in the segments the ties are not in.
        segment_event(&p, "first", at - 60_000, ("1.0.0", "wifi"), 14, u128::MAX),
        segment_event(&p, "last", at - 60_000, ("2.0.0", "cellular"), 24, u128::MAX - 1),
        // The next hour, so that a window has two.
        segment_event(&p, "middle", at + HOUR_MS, ("1.0.0", "cellular"), 34, 8),
    ];
    insert_all(store.as_ref(), &events).await;
    let windows = [
        (hour, hour + HOUR_MS),
        (hour - HOUR_MS, hour + 3 * HOUR_MS),
        (hour + 5 * 60_000, at + 1),
        (at, at + HOUR_MS - 60_000),
        (at - 60_000, at),
    ];
    assert_all_match(&store, &events, &p, &windows, "ties").await;
}

async fn filters_and_breakdowns_follow_late_events_into_hours_already_read(store: SharedStore) {
    let p = project("segments");
    let base = fixture_base_ms();
    let mut events = fixture(&p, 31, base);
    insert_all(store.as_ref(), &events).await;
    let (from, to) = fixture_window(base);
    let windows =
        [(from, to), (from + 17 * 60_000 + 13_500, to - 3 * 60_000 - 1), (from + 5 * HOUR_MS, from + 7 * HOUR_MS)];
    assert_all_match(&store, &events, &p, &windows, "before").await;
    // Into hours read above: a device's new latest in another segment, a
    // tie with its latest in another segment, an older event that changes
    // nothing, a device new to the hour; then the same again an hour on.
    let latest_of = |events: &[StoredEvent], device: &str, hour: i64| {
        events
            .iter()
            .filter(|e| e.event.device_id == device && e.event_time_ms.div_euclid(HOUR_MS) * HOUR_MS == hour)
            .map(|e| e.event_time_ms)
            .max()
    };
    for (round, hour) in [from + 5 * HOUR_MS, from + 6 * HOUR_MS].into_iter().enumerate() {
        let round = round as u128;
        let mut batch = vec![
            segment_event(&p, "late-newcomer", hour + 30 * 60_000, ("2.0.0", "wifi"), 4000, (round << 64) + 1),
            segment_event(&p, "dev-05", hour + 59 * 60_000 + 59_999, ("1.9.0", "cellular"), 3000, (round << 64) + 2),
            segment_event(&p, "dev-06", hour + 1, ("2.0.0", "wifi"), 3001, (round << 64) + 3),
        ];
        for (i, device) in ["dev-07", "dev-08", "dev-09"].into_iter().enumerate() {
            if let Some(t) = latest_of(&events, device, hour) {
                batch.push(segment_event(
                    &p,
                    device,
                    t,
                    ("2.0.0", "wifi"),
                    3002 + i as u32,
                    u128::MAX - round * 8 - i as u128,
                ));
            }
        }
        insert_all(store.as_ref(), &batch).await;
        events.extend(batch);
        assert_all_match(&store, &events, &p, &windows, &format!("after round {round}")).await;
    }
}

/// SQLite only: a database of schema 9 (no `device_segment_hour`) with
/// events in it is upgraded by `migrate`, which fills the table from its
/// events with the rows the inserts would have written.
#[tokio::test]
async fn upgrading_an_sqlite_file_from_schema_9_fills_the_segment_hours() {
    let fresh = fresh_store(Backend::Sqlite, "upgrade_9").await.expect("SQLite is always available");
    let path = fresh.sqlite_path().expect("an SQLite store has a file");
    let p = project("upgrade");
    let base = fixture_base_ms();
    let mut events = fixture(&p, 32, base);
    events.extend(fixture(&project("other"), 33, base - 3 * 24 * HOUR_MS));
    // Ties across segments, for the backfill's order too.
    let at = base + 9 * HOUR_MS + 1234;
    events.push(segment_event(&p, "dev-tie", at, ("1.0.0", "wifi"), 1, 0xa0 << 120));
    events.push(segment_event(&p, "dev-tie", at, ("2.0.0", "wifi"), 2, 0x90 << 120));
    events.push(segment_event(&p, "dev-tie", at, ("2.0.0", "wifi"), 3, 0x91 << 120));
    insert_all(fresh.store.as_ref(), &events).await;
    let TestStore { store, dir, .. } = fresh;
    drop(store);

    let rows = |conn: &rusqlite::Connection| -> Vec<Vec<rusqlite::types::Value>> {
        conn.prepare("SELECT * FROM device_segment_hour ORDER BY project, hour, device_id, app_version, os, network")
            .expect("reading device_segment_hour")
            .query_map([], |r| (0..12).map(|i| r.get(i)).collect())
            .expect("reading device_segment_hour")
            .collect::<rusqlite::Result<_>>()
            .expect("reading device_segment_hour")
    };
    // Back to the schema of version 9.
    let conn = rusqlite::Connection::open(&path).expect("opening the file");
    let written = rows(&conn);
    assert!(written.len() > 3000, "the inserts wrote the rows: {}", written.len());
    conn.execute_batch("DROP TABLE device_segment_hour; DELETE FROM schema_migrations WHERE version >= 10;")
        .expect("dropping the segment hours");
    drop(conn);

    let upgraded = SqliteStore::open(&path).expect("reopening");
    upgraded.migrate().await.expect("upgrading");
    let conn = rusqlite::Connection::open(&path).expect("inspecting the file");
    assert_eq!(rows(&conn), written, "the backfill wrote what the inserts did");
    drop(conn);
    let (from, to) = fixture_window(base);
    for window in [(from, to), (from + 17 * 60_000 + 13_500, to - 3 * 60_000 - 1)] {
        for filters in filter_list() {
            let q = Query { filters, ..query(&p, window) };
            for grouping in GROUPINGS {
                let answer = upgraded.aggregate(&q, grouping).await.expect("aggregate");
                assert_answer_matches(&answer, &events, &q, grouping, &format!("upgraded, {window:?}, {grouping:?}"));
            }
        }
    }
    drop(dir);
}
