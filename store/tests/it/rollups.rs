//! What the stores' rollups must get right beyond the fixture's shape: a
//! device's hour updated by later inserts in any order, whole-hour windows
//! with filters (rollups for the totals, `events` for the devices), and an
//! embedded database upgraded with events already in it.

use synchealth_schema::StoredEvent;
use synchealth_store::{Aggregates, Database, Dimension, Filters, Grouping, SharedStore, SqliteStore};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, fixture, fixture_base_ms, fixture_window, fresh_store, insert_all, project, query,
    simple_event_with_id, Backend, TestStore, HOUR_MS,
};

on_both_stores!(
    an_older_event_arriving_later_does_not_replace_a_devices_latest,
    whole_hour_windows_with_filters_match_brute_force,
);

async fn an_older_event_arriving_later_does_not_replace_a_devices_latest(store: SharedStore) {
    let p = project("rollups");
    let hour = fixture_base_ms() + 5 * HOUR_MS;
    let at = hour + 30 * 60_000;
    // Ids that sort by `n` within a device, and differ between devices
    // (the id is the event's key).
    let devices = ["older-later", "newer-later", "tie-smaller-id", "tie-larger-id"];
    let id = |device: &str, n: u128| {
        let d = devices.iter().position(|d| *d == device).expect("a listed device") as u128;
        Uuid::from_u128((d << 64) + 0x1000 + n)
    };
    // Each insert is a batch of its own, in this order: the first stored
    // event of every device, then what arrives after it.
    let batches: Vec<Vec<StoredEvent>> = vec![
        vec![
            simple_event_with_id(&p, "older-later", at, 5, id("older-later", 8)),
            simple_event_with_id(&p, "newer-later", at, 6, id("newer-later", 8)),
            simple_event_with_id(&p, "tie-smaller-id", at, 7, id("tie-smaller-id", 8)),
            simple_event_with_id(&p, "tie-larger-id", at, 8, id("tie-larger-id", 8)),
            // A neighbouring hour, so that the totals have more than one.
            simple_event_with_id(&p, "older-later", at + HOUR_MS, 1, id("older-later", 7)),
        ],
        vec![
            simple_event_with_id(&p, "older-later", at - 20 * 60_000, 2000, id("older-later", 9)),
            simple_event_with_id(&p, "newer-later", at + 60_000, 2001, id("newer-later", 1)),
            simple_event_with_id(&p, "tie-smaller-id", at, 2002, id("tie-smaller-id", 1)),
            simple_event_with_id(&p, "tie-larger-id", at, 2003, id("tie-larger-id", 15)),
        ],
        // Older again, inside the batch and across batches.
        vec![
            simple_event_with_id(&p, "newer-later", at, 3000, id("newer-later", 14)),
            simple_event_with_id(&p, "older-later", hour, 3001, id("older-later", 15)),
            simple_event_with_id(&p, "older-later", at - 1, 3002, id("older-later", 16)),
        ],
    ];
    // Read after every batch: what a store derived from the hours before
    // (a cache, say) must follow each change.
    let mut events: Vec<StoredEvent> = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        insert_all(store.as_ref(), batch).await;
        events.extend(batch.iter().cloned());
        for window in
            [(hour, hour + HOUR_MS), (hour - 2 * HOUR_MS, hour + 3 * HOUR_MS), (hour + 60_000, hour + 2 * HOUR_MS)]
        {
            let q = query(&p, window);
            for grouping in [
                Grouping::Total,
                Grouping::Time { step_seconds: 3600 },
                Grouping::Time { step_seconds: 7200 },
                Grouping::Time { step_seconds: 60 },
            ] {
                let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                assert_answer_matches(&answer, &events, &q, grouping, &format!("batch {i}, {window:?}, {grouping:?}"));
            }
        }
    }
}

async fn whole_hour_windows_with_filters_match_brute_force(store: SharedStore) {
    let p = project("rollups");
    let base = fixture_base_ms();
    let events = fixture(&p, 21, base);
    insert_all(store.as_ref(), &events).await;
    let filters = [
        Filters { os: Some("ios".into()), ..Default::default() },
        Filters {
            app_version: Some("2.1.0".into()),
            network: Some(synchealth_schema::Network::Wifi),
            ..Default::default()
        },
    ];
    for filters in filters {
        let q = synchealth_store::Query { filters, ..query(&p, fixture_window(base)) };
        for grouping in [
            Grouping::Total,
            Grouping::Time { step_seconds: 3600 },
            Grouping::Time { step_seconds: 7200 },
            Grouping::By(Dimension::AppVersion),
        ] {
            let answer = store.aggregate(&q, grouping).await.expect("aggregate");
            assert_answer_matches(&answer, &events, &q, grouping, &format!("{:?}, {grouping:?}", q.filters));
        }
    }
}

/// SQLite only: another process writing to the same file (here a second
/// store on it) changes a past hour that the first store has read; the
/// first store's next answer has the change.
#[tokio::test]
async fn a_late_event_written_by_another_process_changes_the_answer() {
    let fresh = fresh_store(Backend::Sqlite, "other_process").await.expect("SQLite is always available");
    let path = fresh.sqlite_path().expect("an SQLite store has a file");
    let p = project("rollups");
    let base = fixture_base_ms();
    let mut events = fixture(&p, 24, base);
    insert_all(fresh.store.as_ref(), &events).await;
    let q = query(&p, fixture_window(base));
    let groupings = [Grouping::Total, Grouping::Time { step_seconds: 3600 }, Grouping::Time { step_seconds: 7200 }];
    for grouping in groupings {
        let answer = fresh.store.aggregate(&q, grouping).await.expect("aggregate");
        assert_answer_matches(&answer, &events, &q, grouping, &format!("before, {grouping:?}"));
    }
    let other = SqliteStore::open(&path).expect("a second store on the file");
    // The latest event of its hour for dev-03, and an event of a new device.
    let late = vec![
        simple_event_with_id(&p, "dev-03", base + 5 * HOUR_MS + 59 * 60_000 + 59_999, 4321, Uuid::new_v4()),
        simple_event_with_id(&p, "late-newcomer", base + 6 * HOUR_MS + 1, 12, Uuid::new_v4()),
    ];
    insert_all(&other, &late).await;
    events.extend(late);
    for grouping in groupings {
        let answer = fresh.store.aggregate(&q, grouping).await.expect("aggregate");
        assert_answer_matches(&answer, &events, &q, grouping, &format!("after, {grouping:?}"));
    }
    drop(fresh);
}

/// SQLite only: a database holding events from before migration 0007 (no
/// rollup tables, the covering index of 0006) is upgraded by `migrate`,
/// which fills the rollups from its events.
#[tokio::test]
async fn upgrading_an_sqlite_file_fills_the_rollups_from_its_events() {
    let fresh = fresh_store(Backend::Sqlite, "upgrade").await.expect("SQLite is always available");
    let path = fresh.sqlite_path().expect("an SQLite store has a file");
    let p = project("upgrade");
    let base = fixture_base_ms();
    let mut events = fixture(&p, 22, base);
    events.extend(fixture(&project("other"), 23, base - 3 * 24 * HOUR_MS));
    insert_all(fresh.store.as_ref(), &events).await;
    let TestStore { store, dir, .. } = fresh;
    drop(store);

    // Back to the schema of version 6.
    let conn = rusqlite::Connection::open(&path).expect("opening the file");
    conn.execute_batch(
        "DROP TABLE rollup_minute; DROP TABLE rollup_hour; DROP TABLE device_hour;
         ALTER TABLE ingest_keys DROP COLUMN allowed_origins;
         DELETE FROM schema_migrations WHERE version >= 7;",
    )
    .expect("dropping the rollups");
    let v6 = synchealth_schema::migrations::SQLITE.iter().find(|m| m.version == 6).expect("migration 6");
    for statement in v6.statements() {
        conn.execute_batch(&statement).expect("the covering index of migration 6");
    }
    drop(conn);

    let upgraded = SqliteStore::open(&path).expect("reopening");
    upgraded.migrate().await.expect("upgrading");
    let (from, to) = fixture_window(base);
    for window in [(from, to), (from + 17 * 60_000 + 13_500, to - 3 * 60_000 - 1)] {
        let q = query(&p, window);
        for grouping in [
            Grouping::Total,
            Grouping::Time { step_seconds: 3600 },
            Grouping::Time { step_seconds: 300 },
            Grouping::By(Dimension::Os),
        ] {
            let answer = upgraded.aggregate(&q, grouping).await.expect("aggregate");
            assert_answer_matches(&answer, &events, &q, grouping, &format!("upgraded, {window:?}, {grouping:?}"));
        }
    }
    let conn = rusqlite::Connection::open(&path).expect("inspecting the file");
    let index: Option<String> =
        conn.query_row("SELECT name FROM sqlite_master WHERE name = 'events_dashboard'", [], |r| r.get(0)).ok();
    assert_eq!(index, None, "the covering index is gone");
    drop(dir);
}
