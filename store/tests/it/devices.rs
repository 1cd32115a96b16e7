//! Device lists and late arrivals on both stores, against brute force over
//! the fixture rows: every list in full (order, fields, limit), and the
//! late-event counts of [`synchealth_store::Aggregate`].

use std::collections::BTreeMap;

use serde_json::json;
use synchealth_schema::{ProjectName, StoredEvent};
use synchealth_store::devices::STUCK_ATTEMPTS;
use synchealth_store::metrics::LATE_ARRIVAL_MS;
use synchealth_store::{Aggregates, DeviceList, DeviceSummary, Filters, GroupKey, Grouping, Query, SharedStore};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, expected_groups, fixture, fixture_base_ms, fixture_window, insert_all, project, query,
    rfc3339, stamp, HOUR_MS,
};

on_both_stores!(
    windows_cut_mid_hour_and_mid_minute_still_match_brute_force,
    every_device_list_matches_a_brute_force_ranking,
    device_lists_honour_filters_and_limits,
    device_lists_stay_exact_over_cut_windows_and_after_late_events,
    late_arrivals_are_counted_per_group,
);

/// One attempt of a hand-made device at `at_ms`, sent `delay_ms` after it
/// happened (a device with a correct clock).
fn attempt(
    project: &ProjectName,
    device: &str,
    at_ms: i64,
    success: bool,
    queue_depth: u32,
    delay_ms: i64,
) -> StoredEvent {
    let mut json = json!({
        "event_id": Uuid::new_v4().to_string(),
        "device_id": device,
        "occurred_at": rfc3339(at_ms),
        "last_success_at": rfc3339(at_ms - 120_000),
        "success": success,
        "duration_ms": 900,
        "queue_depth": queue_depth,
        "app_version": "3.0.0",
        "os": "ios",
        "network": "wifi",
    });
    if !success {
        json["error_kind"] = json!("server");
        json["error_message"] = json!("503, \"upstream\" down");
    }
    stamp(project, json, at_ms + delay_ms, at_ms + delay_ms + 40)
}

/// The fixture plus devices made for each list: stuck, shrinking, too few
/// attempts to tell, failing in a row, quiet, and late reporters.
fn events(project: &ProjectName, base_ms: i64) -> Vec<StoredEvent> {
    let (from, _) = fixture_window(base_ms);
    let mut events = fixture(project, 11, base_ms);
    let minute = 60_000;
    let mut at = |device: &str, minutes: i64, success: bool, queue: u32| {
        events.push(attempt(project, device, from + minutes * minute, success, queue, 1_000));
    };
    // Never shrinks over the last three (an older, larger value first).
    for (m, q) in [(10, 90), (20, 5), (30, 5), (40, 7)] {
        at("x-stuck", m, false, q);
    }
    // Grows at the end, but shrank in between: not stuck.
    for (m, q) in [(10, 7), (20, 5), (30, 9)] {
        at("x-shrinking", m, false, q);
    }
    // Two attempts cannot show a trend.
    for (m, q) in [(10, 3), (20, 4)] {
        at("x-two", m, false, q);
    }
    // A success, then four failures in a row.
    for (m, ok) in [(5, false), (10, true), (20, false), (30, false), (40, false), (50, false)] {
        at("x-failing", m, ok, 0);
    }
    // Seen early in the window only.
    at("x-quiet", 30, true, 2);
    // Late: received 10 minutes after the event (device offline), and just
    // at the threshold (not late).
    for i in 0..7 {
        let t = from + (i * 37 + 3) * minute;
        events.push(attempt(project, &format!("x-late-{i}"), t, true, 0, LATE_ARRIVAL_MS * 2));
        events.push(attempt(project, &format!("x-edge-{i}"), t, true, 0, LATE_ARRIVAL_MS - 40));
    }
    events
}

/// The lists by brute force: each device's rows latest first, then the
/// definitions of `synchealth_store::devices` applied literally.
fn expected(events: &[StoredEvent], query: &Query, list: DeviceList, limit: usize) -> Vec<DeviceSummary> {
    let selected = expected_groups(events, query, Grouping::Total).remove(&GroupKey::Total).unwrap_or_default();
    let mut by_device: BTreeMap<String, Vec<&StoredEvent>> = BTreeMap::new();
    for e in selected {
        by_device.entry(e.event.device_id.clone()).or_default().push(e);
    }
    let mut rows: Vec<(DeviceSummary, bool)> = Vec::new();
    for (device, mut attempts) in by_device {
        let key = |e: &StoredEvent| (e.event_time_ms, e.event.event_id.hyphenated().to_string());
        attempts.sort_by_key(|e| std::cmp::Reverse(key(e)));
        let latest = attempts[0];
        let failures = attempts.iter().position(|e| e.event.success).unwrap_or(attempts.len());
        let n = STUCK_ATTEMPTS as usize;
        let stuck = attempts.len() >= n
            && attempts[..n].windows(2).all(|w| w[0].event.queue_depth >= w[1].event.queue_depth)
            && latest.event.queue_depth > 0;
        let summary = DeviceSummary {
            device_id: device,
            last_seen_ms: latest.event_time_ms,
            app_version: latest.event.app_version.clone(),
            os: latest.event.os.clone(),
            network: latest.event.network.as_str().to_string(),
            queue_depth: latest.event.queue_depth,
            staleness_ms: latest.staleness_ms.map(|s| s as i64),
            consecutive_failures: failures as u32,
            last_success: latest.event.success,
            last_error_kind: latest.event.error_kind.map(|k| k.as_str().to_string()),
            last_error_message: latest.event.error_message.clone(),
            attempts_in_window: attempts.len() as u64,
            silent_for_ms: None,
        };
        rows.push((summary, stuck));
    }
    let mut list_rows: Vec<DeviceSummary> = match list {
        DeviceList::QueueDepth => rows.into_iter().map(|r| r.0).filter(|d| d.queue_depth > 0).collect(),
        DeviceList::Staleness => rows.into_iter().map(|r| r.0).filter(|d| d.staleness_ms.is_some()).collect(),
        DeviceList::ConsecutiveFailures => {
            rows.into_iter().map(|r| r.0).filter(|d| d.consecutive_failures > 0).collect()
        }
        DeviceList::Stuck => rows.into_iter().filter(|r| r.1).map(|r| r.0).collect(),
        DeviceList::Quiet { silent_for_ms } => rows
            .into_iter()
            .map(|r| r.0)
            .filter(|d| d.last_seen_ms < query.to_ms - silent_for_ms)
            .map(|d| DeviceSummary { silent_for_ms: Some(query.to_ms - d.last_seen_ms), ..d })
            .collect(),
    };
    // Rank descending (quiet: oldest first), ties on the device id.
    list_rows.sort_by(|a, b| {
        let rank = |d: &DeviceSummary| -> i64 {
            match list {
                DeviceList::QueueDepth | DeviceList::Stuck => -i64::from(d.queue_depth),
                DeviceList::Staleness => -d.staleness_ms.unwrap_or(0),
                DeviceList::ConsecutiveFailures => -i64::from(d.consecutive_failures),
                DeviceList::Quiet { .. } => d.last_seen_ms,
            }
        };
        rank(a).cmp(&rank(b)).then_with(|| a.device_id.cmp(&b.device_id))
    });
    list_rows.truncate(limit);
    list_rows
}

const LISTS: [DeviceList; 5] = [
    DeviceList::QueueDepth,
    DeviceList::Staleness,
    DeviceList::ConsecutiveFailures,
    DeviceList::Stuck,
    DeviceList::Quiet { silent_for_ms: 2 * HOUR_MS },
];

async fn every_device_list_matches_a_brute_force_ranking(store: SharedStore) {
    let p = project("devices");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(store.as_ref(), &events).await;
    let q = query(&p, fixture_window(base));
    for list in LISTS {
        let got = store.devices(&q, list, 1000).await.expect("devices");
        let want = expected(&events, &q, list, 1000);
        assert!(!want.is_empty(), "the fixture has devices for {list:?}");
        assert_eq!(got, want, "{list:?}");
    }
    // The hand-made devices land where their definitions put them.
    let names = |list| expected(&events, &q, list, 1000).into_iter().map(|d| d.device_id).collect::<Vec<_>>();
    let stuck = names(DeviceList::Stuck);
    assert!(stuck.contains(&"x-stuck".to_string()), "{stuck:?}");
    assert!(!stuck.contains(&"x-shrinking".to_string()) && !stuck.contains(&"x-two".to_string()));
    let failing = store.devices(&q, DeviceList::ConsecutiveFailures, 1000).await.expect("devices");
    let x = failing.iter().find(|d| d.device_id == "x-failing").expect("x-failing is listed");
    assert_eq!((x.consecutive_failures, x.last_success, x.attempts_in_window), (4, false, 6));
    assert_eq!(x.last_error_message.as_deref(), Some("503, \"upstream\" down"));
    let quiet = store.devices(&q, LISTS[4], 1000).await.expect("devices");
    let x = quiet.iter().find(|d| d.device_id == "x-quiet").expect("x-quiet is listed");
    assert_eq!(x.silent_for_ms, Some(q.to_ms - (q.from_ms + 30 * 60_000)));
}

async fn device_lists_honour_filters_and_limits(store: SharedStore) {
    let p = project("devices");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(store.as_ref(), &events).await;
    let mut q = query(&p, fixture_window(base));
    for list in LISTS {
        let got = store.devices(&q, list, 3).await.expect("devices");
        assert_eq!(got, expected(&events, &q, list, 3), "{list:?}, limit 3");
    }
    q.filters = Filters { os: Some("ios".into()), ..Filters::default() };
    for list in LISTS {
        let got = store.devices(&q, list, 1000).await.expect("devices");
        assert!(got.iter().all(|d| d.os == "ios"));
        assert_eq!(got, expected(&events, &q, list, 1000), "{list:?}, os = ios");
    }
    // Another project's window holds nothing.
    let other = query(&project("elsewhere"), fixture_window(base));
    assert!(store.devices(&other, DeviceList::QueueDepth, 10).await.expect("devices").is_empty());
}

/// Every list, unfiltered and filtered, against brute force.
async fn check_lists(store: &SharedStore, q: &Query, events: &[StoredEvent], what: &str) {
    let mut filtered = q.clone();
    filtered.filters = Filters { os: Some("ios".into()), ..Filters::default() };
    for q in [q, &filtered] {
        for list in LISTS {
            let got = store.devices(q, list, 1000).await.expect("devices");
            assert_eq!(got, expected(events, q, list, 1000), "{what}: {list:?}, {:?}", q.filters);
        }
    }
}

async fn device_lists_stay_exact_over_cut_windows_and_after_late_events(store: SharedStore) {
    let p = project("list-edges");
    let base = fixture_base_ms();
    let mut events = events(&p, base);
    insert_all(store.as_ref(), &events).await;
    // Cut mid-minute inside the hand-made devices' hour: whole minutes, then
    // whole hours, then minutes and a partial minute at the end.
    let (from, _) = fixture_window(base);
    let minute = 60_000;
    let q = query(&p, (from + 7 * minute + 13_500, base + 21 * HOUR_MS + 3 * minute + 1));
    check_lists(&store, &q, &events, "first read").await;
    check_lists(&store, &q, &events, "read again").await;

    // Late events into a minute and an hour already read.
    let late = vec![
        attempt(&p, "x-failing", from + 45 * minute, true, 0, 3 * LATE_ARRIVAL_MS),
        attempt(&p, "x-stuck", from + 55 * minute, false, 8, 3 * LATE_ARRIVAL_MS),
        attempt(&p, "x-quiet", base + 5 * HOUR_MS + minute, true, 1, 3 * LATE_ARRIVAL_MS),
    ];
    insert_all(store.as_ref(), &late).await;
    events.extend(late);
    check_lists(&store, &q, &events, "after late events").await;
    let failing = store.devices(&q, DeviceList::ConsecutiveFailures, 1000).await.expect("devices");
    let x = failing.iter().find(|d| d.device_id == "x-failing").expect("x-failing is listed");
    assert_eq!((x.consecutive_failures, x.attempts_in_window), (1, 6), "the late success breaks the run");
}

async fn late_arrivals_are_counted_per_group(store: SharedStore) {
    let p = project("late");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(store.as_ref(), &events).await;
    let q = query(&p, fixture_window(base));
    for grouping in [Grouping::Total, Grouping::Time { step_seconds: 3600 }] {
        let got = store.aggregate(&q, grouping).await.expect("aggregate");
        let want = expected_groups(&events, &q, grouping);
        for (key, aggregate) in &got {
            let late = want[key].iter().filter(|e| e.received_at_ms - e.event_time_ms > LATE_ARRIVAL_MS).count();
            assert_eq!(aggregate.late_events, late as u64, "{grouping:?} {key:?}");
        }
        let total: u64 = got.iter().map(|(_, a)| a.late_events).sum();
        assert_eq!(total, 7, "{grouping:?}: only the seven late reporters");
    }
}

/// The read client: another user and per-query limits for the dashboard's
/// reads, while inserts keep the main user. A user the server does not know
/// makes reads fail and leaves writes working; a row limit of 1 stops an
/// aggregate with ClickHouse's own limit error.
#[tokio::test]
async fn clickhouse_reads_go_through_the_read_user_with_its_limits() {
    use synchealth_store::{ClickHouseConfig, ClickHouseStore, QueryLimits};
    let Some(fresh) = crate::helpers::fresh_store(crate::helpers::Backend::ClickHouse, "reader").await else {
        return;
    };
    let (url, database) = fresh.clickhouse.clone().expect("a ClickHouse store");
    let config = ClickHouseConfig { url, user: "default".into(), password: None, database };
    let p = project("reader");
    let base = fixture_base_ms();
    let events = fixture(&p, 5, base);
    let q = query(&p, fixture_window(base));

    let stranger = ClickHouseStore::connect(config.clone()).await.expect("connects").with_reader(
        Some("synchealth_no_such_user".into()),
        None,
        &QueryLimits::default(),
    );
    insert_all(&stranger, &events).await;
    assert!(stranger.aggregate(&q, Grouping::Total).await.is_err(), "reads use the read user");
    assert!(stranger.devices(&q, DeviceList::QueueDepth, 5).await.is_err());

    let limited = ClickHouseStore::connect(config.clone()).await.expect("connects").with_reader(
        None,
        None,
        &QueryLimits { max_rows_to_read: 1, ..QueryLimits::default() },
    );
    let error = limited.aggregate(&q, Grouping::Total).await.expect_err("the row limit stops it").to_string();
    assert!(error.contains("Limit for rows") || error.contains("TOO_MANY_ROWS") || error.contains("158"), "{error}");

    let generous = ClickHouseStore::connect(config).await.expect("connects").with_reader(
        None,
        None,
        &QueryLimits { max_execution_seconds: 20, max_rows_to_read: 10_000_000, max_memory_bytes: 1 << 30 },
    );
    let groups = generous.aggregate(&q, Grouping::Total).await.expect("within the limits");
    let want = expected_groups(&events, &q, Grouping::Total);
    assert_eq!(groups[0].1.events, want[&GroupKey::Total].len() as u64);
    fresh.cleanup().await;
}

/// Windows whose ends fall inside an hour and inside a minute: ClickHouse
/// reads whole hours and minutes from its rollups and the edges from the
/// events, and must still give the brute-force answer, for every grouping.
async fn windows_cut_mid_hour_and_mid_minute_still_match_brute_force(store: SharedStore) {
    let p = project("edges");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(store.as_ref(), &events).await;
    let window = (base + 2 * HOUR_MS + 17 * 60_000 + 13_500, base + 21 * HOUR_MS + 3 * 60_000 + 1);
    let mut q = query(&p, window);
    for grouping in [
        Grouping::Total,
        Grouping::Time { step_seconds: 3600 },
        Grouping::Time { step_seconds: 7200 },
        Grouping::Time { step_seconds: 300 },
        Grouping::Time { step_seconds: 90 },
        Grouping::By(synchealth_store::Dimension::Os),
    ] {
        let got = store.aggregate(&q, grouping).await.expect("aggregate");
        assert_answer_matches(&got, &events, &q, grouping, &format!("{grouping:?}"));
    }
    q.filters = Filters { app_version: Some("2.0.0".into()), ..Filters::default() };
    let got = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&got, &events, &q, Grouping::Total, "filtered");
    // Shorter than an hour, and than a minute.
    for (from, to) in [(window.0, window.0 + 40 * 60_000), (window.0, window.0 + 20_000)] {
        let q = query(&p, (from, to));
        let got = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
        assert_answer_matches(&got, &events, &q, Grouping::Total, "short window");
    }
}
