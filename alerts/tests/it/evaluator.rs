//! Stepping [`Evaluator::evaluate_once`] with a fresh evaluator each time:
//! everything it must remember between evaluations (firing since when, last
//! notified, recovering since when) has to come back from the store.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde_json::json;
use synchealth_alerts::{Comparison, Evaluator, Notification, ResolveReason, Rule, Severity};
use synchealth_schema::{ProjectName, StoredEvent, SyncEvent};
use synchealth_store::metrics::Metric;
use synchealth_store::{Database, Filters, SharedStore, SqliteStore};
use time::format_description::well_known::Rfc3339;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

const T0: OffsetDateTime = datetime!(2026-11-20 12:00 UTC);

fn rule() -> Rule {
    Rule {
        name: "success".into(),
        description: None,
        metric: Metric::SuccessRate,
        comparison: Comparison::Below,
        threshold: 0.95,
        window: Duration::minutes(10),
        pending_for: Duration::ZERO,
        min_events: 10,
        group_by: None,
        severity: Severity::Page,
        channels: vec![],
        keep_firing_for: Duration::minutes(3),
        repeat_interval: Some(Duration::minutes(5)),
        evaluation_delay: Duration::minutes(1),
        queue_threshold: None,
        filters: Filters::default(),
    }
}

fn events(at: OffsetDateTime, failures: usize, successes: usize) -> Vec<StoredEvent> {
    let project = ProjectName::parse("default").unwrap();
    (0..failures + successes)
        .map(|i| {
            let event = SyncEvent::from_json(json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "device_id": format!("d{i}"),
                "occurred_at": at.format(&Rfc3339).unwrap(),
                "success": i >= failures,
                "duration_ms": 500,
                "conflicts": 0,
                "queue_depth": 0,
                "app_version": "1.0.0",
                "os": "ios",
                "network": "wifi",
            }))
            .unwrap();
            StoredEvent::new(project.clone(), event, at, at)
        })
        .collect()
}

/// One evaluation at `minutes` after T0 by a brand-new evaluator (same
/// lease holder, as a restarted process on the same host would not be:
/// the lease is not what is tested here).
async fn step(store: &SharedStore, minutes: i64) -> Vec<Notification> {
    let mut evaluator =
        Evaluator::new(Arc::clone(store), vec![rule()]).with_lease("test-replica", StdDuration::from_secs(45));
    let fired = evaluator.evaluate_once(T0 + Duration::minutes(minutes)).await.unwrap();
    fired.into_iter().map(|f| f.notification).collect()
}

#[tokio::test]
async fn a_fresh_evaluator_at_every_step_still_repeats_keeps_firing_and_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    store.migrate().await.unwrap();
    let store: SharedStore = Arc::new(store);
    store.ensure_project(&ProjectName::parse("default").unwrap()).await.unwrap();
    store.insert(&events(T0 - Duration::minutes(5), 10, 10)).await.unwrap();

    assert_eq!(step(&store, 0).await, vec![Notification::Firing]);
    assert_eq!(step(&store, 1).await, vec![], "no second firing notice");
    assert_eq!(step(&store, 4).await, vec![]);
    assert_eq!(step(&store, 5).await, vec![Notification::Repeat], "repeat_interval (5m) after the firing notice");
    assert_eq!(step(&store, 6).await, vec![]);

    // Recovery: from T0+7m the window [T0-4m, T0+6m) holds only good syncs.
    store.insert(&events(T0 + Duration::minutes(5), 0, 100)).await.unwrap();
    assert_eq!(step(&store, 7).await, vec![], "keeps firing (keep_firing_for 3m)");
    let firing = store.alert_instances().await.unwrap().remove(0);
    assert_eq!(firing.state, "firing");
    assert_eq!(firing.clear_since_ms, Some((T0 + Duration::minutes(7)).unix_timestamp() * 1000));
    assert_eq!(firing.last_notified_ms, Some((T0 + Duration::minutes(5)).unix_timestamp() * 1000));
    assert_eq!(step(&store, 9).await, vec![]);
    assert_eq!(
        step(&store, 10).await,
        vec![Notification::Resolved { reason: ResolveReason::Recovered }],
        "resolved keep_firing_for after the recovery began"
    );
    assert_eq!(step(&store, 11).await, vec![]);
    assert_eq!(store.alert_instances().await.unwrap()[0].state, "ok");
}

#[tokio::test]
async fn a_replica_without_the_lease_evaluates_nothing_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    store.migrate().await.unwrap();
    let store: SharedStore = Arc::new(store);
    store.ensure_project(&ProjectName::parse("default").unwrap()).await.unwrap();
    store.insert(&events(T0 - Duration::minutes(5), 10, 10)).await.unwrap();
    let ttl = StdDuration::from_secs(60);
    let mut a = Evaluator::new(Arc::clone(&store), vec![rule()]).with_lease("a", ttl);
    let mut b = Evaluator::new(Arc::clone(&store), vec![rule()]).with_lease("b", ttl);

    // Who evaluated is read from the store: each evaluation stamps the
    // instance with its time, so an evaluating `b` cannot pass for an idle one
    // (an empty list of notices is what both would return).
    let last_evaluated = || async { store.alert_instances().await.unwrap()[0].last_evaluated_ms };
    let ms = |t: OffsetDateTime| t.unix_timestamp() * 1000;
    assert_eq!(a.evaluate_once(T0).await.unwrap().len(), 1);
    assert_eq!(last_evaluated().await, ms(T0));
    assert!(b.evaluate_once(T0 + Duration::seconds(15)).await.unwrap().is_empty());
    assert_eq!(last_evaluated().await, ms(T0), "b did not evaluate at +15s");
    assert_eq!(b.instances().count(), 0);
    assert!(b.evaluate_once(T0 + Duration::seconds(59)).await.unwrap().is_empty());
    assert_eq!(last_evaluated().await, ms(T0), "b did not evaluate at +59s");
    // `a` stopped at T0: from T0+60s `b` holds the lease, and, reading the
    // firing state from the store, sends nothing again.
    assert!(b.evaluate_once(T0 + Duration::seconds(60)).await.unwrap().is_empty());
    assert_eq!(last_evaluated().await, ms(T0 + Duration::seconds(60)), "b evaluated at +60s");
    assert_eq!(b.instances().count(), 1, "b evaluated");
    assert_eq!(store.alert_instances().await.unwrap()[0].state, "firing", "still firing, not fired again");
    assert!(a.evaluate_once(T0 + Duration::seconds(75)).await.unwrap().is_empty());
    assert_eq!(last_evaluated().await, ms(T0 + Duration::seconds(60)), "a did not evaluate at +75s");
    assert_eq!(a.instances().count(), 0, "a no longer evaluates");
}

/// Two evaluators on two store handles of one database file (as two
/// processes would be), evaluating at the same moments: every evaluation is
/// made by exactly one of them, the same one while it renews.
#[tokio::test]
async fn two_evaluators_on_one_database_take_turns_only_when_the_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let first = SqliteStore::open(&path).unwrap();
    first.migrate().await.unwrap();
    let first: SharedStore = Arc::new(first);
    let second: SharedStore = Arc::new(SqliteStore::open(&path).unwrap());
    first.ensure_project(&ProjectName::parse("default").unwrap()).await.unwrap();
    first.insert(&events(T0 - Duration::minutes(5), 10, 10)).await.unwrap();
    let ttl = StdDuration::from_secs(30);
    let mut a = Evaluator::new(Arc::clone(&first), vec![rule()]).with_lease("a", ttl);
    let mut b = Evaluator::new(Arc::clone(&second), vec![rule()]).with_lease("b", ttl);
    let mut firing_notices = 0;
    for step in 0..4 {
        let now = T0 + Duration::seconds(10 * step);
        let (fa, fb) = tokio::join!(a.evaluate_once(now), b.evaluate_once(now));
        firing_notices += fa.unwrap().len() + fb.unwrap().len();
        let evaluated = (a.instances().count(), b.instances().count());
        assert!(evaluated == (1, 0) || evaluated == (0, 1), "step {step}: exactly one evaluated: {evaluated:?}");
        assert_eq!(second.alert_instances().await.unwrap()[0].last_evaluated_ms, now.unix_timestamp() * 1000);
    }
    assert_eq!(firing_notices, 1, "one firing notice between them");
    // Whoever holds it stops; the other takes over after the TTL, not before.
    let standby = if a.instances().count() == 1 { &mut b } else { &mut a };
    standby.evaluate_once(T0 + Duration::seconds(59)).await.unwrap();
    assert_eq!(standby.instances().count(), 0, "the lease (renewed at +30s) runs to +60s");
    standby.evaluate_once(T0 + Duration::seconds(60)).await.unwrap();
    assert_eq!(standby.instances().count(), 1, "taken over at +60s");
}

/// `devices` devices at `at`: the first `behind` on cellular with a change
/// pending for ten minutes, the rest on wifi with empty queues.
fn lagging(at: OffsetDateTime, devices: usize, behind: usize) -> Vec<StoredEvent> {
    let project = ProjectName::parse("default").unwrap();
    (0..devices)
        .map(|i| {
            let mut json = json!({
                "event_id": uuid::Uuid::new_v4().to_string(),
                "device_id": format!("q{i}"),
                "occurred_at": at.format(&Rfc3339).unwrap(),
                "success": true,
                "duration_ms": 500,
                "queue_depth": 0,
                "app_version": "1.0.0",
                "os": "ios",
                "network": "wifi",
            });
            if i < behind {
                json["queue_depth"] = json!(4);
                json["network"] = json!("cellular");
                json["queue_oldest_at"] = json!((at - Duration::minutes(10)).format(&Rfc3339).unwrap());
            }
            StoredEvent::new(project.clone(), SyncEvent::from_json(json).unwrap(), at, at)
        })
        .collect()
}

#[tokio::test]
async fn the_shipped_queue_lag_rule_fires_for_changes_pending_over_five_minutes_and_names_the_network() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db")).unwrap();
    store.migrate().await.unwrap();
    let store: SharedStore = Arc::new(store);
    store.ensure_project(&ProjectName::parse("default").unwrap()).await.unwrap();
    let shipped = Rule::defaults().into_iter().find(|r| r.name == "queue-lag").expect("a shipped queue-lag rule");
    assert_eq!((shipped.metric, shipped.threshold), (Metric::QueueLagOverThresholdShare, 0.01));
    let total = Rule { pending_for: Duration::ZERO, ..shipped.clone() };
    let by_network = Rule {
        name: "queue-lag-by-network".into(),
        group_by: Some(synchealth_store::Dimension::Network),
        min_events: 1,
        ..total.clone()
    };
    // 3 of 100 devices behind: 3% of devices, over the 1% line.
    store.insert(&lagging(T0 - Duration::minutes(5), 100, 3)).await.unwrap();
    let mut evaluator = Evaluator::new(Arc::clone(&store), vec![total, by_network]);
    let fired = evaluator.evaluate_once(T0).await.unwrap();
    let firing: Vec<_> = fired.iter().filter(|f| f.notification == Notification::Firing).collect();
    assert_eq!(firing.len(), 2, "the total and the cellular segment: {fired:?}");
    let segments: Vec<_> = firing.iter().map(|f| f.key.segment.clone()).collect();
    assert!(segments.contains(&None));
    assert!(segments.contains(&Some((synchealth_store::Dimension::Network, "cellular".to_string()))), "{segments:?}");
    let total_value = firing.iter().find(|f| f.key.segment.is_none()).unwrap().value;
    assert_eq!(total_value, Some(0.03));
}
