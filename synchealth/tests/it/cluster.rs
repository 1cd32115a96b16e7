//! The product in cluster mode on a real cluster (`scripts/clickhouse-cluster.sh`:
//! ZooKeeper and 2 shards x 2 replicas of ClickHouse 18.16): collectors on
//! nodes of different shards take load while replicas, or a whole shard, are
//! killed with SIGKILL and brought back, and every acknowledged event must
//! be stored once, counted through the dashboard's API (summary, breakdown,
//! CSV: the rollups and the device rows) and by `uniqExact(event_id)` and
//! `count()` over the cluster's `events`. The dashboard must answer while a
//! replica is down, and `/readyz` must name a shard with no live replica.
//!
//! These tests kill servers every other test of the cluster uses, so they
//! take [`CLUSTER_LOCK`] and run one at a time.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use synchealth::settings::{AcknowledgeSetting, ClickHouseSettings};
use synchealth::{Application, Roles, Settings};
use tokio::sync::Mutex;

use crate::exactly_once::{events_of, fresh_batch, quick_ingest, stored_rows, Api, Expected, Findings, BATCH};
use crate::helpers::{tally, test_settings, wait_until_drained, Backend};

/// One cluster test at a time: they stop and start its nodes.
pub(crate) static CLUSTER_LOCK: Mutex<()> = Mutex::const_new(());

/// The cluster `scripts/clickhouse-cluster.sh` starts.
const CLUSTER: &str = "synchealth_cluster";

/// The test cluster: its four node URLs (s1r1, s1r2, s2r1, s2r2) and the
/// directory the script runs it from, or `None` when skipped on purpose.
#[derive(Clone)]
pub(crate) struct TestCluster {
    pub(crate) urls: Vec<String>,
    dir: String,
}

impl TestCluster {
    pub(crate) fn get() -> Option<TestCluster> {
        match std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_URLS") {
            Ok(urls) if !urls.trim().is_empty() => {
                let dir = std::env::var("SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_DIR").expect(
                    "SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_DIR: the directory given to clickhouse-cluster.sh start",
                );
                tally("cluster");
                Some(TestCluster { urls: urls.split_whitespace().map(str::to_string).collect(), dir })
            }
            _ if std::env::var("SYNCHEALTH_TEST_SKIP_CLICKHOUSE_CLUSTER").as_deref() == Ok("1") => None,
            _ => panic!(
                "no test cluster: run scripts/test, or set SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_URLS and \
                 SYNCHEALTH_TEST_CLICKHOUSE_CLUSTER_DIR from scripts/clickhouse-cluster.sh start"
            ),
        }
    }

    /// Runs `scripts/clickhouse-cluster.sh COMMAND DIR NODE` (off the runtime).
    async fn script(&self, command: &'static str, node: usize) {
        let script = CLUSTER_SCRIPT;
        let dir = self.dir.clone();
        let status = tokio::task::spawn_blocking(move || {
            Command::new(script).args([command, &dir, &node.to_string()]).stdout(std::process::Stdio::null()).status()
        })
        .await
        .unwrap()
        .expect("the cluster script runs");
        assert!(status.success(), "clickhouse-cluster.sh {command} {node} failed");
    }

    /// Starts every node that does not answer (a test that failed midway
    /// leaves its killed nodes down), and waits until each answers; then
    /// until every node routes each shard to its first replica.
    ///
    /// After an outage, a node that saw errors from a replica sends that
    /// shard's reads and writes to the other replica until its error count
    /// decays (18.16 halves it every two minutes, and nothing resets it),
    /// while the restarted node routes in order again: measured, right
    /// after the quorum test, nodes 1 and 4 sent shard 2 to s2r2 and nodes 2
    /// and 3 to s2r1. Collectors on such nodes write and look up on
    /// different replicas, which is the limit README "Cluster mode" names
    /// (and `insert_quorum` closes). The tests here kill replicas of a
    /// cluster whose nodes agree, so a node still routing away from a past
    /// outage is restarted, which starts its pools afresh.
    async fn ensure_all_up(&self) {
        for (i, url) in self.urls.iter().enumerate() {
            if reqwest::get(format!("{url}/ping")).await.is_err() {
                self.start_node(i + 1).await;
            }
        }
        // Until one pass finds every node in order: a restart may itself
        // count as errors on a node that queried the restarted one.
        for _ in 0..4 {
            let mut restarted = false;
            for (i, url) in self.urls.iter().enumerate() {
                let routed = sql(url, &routing_sql()).await;
                if routed != IN_ORDER {
                    eprintln!("node {} routes to {routed} after an earlier outage: restarted", i + 1);
                    self.kill(i + 1).await;
                    self.start_node(i + 1).await;
                    restarted = true;
                }
            }
            if !restarted {
                return;
            }
        }
        panic!("the nodes still route shards to different replicas after restarting them four times");
    }

    /// SIGKILL node `n` (1-4).
    async fn kill(&self, n: usize) {
        self.script("kill", n).await;
    }

    /// Brings `nodes` back if the test panics before it does.
    fn revive_on_panic(&self, nodes: &[usize]) -> Revive {
        Revive { dir: self.dir.clone(), nodes: nodes.to_vec() }
    }

    /// Node `n` again on its ports and data; waits until it answers.
    async fn start_node(&self, n: usize) {
        self.script("start-node", n).await;
    }

    /// [`TestCluster::local_ids`] once both replicas of each shard hold the
    /// same ids, waiting (bounded) for a replica brought back to fetch
    /// the parts written while it was down: `SYSTEM SYNC REPLICA` waits for
    /// its queue, which may not yet hold a part it has to fetch again (a
    /// fetch cut by SIGKILL), so agreement is polled.
    async fn replicas_agree(&self, database: &str, table: &str) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counts = self.local_ids(database, table).await;
            if (counts[0], counts[2]) == (counts[1], counts[3]) {
                return counts;
            }
            if Instant::now() > deadline {
                let mut state = String::new();
                for url in &self.urls {
                    state += &sql(
                        url,
                        &format!(
                            "SELECT tuple(count(), groupArray(type), groupArray(last_exception)) \
                             FROM system.replication_queue WHERE database = '{database}' AND table = '{table}'"
                        ),
                    )
                    .await;
                    state += "; ";
                }
                panic!("replicas of a shard disagree after 60 s: {counts:?}; replication queues: {state}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Waits until each replica of `database.table` has fetched what its
    /// shard holds, then returns each node's distinct event ids in it.
    async fn local_ids(&self, database: &str, table: &str) -> Vec<u64> {
        let mut counts = Vec::new();
        for url in &self.urls {
            sql(url, &format!("SYSTEM SYNC REPLICA `{database}`.{table}")).await;
            let ids = sql(url, &format!("SELECT uniqExact(event_id) FROM `{database}`.{table}")).await;
            counts.push(ids.parse().unwrap());
        }
        counts
    }
}

/// The replica each shard's queries go to from the node asked, with the
/// settings cluster mode sends (`store/src/clickhouse/cluster.rs`).
fn routing_sql() -> String {
    format!(
        "SELECT arraySort(groupArray(substitution)) FROM cluster('{CLUSTER}', system, macros) \
         WHERE macro = 'replica' SETTINGS load_balancing = 'in_order', prefer_localhost_replica = 0"
    )
}

/// [`routing_sql`]'s answer when every shard goes to its first replica.
const IN_ORDER: &str = "['s1r1','s2r1']";

const CLUSTER_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/clickhouse-cluster.sh");

/// Restarts its nodes when dropped during a panic: a failed assertion while
/// nodes are killed would otherwise leave them down for every cluster test
/// after it, the store's included (one CI run lost 39 of them that way).
struct Revive {
    dir: String,
    nodes: Vec<usize>,
}

impl Drop for Revive {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in &self.nodes {
                let _ = Command::new(CLUSTER_SCRIPT)
                    .args(["start-node", &self.dir, &n.to_string()])
                    .stdout(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

/// One statement over HTTP; its answer as trimmed text.
async fn sql(url: &str, statement: &str) -> String {
    let response = reqwest::Client::new().post(url).body(statement.to_string()).send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{statement} on {url}: {text}");
    text.trim().to_string()
}

/// A collector (every role, as `synchealth up` runs) in cluster mode
/// through the node at `url`, acknowledging into its spool (the default
/// for ClickHouse) with quick replays.
struct Collector {
    api: Api,
    _dir: tempfile::TempDir,
}

/// Cluster mode on database `database` through the node at `url`.
pub(crate) fn on_cluster(settings: &mut Settings, url: &str, database: &str) {
    on_cluster_with_quorum(settings, url, database, 0);
}

/// [`on_cluster`] with `insert_quorum`.
fn on_cluster_with_quorum(settings: &mut Settings, url: &str, database: &str, insert_quorum: u64) {
    settings.clickhouse = ClickHouseSettings {
        url: Some(url.to_string()),
        user: "default".into(),
        password: None,
        database: database.to_string(),
        cluster: Some(CLUSTER.into()),
        insert_quorum,
    };
}

async fn collector(name: &str, url: &str, database: &str) -> Collector {
    collector_with_quorum(name, url, database, 0).await
}

async fn collector_with_quorum(name: &str, url: &str, database: &str, insert_quorum: u64) -> Collector {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(Backend::Sqlite, name, dir.path()).expect("settings");
    on_cluster_with_quorum(&mut settings, url, database, insert_quorum);
    settings.ingest = quick_ingest(AcknowledgeSetting::Spooled);
    let app = Application::build(settings, Roles::ALL).await.expect("application builds on the cluster");
    let api = Api::new(name, &format!("http://127.0.0.1:{}", app.port()));
    tokio::spawn(app.run_until_stopped());
    Collector { api, _dir: dir }
}

/// A database name for one test.
pub(crate) fn database_for(name: &str) -> String {
    format!("it_{}_{name}", std::process::id())
}

/// Every acknowledged event once: the dashboard API of each collector, and
/// the rows and distinct ids of `events` across the cluster.
async fn check_once(cluster: &TestCluster, database: &str, collectors: &[&Collector], posted: &[Value], context: &str) {
    // Every replica caught up first: the count below is a plain query,
    // which may read either replica of a shard.
    cluster.local_ids(database, "events_local").await;
    let url = &cluster.urls[0];
    let mut findings = Findings::default();
    for c in collectors {
        c.api.check_counted_once(posted, &mut findings).await;
    }
    let ids = Expected::of(posted).ids as u64;
    // Rows may exceed ids: a batch acknowledged into one collector's spool
    // and posted to the other can be written by both at once, and the
    // second copy is compensated (dedup.rs); the metrics above are exact.
    let (rows, distinct) = stored_rows(url, database).await;
    findings.count(&format!("distinct ids in {database}.events"), &serde_json::json!(distinct), ids);
    findings.finish(&format!("{context} ({rows} rows in events)"));
}

/// Posts fresh batches to each collector in turn, and every fifth one to
/// both (the second finds it stored, or races the first's replay); returns
/// what was acknowledged (every post: `Api::post` asserts a 200).
async fn load(collectors: &[&Collector], tag: &str, rounds: std::ops::Range<usize>) -> Vec<Value> {
    let mut posted = Vec::new();
    for round in rounds {
        let body = fresh_batch(&format!("{tag}{round}"));
        let first = collectors[round % collectors.len()];
        first.api.post(&body).await;
        if round % 5 == 0 {
            collectors[(round + 1) % collectors.len()].api.post(&body).await;
        }
        posted.extend(events_of(&body));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    posted
}

/// Two collectors, one on a node of each shard (`on`, 1-4), take load
/// while nodes `killed` (one replica of each shard) are killed with SIGKILL
/// and brought back; with `insert_quorum` (0: none) on the collectors'
/// writes.
async fn replicas_killed_under_load(name: &str, on: [usize; 2], killed: [usize; 2], insert_quorum: u64) {
    let Some(cluster) = TestCluster::get() else { return };
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    cluster.ensure_all_up().await;
    let database = database_for(name);
    let a = collector_with_quorum(
        &format!("collector A (node {})", on[0]),
        &cluster.urls[on[0] - 1],
        &database,
        insert_quorum,
    )
    .await;
    let b = collector_with_quorum(
        &format!("collector B (node {})", on[1]),
        &cluster.urls[on[1] - 1],
        &database,
        insert_quorum,
    )
    .await;
    let mut posted = load(&[&a, &b], "before", 0..10).await;
    for c in [&a, &b] {
        wait_until_drained(&c.api.base).await;
    }
    let before = Expected::of(&posted).ids as u64;

    // Killed while the load goes on: inserts in flight on the killed
    // replicas fail, or were stored there and their answer is lost.
    let _revive = cluster.revive_on_panic(&killed);
    let killer = cluster.clone();
    let kills = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        killer.kill(killed[0]).await;
        killer.kill(killed[1]).await;
        Instant::now()
    });
    posted.extend(load(&[&a, &b], "outage", 10..30).await);
    let killed_at = kills.await.unwrap();
    // The dashboard answers with a replica of each shard down (Api::json
    // asserts a 200). Rows the killed replicas took just before dying and
    // had not yet passed on are out of sight until they return, so during
    // the outage the count is bounded, not exact. With a quorum of both
    // replicas no shard with one down takes a write: the spools hold them.
    for c in [&a, &b] {
        if insert_quorum < 2 {
            wait_until_drained(&c.api.base).await;
        }
        let summary = c.api.json("/api/v1/summary?range=7d").await;
        let events = summary["events"].as_u64().unwrap();
        let acknowledged = Expected::of(&posted).ids as u64;
        assert!(
            (before..=acknowledged).contains(&events),
            "{} during the outage: {events} events, {before} stored before it, {acknowledged} acknowledged",
            c.api.name
        );
    }
    let outage = killed_at.elapsed();
    cluster.start_node(killed[0]).await;
    cluster.start_node(killed[1]).await;
    posted.extend(load(&[&a, &b], "after", 30..40).await);
    for c in [&a, &b] {
        wait_until_drained(&c.api.base).await;
    }
    check_once(
        &cluster,
        &database,
        &[&a, &b],
        &posted,
        &format!("{} batches of {BATCH} events, nodes {killed:?} down for {outage:?}", 40 + 8),
    )
    .await;
    // The replicas brought back caught up: both replicas of a shard hold
    // the same events, and the shards hold them all between them (a
    // device's events, so an id, on one shard only).
    let counts = cluster.replicas_agree(&database, "events_local").await;
    assert_eq!(counts[0] + counts[2], Expected::of(&posted).ids as u64, "{counts:?}");
    assert!(counts[0] > 0 && counts[2] > 0, "both shards took events: {counts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_stored_once_while_a_replica_of_each_shard_is_killed_and_brought_back() {
    // The second replica of each shard: writes and look-ups go to the
    // first (cluster.rs), and the killed ones catch up when back.
    replicas_killed_under_load("replica_kill", [1, 3], [2, 4], 0).await;
}

/// Known to fail, kept to show the limit (README, "Cluster mode"): when the
/// replica that takes a shard's writes dies, its shard's other replica may
/// have fetched only some of the tables of its last writes (18.16
/// replicates each table on its own), such as a copy's rollup rows without
/// its `event_ids` row, which the look-ups cannot see; measured: 29 of 1,080
/// events counted twice during the outage in one run, 7 of 1,440 after the
/// replicas came back in another. `insert_quorum` = the replicas of a shard closes
/// it, at the cost of the shard taking no writes while one is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known limit: the replica taking writes killed under load (see the doc comment)"]
async fn every_acknowledged_event_is_stored_once_while_the_replica_taking_writes_is_killed() {
    replicas_killed_under_load("writer_kill", [1, 4], [2, 3], 0).await;
}

/// The remedy for the limit above: with `insert_quorum` = both replicas of
/// a shard, an acknowledged write is on both before the collector hears so,
/// and while one is down its shard takes none (the collectors spool), so
/// the retries after it returns find every earlier write in the look-ups.
///
/// Ignored since 2026-12-08: in one of four runs that day (a clean-clone
/// run, right after the replica test) it counted 1,431 of 1,440 events
/// through the aggregates while `events` held all 1,440 rows: an under-count
/// not yet explained (README, "Cluster mode"). `-- --ignored` runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky under-count (1 of 4 runs on 2026-12-08), under investigation: see the doc comment"]
async fn with_insert_quorum_every_acknowledged_event_is_stored_once_while_the_replica_taking_writes_is_killed() {
    replicas_killed_under_load("writer_kill_quorum", [1, 4], [2, 3], 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_whole_shard_down_collectors_keep_acknowledging_and_every_event_is_stored_once_after_it_returns() {
    let Some(cluster) = TestCluster::get() else { return };
    let _one_at_a_time = CLUSTER_LOCK.lock().await;
    cluster.ensure_all_up().await;
    let database = database_for("shard_down");
    let a = collector("collector A (s1r1)", &cluster.urls[0], &database).await;
    let b = collector("collector B (s1r2)", &cluster.urls[1], &database).await;
    let mut posted = load(&[&a, &b], "before", 0..6).await;
    for c in [&a, &b] {
        wait_until_drained(&c.api.base).await;
    }

    let _revive = cluster.revive_on_panic(&[3, 4]);
    cluster.kill(3).await;
    cluster.kill(4).await;
    // Acknowledged into the spools (Api::post asserts a 200): nothing of
    // shard 2's devices can be stored, so whole batches wait.
    posted.extend(load(&[&a, &b], "down", 6..20).await);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let response = client.get(format!("{}/readyz", a.api.base)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status == 503 && body["shards_down"] == serde_json::json!([2]) {
            break body;
        }
        assert!(Instant::now() < deadline, "/readyz did not name shard 2 within 20 s: {status} {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(body["spool"]["bytes"].as_u64().unwrap() > 0, "the acknowledged batches wait in the spool: {body}");

    cluster.start_node(3).await;
    cluster.start_node(4).await;
    for c in [&a, &b] {
        wait_until_drained(&c.api.base).await;
    }
    check_once(&cluster, &database, &[&a, &b], &posted, "20 batches, 14 of them while shard 2 was down").await;
}
