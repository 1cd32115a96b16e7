//! Exactly once on ClickHouse: an event stored more than once, by another
//! collector, after a restart, days later, or by two collectors in the same
//! instant, counts once in every aggregate, device list and device page.
//!
//! Each store here is its own `ClickHouseStore::connect` on one database, as
//! separate collector processes are: nothing is shared in memory. The
//! expectations are brute force over the distinct events (the copy received
//! first), as in the conformance suite.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;
use synchealth_schema::StoredEvent;
use synchealth_store::{Aggregates, ClickHouseConfig, ClickHouseStore, DeviceList, Dimension, Events, Grouping, Store};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, fresh_store, now_ms, project, query, rfc3339, stamp, Backend, DAY_MS, HOUR_MS,
};

/// Another process's store on the test database.
async fn another_store(url: &str, database: &str) -> ClickHouseStore {
    let config = ClickHouseConfig {
        url: url.to_string(),
        user: "default".into(),
        password: None,
        database: database.to_string(),
    };
    ClickHouseStore::connect(config).await.expect("a second connection")
}

/// Events of several devices, versions and outcomes, 3 days, 1 hour and 1
/// minute old, at seconds that fall inside and at the edges of minutes.
fn batch(round: u64, received_ms: i64) -> Vec<StoredEvent> {
    let p = project("default");
    let mut events = Vec::new();
    for (i, age_ms) in [3 * DAY_MS + 17_250, HOUR_MS + 31_500, 60_000 + 2_750, 59_000].into_iter().enumerate() {
        for d in 0..6u64 {
            let occurred = received_ms - age_ms - d as i64 * 7_300;
            let app_version = ["2.2.0", "2.3.0"][(d % 2) as usize];
            let os = ["android", "ios", "macos"][(d % 3) as usize];
            let network = ["wifi", "cellular"][i % 2];
            let sample_rate = [1.0, 0.5][(d % 2) as usize];
            let json = json!({
                "event_id": Uuid::new_v4().to_string(),
                "device_id": format!("device-{round}-{d}"),
                "occurred_at": rfc3339(occurred),
                "last_success_at": rfc3339(occurred - 120_000),
                "success": !(d + i as u64).is_multiple_of(3),
                "duration_ms": 100 + 400 * d,
                "conflicts": d % 2,
                "queue_depth": d + 1,
                "app_version": app_version,
                "os": os,
                "network": network,
                "sample_rate": sample_rate,
            });
            events.push(stamp(&p, json, received_ms - 500, received_ms));
        }
    }
    events
}

/// The same events received again later: `received_ms` later, and with the
/// device's clock read `skew_ms` off, so their corrected times may move.
fn resent(events: &[StoredEvent], later_ms: i64, skew_ms: i64) -> Vec<StoredEvent> {
    events
        .iter()
        .map(|e| {
            let received = e.received_at_ms + later_ms;
            let json = serde_json::to_value(&e.event).expect("an event serializes");
            stamp(&e.project, json, received - 500 - skew_ms, received)
        })
        .collect()
}

/// Every aggregate the dashboard and the alerts read, over a week, a day and
/// windows whose edges cut minutes (read from the copies ledger), against
/// brute force over `distinct`; and each device's attempts on its list and
/// page.
async fn assert_counted_once(store: &dyn Store, distinct: &[StoredEvent], context: &str) {
    let p = project("default");
    let now = now_ms();
    let windows =
        [(now - 7 * DAY_MS, now + 60_000), (now - DAY_MS + 13_000, now + 7_000), (now - 2 * HOUR_MS - 4_500, now)];
    for window in windows {
        let q = query(&p, window);
        for grouping in [
            Grouping::Total,
            Grouping::By(Dimension::AppVersion),
            Grouping::By(Dimension::Os),
            Grouping::Time { step_seconds: 60 },
            Grouping::Time { step_seconds: 3600 },
            Grouping::Time { step_seconds: 90 },
        ] {
            let answer = store.aggregate(&q, grouping).await.expect("aggregate");
            assert_answer_matches(&answer, distinct, &q, grouping, &format!("{context}, {window:?}, {grouping:?}"));
        }
    }
    let week = query(&p, windows[0]);
    // The signals (conflicts, errors, queue lag) read `events` on their own.
    let conflicts = store.conflicts(&week, 3600, 10).await.expect("conflicts");
    let want: f64 = distinct.iter().map(|e| e.weight * f64::from(e.event.conflicts)).sum();
    assert!((conflicts.total() - want).abs() < 1e-9, "{context}: conflicts {} against {want}", conflicts.total());
    let errors = store.errors(&week, 3600, 10).await.expect("errors");
    let failed = distinct.iter().filter(|e| !e.event.success).count() as u64;
    assert_eq!(errors.kinds.iter().map(|k| k.events).sum::<u64>(), failed, "{context}: failed attempts");
    let lags = store.queue_lags(&week).await.expect("queue lags");
    let devices: BTreeSet<&str> = distinct.iter().map(|e| e.event.device_id.as_str()).collect();
    assert_eq!(lags.devices, devices.len() as u64, "{context}: devices with a queue lag read");
    let listed = store.devices(&week, DeviceList::QueueDepth, 1000).await.expect("device list");
    assert_eq!(listed.len(), devices.len(), "{context}: listed devices");
    for device in listed {
        let attempts = distinct.iter().filter(|e| e.event.device_id == device.device_id).count() as u64;
        assert_eq!(device.attempts_in_window, attempts, "{context}: attempts of {}", device.device_id);
        let page = store.device_events(&p, &device.device_id, 100).await.expect("device events");
        assert_eq!(page.len() as u64, attempts, "{context}: the page of {}", device.device_id);
    }
}

async fn clickhouse_database(test: &str) -> Option<(crate::helpers::TestStore, String, String)> {
    let fresh = fresh_store(Backend::ClickHouse, test).await?;
    let (url, database) = fresh.clickhouse.clone().expect("a ClickHouse test store");
    Some((fresh, url, database))
}

#[tokio::test]
async fn a_second_collector_finds_every_stored_event_however_old_and_stores_none_again() {
    let Some((fresh, url, database)) = clickhouse_database("second_collector").await else { return };
    let first = batch(0, now_ms());
    let outcome = fresh.store.insert(&first).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates.len()), (first.len(), 0));

    // Another process, as after a restart or behind a load balancer: it
    // knows nothing of the first one's writes. Resent a few seconds later,
    // and by a device whose clock reading moved the correction by a minute.
    let second = another_store(&url, &database).await;
    let moved = resent(&first, 9_000, 60_000);
    assert!(moved.iter().zip(&first).all(|(m, f)| m.event_time_ms == f.event_time_ms + 60_000));
    // A body resent unchanged an hour later: its old `sent_at` reads as an
    // hour of skew, and its corrected times move by an hour.
    let stale = resent(&first, HOUR_MS, HOUR_MS);
    assert!(stale.iter().zip(&first).all(|(m, f)| m.event_time_ms == f.event_time_ms + HOUR_MS));
    for (again, what) in [
        (resent(&first, 4_000, 0), "resent"),
        (moved, "skew moved a minute"),
        (stale, "resent unchanged an hour later"),
    ] {
        let outcome = second.insert(&again).await.unwrap();
        assert_eq!(outcome.inserted, 0, "{what}");
        assert_eq!(outcome.duplicates, (0..again.len()).collect::<Vec<_>>(), "{what}");
    }
    assert_counted_once(&second, &first, "after resends to another collector").await;
    assert_counted_once(fresh.store.as_ref(), &first, "read by the first collector").await;
    fresh.cleanup().await;
}

#[tokio::test]
async fn copies_that_two_collectors_wrote_unchecked_count_once_after_a_retry_finds_them() {
    let Some((fresh, url, database)) = clickhouse_database("unchecked_copies").await else { return };
    let (a, b) = (another_store(&url, &database).await, another_store(&url, &database).await);
    let week = query(&project("default"), (now_ms() - 7 * DAY_MS, now_ms() + 60_000));
    let first = batch(1, now_ms());
    // Two collectors that both passed the first look-up before either wrote,
    // and both died before their second look-up: two copies of every event.
    a.insert_unchecked(&first).await.unwrap();
    b.insert_unchecked(&resent(&first, 2_000, 0)).await.unwrap();
    let twice = a.aggregate(&week, Grouping::Total).await.unwrap();
    assert_eq!(twice[0].1.events, 2 * first.len() as u64, "the copies count twice before a look-up finds them");

    // The batch comes back (it was never acknowledged): every id is found,
    // and the copies beyond the first are compensated.
    let retry = resent(&first, 5_000, 0);
    let outcome = fresh.store.insert(&retry).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates.len()), (0, first.len()));
    assert_counted_once(fresh.store.as_ref(), &first, "after the retry").await;
    // Compensating is idempotent: the next retry finds and writes the same.
    fresh.store.insert(&retry).await.unwrap();
    assert_counted_once(&a, &first, "after a second retry").await;
    fresh.cleanup().await;
}

#[tokio::test]
async fn a_copy_stored_a_minute_off_counts_once_in_every_sum_list_and_page() {
    let Some((fresh, url, database)) = clickhouse_database("shifted_copy").await else { return };
    let a = another_store(&url, &database).await;
    let mut first = batch(2, now_ms());
    // One more, half a minute before the end of an hour the windows hold
    // whole: its copy a minute later falls into the next hour.
    let hour_end = (now_ms() / HOUR_MS - 1) * HOUR_MS;
    first.push(crate::helpers::simple_event(&project("default"), "edge-device", hour_end - 30_000, 4));
    // The second copy's skew was measured across a rounding boundary: its
    // corrected time is a minute later, so `events` never collapses it.
    a.insert_unchecked(&first).await.unwrap();
    let shifted = resent(&first, 2_000, 60_000);
    assert!(shifted.iter().zip(&first).all(|(s, f)| s.event_time_ms == f.event_time_ms + 60_000));
    a.insert_unchecked(&shifted).await.unwrap();
    fresh.store.insert(&resent(&first, 5_000, 0)).await.unwrap();

    // Every sum, every device figure (in minute and hour buckets too), each
    // device's list entry and page: the first copy's, once.
    assert_counted_once(fresh.store.as_ref(), &first, "with a copy a minute off").await;
    assert_counted_once(&a, &first, "read by another collector").await;
    fresh.cleanup().await;
}

#[tokio::test]
async fn two_collectors_storing_the_same_batch_at_the_same_moment_count_it_once() {
    let Some((fresh, url, database)) = clickhouse_database("racing_collectors").await else { return };
    let (a, b) = (Arc::new(another_store(&url, &database).await), Arc::new(another_store(&url, &database).await));
    let mut all = Vec::new();
    let mut both_wrote = 0;
    for round in 0..8 {
        let events = batch(100 + round, now_ms());
        let (x, y) = tokio::join!(a.insert(&events), b.insert(&events));
        let (x, y) = (x.unwrap(), y.unwrap());
        // Each event was answered new by at least one of them.
        assert!(x.inserted + y.inserted >= events.len(), "round {round}: {x:?} {y:?}");
        if x.inserted > 0 && y.inserted > 0 {
            both_wrote += 1;
        }
        all.extend(events);
        assert_counted_once(a.as_ref(), &all, &format!("round {round}")).await;
    }
    eprintln!("rounds in which both collectors wrote the batch: {both_wrote} of 8");
    fresh.cleanup().await;
}

#[tokio::test]
async fn a_write_interrupted_between_its_views_counts_once_after_its_replay() {
    let Some((fresh, url, database)) = clickhouse_database("interrupted_write").await else { return };
    let a = another_store(&url, &database).await;
    let server = clickhouse::Client::default().with_url(&url).with_user("default");
    let mut all = Vec::new();
    // What a server that died during the write had committed: `events`
    // first, then the views in name order; each case leaves out a suffix.
    let cases: [&[&str]; 3] = [
        &["stored_ids_mv"],
        &["rollup_minute_mv", "stored_ids_mv"],
        &["event_copies_mv", "rollup_hour_mv", "rollup_minute_mv", "stored_ids_mv"],
    ];
    for (round, missed) in cases.into_iter().enumerate() {
        let events = batch(200 + round as u64, now_ms());
        for view in missed {
            server.query(&format!("DETACH TABLE {database}.{view}")).execute().await.unwrap();
        }
        a.insert_unchecked(&events).await.unwrap();
        for view in missed {
            server.query(&format!("ATTACH TABLE {database}.{view}")).execute().await.unwrap();
        }
        // The collector replays the batch from its spool.
        let outcome = fresh.store.insert_replayed(&events).await.unwrap();
        assert_eq!((outcome.inserted, outcome.duplicates.len()), (0, events.len()), "missed {missed:?}");
        all.extend(events);
        assert_counted_once(fresh.store.as_ref(), &all, &format!("after a write that missed {missed:?}")).await;
        assert_counted_once(&a, &all, &format!("read by another collector, missed {missed:?}")).await;
    }
    fresh.cleanup().await;
}
