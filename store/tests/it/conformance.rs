//! The store conformance suite: every test is written once against the
//! [`Store`] interface and runs on both stores (`sqlite::NAME` and
//! `clickhouse::NAME`), so the embedded default and production answer alike.

use std::collections::BTreeSet;
use std::sync::Arc;

use synchealth_schema::{Network, StoredEvent};
use synchealth_store::{
    Accounts, Aggregates, Database, Dimension, Events, Filters, GroupKey, Grouping, IngestKey, InsertOutcome,
    SharedStore, SqliteStore, Store, User,
};
use uuid::Uuid;

use crate::helpers::{
    assert_answer_matches, assert_same_answer, fixture, fixture_base_ms, fixture_window, fresh_store, insert_all,
    latest_per_device, now_ms, project, query, simple_event, simple_event_with_id, stamp, Backend, TestStore, DAY_MS,
    HOUR_MS,
};

on_both_stores!(
    a_fresh_store_answers_ping_and_holds_no_events,
    summary_metrics_match_a_brute_force_count,
    each_filter_keeps_only_matching_events,
    time_buckets_of_a_minute_and_an_hour_start_at_multiples_of_the_step,
    grouping_by_each_dimension_gives_one_group_per_value,
    an_empty_window_gives_no_groups,
    posting_the_same_batch_twice_counts_once,
    duplicates_inside_one_insert_count_once,
    a_project_never_sees_another_projects_events,
    the_latest_event_of_a_device_breaks_time_ties_on_the_event_id_text,
    device_events_come_newest_first_with_every_field_intact,
    conflict_details_queue_times_and_dimensions_are_read_back_as_they_were_sent,
    retention_deletes_only_events_older_than_the_limit,
    the_control_plane_round_trips_projects_keys_and_users,
    migrating_again_keeps_schema_and_data,
    telemetry_loss_keeps_the_largest_cumulative_count_per_device_and_reason,
    a_late_event_in_an_hour_already_read_changes_the_next_answer,
);

async fn a_fresh_store_answers_ping_and_holds_no_events(store: SharedStore) {
    store.ping().await.expect("ping");
    let p = project("conformance");
    let answer = store.aggregate(&query(&p, (0, i64::MAX)), Grouping::Total).await.expect("aggregate");
    assert!(answer.is_empty(), "a fresh store has no events: {answer:?}");
    assert!(store.device_events(&p, "dev-00", 10).await.expect("device events").is_empty());
}

async fn summary_metrics_match_a_brute_force_count(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 1, base);
    insert_all(store.as_ref(), &events).await;
    let q = query(&p, fixture_window(base));
    let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_eq!(answer.len(), 1, "one group for Total");
    assert_eq!(answer[0].0, GroupKey::Total);
    assert_answer_matches(&answer, &events, &q, Grouping::Total, "total");

    // The fixture must exercise what it claims to, or the match above is weak.
    let a = &answer[0].1;
    assert!(a.events > 2000 && a.devices >= 40, "{} events, {} devices", a.events, a.devices);
    assert!(a.attempts > a.events as f64, "sampling weights count");
    assert!(a.successes < a.attempts && a.conflicted > 0.0);
    assert!(a.queue_over_threshold > 0 && a.queue_max > 1000);
    assert!(a.never_synced_devices >= 4, "never synced: {}", a.never_synced_devices);
    let edge: Vec<i64> = events
        .iter()
        .filter(|e| e.event.device_id == "dev-edge")
        .map(|e| e.event_time_ms)
        .filter(|t| (q.from_ms..q.to_ms).contains(t))
        .collect();
    assert_eq!(edge.len(), 3, "from is inside the window, to is outside");

    // A lower threshold moves devices over it, with no other change.
    let low = synchealth_store::Query { queue_threshold: 10, ..q.clone() };
    let answer = store.aggregate(&low, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&answer, &events, &low, Grouping::Total, "threshold 10");
}

async fn each_filter_keeps_only_matching_events(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 2, base);
    insert_all(store.as_ref(), &events).await;
    let cases = [
        ("app_version", Filters { app_version: Some("2.1.0".into()), ..Default::default() }),
        ("os", Filters { os: Some("ios".into()), ..Default::default() }),
        ("network", Filters { network: Some(Network::Cellular), ..Default::default() }),
        (
            "combined",
            Filters { app_version: Some("2.0.0".into()), os: Some("android".into()), network: Some(Network::Wifi) },
        ),
        ("no match", Filters { app_version: Some("9.9.9".into()), ..Default::default() }),
    ];
    for (name, filters) in cases {
        let q = synchealth_store::Query { filters, ..query(&p, fixture_window(base)) };
        for grouping in [Grouping::Total, Grouping::By(Dimension::Os)] {
            let answer = store.aggregate(&q, grouping).await.expect("aggregate");
            assert_answer_matches(&answer, &events, &q, grouping, &format!("filter {name}, {grouping:?}"));
        }
    }
}

async fn time_buckets_of_a_minute_and_an_hour_start_at_multiples_of_the_step(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 3, base);
    insert_all(store.as_ref(), &events).await;
    // A window that starts and ends off the bucket grid: partial first and
    // last buckets still take the bucket start as key.
    let (from, to) = fixture_window(base);
    let q = query(&p, (from + 90_500, to - 30_250));
    for step in [60u32, 3600] {
        let grouping = Grouping::Time { step_seconds: step };
        let answer = store.aggregate(&q, grouping).await.expect("aggregate");
        assert!(answer.len() > 10, "{step} s buckets: {}", answer.len());
        for (key, _) in &answer {
            let GroupKey::Time(start) = key else { panic!("a time bucket key, got {key:?}") };
            assert_eq!(start % i64::from(step), 0, "bucket start {start} is a multiple of {step} s");
        }
        assert_answer_matches(&answer, &events, &q, grouping, &format!("{step} s buckets"));
    }
}

async fn grouping_by_each_dimension_gives_one_group_per_value(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 4, base);
    insert_all(store.as_ref(), &events).await;
    let q = query(&p, fixture_window(base));
    for dimension in Dimension::ALL {
        let grouping = Grouping::By(dimension);
        let answer = store.aggregate(&q, grouping).await.expect("aggregate");
        assert!(answer.len() >= 3, "{dimension:?}: {} groups", answer.len());
        assert_answer_matches(&answer, &events, &q, grouping, &format!("by {}", dimension.column()));
    }
}

async fn an_empty_window_gives_no_groups(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 5, base);
    insert_all(store.as_ref(), &events).await;
    let before = query(&p, (base - 10 * DAY_MS, base - 9 * DAY_MS));
    let after = query(&p, (base + 5 * DAY_MS, base + 6 * DAY_MS));
    let inverted = query(&p, (base + 10 * HOUR_MS, base + 9 * HOUR_MS));
    for (name, q) in [("before", before), ("after", after), ("inverted", inverted)] {
        for grouping in [Grouping::Total, Grouping::Time { step_seconds: 60 }, Grouping::By(Dimension::AppVersion)] {
            let answer = store.aggregate(&q, grouping).await.expect("aggregate");
            assert!(answer.is_empty(), "{name} window, {grouping:?}: {answer:?}");
        }
    }
}

async fn posting_the_same_batch_twice_counts_once(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events: Vec<StoredEvent> = fixture(&p, 6, base).into_iter().take(500).collect();
    let first = store.insert(&events).await.expect("first insert");
    assert_eq!(first, InsertOutcome { inserted: 500, duplicates: vec![] });
    let second = store.insert(&events).await.expect("second insert");
    assert_eq!(second, InsertOutcome { inserted: 0, duplicates: (0..500).collect() });

    // A probe's retry: the same events in a new batch, sent and received
    // later with a different latency.
    let retried: Vec<StoredEvent> = events
        .iter()
        .map(|e| {
            let json = serde_json::to_value(&e.event).expect("event to JSON");
            stamp(&p, json, e.sent_at_ms + 300_000, e.received_at_ms + 300_000 + 1_234)
        })
        .collect();
    let third = store.insert(&retried).await.expect("retried insert");
    assert_eq!(third, InsertOutcome { inserted: 0, duplicates: (0..500).collect() });

    let q = query(&p, (base - DAY_MS, base + 2 * DAY_MS));
    let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&answer, &events, &q, Grouping::Total, "after three posts");
}

async fn duplicates_inside_one_insert_count_once(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let fixture = fixture(&p, 7, base);
    let (a, b, c) = (fixture[0].clone(), fixture[1].clone(), fixture[2].clone());
    let batch = vec![a.clone(), b.clone(), a.clone(), c.clone(), b.clone(), a.clone()];
    let outcome = store.insert(&batch).await.expect("insert");
    assert_eq!(outcome, InsertOutcome { inserted: 3, duplicates: vec![2, 4, 5] });
    // Already stored and repeated inside the batch: both reported.
    let d = fixture[3].clone();
    let outcome = store.insert(&[c.clone(), d.clone(), d.clone()]).await.expect("insert");
    assert_eq!(outcome, InsertOutcome { inserted: 1, duplicates: vec![0, 2] });

    let stored = [a, b, c, d];
    let q = query(&p, (base - DAY_MS, base + 2 * DAY_MS));
    let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&answer, &stored, &q, Grouping::Total, "after duplicate inserts");
}

async fn a_project_never_sees_another_projects_events(store: SharedStore) {
    let (alpha, beta) = (project("alpha"), project("beta"));
    let base = fixture_base_ms();
    let alpha_events = fixture(&alpha, 8, base);
    // The same event ids under another project are other events.
    let beta_events: Vec<StoredEvent> = alpha_events
        .iter()
        .take(300)
        .map(|e| {
            let mut json = serde_json::to_value(&e.event).expect("event to JSON");
            json["queue_depth"] = serde_json::json!(e.event.queue_depth + 3);
            json["success"] = serde_json::json!(!e.event.success);
            stamp(&beta, json, e.sent_at_ms, e.received_at_ms)
        })
        .collect();
    insert_all(store.as_ref(), &alpha_events).await;
    insert_all(store.as_ref(), &beta_events).await;
    let mut all = alpha_events.clone();
    all.extend(beta_events.iter().cloned());
    for p in [&alpha, &beta] {
        let q = query(p, fixture_window(base));
        for grouping in [Grouping::Total, Grouping::By(Dimension::Network)] {
            let answer = store.aggregate(&q, grouping).await.expect("aggregate");
            assert_answer_matches(&answer, &all, &q, grouping, &format!("project {p}, {grouping:?}"));
        }
        let device = store.device_events(p, "dev-00", 1000).await.expect("device events");
        assert!(!device.is_empty());
        assert!(device.iter().all(|e| e.project == *p), "device events of {p} stay in {p}");
    }
    let gamma = project("gamma");
    let none = store.aggregate(&query(&gamma, (0, i64::MAX)), Grouping::Total).await.expect("aggregate");
    assert!(none.is_empty(), "a project without events sees none: {none:?}");
}

async fn the_latest_event_of_a_device_breaks_time_ties_on_the_event_id_text(store: SharedStore) {
    // Twenty devices, each with two events at the same corrected time and
    // random ids: a store that breaks the tie any other way than on the id
    // text agrees with this one by chance once in a million.
    let p = project("conformance");
    let at = fixture_base_ms() + 5 * HOUR_MS;
    let mut events = Vec::new();
    for i in 0..20u32 {
        let device = format!("tie-{i:02}");
        events.push(simple_event_with_id(&p, &device, at, 100 + i, Uuid::new_v4()));
        events.push(simple_event_with_id(&p, &device, at, 2000 + i, Uuid::new_v4()));
        // An older event with a smaller id than any random one: time beats the id.
        events.push(simple_event_with_id(&p, &device, at - 1, 5000, Uuid::from_u128(u128::from(i))));
    }
    insert_all(store.as_ref(), &events).await;
    let q = query(&p, (at - HOUR_MS, at + HOUR_MS));
    let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&answer, &events, &q, Grouping::Total, "ties");
    let refs: Vec<&StoredEvent> = events.iter().collect();
    let latest = latest_per_device(&refs);
    for (device, expected) in latest {
        let got = store.device_events(&p, &device, 1).await.expect("device events");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.event_id, expected.event.event_id, "newest event of {device}");
    }
}

async fn device_events_come_newest_first_with_every_field_intact(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 9, base);
    insert_all(store.as_ref(), &events).await;
    let order_key = |e: &StoredEvent| (e.event_time_ms, e.event.event_id.hyphenated().to_string());
    // Devices with wrong clocks, a never-synced one, a backed-up one.
    for device in ["dev-00", "dev-01", "dev-04", "dev-12", "dev-37", "dev-edge"] {
        let mut expected: Vec<&StoredEvent> = events.iter().filter(|e| e.event.device_id == device).collect();
        expected.sort_by_key(|e| std::cmp::Reverse(order_key(e)));
        for limit in [1u32, 10, 37, 10_000] {
            let got = store.device_events(&p, device, limit).await.expect("device events");
            let want: Vec<StoredEvent> = expected.iter().take(limit as usize).map(|e| (*e).clone()).collect();
            assert_eq!(got.len(), want.len(), "{device}, limit {limit}: count");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g, w, "{device}, limit {limit}: event {i}");
            }
        }
    }
    // Optional fields that were present come back present, and absent ones absent.
    let all = store.device_events(&p, "dev-03", 10_000).await.expect("device events");
    assert!(all.iter().any(|e| e.event.error_message.is_some() && e.event.error_kind.is_some()));
    assert!(all.iter().any(|e| e.event.trigger.is_none()) && all.iter().any(|e| e.event.trigger.is_some()));
    assert!(store.device_events(&p, "no-such-device", 10).await.expect("device events").is_empty());
}

async fn conflict_details_queue_times_and_dimensions_are_read_back_as_they_were_sent(store: SharedStore) {
    let p = project("conformance");
    let at = now_ms() - HOUR_MS;
    let event = |id: u128, occurred_ms: i64, extra: serde_json::Value| {
        let mut json = serde_json::json!({
            "event_id": Uuid::from_u128(id).to_string(),
            "device_id": "dev-details",
            "occurred_at": crate::helpers::rfc3339(occurred_ms),
            "success": false,
            "duration_ms": 900,
            "app_version": "3.0.0",
            "os": "ios",
        });
        json.as_object_mut().expect("an object").extend(extra.as_object().expect("an object").clone());
        stamp(&p, json, occurred_ms + 1_000, occurred_ms + 1_020)
    };
    let full = event(
        1,
        at,
        serde_json::json!({
            // Not in any sorted order: the store must keep the event's.
            "conflict_details": [
                {"entity": "todo", "kind": "update_update", "resolution": "last_write_wins", "count": 4},
                {"entity": "list \"shared\" é", "kind": "update_delete", "resolution": "crdt_merge", "count": 1},
                {"entity": "attachment", "kind": "constraint", "resolution": "unresolved", "count": 2}
            ],
            "conflicts": 9,
            "queue_oldest_at": crate::helpers::rfc3339(at - 754_321),
            "dimensions": {"region": "eu-west", "engine": "powersync", "plan": "pro ü"},
        }),
    );
    // A queue time after the attempt (another clock, a bug): kept as sent, lag 0.
    let ahead = event(2, at + 1, serde_json::json!({"queue_oldest_at": crate::helpers::rfc3339(at + 5_000)}));
    let plain = event(3, at + 2, serde_json::json!({}));
    assert_eq!(full.queue_lag_ms, Some(754_321));
    assert_eq!(ahead.queue_lag_ms, Some(0));
    let events = vec![full, ahead, plain];
    insert_all(store.as_ref(), &events).await;

    let got = store.device_events(&p, "dev-details", 10).await.expect("device events");
    let want: Vec<StoredEvent> = events.iter().rev().cloned().collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "event {}", w.event.event_id);
    }
    let full = &got[2].event;
    let entities: Vec<&str> = full.conflict_details.iter().map(|d| d.entity.as_str()).collect();
    assert_eq!(entities, ["todo", "list \"shared\" é", "attachment"]);
    assert_eq!(full.conflict_details.iter().map(|d| d.count).sum::<u32>(), 7);
    assert_eq!(full.dimensions.keys().collect::<Vec<_>>(), ["engine", "plan", "region"]);
    assert_eq!(got[2].queue_lag_ms, Some(754_321));
    assert!(got[0].event.conflict_details.is_empty() && got[0].event.dimensions.is_empty());
    assert_eq!((got[0].event.queue_oldest_at, got[0].queue_lag_ms), (None, None));
}

async fn retention_deletes_only_events_older_than_the_limit(store: SharedStore) {
    let p = project("conformance");
    let now = now_ms();
    let old: Vec<StoredEvent> =
        (0..5).map(|i| simple_event(&p, &format!("old-{i}"), now - 40 * DAY_MS + i, 3)).collect();
    let fresh: Vec<StoredEvent> = (0..5).map(|i| simple_event(&p, &format!("new-{i}"), now - DAY_MS + i, 4)).collect();
    insert_all(store.as_ref(), &old).await;
    insert_all(store.as_ref(), &fresh).await;
    let q = query(&p, (now - 60 * DAY_MS, now + DAY_MS));
    let before = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_eq!(before.first().map(|(_, a)| a.events), Some(10), "all events before retention");
    store.apply_retention(30).await.expect("retention");
    let after = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&after, &fresh, &q, Grouping::Total, "after retention");
    assert!(store.device_events(&p, "old-0", 10).await.expect("device events").is_empty());
    assert_eq!(store.device_events(&p, "new-0", 10).await.expect("device events").len(), 1);
    // Running it again is harmless.
    store.apply_retention(30).await.expect("retention again");
    let again = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&again, &fresh, &q, Grouping::Total, "after retention twice");
}

async fn the_control_plane_round_trips_projects_keys_and_users(store: SharedStore) {
    let (alpha, beta) = (project("alpha"), project("beta"));
    store.ensure_project(&alpha).await.expect("ensure alpha");
    store.ensure_project(&alpha).await.expect("ensure alpha again");
    store.ensure_project(&beta).await.expect("ensure beta");
    let projects = store.projects().await.expect("projects");
    assert_eq!(projects.iter().filter(|p| **p == alpha).count(), 1, "alpha once: {projects:?}");
    assert_eq!(projects.iter().filter(|p| **p == beta).count(), 1, "beta once: {projects:?}");
    assert!(projects.windows(2).all(|w| w[0] < w[1]), "projects by name: {projects:?}");

    // Whole seconds: the ClickHouse schema keeps creation times as DateTime.
    let created = (now_ms() / 1000) * 1000;
    let key = |hash: &str, project: &synchealth_schema::ProjectName, revoked| IngestKey {
        key_hash: hash.to_string(),
        project: project.clone(),
        label: format!("label of {hash}"),
        created_at_ms: created,
        revoked,
        allowed_origins: vec![],
    };
    // Origins round-trip in order, and an empty list stays empty.
    let k1 = IngestKey {
        allowed_origins: vec!["https://app.example.com".into(), "http://localhost:5173".into()],
        ..key(&"a1".repeat(32), &alpha, false)
    };
    let k2 = key(&"b2".repeat(32), &alpha, false);
    let k3 = key(&"c3".repeat(32), &beta, false);
    for k in [&k1, &k2, &k3] {
        store.put_ingest_key(k).await.expect("put key");
    }
    assert_eq!(store.find_ingest_key(&k1.key_hash).await.expect("find key"), Some(k1.clone()));
    assert_eq!(store.find_ingest_key(&"ff".repeat(32)).await.expect("find key"), None);
    let sorted = |mut keys: Vec<IngestKey>| {
        keys.sort_by(|a, b| a.key_hash.cmp(&b.key_hash));
        keys
    };
    assert_eq!(sorted(store.ingest_keys(&alpha).await.expect("keys")), vec![k1.clone(), k2.clone()]);
    assert_eq!(store.ingest_keys(&beta).await.expect("keys"), vec![k3.clone()]);

    // Revoking is storing the record again with `revoked`: one record, revoked.
    let revoked = IngestKey { revoked: true, ..k1.clone() };
    store.put_ingest_key(&revoked).await.expect("revoke");
    assert_eq!(store.find_ingest_key(&k1.key_hash).await.expect("find key"), Some(revoked.clone()));
    assert_eq!(sorted(store.ingest_keys(&alpha).await.expect("keys")), vec![revoked, k2]);

    let admin =
        User { username: "root".into(), password_hash: "$argon2id$v=19$x".into(), admin: true, projects: vec![] };
    let viewer = User {
        username: "viewer".into(),
        password_hash: "$argon2id$v=19$y".into(),
        admin: false,
        projects: vec![alpha.clone(), beta.clone()],
    };
    store.put_user(&admin).await.expect("put admin");
    store.put_user(&viewer).await.expect("put viewer");
    assert_eq!(store.find_user("root").await.expect("find"), Some(admin.clone()));
    assert_eq!(store.find_user("viewer").await.expect("find"), Some(viewer.clone()));
    assert_eq!(store.find_user("nobody").await.expect("find"), None);
    let changed = User { password_hash: "$argon2id$v=19$z".into(), projects: vec![beta.clone()], ..viewer.clone() };
    store.put_user(&changed).await.expect("replace viewer");
    assert_eq!(store.find_user("viewer").await.expect("find"), Some(changed));

    assert!(store.remove_user("viewer").await.expect("remove"), "removing an existing user");
    assert_eq!(store.find_user("viewer").await.expect("find"), None);
    assert!(!store.remove_user("viewer").await.expect("remove again"), "removing a missing user");
    assert_eq!(store.find_user("root").await.expect("find"), Some(admin.clone()));
    // A removed name can be created again.
    store.put_user(&viewer).await.expect("put viewer again");
    assert_eq!(store.find_user("viewer").await.expect("find"), Some(viewer));
}

async fn migrating_again_keeps_schema_and_data(store: SharedStore) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events: Vec<StoredEvent> = fixture(&p, 10, base).into_iter().take(200).collect();
    insert_all(store.as_ref(), &events).await;
    store.ensure_project(&p).await.expect("ensure project");
    store.migrate().await.expect("second migrate");
    store.migrate().await.expect("third migrate");
    let q = query(&p, (base - DAY_MS, base + 2 * DAY_MS));
    let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
    assert_answer_matches(&answer, &events, &q, Grouping::Total, "after migrating again");
    assert!(store.projects().await.expect("projects").contains(&p));
}

/// SQLite only: what was acknowledged is in the file, and a second process
/// start (open + migrate) finds it.
#[tokio::test]
async fn data_survives_reopening_the_sqlite_file() {
    let fresh = fresh_store(Backend::Sqlite, "reopen").await.expect("SQLite is always available");
    let path = fresh.sqlite_path().expect("an SQLite store has a file");
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 11, base);
    insert_all(fresh.store.as_ref(), &events).await;
    fresh.store.ensure_project(&p).await.expect("ensure project");
    let q = query(&p, fixture_window(base));
    let grouping = Grouping::Time { step_seconds: 3600 };
    let before = fresh.store.aggregate(&q, grouping).await.expect("aggregate");
    let TestStore { store, dir, .. } = fresh;
    drop(store);

    let reopened = SqliteStore::open(&path).expect("reopening");
    reopened.migrate().await.expect("migrating a migrated file");
    let after = reopened.aggregate(&q, grouping).await.expect("aggregate");
    assert_same_answer(&before, &after, "before and after reopening");
    assert_answer_matches(&after, &events, &q, grouping, "after reopening");
    assert!(reopened.projects().await.expect("projects").contains(&p));
    let again = reopened.insert(&events[..100]).await.expect("insert");
    assert_eq!(again.duplicates, (0..100).collect::<Vec<_>>(), "still known after reopening");

    let conn = rusqlite::Connection::open(&path).expect("inspecting the file");
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("schema_migrations");
    let expected: Vec<i64> = synchealth_schema::migrations::SQLITE.iter().map(|m| i64::from(m.version)).collect();
    assert_eq!(versions, expected, "each migration recorded once");
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).expect("journal mode");
    assert_eq!(mode.to_lowercase(), "wal");
    drop(dir);
}

/// Both stores, the same events: every grouping answers the same.
#[tokio::test]
async fn both_stores_give_equal_aggregates_on_the_same_events() {
    let sqlite = fresh_store(Backend::Sqlite, "both").await.expect("SQLite is always available");
    let Some(clickhouse) = fresh_store(Backend::ClickHouse, "both_stores_agree").await else { return };
    assert_stores_agree(("sqlite", &sqlite.store), ("clickhouse", &clickhouse.store)).await;
    clickhouse.cleanup().await;
}

/// Loads the conformance fixture into both stores and checks that every
/// grouping, with and without a filter, and a few devices' events answer
/// the same on both.
pub(crate) async fn assert_stores_agree(a: (&str, &Arc<dyn Store>), b: (&str, &Arc<dyn Store>)) {
    let p = project("conformance");
    let base = fixture_base_ms();
    let events = fixture(&p, 12, base);
    for store in [a.1, b.1] {
        insert_all(store.as_ref(), &events).await;
    }
    let mut groupings =
        vec![Grouping::Total, Grouping::Time { step_seconds: 60 }, Grouping::Time { step_seconds: 3600 }];
    groupings.extend(Dimension::ALL.into_iter().map(Grouping::By));
    let filtered = Filters { os: Some("android".into()), ..Default::default() };
    for filters in [Filters::default(), filtered] {
        let q = synchealth_store::Query { filters, ..query(&p, fixture_window(base)) };
        for &grouping in &groupings {
            let x = a.1.aggregate(&q, grouping).await.unwrap_or_else(|e| panic!("{} aggregate: {e}", a.0));
            let y = b.1.aggregate(&q, grouping).await.unwrap_or_else(|e| panic!("{} aggregate: {e}", b.0));
            assert_same_answer(&x, &y, &format!("{} against {}, {grouping:?}, {:?}", a.0, b.0, q.filters));
        }
    }
    let devices: BTreeSet<&str> = events.iter().map(|e| e.event.device_id.as_str()).collect();
    for device in devices.into_iter().take(5) {
        let x = a.1.device_events(&p, device, 50).await.unwrap_or_else(|e| panic!("{} device events: {e}", a.0));
        let y = b.1.device_events(&p, device, 50).await.unwrap_or_else(|e| panic!("{} device events: {e}", b.0));
        assert_eq!(x, y, "device events of {device}, {} against {}", a.0, b.0);
    }
}

async fn telemetry_loss_keeps_the_largest_cumulative_count_per_device_and_reason(store: SharedStore) {
    let p = project("conformance");
    let other = project("elsewhere");
    let counts = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
    };
    let t = 1_800_000_000_000_i64;
    let record = |project: &synchealth_schema::ProjectName, device: &str, pairs: &[(&str, u64)], at: i64| {
        let store = store.clone();
        let project = project.clone();
        let device = device.to_string();
        let dropped = counts(pairs);
        async move { store.record_telemetry_loss(&project, &device, &dropped, at).await.expect("record") }
    };
    record(&p, "dev-a", &[("buffer_full", 10), ("expired", 2)], t).await;
    // A repeated report and a late, smaller one (reordered) change nothing.
    record(&p, "dev-a", &[("buffer_full", 10), ("expired", 2)], t + 1_000).await;
    record(&p, "dev-a", &[("buffer_full", 4), ("expired", 1)], t + 2_000).await;
    record(&p, "dev-b", &[("buffer_full", 5), ("rejected", 3), ("expired", 0)], t + 3_000).await;
    record(&p, "dev-b", &[("buffer_full", 7), ("rejected", 3)], t + 4_000).await;
    // No loss at all: not a device reporting loss.
    record(&p, "dev-c", &[("buffer_full", 0)], t + 4_000).await;
    // Another project's devices are not counted.
    record(&other, "dev-a", &[("buffer_full", 1000)], t + 4_000).await;
    // Reported long before the window.
    record(&p, "dev-old", &[("expired", 50)], t - 10 * HOUR_MS).await;

    let loss = store.telemetry_loss(&p, t - HOUR_MS, t + HOUR_MS).await.expect("telemetry loss");
    assert_eq!(loss.devices_reporting_loss, 2, "{loss:?}");
    assert_eq!(loss.dropped_by_reason, counts(&[("buffer_full", 17), ("expired", 2), ("rejected", 3)]));
    assert_eq!(loss.total_dropped(), 22);

    let wider = store.telemetry_loss(&p, t - 11 * HOUR_MS, t + HOUR_MS).await.expect("telemetry loss");
    assert_eq!(wider.devices_reporting_loss, 3);
    assert_eq!(wider.dropped_by_reason.get("expired"), Some(&52));

    let empty = store.telemetry_loss(&p, t + HOUR_MS, t + 2 * HOUR_MS).await.expect("telemetry loss");
    assert_eq!(empty, synchealth_store::TelemetryLoss::default());
}

async fn a_late_event_in_an_hour_already_read_changes_the_next_answer(store: SharedStore) {
    // The first reads fill whatever a store keeps of past hours; the late
    // events then land in those hours (a newer latest for one device, a
    // device new to the hour, one in the window's first partial hour, one in
    // the second window's last partial hour, which ends in the past, and one
    // in that hour after that window's end), and the same reads must see them.
    let p = project("late");
    let base = fixture_base_ms() + 3 * HOUR_MS;
    let mut events: Vec<StoredEvent> = (0..6)
        .flat_map(|h| {
            let p = p.clone();
            (0..4).map(move |d| {
                simple_event(&p, &format!("dev-{d}"), base + h * HOUR_MS + 60_000 * (d + 1), 10 + d as u32)
            })
        })
        .collect();
    insert_all(store.as_ref(), &events).await;
    let windows = [(base, base + 6 * HOUR_MS), (base + 30 * 60_000, base + 5 * HOUR_MS + 59 * 60_000)];
    let groupings = [Grouping::Total, Grouping::Time { step_seconds: 3600 }];
    for round in 0..2 {
        for window in windows {
            let q = query(&p, window);
            for grouping in groupings {
                let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                assert_answer_matches(
                    &answer,
                    &events,
                    &q,
                    grouping,
                    &format!("round {round}, {window:?}, {grouping:?}"),
                );
            }
        }
        if round == 0 {
            let late = vec![
                simple_event(&p, "dev-1", base + 2 * HOUR_MS + 50 * 60_000, 4000),
                simple_event(&p, "dev-new", base + 3 * HOUR_MS + 10 * 60_000, 5000),
                simple_event(&p, "dev-2", base + 45 * 60_000, 6000),
                simple_event(&p, "dev-3", base + 5 * HOUR_MS + 30 * 60_000, 7000),
                simple_event(&p, "dev-0", base + 5 * HOUR_MS + 59 * 60_000 + 30_000, 8000),
            ];
            insert_all(store.as_ref(), &late).await;
            events.extend(late);
        }
    }
}
