//! Sub-hour series (issue 16) against brute force: each bucket's per-device
//! figures come from memory once read (`bucket_cache.rs`), so they must
//! follow every event that lands in a bucket already read (a device new to
//! it, a newer latest, a tie won on the id, an older event that changes
//! nothing), under filters, at steps that do and do not divide an hour, in
//! windows cut mid-bucket and mid-minute.

use serde_json::json;
use synchealth_schema::StoredEvent;
use synchealth_store::{Filters, Grouping, Query, SharedStore};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, fixture, fixture_base_ms, fixture_window, insert_all, project, query, rfc3339, stamp,
    HOUR_MS,
};

on_both_stores!(sub_hour_series_follow_events_into_buckets_already_read,);

const STEPS: [u32; 5] = [60, 300, 900, 1800, 5400];

fn filters() -> [Filters; 3] {
    [
        Filters::default(),
        Filters { os: Some("android".into()), ..Filters::default() },
        Filters { network: Some(synchealth_schema::Network::Cellular), ..Filters::default() },
    ]
}

/// An android event of `device` at `at` on `network`.
fn event(
    p: &synchealth_schema::ProjectName,
    device: &str,
    at: i64,
    network: &str,
    queue: u32,
    id: u128,
) -> StoredEvent {
    let json = json!({
        "event_id": Uuid::from_u128(id).to_string(),
        "device_id": device,
        "occurred_at": rfc3339(at),
        "last_success_at": queue.is_multiple_of(2).then(|| rfc3339(at - 7_000 * i64::from(queue))),
        "success": !queue.is_multiple_of(3),
        "duration_ms": 120,
        "queue_depth": queue,
        "app_version": "2.0.0",
        "os": "android",
        "network": network,
    });
    stamp(p, json, at + 500, at + 520)
}

async fn assert_series_match(store: &SharedStore, events: &[StoredEvent], windows: &[Query], context: &str) {
    for window in windows {
        for filters in filters() {
            let q = Query { filters, ..window.clone() };
            for step_seconds in STEPS {
                let grouping = Grouping::Time { step_seconds };
                let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                let what = format!("{context}, {}..{}, {:?}, step {step_seconds}", q.from_ms, q.to_ms, q.filters);
                assert_answer_matches(&answer, events, &q, grouping, &what);
            }
        }
    }
}

async fn sub_hour_series_follow_events_into_buckets_already_read(store: SharedStore) {
    let p = project("series");
    let base = fixture_base_ms();
    let mut events = fixture(&p, 41, base);
    insert_all(store.as_ref(), &events).await;
    let (from, to) = fixture_window(base);
    let windows = [
        query(&p, (from, to)),
        query(&p, (from + 7 * 60_000 + 13_500, to - 4 * 60_000 - 1)),
        query(&p, (from + 5 * HOUR_MS, from + 6 * HOUR_MS + 20 * 60_000)),
    ];
    assert_series_match(&store, &events, &windows, "first read").await;
    assert_series_match(&store, &events, &windows, "read again").await;
    // Into buckets read above, a round at a time: the latest of a device
    // at each step's bucket ends, a device new to the window, an older
    // event, and a tie with a device's latest that wins on its id.
    let latest_before = |events: &[StoredEvent], device: &str, until: i64| {
        events.iter().filter(|e| e.event.device_id == device && e.event_time_ms < until).map(|e| e.event_time_ms).max()
    };
    for round in 0..2u128 {
        let at = from + (5 + round as i64) * HOUR_MS + 30 * 60_000;
        let mut batch = vec![
            event(&p, "newcomer", at + 17_000, "cellular", 40, (round << 64) + 1),
            event(&p, "dev-03", at + 4 * 60_000 + 59_999, "cellular", 3000, (round << 64) + 2),
            event(&p, "dev-04", at - 29 * 60_000, "wifi", 2, (round << 64) + 3),
        ];
        if let Some(t) = latest_before(&events, "dev-05", at) {
            batch.push(event(&p, "dev-05", t, "cellular", 77, u128::MAX - round));
        }
        insert_all(store.as_ref(), &batch).await;
        events.extend(batch);
        assert_series_match(&store, &events, &windows, &format!("after round {round}")).await;
    }
}
