//! Conformance of the alerting records (instances, notifications, silences,
//! tickets) and of the evaluator lease, on both stores.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use synchealth_store::{AlertInstanceRecord, NotificationRecord, SharedStore, Silence, TicketRecord};
use tokio::time::{sleep, Duration};

use synchealth_store::{ClickHouseConfig, ClickHouseStore, SqliteStore};

use crate::helpers::{fresh_store, project, Backend};

on_both_stores!(
    alert_instances_round_trip_and_a_second_put_replaces_the_first,
    notifications_come_newest_first_filtered_by_project_and_limited,
    an_updated_notification_keeps_one_row_with_the_latest_status,
    silences_list_active_and_future_ones_and_removal_is_reported_once,
    a_lease_goes_to_one_holder_until_it_expires,
    two_replicas_claiming_an_expired_lease_at_once_get_one_winner,
    an_earlier_claim_beats_a_later_one_whatever_the_names,
    a_ticket_is_found_by_its_episode_and_a_second_key_for_it_never_replaces_the_first,
);

fn instance(fingerprint: &str, segment: Option<&str>, state: &str) -> AlertInstanceRecord {
    AlertInstanceRecord {
        fingerprint: fingerprint.into(),
        rule: "sync-success-rate".into(),
        project: project("demo"),
        segment: segment.map(Into::into),
        state: state.into(),
        value: Some(0.912),
        threshold: 0.95,
        since_ms: 1_700_000_000_000,
        last_evaluated_ms: 1_700_000_060_000,
        last_notified_ms: None,
        clear_since_ms: None,
        verdict: "holds".into(),
        events: 1234,
        severity: "page".into(),
        silenced_until_ms: None,
    }
}

fn notification(id: &str, project_name: &str, created_at_ms: i64) -> NotificationRecord {
    NotificationRecord {
        id: id.into(),
        fingerprint: "c7f4b477020b48ea".into(),
        rule: "sync-success-rate".into(),
        project: project(project_name),
        channel: "email".into(),
        kind: "firing".into(),
        status: "pending".into(),
        attempts: 0,
        last_error: None,
        created_at_ms,
        updated_at_ms: created_at_ms,
        summary: "[FIRING] success rate 91.2% < 95% — release 2.3.0".into(),
    }
}

fn silence(id: &str, starts_at_ms: i64, ends_at_ms: i64) -> Silence {
    Silence {
        id: id.into(),
        rule: "sync-success-rate".into(),
        project: project("demo"),
        segment: Some("app_version=2.3.0".into()),
        starts_at_ms,
        ends_at_ms,
        created_by: "cli".into(),
        comment: "known issue".into(),
    }
}

async fn alert_instances_round_trip_and_a_second_put_replaces_the_first(store: SharedStore) {
    assert!(store.alert_instances().await.unwrap().is_empty());
    let a = instance("aaaa", Some("app_version=2.3.0"), "pending");
    let b = AlertInstanceRecord { value: None, verdict: "insufficient_data".into(), ..instance("bbbb", None, "ok") };
    store.put_alert_instance(&a).await.unwrap();
    store.put_alert_instance(&b).await.unwrap();
    let firing = AlertInstanceRecord {
        state: "firing".into(),
        last_notified_ms: Some(1_700_000_120_000),
        clear_since_ms: Some(1_700_000_180_000),
        silenced_until_ms: Some(1_700_000_999_000),
        events: u64::from(u32::MAX) + 7,
        ..a.clone()
    };
    store.put_alert_instance(&firing).await.unwrap();
    let mut stored = store.alert_instances().await.unwrap();
    stored.sort_by(|x, y| x.fingerprint.cmp(&y.fingerprint));
    assert_eq!(stored, vec![firing, b]);
}

async fn notifications_come_newest_first_filtered_by_project_and_limited(store: SharedStore) {
    for (id, p, at) in [("n1", "demo", 1_000), ("n2", "other", 2_000), ("n3", "demo", 3_000), ("n4", "demo", 4_000)] {
        store.put_notification(&notification(id, p, at)).await.unwrap();
    }
    let ids = |list: Vec<NotificationRecord>| list.into_iter().map(|n| n.id).collect::<Vec<_>>();
    assert_eq!(ids(store.notifications(None, 10).await.unwrap()), ["n4", "n3", "n2", "n1"]);
    assert_eq!(ids(store.notifications(Some(&project("demo")), 10).await.unwrap()), ["n4", "n3", "n1"]);
    assert_eq!(ids(store.notifications(Some(&project("demo")), 2).await.unwrap()), ["n4", "n3"]);
    assert!(store.notifications(Some(&project("nobody")), 10).await.unwrap().is_empty());
}

async fn an_updated_notification_keeps_one_row_with_the_latest_status(store: SharedStore) {
    let first = notification("n1", "demo", 1_000);
    store.put_notification(&first).await.unwrap();
    let failed = NotificationRecord {
        status: "pending".into(),
        attempts: 1,
        last_error: Some("connection refused".into()),
        updated_at_ms: 1_500,
        ..first.clone()
    };
    store.put_notification(&failed).await.unwrap();
    let delivered = NotificationRecord { status: "delivered".into(), attempts: 2, updated_at_ms: 2_500, ..failed };
    store.put_notification(&delivered).await.unwrap();
    assert_eq!(store.notifications(None, 10).await.unwrap(), vec![delivered]);
}

async fn silences_list_active_and_future_ones_and_removal_is_reported_once(store: SharedStore) {
    let now = 1_700_000_000_000;
    let past = silence("past", now - 7_200_000, now - 3_600_000);
    let active = Silence { segment: None, ..silence("active", now - 60_000, now + 3_600_000) };
    let future = silence("future", now + 3_600_000, now + 7_200_000);
    for s in [&future, &past, &active] {
        store.put_silence(s).await.unwrap();
    }
    assert_eq!(store.silences(now).await.unwrap(), vec![active.clone(), future.clone()]);
    // Extending a silence replaces it.
    let extended = Silence { ends_at_ms: now + 9_000_000, comment: "longer".into(), ..future.clone() };
    store.put_silence(&extended).await.unwrap();
    assert_eq!(store.silences(now).await.unwrap(), vec![active.clone(), extended]);
    assert!(store.remove_silence("future").await.unwrap());
    assert!(!store.remove_silence("future").await.unwrap());
    assert!(!store.remove_silence("never-existed").await.unwrap());
    assert_eq!(store.silences(now).await.unwrap(), vec![active]);
}

async fn a_lease_goes_to_one_holder_until_it_expires(store: SharedStore) {
    let t = 1_700_000_000_000;
    let ttl = 10_000;
    assert!(store.try_lease("evaluator", "a", t, ttl).await.unwrap());
    assert!(!store.try_lease("evaluator", "b", t + 1_000, ttl).await.unwrap());
    // The holder renews, which pushes the expiry out.
    assert!(store.try_lease("evaluator", "a", t + 5_000, ttl).await.unwrap());
    assert!(!store.try_lease("evaluator", "b", t + 12_000, ttl).await.unwrap(), "renewed until t+15s");
    // Another lease name is independent.
    assert!(store.try_lease("other", "b", t + 12_000, ttl).await.unwrap());
    // Once expired, another holder takes over and the old one is refused.
    assert!(store.try_lease("evaluator", "b", t + 15_000, ttl).await.unwrap());
    assert!(!store.try_lease("evaluator", "a", t + 16_000, ttl).await.unwrap());
}

async fn two_replicas_claiming_an_expired_lease_at_once_get_one_winner(store: SharedStore) {
    let t = 1_700_000_000_000;
    for round in 0..3_i64 {
        let at = t + round * 100_000;
        let (a, b) = (Arc::clone(&store), Arc::clone(&store));
        let (won_a, won_b) = tokio::join!(
            a.try_lease("evaluator", "replica-a", at, 30_000),
            b.try_lease("evaluator", "replica-b", at, 30_000)
        );
        let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
        assert!(won_a ^ won_b, "round {round}: exactly one winner, got a={won_a} b={won_b}");
        let winner = if won_a { "replica-a" } else { "replica-b" };
        let loser = if won_a { "replica-b" } else { "replica-a" };
        assert!(store.try_lease("evaluator", winner, at + 1_000, 30_000).await.unwrap());
        assert!(!store.try_lease("evaluator", loser, at + 1_000, 30_000).await.unwrap());
    }
}

/// Not a tie: `replica-z` claims first (in real time and in `now`), and
/// `replica-a`, whose name would win a tie, claims 100 ms later while z's
/// claim may still be settling (inside ClickHouse's 500 ms). The earlier
/// claim must win; a lease deciding by name, or by the last writer, fails.
async fn an_earlier_claim_beats_a_later_one_whatever_the_names(store: SharedStore) {
    let at = 1_700_000_000_000;
    let (z, a) = (Arc::clone(&store), Arc::clone(&store));
    let (won_z, won_a) = tokio::join!(z.try_lease("evaluator", "replica-z", at, 30_000), async move {
        sleep(Duration::from_millis(100)).await;
        a.try_lease("evaluator", "replica-a", at + 100, 30_000).await
    });
    assert_eq!((won_z.unwrap(), won_a.unwrap()), (true, false), "the earlier claim wins");
    // A late claim, long after, while the lease still runs: refused.
    assert!(!store.try_lease("evaluator", "replica-a", at + 20_000, 30_000).await.unwrap());
    assert!(store.try_lease("evaluator", "replica-z", at + 20_000, 30_000).await.unwrap(), "z renews");
    // Just before the renewed expiry (at + 50 s) still z's; at it, a's.
    assert!(!store.try_lease("evaluator", "replica-a", at + 49_999, 30_000).await.unwrap());
    assert!(store.try_lease("evaluator", "replica-a", at + 50_000, 30_000).await.unwrap());
    assert!(!store.try_lease("evaluator", "replica-z", at + 50_001, 30_000).await.unwrap(), "z lost it");
}

/// A second, separate handle on the same database, as a second evaluator
/// process would open.
async fn a_ticket_is_found_by_its_episode_and_a_second_key_for_it_never_replaces_the_first(store: SharedStore) {
    let ticket = |key: &str, episode_ms: i64, created_at_ms: i64| TicketRecord {
        project: project("demo"),
        fingerprint: "c7f4b477020b48ea".into(),
        channel: "jira".into(),
        episode_ms,
        ticket_key: key.into(),
        created_at_ms,
    };
    let find = |channel: &'static str, episode_ms: i64| {
        let store = store.clone();
        async move { store.ticket(&project("demo"), "c7f4b477020b48ea", channel, episode_ms).await.unwrap() }
    };
    assert_eq!(find("jira", 1_000).await, None);
    store.put_ticket(&ticket("OPS-1", 1_000, 5_000)).await.unwrap();
    // Written twice (a retry), then another key for the same episode.
    store.put_ticket(&ticket("OPS-1", 1_000, 5_000)).await.unwrap();
    store.put_ticket(&ticket("OPS-2", 1_000, 6_000)).await.unwrap();
    assert_eq!(find("jira", 1_000).await, Some(ticket("OPS-1", 1_000, 5_000)), "the first key stays");
    assert_eq!(find("jira", 2_000).await, None, "the next episode has none yet");
    assert_eq!(find("other", 1_000).await, None, "another channel has none");
    store.put_ticket(&ticket("OPS-3", 2_000, 7_000)).await.unwrap();
    assert_eq!(find("jira", 2_000).await.map(|t| t.ticket_key), Some("OPS-3".into()));
    let other = store.ticket(&project("other"), "c7f4b477020b48ea", "jira", 1_000).await.unwrap();
    assert_eq!(other, None, "another project has none");
}

async fn second_handle(backend: Backend, fresh: &crate::helpers::TestStore) -> SharedStore {
    match backend {
        Backend::Sqlite => {
            let store = SqliteStore::open(&fresh.sqlite_path().unwrap()).unwrap();
            Arc::new(store)
        }
        Backend::ClickHouse => {
            let (url, database) = fresh.clickhouse.clone().unwrap();
            let config = ClickHouseConfig { url, user: "default".into(), password: None, database };
            Arc::new(ClickHouseStore::connect(config).await.unwrap())
        }
        Backend::Cluster => {
            // Through another shard's node: the lease rows replicate.
            let (_, database) = fresh.clickhouse.clone().unwrap();
            let urls = crate::helpers::cluster_urls("second_handle").unwrap();
            Arc::new(crate::helpers::cluster_store(&urls[2], &database).await)
        }
    }
}

/// Two processes' store handles (not one shared object) claiming the same
/// expired lease at the same time: exactly one wins, and both handles read
/// the same holder afterwards.
async fn two_processes_on_one_store_agree_on_one_lease_holder(backend: Backend) {
    let Some(fresh) = fresh_store(backend, "two_processes_lease").await else { return };
    let (one, two) = (Arc::clone(&fresh.store), second_handle(backend, &fresh).await);
    for round in 0..3_i64 {
        let at = 1_700_000_000_000 + round * 100_000;
        let (won_1, won_2) = tokio::join!(
            one.try_lease("evaluator", "process-1", at, 30_000),
            two.try_lease("evaluator", "process-2", at, 30_000)
        );
        let (won_1, won_2) = (won_1.unwrap(), won_2.unwrap());
        assert!(won_1 ^ won_2, "round {round}: exactly one winner, got 1={won_1} 2={won_2}");
        let (winner, loser) = if won_1 { ("process-1", "process-2") } else { ("process-2", "process-1") };
        // Each handle sees the winner's lease: it renews through either, the
        // loser is refused through either.
        for handle in [&one, &two] {
            assert!(handle.try_lease("evaluator", winner, at + 1_000, 30_000).await.unwrap(), "round {round}");
            assert!(!handle.try_lease("evaluator", loser, at + 1_000, 30_000).await.unwrap(), "round {round}");
        }
    }
    drop((one, two));
    fresh.cleanup().await;
}

#[tokio::test]
async fn two_sqlite_processes_on_one_store_agree_on_one_lease_holder() {
    two_processes_on_one_store_agree_on_one_lease_holder(Backend::Sqlite).await;
}

#[tokio::test]
async fn two_clickhouse_processes_on_one_store_agree_on_one_lease_holder() {
    two_processes_on_one_store_agree_on_one_lease_holder(Backend::ClickHouse).await;
}
