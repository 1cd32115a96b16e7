//! Cluster mode: the same store on a sharded, replicated ClickHouse
//! (`--clickhouse-cluster NAME`), with every query of the other files
//! unchanged.
//!
//! How the single-node schema maps onto a cluster, and why:
//! - **Per-event tables are sharded.** Each becomes a `Replicated*MergeTree`
//!   local table `NAME_local` on every node (ZooKeeper path
//!   `/clickhouse/tables/{shard}/DATABASE/NAME_local`, replica `{replica}`),
//!   and `NAME` becomes a `Distributed` table over them. So every query in
//!   `events.rs`, `aggregate.rs`, `dedup.rs`... reads and writes the
//!   Distributed name, as it reads the plain table on one node. `events` and
//!   the device rows are sharded by `cityHash64(project, device_id)`: a
//!   device's events, and every copy of one event, land on one shard, so
//!   `FINAL` (run by each shard on its local table) collapses copies as it
//!   does on one node, and a device's latest state is on one shard.
//! - **Materialized views stay on each node.** 18.16 runs a view on the
//!   server where a block is inserted: the views read `events_local` and
//!   write the node's own `rollup_*_local`, whose replication copies them.
//!   A part fetched by a replica does not run the views again.
//! - **The control plane and alerting are on every node** (replicated with
//!   one fixed ZooKeeper path, `/clickhouse/tables/all/...`, replica
//!   `{shard}-{replica}`): small, read far more than written, and read
//!   locally by whichever node a process talks to. Replication is
//!   asynchronous; the alert lease already tolerates claims that take up to
//!   its settle time to become visible (`alerting.rs`).
//! - **The migration ledger** is such a table too, so `migrate` from any
//!   node sees what was applied.
//! - **What 18.16 forces.** `ALTER ... ON CLUSTER` on replicated tables
//!   fails on 18.16 (measured: "Node exists" in its DDL worker, which then
//!   stops taking distributed DDL), so on a cluster a column a later
//!   migration adds is created with its table instead ([`added_columns`]);
//!   a cluster whose tables predate such a migration is refused, with the
//!   per-node statements it needs, before anything is applied.
//!   Backfill inserts (`INSERT ... SELECT`) are skipped: a cluster's database
//!   starts empty, and moving a single node's data into a cluster is a copy
//!   (README, "Cluster mode"), not a migration.
//!
//! Writes go with `insert_distributed_sync = 1`, so an insert into a
//! Distributed table returns once every shard it touched has the rows (an
//! acknowledged batch is not sitting in a node's queue), and
//! `load_balancing = 'in_order'` with `prefer_localhost_replica = 0`, so
//! every process writes and reads the same replica of a shard (the first
//! live one in `remote_servers`) and the event id look-ups see a copy
//! another collector has just written, whatever the replication lag
//! (measured: with 18.16's default, a node's own replica, two collectors on
//! two replicas of a shard stored copies neither look-up saw). Subqueries over Distributed tables run once on the
//! node asked (`distributed_product_mode = 'global'`).

use std::collections::HashMap;

use synchealth_schema::migrations::{self, Migration};

use super::migrate::{ledger_sql, render};
use super::sql::quote;
use super::ClickHouseStore;
use crate::{Error, Result};

/// Cluster mode's options (`[clickhouse]` `cluster` and `insert_quorum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The cluster's name in the servers' `remote_servers`.
    pub name: String,
    /// `insert_quorum`: an insert returns once this many replicas of its
    /// shard have it (0 or 1: once one has). On 18.16 only one quorum insert
    /// per table and shard may be in flight, by its documentation (README,
    /// "Cluster mode"; not measured here).
    pub insert_quorum: u64,
}

/// The settings of every query in cluster mode (the module doc says why).
pub(super) fn read_settings() -> [(&'static str, &'static str); 3] {
    [("load_balancing", "in_order"), ("prefer_localhost_replica", "0"), ("distributed_product_mode", "global")]
}

/// Where a table of the single-node schema lives on a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Local tables on every shard behind a Distributed table, sharded by
    /// this expression.
    Sharded(&'static str),
    /// One replicated table holding every row on every node.
    Everywhere,
}

/// A device's rows on one shard.
const BY_DEVICE: &str = "cityHash64(project, device_id)";
/// Rows the store writes to these directly (compensations, repairs): any
/// shard is correct, as every look-up reads through the Distributed table,
/// but the same row always to the same one, so `FINAL` collapses a
/// compensation written twice. (18.16's `cityHash64` takes no `UUID`.)
const BY_EVENT: &str = "cityHash64(project, toString(event_id))";

fn placement(table: &str) -> Placement {
    match table {
        "events"
        | "device_hour"
        | "device_hour_latest"
        | "device_hour_input"
        | "device_segment_hour"
        | "device_segment_hour_input"
        | "telemetry_loss" => Placement::Sharded(BY_DEVICE),
        "event_copies" | "event_ids" | "event_duplicates" => Placement::Sharded(BY_EVENT),
        "suspect_hours" => Placement::Sharded("cityHash64(project, hour)"),
        // Written only by the views on each node's local events.
        "rollup_minute" | "rollup_hour" => Placement::Sharded("rand()"),
        _ => Placement::Everywhere,
    }
}

/// The local tables of a sharded table: what retention drops partitions of.
pub(super) fn local_name(table: &str) -> String {
    format!("{table}_local")
}

/// `table -> columns` that migrations add with `ALTER TABLE ... ADD COLUMN`:
/// on a cluster they are created with the table (see the module doc).
fn added_columns() -> HashMap<String, Vec<String>> {
    let mut added: HashMap<String, Vec<String>> = HashMap::new();
    for migration in migrations::CLICKHOUSE {
        for statement in migration.statements() {
            if let Some(rest) = statement.strip_prefix("ALTER TABLE {db}.") {
                if let Some((table, column)) = rest.split_once(" ADD COLUMN ") {
                    added.entry(table.trim().to_string()).or_default().push(column.trim().to_string());
                }
            }
        }
    }
    added
}

/// The name after `{prefix}` (`` `db`. ``) at the start of `text`, and the rest.
fn table_after<'a>(text: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = text.strip_prefix(prefix)?;
    let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
    Some((&rest[..end], &rest[end..]))
}

/// Rewrites one rendered single-node statement for the cluster: zero or
/// more statements, each `ON CLUSTER`. `quoted_db` is how the statement
/// names the database, `db` its plain name (for ZooKeeper paths).
pub(super) fn cluster_statements(statement: &str, quoted_db: &str, db: &str, cluster: &str) -> Vec<String> {
    let prefix = format!("{quoted_db}.");
    let on = format!(" ON CLUSTER {}", quote(cluster, '`'));
    if statement.starts_with("INSERT INTO ") || statement.starts_with("ALTER TABLE ") {
        return Vec::new();
    }
    if let Some(rest) = statement.strip_prefix("DROP TABLE IF EXISTS ") {
        let Some((table, _)) = table_after(rest, &prefix) else { return vec![statement.to_string()] };
        let mut drops = vec![format!("DROP TABLE IF EXISTS {prefix}{table}{on}")];
        if !table.ends_with("_mv") && placement(table) != Placement::Everywhere {
            drops.push(format!("DROP TABLE IF EXISTS {prefix}{}{on}", local_name(table)));
        }
        return drops;
    }
    if let Some(rest) = statement.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS ") {
        // `V TO T AS SELECT ... FROM S`: each node's view, from its local
        // source into its local target.
        let Some((view, rest)) = table_after(rest, &prefix) else { return vec![statement.to_string()] };
        let Some((target, rest)) = rest.strip_prefix(" TO ").and_then(|r| table_after(r, &prefix)) else {
            return vec![statement.to_string()];
        };
        let Some((select, source)) = rest.rsplit_once(&format!("FROM {prefix}")) else {
            return vec![statement.to_string()];
        };
        let (source, tail) = table_after(source, "").unwrap_or((source, ""));
        return vec![format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {prefix}{view}{on} TO {prefix}{} {}FROM {prefix}{}{tail}",
            local_name(target),
            select.trim_start(),
            local_name(source)
        )];
    }
    let Some(rest) = statement.strip_prefix("CREATE TABLE IF NOT EXISTS ") else {
        return vec![statement.to_string()];
    };
    let Some((table, rest)) = table_after(rest, &prefix) else { return vec![statement.to_string()] };
    let Some((columns, engine_and_rest)) = rest.rsplit_once(") ENGINE = ") else {
        return vec![statement.to_string()];
    };
    let mut columns = columns.trim_end().to_string();
    for column in added_columns().get(table).into_iter().flatten() {
        columns.push_str(",\n    ");
        columns.push_str(column);
    }
    let engine_end = engine_and_rest.find(|c: char| c.is_whitespace()).unwrap_or(engine_and_rest.len());
    let (engine, tail) = engine_and_rest.split_at(engine_end);
    let (engine_name, engine_args) = match engine.split_once('(') {
        Some((name, args)) => (name, args.trim_end_matches(')')),
        None => (engine, ""),
    };
    let replicated = |path: String, replica: &str| {
        let args = if engine_args.is_empty() { String::new() } else { format!(", {engine_args}") };
        format!("Replicated{engine_name}({}, '{replica}'{args})", quote(&path, '\''))
    };
    match placement(table) {
        Placement::Everywhere => vec![format!(
            "CREATE TABLE IF NOT EXISTS {prefix}{table}{on}{columns}) ENGINE = {}{tail}",
            replicated(format!("/clickhouse/tables/all/{db}/{table}"), "{shard}-{replica}")
        )],
        Placement::Sharded(key) => {
            let local = local_name(table);
            let local_engine = if engine_name == "Null" {
                // Nothing stored: its views write the replicated tables.
                "Null".to_string()
            } else {
                replicated(format!("/clickhouse/tables/{{shard}}/{db}/{local}"), "{replica}")
            };
            vec![
                format!("CREATE TABLE IF NOT EXISTS {prefix}{local}{on}{columns}) ENGINE = {local_engine}{tail}"),
                format!(
                    "CREATE TABLE IF NOT EXISTS {prefix}{table}{on} AS {prefix}{local} \
                     ENGINE = Distributed({}, {}, {}, {key})",
                    quote(cluster, '\''),
                    quote(db, '\''),
                    quote(&local, '\'')
                ),
            ]
        }
    }
}

/// A row of `system.clusters`, as far as the health check cares.
#[derive(Debug, clickhouse::Row, serde::Deserialize)]
struct ReplicaRow {
    shard_num: u32,
    host_address: String,
    port: u16,
}

impl ClickHouseStore {
    /// Refuses, with a typed error, a cluster the server does not know or a
    /// server without the `shard` and `replica` macros the tables' paths use.
    pub(super) async fn check_cluster(&self, cluster: &ClusterConfig) -> Result<()> {
        let replicas = self
            .server
            .query("SELECT toUInt64(count()) FROM system.clusters WHERE cluster = ?")
            .bind(cluster.name.as_str())
            .fetch_one::<u64>()
            .await?;
        if replicas == 0 {
            return Err(Error::ClusterNotFound { cluster: cluster.name.clone() });
        }
        let macros = self.server.query("SELECT macro FROM system.macros").fetch_all::<String>().await?;
        for needed in ["shard", "replica"] {
            if !macros.iter().any(|m| m == needed) {
                return Err(Error::MacroMissing { cluster: cluster.name.clone(), name: needed });
            }
        }
        Ok(())
    }

    /// Applies one migration `ON CLUSTER`.
    pub(super) async fn apply_cluster_migration(&self, cluster: &ClusterConfig, migration: &Migration) -> Result<()> {
        let failed = |reason: String| Error::Migration { version: migration.version, name: migration.name, reason };
        let db = &self.config.database;
        let quoted_db = quote(db, '`');
        let missing = self.columns_missing(cluster, migration).await?;
        if !missing.is_empty() {
            return Err(failed(format!(
                "the cluster's tables predate this migration's columns, and 18.16 cannot ALTER a replicated \
                 table ON CLUSTER. Add them by hand, then run migrate again (README, \"Upgrading a cluster\"); \
                 a replicated table's ALTER reaches its shard's other replica by itself, so \"already exists\" \
                 there means done: {}",
                missing.join("; ")
            )));
        }
        for statement in migration.statements() {
            let rendered = render(&statement, &quoted_db, self.version);
            for sql in cluster_statements(&rendered, &quoted_db, db, &cluster.name) {
                self.server.query_raw(&sql).execute().await.map_err(|e| failed(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// What `migration`'s `ADD COLUMN`s would add to tables a cluster
    /// already has, node by node (`on HOST:PORT: ALTER TABLE ...`): on a
    /// cluster those columns are created with their tables (the module
    /// doc), which does nothing for tables created before the migration
    /// existed. Empty when every node has them, which is always the case
    /// for a cluster migrated from scratch.
    async fn columns_missing(&self, cluster: &ClusterConfig, migration: &Migration) -> Result<Vec<String>> {
        let quoted_db = quote(&self.config.database, '`');
        let mut wanted: Vec<(String, String)> = Vec::new();
        for statement in migration.statements() {
            let Some(rest) = statement.strip_prefix("ALTER TABLE {db}.") else { continue };
            let Some((table, column)) = rest.split_once(" ADD COLUMN ") else { continue };
            let (table, column) = (table.trim(), render(column.trim(), &quoted_db, self.version));
            if placement(table) != Placement::Everywhere {
                wanted.push((local_name(table), column.clone()));
            }
            wanted.push((table.to_string(), column));
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut missing = Vec::new();
        for replica in self.replicas(cluster).await? {
            let address = format!("{}:{}", replica.host_address, replica.port);
            let sql = format!(
                "SELECT concat(table, '.', name) FROM remote({}, system.columns) WHERE database = ?",
                quote(&address, '\'')
            );
            let columns: std::collections::HashSet<String> = self
                .server
                .query(&sql)
                .bind(self.config.database.as_str())
                .fetch_all::<String>()
                .await?
                .into_iter()
                .collect();
            for (table, column) in &wanted {
                let name = column.split_whitespace().next().unwrap_or_default();
                if !columns.contains(&format!("{table}.{name}")) {
                    missing.push(format!("on {address}: ALTER TABLE {quoted_db}.{table} ADD COLUMN {column}"));
                }
            }
        }
        Ok(missing)
    }

    /// Every replica of `cluster` in `system.clusters`, by shard.
    async fn replicas(&self, cluster: &ClusterConfig) -> Result<Vec<ReplicaRow>> {
        let replicas = self
            .server
            .query("SELECT shard_num, host_address, port FROM system.clusters WHERE cluster = ? ORDER BY shard_num")
            .bind(cluster.name.as_str())
            .fetch_all::<ReplicaRow>()
            .await?;
        if replicas.is_empty() {
            return Err(Error::ClusterNotFound { cluster: cluster.name.clone() });
        }
        Ok(replicas)
    }

    /// The database and the migration ledger, on every node.
    pub(super) async fn create_cluster_ledger(&self, cluster: &ClusterConfig) -> Result<()> {
        let db = &self.config.database;
        let quoted_db = quote(db, '`');
        let on = format!("ON CLUSTER {}", quote(&cluster.name, '`'));
        self.server.query_raw(&format!("CREATE DATABASE IF NOT EXISTS {quoted_db} {on}")).execute().await?;
        let ledger = cluster_statements(&ledger_sql(&quoted_db), &quoted_db, db, &cluster.name);
        for sql in ledger {
            self.server.query_raw(&sql).execute().await?;
        }
        Ok(())
    }

    /// Every shard has a live replica: each replica of `system.clusters` is
    /// asked for a row of `system.one` through `remote()` (18.16 has no
    /// `clusterAllReplicas`). The error names each shard without one.
    pub(super) async fn check_cluster_health(&self, cluster: &ClusterConfig) -> Result<()> {
        let replicas = self.replicas(cluster).await?;
        let mut probes = tokio::task::JoinSet::new();
        for replica in replicas {
            // A dead replica refuses at once; a hung one must not hang the
            // probe past the readiness timeout.
            let client = self.server.clone().with_setting("connect_timeout", "1").with_setting("receive_timeout", "2");
            let address = format!("{}:{}", replica.host_address, replica.port);
            probes.spawn(async move {
                let sql = format!("SELECT toUInt8(1) FROM remote({}, system.one)", quote(&address, '\''));
                let alive = client.query(&sql).fetch_one::<u8>().await.is_ok();
                (replica.shard_num, alive)
            });
        }
        let mut live: std::collections::BTreeMap<u32, bool> = std::collections::BTreeMap::new();
        while let Some(probe) = probes.join_next().await {
            let (shard, alive) = probe.map_err(|e| Error::Task(e.to_string()))?;
            *live.entry(shard).or_insert(false) |= alive;
        }
        let down: Vec<u32> = live.into_iter().filter(|(_, alive)| !alive).map(|(shard, _)| shard).collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(Error::ShardsDown { cluster: cluster.name.clone(), shards: down })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn rewrite(statement: &str) -> Vec<String> {
        cluster_statements(statement, "`db`", "db", "c")
    }

    #[test]
    fn a_per_event_table_becomes_replicated_local_tables_behind_a_distributed_one() {
        let out = rewrite(
            "CREATE TABLE IF NOT EXISTS `db`.events (\n    project String,\n    device_id String\n) \
             ENGINE = ReplacingMergeTree\nPARTITION BY toYYYYMMDD(event_time)\nORDER BY (project, event_id)",
        );
        assert_eq!(out.len(), 2);
        assert!(out[0].starts_with("CREATE TABLE IF NOT EXISTS `db`.events_local ON CLUSTER `c` ("), "{}", out[0]);
        assert!(out[0].contains(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/events_local', '{replica}')\n\
             PARTITION BY"
        ));
        // The columns migrations 0008 and 0012 add with ALTER are created
        // with the table, in migration order.
        assert!(out[0].contains("device_id String,\n    insert_id UInt64,\n    queue_oldest_at_ms"), "{}", out[0]);
        assert!(
            out[0].contains(",\n    dimension_values Array(String),\n    error_fingerprint String) ENGINE"),
            "{}",
            out[0]
        );
        assert_eq!(
            out[1],
            "CREATE TABLE IF NOT EXISTS `db`.events ON CLUSTER `c` AS `db`.events_local \
             ENGINE = Distributed('c', 'db', 'events_local', cityHash64(project, device_id))"
        );
    }

    #[test]
    fn control_plane_tables_are_replicated_to_every_node_with_their_engine_arguments() {
        let out =
            rewrite("CREATE TABLE IF NOT EXISTS `db`.projects (\n    name String\n) ENGINE = ReplacingMergeTree(version)\nORDER BY name");
        assert_eq!(
            out,
            vec!["CREATE TABLE IF NOT EXISTS `db`.projects ON CLUSTER `c` (\n    name String) ENGINE = \
                  ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/projects', '{shard}-{replica}', version)\n\
                  ORDER BY name"
                .to_string()]
        );
    }

    #[test]
    fn the_declared_dimensions_of_projects_are_replicated_to_every_node() {
        let migration = migrations::CLICKHOUSE.iter().find(|m| m.version == 14).unwrap();
        let statements = migration.statements();
        assert_eq!(statements.len(), 1, "{statements:?}");
        let out = rewrite(&statements[0].replace("{db}", "`db`"));
        assert_eq!(out.len(), 1, "one table, no Distributed one over it: {out:?}");
        assert!(
            out[0].starts_with("CREATE TABLE IF NOT EXISTS `db`.project_dimensions ON CLUSTER `c` ("),
            "{}",
            out[0]
        );
        assert!(
            out[0].contains(
                "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/project_dimensions', \
                 '{shard}-{replica}', version)\nORDER BY project"
            ),
            "{}",
            out[0]
        );
    }

    #[test]
    fn views_read_and_write_each_nodes_local_tables() {
        let out = rewrite(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.rollup_hour_mv TO `db`.rollup_hour AS\nSELECT project\nFROM `db`.events\nGROUP BY project",
        );
        assert_eq!(
            out,
            vec![
                "CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.rollup_hour_mv ON CLUSTER `c` TO `db`.rollup_hour_local \
                  AS\nSELECT project\nFROM `db`.events_local\nGROUP BY project"
                    .to_string()
            ]
        );
    }

    #[test]
    fn null_tables_stay_null_and_drops_reach_local_tables() {
        let out = rewrite("CREATE TABLE IF NOT EXISTS `db`.device_hour_input (\n    device_id String\n) ENGINE = Null");
        assert!(out[0].ends_with("ENGINE = Null"), "{}", out[0]);
        assert!(out[1].contains("Distributed('c', 'db', 'device_hour_input_local', cityHash64(project, device_id))"));
        assert_eq!(
            rewrite("DROP TABLE IF EXISTS `db`.device_hour"),
            vec![
                "DROP TABLE IF EXISTS `db`.device_hour ON CLUSTER `c`".to_string(),
                "DROP TABLE IF EXISTS `db`.device_hour_local ON CLUSTER `c`".to_string()
            ]
        );
        assert_eq!(rewrite("DROP TABLE IF EXISTS `db`.device_hour_mv").len(), 1);
        assert!(rewrite("INSERT INTO `db`.rollup_hour SELECT 1").is_empty());
        assert!(rewrite("ALTER TABLE `db`.events ADD COLUMN insert_id UInt64").is_empty());
    }

    #[test]
    fn every_migration_statement_has_a_cluster_form() {
        // Each statement is one the rewrite understands: nothing passes
        // through without ON CLUSTER (which would create it on one node only).
        for migration in migrations::CLICKHOUSE {
            for statement in migration.statements() {
                let rendered = statement.replace("{db}", "`db`").replace("{label}", "String").replace("{ttl}", "");
                for sql in rewrite(&rendered) {
                    assert!(sql.contains(" ON CLUSTER `c`"), "{sql}");
                }
            }
        }
        // The columns added by ALTER so far (events.insert_id, 0008,
        // ingest_keys.allowed_origins, 0009, and the conflict details, queue
        // times and dimensions of events, 0012, and their error fingerprint,
        // 0013), folded into their tables; a
        // cluster made before such a migration would not get it (module doc).
        let added = added_columns();
        assert_eq!(added.len(), 2, "{added:?}");
        assert!(added["ingest_keys"][0].starts_with("allowed_origins"), "{added:?}");
        let events: Vec<&str> = added["events"].iter().map(|c| c.split(' ').next().unwrap_or("")).collect();
        assert_eq!(
            events,
            [
                "insert_id",
                "queue_oldest_at_ms",
                "queue_lag_ms",
                "conflict_entity",
                "conflict_kind",
                "conflict_resolution",
                "conflict_count",
                "dimension_keys",
                "dimension_values",
                "error_fingerprint"
            ],
            "{added:?}"
        );
    }

    #[test]
    fn the_events_tables_on_a_cluster_have_every_added_column_and_the_distributed_one_copies_them() {
        let create = migrations::CLICKHOUSE[0].statements()[0].replace("{db}", "`db`").replace("{label}", "String");
        let create = create.replace("{ttl}", "");
        let out = rewrite(&create);
        assert_eq!(out.len(), 2, "{out:?}");
        for column in [
            "insert_id UInt64",
            "queue_oldest_at_ms Nullable(Int64)",
            "queue_lag_ms Nullable(UInt64)",
            "conflict_entity Array(String)",
            "conflict_kind Array(String)",
            "conflict_resolution Array(String)",
            "conflict_count Array(UInt32)",
            "dimension_keys Array(String)",
            "dimension_values Array(String)",
        ] {
            assert!(out[0].contains(&format!(",\n    {column}")), "{column} in {}", out[0]);
        }
        // `AS events_local`: the Distributed table takes the local table's columns.
        assert!(out[1].starts_with("CREATE TABLE IF NOT EXISTS `db`.events ON CLUSTER `c` AS `db`.events_local "));
    }
}
