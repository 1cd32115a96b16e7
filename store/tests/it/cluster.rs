//! Cluster mode on a real cluster (`scripts/clickhouse-cluster.sh`: 2 shards
//! x 2 replicas of ClickHouse 18.16 and ZooKeeper): where rows land, that
//! one node and the cluster answer alike, that stores on different nodes
//! see each other's writes and agree on a lease, and that `migrate` refuses
//! a cluster or macro the server lacks. The conformance suite's `cluster::`
//! variants (helpers.rs) run every conformance test on the cluster too.

use std::collections::BTreeSet;
use std::sync::Arc;

use synchealth_store::{
    Aggregates, ClickHouseConfig, ClickHouseStore, ClusterConfig, Database, Error, Events, Grouping, SharedStore,
};

use crate::conformance::assert_stores_agree;
use crate::helpers::{
    assert_same_answer, cluster_store, cluster_urls, fixture, fixture_base_ms, fixture_window, fresh_store, insert_all,
    project, query, tally, Backend,
};

/// The rows of `sql` on the node at `url`, as text lines.
async fn lines(url: &str, sql: &str) -> Vec<String> {
    let client = clickhouse::Client::default().with_url(url).with_user("default").with_validation(false);
    client.query(sql).fetch_all::<String>().await.unwrap_or_else(|e| panic!("{sql} on {url}: {e}"))
}

/// Runs a statement that returns nothing on the node at `url`.
async fn execute(url: &str, sql: &str) {
    let client = clickhouse::Client::default().with_url(url).with_user("default").with_validation(false);
    client.query(sql).execute().await.unwrap_or_else(|e| panic!("{sql} on {url}: {e}"));
}

#[tokio::test]
async fn one_node_and_the_cluster_give_equal_answers_on_the_same_events() {
    let Some(single) = fresh_store(Backend::ClickHouse, "one_node").await else { return };
    let Some(cluster) = fresh_store(Backend::Cluster, "cluster_agrees").await else { return };
    assert_stores_agree(("one node", &single.store), ("the cluster", &cluster.store)).await;
    single.cleanup().await;
    cluster.cleanup().await;
}

#[tokio::test]
async fn each_device_is_on_one_shard_and_both_replicas_of_a_shard_hold_it() {
    let Some(fresh) = fresh_store(Backend::Cluster, "placement").await else { return };
    let urls = cluster_urls("placement").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    let p = project("placement");
    let events = fixture(&p, 5, fixture_base_ms());
    insert_all(fresh.store.as_ref(), &events).await;
    let sql = format!("SELECT DISTINCT device_id FROM {database}.events_local ORDER BY device_id");
    let mut per_shard = Vec::new();
    for pair in urls.chunks(2) {
        // The second replica may still be fetching: sync it first.
        for url in pair {
            execute(url, &format!("SYSTEM SYNC REPLICA {database}.events_local")).await;
        }
        let (first, second) = (lines(&pair[0], &sql).await, lines(&pair[1], &sql).await);
        assert_eq!(first, second, "both replicas of a shard hold the same devices");
        assert!(!first.is_empty(), "every shard holds some devices");
        per_shard.push(first.into_iter().collect::<BTreeSet<_>>());
    }
    assert!(per_shard[0].is_disjoint(&per_shard[1]), "no device is on two shards");
    let all: BTreeSet<&str> = events.iter().map(|e| e.event.device_id.as_str()).collect();
    assert_eq!(per_shard[0].len() + per_shard[1].len(), all.len(), "every device is on a shard");
    fresh.cleanup().await;
}

#[tokio::test]
async fn a_store_on_another_node_finds_the_events_already_stored() {
    let Some(fresh) = fresh_store(Backend::Cluster, "other_node").await else { return };
    let urls = cluster_urls("other_node").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    // Through shard 2's second replica: its look-ups and its writes take
    // other paths than the first store's.
    let other = cluster_store(&urls[3], &database).await;
    let p = project("other_node");
    let events = fixture(&p, 7, fixture_base_ms());
    insert_all(fresh.store.as_ref(), &events[..500]).await;
    let outcome = other.insert(&events[..1000]).await.expect("insert through another node");
    assert_eq!(outcome.inserted, 500, "only the new half is written");
    assert_eq!(outcome.duplicates, (0..500).collect::<Vec<_>>(), "the stored half is found as duplicates");
    let q = query(&p, fixture_window(fixture_base_ms()));
    let a = fresh.store.aggregate(&q, Grouping::Total).await.expect("aggregate through node 1");
    let b = other.aggregate(&q, Grouping::Total).await.expect("aggregate through node 4");
    assert_same_answer(&a, &b, "the same answer through either node");
    fresh.cleanup().await;
}

#[tokio::test]
async fn two_evaluators_on_different_shards_agree_on_one_lease_holder() {
    let Some(fresh) = fresh_store(Backend::Cluster, "lease").await else { return };
    let urls = cluster_urls("lease").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    // Control-plane tables are on every node; each store reads its own.
    let one: SharedStore = Arc::clone(&fresh.store);
    let two: SharedStore = Arc::new(cluster_store(&urls[2], &database).await);
    for round in 0..3_i64 {
        let at = 1_700_000_000_000 + round * 100_000;
        let (won_1, won_2) = tokio::join!(
            one.try_lease("evaluator", "process-1", at, 30_000),
            two.try_lease("evaluator", "process-2", at, 30_000)
        );
        let (won_1, won_2) = (won_1.expect("claim through node 1"), won_2.expect("claim through node 3"));
        assert!(won_1 ^ won_2, "round {round}: exactly one winner, got 1={won_1} 2={won_2}");
        let (winner, loser) = if won_1 { ("process-1", "process-2") } else { ("process-2", "process-1") };
        for handle in [&one, &two] {
            assert!(handle.try_lease("evaluator", winner, at + 1_000, 30_000).await.expect("renew"), "round {round}");
            assert!(!handle.try_lease("evaluator", loser, at + 1_000, 30_000).await.expect("refuse"), "round {round}");
        }
    }
    fresh.cleanup().await;
}

#[tokio::test]
async fn migrate_refuses_a_cluster_the_servers_do_not_know() {
    let Some(urls) = cluster_urls("no_such_cluster") else { return };
    tally("cluster");
    let config = ClickHouseConfig {
        url: urls[0].clone(),
        user: "default".into(),
        password: None,
        database: "test_no_such_cluster".into(),
    };
    let store = ClickHouseStore::connect(config)
        .await
        .expect("connecting")
        .with_cluster(ClusterConfig { name: "no_such_cluster".into(), insert_quorum: 0 });
    match store.migrate().await {
        Err(Error::ClusterNotFound { cluster }) => assert_eq!(cluster, "no_such_cluster"),
        other => panic!("expected ClusterNotFound, got {other:?}"),
    }
    let databases = lines(&urls[0], "SELECT name FROM system.databases").await;
    assert!(!databases.contains(&"test_no_such_cluster".to_string()), "nothing was created");
}

#[tokio::test]
async fn migrate_refuses_a_server_without_the_shard_and_replica_macros() {
    // The single test server: its package config has the cluster
    // `test_shard_localhost`, and no macros.
    let Some(_) = cluster_urls("no_macros") else { return };
    let Ok(url) = std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_URL") else {
        panic!("the cluster phase runs next to the single test server: set SYNCHEALTH_TEST_CLICKHOUSE_URL")
    };
    tally("cluster");
    let config = ClickHouseConfig { url, user: "default".into(), password: None, database: "test_no_macros".into() };
    let store = ClickHouseStore::connect(config)
        .await
        .expect("connecting")
        .with_cluster(ClusterConfig { name: "test_shard_localhost".into(), insert_quorum: 0 });
    match store.migrate().await {
        Err(Error::MacroMissing { cluster, name }) => {
            assert_eq!((cluster.as_str(), name), ("test_shard_localhost", "shard"));
        }
        other => panic!("expected MacroMissing, got {other:?}"),
    }
}

#[tokio::test]
async fn migrating_again_on_the_cluster_changes_nothing() {
    let Some(fresh) = fresh_store(Backend::Cluster, "migrate_twice").await else { return };
    let urls = cluster_urls("migrate_twice").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    let tables = format!("SELECT name FROM system.tables WHERE database = '{database}' ORDER BY name");
    let before = lines(&urls[3], &tables).await;
    // Another node's store, migrating what is migrated: the ledger is on
    // every node, so nothing is applied twice.
    let other = cluster_store(&urls[3], &database).await;
    other.migrate().await.expect("migrating again");
    assert_eq!(lines(&urls[3], &tables).await, before);
    let versions = lines(
        &urls[3],
        &format!("SELECT toString(count()) FROM {database}.schema_migrations GROUP BY version HAVING count() > 1"),
    )
    .await;
    assert!(versions.is_empty(), "every version recorded once: {versions:?}");
    for local in ["events_local", "rollup_minute_local", "event_ids_local", "device_hour_latest_local"] {
        assert!(before.contains(&local.to_string()), "{local} on node 4: {before:?}");
    }
    fresh.store.ping().await.expect("every shard has a live replica");
    fresh.cleanup().await;
}

#[tokio::test]
async fn a_cluster_older_than_a_migration_adding_columns_is_refused_with_the_statements_then_upgrades() {
    let Some(fresh) = fresh_store(Backend::Cluster, "upgrade_columns").await else { return };
    let urls = cluster_urls("upgrade_columns").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    // The cluster as migration 11 left it: no dimension columns, and no
    // record of 12. A replicated table's ALTER reaches its shard's other
    // replica; the Distributed tables are each node's own.
    let columns = ["dimension_keys Array(String)", "dimension_values Array(String)"];
    for column in columns {
        let name = column.split(' ').next().expect("a name");
        for url in [&urls[0], &urls[2]] {
            execute(url, &format!("ALTER TABLE {database}.events_local DROP COLUMN {name}")).await;
        }
        for url in &urls {
            execute(url, &format!("ALTER TABLE {database}.events DROP COLUMN {name}")).await;
        }
    }
    execute(&urls[0], &format!("ALTER TABLE {database}.schema_migrations DELETE WHERE version = 12")).await;
    let recorded = format!("SELECT toString(count()) FROM {database}.schema_migrations WHERE version = 12");
    for _ in 0..100 {
        if lines(&urls[0], &recorded).await == ["0"] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(lines(&urls[0], &recorded).await, ["0"], "the ledger forgot migration 12");

    let store = cluster_store(&urls[0], &database).await;
    let reason = match store.migrate().await {
        Err(Error::Migration { version: 12, reason, .. }) => reason,
        other => panic!("expected migration 12 to be refused, got {other:?}"),
    };
    // Every node is named with both statements it needs: the local table
    // on all four (its replicas lack it too), the Distributed one on all.
    assert!(reason.contains("Upgrading a cluster"), "{reason}");
    assert_eq!(reason.matches(": ALTER TABLE").count(), 4 * 2 * columns.len(), "{reason}");
    assert!(reason.contains(&format!("ALTER TABLE `{database}`.events_local ADD COLUMN dimension_keys Array(String)")));
    assert!(reason.contains(&format!("ALTER TABLE `{database}`.events ADD COLUMN dimension_values Array(String)")));
    assert_eq!(lines(&urls[0], &recorded).await, ["0"], "a refused migration is not recorded");

    // Done as the error says, migrate goes through and the columns hold data.
    for column in columns {
        for url in [&urls[0], &urls[2]] {
            execute(url, &format!("ALTER TABLE {database}.events_local ADD COLUMN {column}")).await;
        }
        for url in &urls {
            execute(url, &format!("ALTER TABLE {database}.events ADD COLUMN {column}")).await;
        }
    }
    store.migrate().await.expect("migrating once the columns are there");
    assert_eq!(lines(&urls[0], &recorded).await, ["1"]);
    let p = project("upgrade_columns");
    let at = crate::helpers::now_ms() - 60_000;
    let event = crate::helpers::stamp(
        &p,
        serde_json::json!({
            "event_id": uuid::Uuid::from_u128(7).to_string(), "device_id": "dev-upgraded",
            "occurred_at": crate::helpers::rfc3339(at), "success": true, "duration_ms": 10,
            "app_version": "1.0.0", "os": "ios", "dimensions": {"plan": "pro"},
        }),
        at + 1_000,
        at + 1_010,
    );
    store.insert(std::slice::from_ref(&event)).await.expect("insert after the upgrade");
    let got = store.device_events(&p, "dev-upgraded", 10).await.expect("device events");
    assert_eq!(got, vec![event]);
    fresh.cleanup().await;
}
