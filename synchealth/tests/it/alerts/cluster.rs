//! The evaluators of [`super::two_evaluator_replicas_send_each_notification_once`]
//! in cluster mode, each through a node of another shard: the lease and
//! the alert records are replicated tables every node holds.

use super::*;
use crate::cluster::{database_for, on_cluster, TestCluster, CLUSTER_LOCK};

#[tokio::test]
async fn two_evaluator_replicas_on_different_shards_send_each_notification_once() {
    let Some(cluster) = TestCluster::get() else { return };
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    let database = database_for("alerts_replicas");
    let first = cluster.urls[0].clone();
    let Some(w) = world_with(Backend::Sqlite, "alerts_cluster", 20, false, |settings| {
        on_cluster(settings, &first, &database);
    })
    .await
    else {
        return;
    };
    let mut replicas = Vec::new();
    for url in [&cluster.urls[0], &cluster.urls[2]] {
        let mut settings = w.settings.clone();
        on_cluster(&mut settings, url, &database);
        let store = synchealth::startup::open_store(&settings).await.unwrap();
        let evaluator = alerts_role::evaluator(store, &settings.alerts).unwrap();
        replicas.push(tokio::spawn(evaluator.run(INTERVAL)));
    }
    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    w.spike().await;
    wait_for("every channel", Duration::from_secs(20), || (w.total_received() >= 4).then_some(())).await;
    evaluations_later(&w.store, 4).await;
    assert_eq!(w.total_received(), 4, "each channel told once: {:?}", w.received());
    for replica in replicas {
        replica.abort();
    }
    smtp.stop().await;
}
