//! Conformance of projects' declared dimensions (issue 19), on both stores
//! and the cluster: the list the collector keeps events' dimensions by, so a
//! store that answered a stale or partial list would drop data a project
//! asked to keep.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use synchealth_store::{Accounts, Error, SharedStore};

use crate::helpers::{cluster_store, cluster_urls, fresh_store, project, Backend};

on_both_stores!(
    a_project_without_a_declaration_keeps_no_dimensions,
    declared_dimensions_read_back_sorted_and_each_once,
    setting_dimensions_again_replaces_the_whole_list,
    an_empty_list_clears_the_declaration,
    each_project_has_its_own_declaration,
    a_key_outside_the_rule_or_a_ninth_key_is_refused_and_the_list_is_kept,
);

fn keys(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| k.to_string()).collect()
}

async fn a_project_without_a_declaration_keeps_no_dimensions(store: SharedStore) {
    let p = project("none_declared");
    assert!(store.project_dimensions(&p).await.unwrap().is_empty());
    store.ensure_project(&p).await.unwrap();
    assert!(store.project_dimensions(&p).await.unwrap().is_empty());
}

async fn declared_dimensions_read_back_sorted_and_each_once(store: SharedStore) {
    let p = project("mobile");
    store.set_project_dimensions(&p, &keys(&["region", "engine", "plan", "engine"])).await.unwrap();
    assert_eq!(store.project_dimensions(&p).await.unwrap(), keys(&["engine", "plan", "region"]));
}

async fn setting_dimensions_again_replaces_the_whole_list(store: SharedStore) {
    let p = project("mobile");
    store.set_project_dimensions(&p, &keys(&["engine", "plan", "region"])).await.unwrap();
    store.set_project_dimensions(&p, &keys(&["tier"])).await.unwrap();
    assert_eq!(store.project_dimensions(&p).await.unwrap(), keys(&["tier"]));
    // Many replacements in a row: the last one wins, not a merge of them.
    for round in 0..5 {
        store.set_project_dimensions(&p, &[format!("d{round}"), "engine".into()]).await.unwrap();
    }
    assert_eq!(store.project_dimensions(&p).await.unwrap(), keys(&["d4", "engine"]));
}

async fn an_empty_list_clears_the_declaration(store: SharedStore) {
    let p = project("mobile");
    store.set_project_dimensions(&p, &keys(&["engine", "plan"])).await.unwrap();
    store.set_project_dimensions(&p, &[]).await.unwrap();
    assert!(store.project_dimensions(&p).await.unwrap().is_empty());
}

async fn each_project_has_its_own_declaration(store: SharedStore) {
    let (a, b) = (project("a"), project("b"));
    store.set_project_dimensions(&a, &keys(&["engine"])).await.unwrap();
    store.set_project_dimensions(&b, &keys(&["plan", "region"])).await.unwrap();
    assert_eq!(store.project_dimensions(&a).await.unwrap(), keys(&["engine"]));
    assert_eq!(store.project_dimensions(&b).await.unwrap(), keys(&["plan", "region"]));
}

async fn a_key_outside_the_rule_or_a_ninth_key_is_refused_and_the_list_is_kept(store: SharedStore) {
    let p = project("mobile");
    store.set_project_dimensions(&p, &keys(&["engine", "plan"])).await.unwrap();
    for bad in ["Region", "9lives", "plan-tier", "", &"k".repeat(33)] {
        let err = store.set_project_dimensions(&p, &keys(&["engine", bad])).await.unwrap_err();
        assert!(matches!(&err, Error::InvalidDimensionKey { key } if key == bad), "{bad:?}: {err}");
        assert!(err.to_string().contains(&format!("{bad:?}")), "the error names the key: {err}");
    }
    let nine: Vec<String> = (1..=9).map(|i| format!("d{i}")).collect();
    let err = store.set_project_dimensions(&p, &nine).await.unwrap_err();
    assert!(matches!(err, Error::TooManyDimensions { count: 9 }), "{err}");
    assert!(err.to_string().contains("at most 8"), "{err}");
    assert_eq!(store.project_dimensions(&p).await.unwrap(), keys(&["engine", "plan"]), "nothing refused was stored");
    // Eight, and a key of the longest length, are fine.
    let eight: Vec<String> = (1..=7).map(|i| format!("d{i}")).chain(["k".repeat(32)]).collect();
    store.set_project_dimensions(&p, &eight).await.unwrap();
    assert_eq!(store.project_dimensions(&p).await.unwrap().len(), 8);
}

#[tokio::test]
async fn dimensions_declared_through_one_node_of_the_cluster_are_read_through_every_other() {
    let Some(fresh) = fresh_store(Backend::Cluster, "dimensions_nodes").await else { return };
    let urls = cluster_urls("dimensions_nodes").expect("the cluster is there");
    let (_, database) = fresh.clickhouse.clone().expect("a ClickHouse database");
    let p = project("mobile");
    fresh.store.set_project_dimensions(&p, &keys(&["engine", "plan"])).await.unwrap();
    // The control plane is replicated to every node, not sharded: each of
    // the other three nodes (the other replica of shard 1, both of shard 2)
    // gets the whole list, once replication has copied it.
    for url in &urls[1..] {
        let other = cluster_store(url, &database).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let read = other.project_dimensions(&p).await.unwrap();
            if read == keys(&["engine", "plan"]) {
                break;
            }
            assert!(Instant::now() < deadline, "{url} still reads {read:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    fresh.cleanup().await;
}
