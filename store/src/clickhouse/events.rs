//! [`crate::Events`] for ClickHouse: the write side. An insert looks every id
//! up before and after its write (`dedup.rs`), writes each block's device rows
//! (`device_state.rs`) before its events, and retention drops whole day
//! partitions of `events` and of every table derived from it.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use clickhouse::Row;
use serde::Serialize;
use synchealth_schema::{error_fingerprint, unix_ms, StoredEvent};
use uuid::Uuid;

use super::device_state;
use super::sql::{event_time_s, unix_nanos};
use super::ClickHouseStore;
use crate::{InsertOutcome, Result};

/// Lets the runtime's other tasks run every few thousand rows: encoding a
/// block of 100,000 rows takes tens of milliseconds of CPU and `write`
/// rarely waits on the network over loopback, so without this one insert
/// holds a worker thread and the requests queued on it wait (the ingest
/// acknowledgements' tail latency).
async fn yield_every(row: usize) {
    if row % 2048 == 2047 {
        tokio::task::yield_now().await;
    }
}

/// A new write's `insert_id`: random, so two collectors' writes differ.
fn new_insert_id() -> u64 {
    Uuid::new_v4().as_u64_pair().1
}

impl ClickHouseStore {
    /// Writes rows with one RowBinary insert and no duplicate check: the raw
    /// insert path, which the ingest benchmark measures as the ceiling.
    /// [`crate::Events::insert`] checks for stored duplicates first, then calls this.
    pub async fn insert_unchecked(&self, events: &[StoredEvent]) -> Result<()> {
        self.write_rows(events.iter(), new_insert_id()).await
    }

    /// Writes the rows, every one marked with `insert_id` (which write a
    /// copy of an event came from, `dedup.rs`).
    async fn write_rows<'a>(&self, rows: impl Iterator<Item = &'a StoredEvent> + Clone, insert_id: u64) -> Result<()> {
        // Devices first: that write is idempotent, so an events insert that
        // fails after it, and is retried, leaves nothing wrong behind.
        let devices = async {
            let mut insert = self.client.insert::<device_state::DeviceHourRow<'_>>("device_hour_input").await?;
            for (i, row) in device_state::device_hours(rows.clone()).iter().enumerate() {
                insert.write(row).await?;
                yield_every(i).await;
            }
            insert.end().await
        };
        let segments = async {
            let mut insert =
                self.client.insert::<device_state::DeviceSegmentHourRow<'_>>("device_segment_hour_input").await?;
            for (i, row) in device_state::device_segment_hours(rows.clone()).iter().enumerate() {
                insert.write(row).await?;
                yield_every(i).await;
            }
            insert.end().await
        };
        tokio::try_join!(devices, segments)?;
        let mut insert = self.client.insert::<EventRowRef<'_>>("events").await?;
        for (i, event) in rows.enumerate() {
            insert.write(&EventRowRef::from_stored(event, insert_id)).await?;
            yield_every(i).await;
        }
        // `end` returns once the server has written and committed the parts,
        // so the caller may acknowledge the batch.
        insert.end().await?;
        Ok(())
    }

    /// [`crate::Events::insert`]: each id looked up before and after the write
    /// (`dedup.rs`); with `replayed`, what an interrupted earlier write of
    /// these events left behind is repaired first.
    #[tracing::instrument(skip_all, fields(events = events.len(), replayed))]
    async fn insert_checked(&self, events: &[StoredEvent], replayed: bool) -> Result<InsertOutcome> {
        if events.is_empty() {
            return Ok(InsertOutcome::default());
        }
        // Ids repeated within the batch are duplicates of their first.
        let mut duplicates = Vec::new();
        let mut by_project: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        let mut seen = HashSet::with_capacity(events.len());
        for (i, e) in events.iter().enumerate() {
            if seen.insert((e.project.as_str(), e.event.event_id)) {
                by_project.entry(e.project.as_str()).or_default().push(i);
            } else {
                duplicates.push(i);
            }
        }
        let started = std::time::Instant::now();
        // First look-up: what is stored already is answered as a duplicate
        // and not written (and compensated, if a crash after a racing write
        // left it stored twice). A replay repairs an interrupted earlier
        // write of its events first.
        let mut fresh_by_project: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (&project, indexes) in &by_project {
            let copies = if replayed {
                self.copies_after_repair(project, events, indexes).await?
            } else {
                self.copies(project, events, indexes).await?
            };
            let found = self.settle(project, &copies).await?;
            let (stored, fresh): (Vec<usize>, Vec<usize>) =
                indexes.iter().partition(|&&i| found.contains(&events[i].event.event_id));
            duplicates.extend(stored);
            if !fresh.is_empty() {
                fresh_by_project.insert(project, fresh);
            }
        }
        let fresh: Vec<usize> = fresh_by_project.values().flatten().copied().collect();
        let looked_up = started.elapsed();
        let (mut written, mut rechecked) = (looked_up, looked_up);
        if !fresh.is_empty() {
            self.write_rows(fresh.iter().map(|&i| &events[i]), new_insert_id()).await?;
            written = started.elapsed();
            // Second look-up: a collector that wrote the same events at the
            // same moment is seen now (by this one or by that one, dedup.rs).
            // A replay repairs again: on a cluster, an interrupted earlier
            // write's parts may have been only on a replica the first
            // look-up did not read, and with `insert_quorum` this write's
            // success means the shard's replicas hold them all now.
            for (&project, indexes) in &fresh_by_project {
                let copies = if replayed {
                    self.copies_after_repair(project, events, indexes).await?
                } else {
                    self.copies(project, events, indexes).await?
                };
                self.settle(project, &copies).await?;
            }
            rechecked = started.elapsed();
        }
        tracing::debug!(
            rows = events.len(),
            fresh = fresh.len(),
            lookup_ms = looked_up.as_millis() as u64,
            write_ms = (written - looked_up).as_millis() as u64,
            recheck_ms = (rechecked - written).as_millis() as u64,
            "Stored a block."
        );
        duplicates.sort_unstable();
        Ok(InsertOutcome { inserted: fresh.len(), duplicates })
    }
}

#[async_trait]
impl crate::Events for ClickHouseStore {
    async fn insert(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.insert_checked(events, false).await
    }

    async fn insert_replayed(&self, events: &[StoredEvent]) -> Result<InsertOutcome> {
        self.insert_checked(events, true).await
    }

    #[tracing::instrument(skip_all, fields(database = %self.config.database, days = days))]
    async fn apply_retention(&self, days: u32) -> Result<()> {
        let cutoff_s = (unix_nanos() / 1_000_000_000).saturating_sub(u64::from(days) * 86_400);
        // The partition key is `toYYYYMMDD(event_time)` in the server's time
        // zone, so the cutoff day is computed by the server too.
        let cutoff_day = self
            .server
            .query("SELECT toUInt32(toYYYYMMDD(toDateTime(?)))")
            .bind(u32::try_from(cutoff_s).unwrap_or(u32::MAX))
            .fetch_one::<u32>()
            .await?;
        // On a cluster, the local tables of the node this store talks to
        // (a DROP PARTITION on one replica reaches its shard's others): run
        // retention from one process per shard (README, "Cluster mode").
        // 18.16's `ALTER ... ON CLUSTER` on replicated tables is broken.
        let table =
            |name: &str| if self.cluster.is_some() { super::cluster::local_name(name) } else { name.to_string() };
        let partitions = self
            .server
            .query("SELECT DISTINCT partition FROM system.parts WHERE active AND database = ? AND table = ?")
            .bind(self.config.database.as_str())
            .bind(table("events"))
            .fetch_all::<String>()
            .await?;
        // A partition is dropped only when its whole day is before the cutoff
        // day: retention keeps at least `days` days, never less.
        let expired =
            partitions.iter().filter_map(|p| p.trim_matches('\'').parse::<u32>().ok()).filter(|&d| d < cutoff_day);
        for day in expired {
            self.client.query(&format!("ALTER TABLE {} DROP PARTITION ?", table("events"))).bind(day).execute().await?;
            // The dashboard rollups and the copies ledger (migrations 0006-0008)
            // are partitioned by the same day, and must forget what events forgot.
            for rollup in [
                "rollup_minute",
                "rollup_hour",
                "device_hour_latest",
                "device_segment_hour",
                "event_copies",
                "event_ids",
                "event_duplicates",
                "suspect_hours",
            ] {
                self.client
                    .query(&format!("ALTER TABLE {} DROP PARTITION ?", table(rollup)))
                    .bind(day)
                    .execute()
                    .await?;
            }
            tracing::info!(day, "Dropped expired partition.");
        }
        Ok(())
    }
}

/// [`super::aggregate::EventRow`] borrowing from the event, for inserts: a row costs no
/// allocation on the way to the wire (at a few hundred thousand rows a
/// second, copying a dozen strings per row was a tenth of the collector's
/// CPU).
#[derive(Row, Serialize)]
struct EventRowRef<'a> {
    project: &'a str,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    device_id: &'a str,
    event_time: u32,
    event_time_ms: i64,
    occurred_at_ms: i64,
    last_success_at_ms: Option<i64>,
    sent_at_ms: i64,
    received_at_ms: i64,
    clock_skew_ms: i64,
    success: u8,
    duration_ms: u64,
    duration_bucket: u16,
    conflicts: u32,
    queue_depth: u32,
    queue_bucket: u16,
    staleness_ms: Option<u64>,
    staleness_bucket: u16,
    app_version: &'a str,
    os: &'a str,
    os_version: &'a str,
    network: &'a str,
    device_model: &'a str,
    sync_type: &'a str,
    trigger: &'a str,
    error_kind: &'a str,
    error_message: &'a str,
    retries: u32,
    records_up: u64,
    records_down: u64,
    bytes_up: u64,
    bytes_down: u64,
    sample_rate: f64,
    weight: f64,
    insert_id: u64,
    queue_oldest_at_ms: Option<i64>,
    queue_lag_ms: Option<u64>,
    // `conflict_details` as parallel arrays (migration 0012); the vectors
    // allocate only for an event that has details or dimensions.
    conflict_entity: Vec<&'a str>,
    conflict_kind: Vec<&'static str>,
    conflict_resolution: Vec<&'static str>,
    conflict_count: Vec<u32>,
    dimension_keys: Vec<&'a str>,
    dimension_values: Vec<&'a str>,
    // Migration 0013; allocates only for an event with a message.
    error_fingerprint: String,
}

impl<'a> EventRowRef<'a> {
    fn from_stored(s: &'a StoredEvent, insert_id: u64) -> EventRowRef<'a> {
        let e = &s.event;
        EventRowRef {
            project: s.project.as_str(),
            event_id: e.event_id,
            device_id: &e.device_id,
            event_time: event_time_s(s.event_time_ms),
            event_time_ms: s.event_time_ms,
            occurred_at_ms: s.occurred_at_ms(),
            last_success_at_ms: s.last_success_at_ms(),
            sent_at_ms: s.sent_at_ms,
            received_at_ms: s.received_at_ms,
            clock_skew_ms: s.clock_skew_ms,
            success: u8::from(e.success),
            duration_ms: e.duration_ms,
            duration_bucket: s.duration_bucket,
            conflicts: e.conflicts,
            queue_depth: e.queue_depth,
            queue_bucket: s.queue_bucket,
            staleness_ms: s.staleness_ms,
            staleness_bucket: s.staleness_bucket,
            app_version: &e.app_version,
            os: &e.os,
            os_version: e.os_version.as_deref().unwrap_or_default(),
            network: e.network.as_str(),
            device_model: e.device_model.as_deref().unwrap_or_default(),
            sync_type: e.sync_type.as_deref().unwrap_or_default(),
            trigger: e.trigger.map(|t| t.as_str()).unwrap_or_default(),
            error_kind: e.error_kind.map(|k| k.as_str()).unwrap_or_default(),
            error_message: e.error_message.as_deref().unwrap_or_default(),
            retries: e.retries,
            records_up: e.records_up,
            records_down: e.records_down,
            bytes_up: e.bytes_up,
            bytes_down: e.bytes_down,
            sample_rate: e.sample_rate,
            weight: s.weight,
            insert_id,
            queue_oldest_at_ms: e.queue_oldest_at.map(unix_ms),
            queue_lag_ms: s.queue_lag_ms,
            conflict_entity: e.conflict_details.iter().map(|d| d.entity.as_str()).collect(),
            conflict_kind: e.conflict_details.iter().map(|d| d.kind.as_str()).collect(),
            conflict_resolution: e.conflict_details.iter().map(|d| d.resolution.as_str()).collect(),
            conflict_count: e.conflict_details.iter().map(|d| d.count).collect(),
            dimension_keys: e.dimensions.keys().map(String::as_str).collect(),
            dimension_values: e.dimensions.values().map(String::as_str).collect(),
            error_fingerprint: e.error_message.as_deref().map(error_fingerprint).unwrap_or_default(),
        }
    }
}
