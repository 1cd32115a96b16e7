//! Exactly once in every metric on ClickHouse: the same event id stored more
//! than once, for any reason, counts once in every aggregate.
//!
//! ClickHouse cannot refuse a row whose key is already stored, and the
//! rollups (`rollup_minute`, `rollup_hour`) are fed by materialized views
//! that count every row inserted into `events`, for good: `events` being a
//! `ReplacingMergeTree` collapses its own copies at some merge, never the
//! rollups'. So duplicates are kept out on the way in, and the one case no
//! look-up can see is compensated:
//!
//! 1. **Every id is looked up before it is written** ([`ClickHouseStore::copies`]),
//!    exactly, in `event_ids` (migration 0008: every row ever inserted
//!    into `events`, never collapsed, by device time). Found ids are answered as duplicates
//!    and not written: a collector restarted or replaced, another collector
//!    behind the same load balancer, a spool replay of an insert whose answer
//!    was lost, a probe resending days later.
//! 2. **After its write, a block's ids are looked up again.** Two collectors
//!    writing the same event at the same moment both find nothing in step 1,
//!    and both write. But of two writes, the one whose look-up comes last
//!    sees the other's row (each write is committed before its own second
//!    look-up), so at least one of them finds two copies. Whoever finds
//!    several copies of an id writes a compensation for each copy but the
//!    first (the first received, then the smaller `insert_id`) into
//!    `event_duplicates`, with what that copy added to the sums; every
//!    aggregate subtracts them. The compensation is keyed by the copy, and
//!    read with `FINAL`: writing it twice, or from two collectors, is
//!    harmless. Step 1 finds copies too (a crash between a write and its
//!    second look-up leaves the batch unacknowledged, so it comes back) and
//!    compensates what it finds the same way.
//!
//! Both steps finish before [`crate::Events::insert`] returns, so once a
//! batch is acknowledged as stored its events count once. Everything stays
//! within one `(project, event)` and its time: shard-local when a cluster
//! shards by project and device.
//!
//! **The look-up is exact and costs what the block's own seconds hold.**
//! Two copies of one event have the same device time (`occurred_at`, part of
//! the event), whatever skew correction each got when it arrived, so
//! `event_ids` is ordered by `(project, occurred_at, event_id)` and the
//! look-up reads only the device seconds of the block's events through that
//! key. The ids and seconds travel as RowBinary external tables
//! (`multipart/form-data`, which 18.16 and current servers take): a
//! 100,000-id `IN (...)` list as SQL text costs 18.16 about a second just to
//! parse. (Looking in `event_copies`, ordered by corrected time, would have
//! to read every second a resend's correction might have moved it to.)

use std::collections::{BTreeSet, HashMap, HashSet};

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use synchealth_schema::StoredEvent;
use uuid::Uuid;

use super::sql::{event_time_s, quote, raw_filter, Arg};
use super::ClickHouseStore;
use crate::metrics::Query;
use crate::metrics::LATE_ARRIVAL_MS;
use crate::{Error, Result};

/// Leaves out of a read of `events FINAL` the compensated copies that do
/// not share their event's counted copy's sorting key (`FINAL` collapses
/// the others into one row already). One bind: the project.
pub(super) const NOT_COMPENSATED_SQL: &str = "(event_time, event_id) NOT IN \
     (SELECT event_time, event_id FROM event_duplicates FINAL WHERE project = ? AND same_key = 0)";

/// The hours (as `DateTime`) an interrupted write may have left in part of
/// the rollups (see [`ClickHouseStore::copies_after_repair`]): read from
/// `event_copies` instead. One bind: the project.
pub(super) const SUSPECT_HOURS_SQL: &str = "(SELECT hour AS h FROM suspect_hours WHERE project = ?)";

/// The hours (as `DateTime`) holding such a copy: `device_hour_latest`
/// may keep it as a device's latest there. One bind: the project.
pub(super) const SHIFTED_HOURS_SQL: &str = "(SELECT toDateTime(intDiv(toUInt32(event_time), 3600) * 3600) AS h \
     FROM event_duplicates FINAL WHERE project = ? AND same_key = 0)";

/// Ids per look-up request: keeps each request's body (16 bytes an id) and
/// answer small, whatever the block size.
const LOOKUP_CHUNK: usize = 50_000;

/// The tables a look-up reads, each through its sorting key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ledger {
    /// `event_ids`, by device time: complete copies.
    Ids,
    /// `events`, by corrected time.
    Events,
    /// `event_copies`, by corrected time.
    Copies,
}

/// A row of `suspect_hours`.
#[derive(Debug, Row, Serialize)]
struct SuspectHourRow<'a> {
    project: &'a str,
    hour: u32,
}

/// A row of `event_ids` (its columns, in order), written when completing
/// a partial write.
#[derive(Debug, Row, Serialize)]
struct IdRowRef<'a> {
    project: &'a str,
    occurred_at: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    insert_id: u64,
    event_time: u32,
}

impl<'a> IdRowRef<'a> {
    fn new(e: &'a StoredEvent, insert_id: u64) -> Self {
        IdRowRef {
            project: e.project.as_str(),
            occurred_at: occurred_s(e.occurred_at_ms()),
            event_id: e.event.event_id,
            insert_id,
            event_time: event_time_s(e.event_time_ms),
        }
    }
}

/// A row of `event_copies` (its columns, in order), as its view writes it.
#[derive(Debug, Row, Serialize)]
struct CopyRowRef<'a> {
    project: &'a str,
    event_time: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    insert_id: u64,
    event_time_ms: i64,
    received_at_ms: i64,
    app_version: &'a str,
    os: &'a str,
    network: &'a str,
    success: u8,
    conflicts: u32,
    duration_bucket: u16,
    weight: f64,
}

impl<'a> CopyRowRef<'a> {
    fn new(e: &'a StoredEvent, insert_id: u64) -> Self {
        CopyRowRef {
            project: e.project.as_str(),
            event_time: event_time_s(e.event_time_ms),
            event_id: e.event.event_id,
            insert_id,
            event_time_ms: e.event_time_ms,
            received_at_ms: e.received_at_ms,
            app_version: &e.event.app_version,
            os: &e.event.os,
            network: e.event.network.as_str(),
            success: u8::from(e.event.success),
            conflicts: e.event.conflicts,
            duration_bucket: e.duration_bucket,
            weight: e.weight,
        }
    }
}

/// One stored copy of an event, as the look-up answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StoredCopy {
    pub(super) event_id: Uuid,
    pub(super) insert_id: u64,
    /// Its corrected time (`event_time`), where its row in `event_copies` is.
    pub(super) event_time: u32,
}

/// What one copy added to the per-event sums (`event_copies`' columns),
/// read back to compensate it.
#[derive(Debug, Clone, Row, Deserialize)]
struct CopyRow {
    event_time: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    insert_id: u64,
    event_time_ms: i64,
    received_at_ms: i64,
    app_version: String,
    os: String,
    network: String,
    success: u8,
    conflicts: u32,
    duration_bucket: u16,
    weight: f64,
}

/// One compensation: `event_duplicates`' columns, in order.
#[derive(Debug, Row, Serialize)]
struct DuplicateRow<'a> {
    project: &'a str,
    event_time: u32,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    insert_id: u64,
    event_time_ms: i64,
    same_key: u8,
    late: u8,
    app_version: &'a str,
    os: &'a str,
    network: &'a str,
    success: u8,
    conflicts: u32,
    duration_bucket: u16,
    weight: f64,
}

/// `occurred_at` of `event_ids` for a device time: whole seconds, as
/// ClickHouse's `toUInt32` takes them (negative times are 0; the wrap above
/// 2106 is ClickHouse's too, so both sides always agree).
pub(super) fn occurred_s(ms: i64) -> u32 {
    ms.div_euclid(1000).max(0) as u32
}

/// The counted copy among several: the first received, then the smaller
/// `insert_id`; the rest are compensated.
fn split_first(mut copies: Vec<CopyRow>) -> (CopyRow, Vec<CopyRow>) {
    copies.sort_by_key(|c| (c.received_at_ms, c.insert_id));
    let rest = copies.split_off(1);
    let first = copies.into_iter().next().unwrap_or_else(|| unreachable!("called with at least two copies"));
    (first, rest)
}

/// `rows` with one row per copy, the first kept. A copy is its
/// `(event_id, insert_id)`: a ledger may hold one copy's row twice, when a
/// repair on a cluster read a replica that had not yet fetched the row a
/// partial write did leave (its part was on the other replica), and wrote
/// it again. Such rows are one copy, never a duplicate to compensate.
fn one_row_per_copy<T>(mut rows: Vec<T>, copy: impl Fn(&T) -> (Uuid, u64)) -> Vec<T> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.retain(|row| seen.insert(copy(row)));
    rows
}

/// A ClickHouse string literal (project names are `[a-z0-9_-]` already;
/// quoted anyway, so this never depends on that rule).
fn quote_literal(text: &str) -> String {
    quote(text, '\'')
}

/// `events` filtered as [`raw_filter`] does, without the compensated copies
/// that `events` keeps as rows of their own (`dedup.rs`): for the reads of a
/// device's latest event.
pub(super) fn events_filter(query: &Query, from_ms: i64, to_ms: i64) -> (String, Vec<Arg>) {
    let (mut filter, mut args) = raw_filter(query, from_ms, to_ms);
    filter.push_str(&format!(" AND {NOT_COMPENSATED_SQL}"));
    args.push(Arg::Text(query.project.as_str().to_string()));
    (filter, args)
}

impl ClickHouseStore {
    /// Every complete copy of the `indexes` events of `events` (all of one
    /// project): the rows of `event_ids`, found through its sorting key.
    pub(super) async fn copies(
        &self,
        project: &str,
        events: &[StoredEvent],
        indexes: &[usize],
    ) -> Result<Vec<StoredCopy>> {
        self.lookup_in(Ledger::Ids, project, events, indexes).await
    }

    /// The copies of those events in `table`, by the time its key holds.
    async fn lookup_in(
        &self,
        table: Ledger,
        project: &str,
        events: &[StoredEvent],
        indexes: &[usize],
    ) -> Result<Vec<StoredCopy>> {
        let time_ms = |e: &StoredEvent| match table {
            Ledger::Ids => e.occurred_at_ms(),
            Ledger::Events | Ledger::Copies => e.event_time_ms,
        };
        let mut order: Vec<usize> = indexes.to_vec();
        // Chunks of neighbouring times read neighbouring granules.
        order.sort_by_key(|&i| time_ms(&events[i]));
        let mut found = Vec::new();
        for chunk in order.chunks(LOOKUP_CHUNK) {
            let seconds: BTreeSet<u32> = chunk.iter().map(|&i| occurred_s(time_ms(&events[i]))).collect();
            let ids: Vec<Uuid> = chunk.iter().map(|&i| events[i].event.event_id).collect();
            found.extend(self.lookup(table, project, &ids, &seconds).await?);
        }
        Ok(one_row_per_copy(found, |c| (c.event_id, c.insert_id)))
    }

    /// A write that failed may have reached some of the tables an insert
    /// into `events` feeds and not others: ClickHouse writes `events`, then
    /// pushes the block to each materialized view in turn (18.16: in order
    /// of the views' names), and a server that dies in between keeps what
    /// it had committed. `event_ids`' view is named to come last
    /// (`stored_ids_mv`), so a copy found there was written everywhere; a
    /// copy in `events` but not in `event_ids` is such a partial write, and
    /// whether the rollups took it cannot be known from them. Repaired here,
    /// before a replayed batch is looked up: the copy's hours are marked in
    /// `suspect_hours` (every aggregate then reads those hours from
    /// `event_copies` instead of the rollups), and its rows are completed in
    /// `event_copies` and `event_ids`, so they count as stored.
    ///
    /// Returns what [`ClickHouseStore::copies`] returns once the repair is
    /// done (the complete copies, the completed ones among them), so the
    /// replay's first look-up is not made twice.
    pub(super) async fn copies_after_repair(
        &self,
        project: &str,
        events: &[StoredEvent],
        indexes: &[usize],
    ) -> Result<Vec<StoredCopy>> {
        let mut complete = self.copies(project, events, indexes).await?;
        let in_events = self.lookup_in(Ledger::Events, project, events, indexes).await?;
        let known: HashSet<(Uuid, u64)> = complete.iter().map(|c| (c.event_id, c.insert_id)).collect();
        let partial: Vec<StoredCopy> =
            in_events.into_iter().filter(|c| !known.contains(&(c.event_id, c.insert_id))).collect();
        if partial.is_empty() {
            return Ok(complete);
        }
        let by_id: HashMap<Uuid, usize> = indexes.iter().map(|&i| (events[i].event.event_id, i)).collect();
        let hours: BTreeSet<u32> = partial.iter().map(|c| c.event_time / 3600 * 3600).collect();
        let mut marks = self.client.insert::<SuspectHourRow<'_>>("suspect_hours").await?;
        for hour in &hours {
            marks.write(&SuspectHourRow { project, hour: *hour }).await?;
        }
        marks.end().await?;
        // Rows the partial write did put in `event_copies` stay as they are.
        let partial_indexes: Vec<usize> = partial.iter().filter_map(|c| by_id.get(&c.event_id).copied()).collect();
        let in_copies: HashSet<(Uuid, u64)> = self
            .lookup_in(Ledger::Copies, project, events, &partial_indexes)
            .await?
            .into_iter()
            .map(|c| (c.event_id, c.insert_id))
            .collect();
        let mut copies = self.client.insert::<CopyRowRef<'_>>("event_copies").await?;
        for c in partial.iter().filter(|c| !in_copies.contains(&(c.event_id, c.insert_id))) {
            if let Some(&i) = by_id.get(&c.event_id) {
                copies.write(&CopyRowRef::new(&events[i], c.insert_id)).await?;
            }
        }
        copies.end().await?;
        let mut ids = self.client.insert::<IdRowRef<'_>>("event_ids").await?;
        for c in &partial {
            if let Some(&i) = by_id.get(&c.event_id) {
                ids.write(&IdRowRef::new(&events[i], c.insert_id)).await?;
            }
        }
        ids.end().await?;
        tracing::warn!(
            project,
            copies = partial.len(),
            hours = hours.len(),
            "Completed events an interrupted write left in part of the tables."
        );
        complete.extend(partial);
        Ok(complete)
    }

    /// One look-up request: `ids` and `seconds` travel as RowBinary
    /// external tables, the answer is RowBinary `(UUID, UInt64, UInt32)` rows.
    async fn lookup(
        &self,
        table: Ledger,
        project: &str,
        ids: &[Uuid],
        seconds: &BTreeSet<u32>,
    ) -> Result<Vec<StoredCopy>> {
        let failed = |what: String| Error::ClickHouseRequest(format!("event id look-up: {what}"));
        let mut id_bytes = Vec::with_capacity(ids.len() * 16);
        for id in ids {
            let (high, low) = id.as_u64_pair();
            id_bytes.extend_from_slice(&high.to_le_bytes());
            id_bytes.extend_from_slice(&low.to_le_bytes());
        }
        let second_bytes: Vec<u8> = seconds.iter().flat_map(|s| s.to_le_bytes()).collect();
        let (name, time) = match table {
            Ledger::Ids => ("event_ids", "occurred_at"),
            Ledger::Events => ("events", "event_time"),
            Ledger::Copies => ("event_copies", "event_time"),
        };
        let sql = format!(
            "SELECT event_id, insert_id, toUInt32(event_time) FROM {name} WHERE project = {} \
             AND {time} IN lookup_seconds AND event_id IN lookup_ids FORMAT RowBinary",
            quote_literal(project)
        );
        let part = |name: &'static str, bytes: Vec<u8>| {
            reqwest::multipart::Part::bytes(bytes).file_name(name).mime_str("application/octet-stream")
        };
        let form = reqwest::multipart::Form::new()
            .part("lookup_ids", part("lookup_ids", id_bytes).map_err(|e| failed(e.to_string()))?)
            .part("lookup_seconds", part("lookup_seconds", second_bytes).map_err(|e| failed(e.to_string()))?);
        let mut request = self
            .http
            .post(&self.config.url)
            .query(&[
                ("database", self.config.database.as_str()),
                ("query", sql.as_str()),
                ("lookup_ids_structure", "event_id UUID"),
                ("lookup_ids_format", "RowBinary"),
                ("lookup_seconds_structure", "second DateTime"),
                ("lookup_seconds_format", "RowBinary"),
            ])
            .multipart(form);
        if self.cluster.is_some() {
            // The replica the writes went to (cluster.rs); external tables
            // travel to every shard with the query.
            request = request.query(&super::cluster::read_settings());
        }
        request = request.basic_auth(&self.config.user, self.config.password.as_deref());
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| failed(e.to_string()))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
            return Err(failed(format!("{status}: {}", text.trim())));
        }
        decode_copies(&body).ok_or_else(|| failed(format!("an answer of {} bytes is not whole rows", body.len())))
    }

    /// Whether the query's window holds a recorded copy that a
    /// `device_hour_latest` hour may show as a device's latest (see
    /// [`SHIFTED_HOURS_SQL`]) or an hour an interrupted write may have left
    /// in part of the rollups ([`SUSPECT_HOURS_SQL`]): such windows skip the
    /// cache of past hours, whose sums and devices come from those tables.
    pub(super) async fn past_hours_unsafe(&self, query: &crate::metrics::Query) -> Result<bool> {
        let (from, to) =
            (event_time_s(query.from_ms).saturating_sub(3600), event_time_s(query.to_ms).saturating_add(3600));
        let count = self
            .reader
            .query(
                "SELECT toUInt64((SELECT count() FROM event_duplicates FINAL WHERE project = ? AND same_key = 0 \
                 AND event_time >= toDateTime(?) AND event_time < toDateTime(?)) \
                 + (SELECT count() FROM suspect_hours WHERE project = ? \
                 AND hour >= toDateTime(?) AND hour < toDateTime(?)))",
            )
            .bind(query.project.as_str())
            .bind(from)
            .bind(to)
            .bind(query.project.as_str())
            .bind(from)
            .bind(to)
            .fetch_one::<u64>()
            .await?;
        Ok(count > 0)
    }

    /// The ids of which `copies` found any, after compensating every copy
    /// but the first of those found more than once (see the module doc).
    pub(super) async fn settle(&self, project: &str, copies: &[StoredCopy]) -> Result<HashSet<Uuid>> {
        let mut counts: HashMap<Uuid, usize> = HashMap::with_capacity(copies.len());
        for c in copies {
            *counts.entry(c.event_id).or_insert(0) += 1;
        }
        let several: Vec<&StoredCopy> = copies.iter().filter(|c| counts[&c.event_id] > 1).collect();
        if !several.is_empty() {
            let ids: BTreeSet<Uuid> = several.iter().map(|c| c.event_id).collect();
            let seconds: BTreeSet<u32> = several.iter().map(|c| c.event_time).collect();
            self.compensate(project, &ids.into_iter().collect::<Vec<_>>(), &seconds).await?;
        }
        Ok(counts.into_keys().collect())
    }

    /// Compensates every copy but the first of each id in `ids` (whose
    /// copies are at the corrected times `seconds`); idempotent.
    async fn compensate(&self, project: &str, ids: &[Uuid], seconds: &BTreeSet<u32>) -> Result<usize> {
        let mut by_id: HashMap<Uuid, Vec<CopyRow>> = HashMap::new();
        // Few ids by construction (each was found more than once), so the
        // values go as binds.
        for chunk in ids.chunks(1000) {
            let sql = format!(
                "SELECT toUInt32(event_time), event_id, insert_id, event_time_ms, received_at_ms, \
                 toString(app_version), toString(os), toString(network), success, conflicts, duration_bucket, weight \
                 FROM event_copies WHERE project = ? AND event_time IN ({}) AND event_id IN ({})",
                vec!["?"; seconds.len()].join(", "),
                vec!["?"; chunk.len()].join(", ")
            );
            let mut query = self.client.query(&sql).bind(project);
            for s in seconds {
                query = query.bind(*s);
            }
            for id in chunk {
                query = query.bind(id.to_string());
            }
            for row in query.fetch_all::<CopyRow>().await? {
                by_id.entry(row.event_id).or_default().push(row);
            }
        }
        let mut compensations = Vec::new();
        for copies in by_id.into_values() {
            let copies = one_row_per_copy(copies, |c| (c.event_id, c.insert_id));
            if copies.len() < 2 {
                continue;
            }
            let (first, rest) = split_first(copies);
            compensations.extend(rest.into_iter().map(|copy| (first.event_time, copy)));
        }
        if compensations.is_empty() {
            return Ok(0);
        }
        let mut insert = self.client.insert::<DuplicateRow<'_>>("event_duplicates").await?;
        for (first_time, c) in &compensations {
            insert
                .write(&DuplicateRow {
                    project,
                    event_time: c.event_time,
                    event_id: c.event_id,
                    insert_id: c.insert_id,
                    event_time_ms: c.event_time_ms,
                    same_key: u8::from(c.event_time == *first_time),
                    late: u8::from(c.received_at_ms - c.event_time_ms > LATE_ARRIVAL_MS),
                    app_version: &c.app_version,
                    os: &c.os,
                    network: &c.network,
                    success: c.success,
                    conflicts: c.conflicts,
                    duration_bucket: c.duration_bucket,
                    weight: c.weight,
                })
                .await?;
        }
        insert.end().await?;
        tracing::warn!(project, copies = compensations.len(), "Compensated events stored more than once.");
        Ok(compensations.len())
    }
}

/// The look-up's RowBinary answer: 16 bytes of UUID (two little-endian
/// halves, high first), 8 of `insert_id` and 4 of `event_time` a row, all
/// little-endian; `None` if not whole rows.
fn decode_copies(body: &[u8]) -> Option<Vec<StoredCopy>> {
    const ROW: usize = 28;
    if !body.len().is_multiple_of(ROW) {
        return None;
    }
    let u64_at = |row: &[u8], at: usize| u64::from_le_bytes(row[at..at + 8].try_into().unwrap_or([0; 8]));
    let u32_at = |row: &[u8], at: usize| u32::from_le_bytes(row[at..at + 4].try_into().unwrap_or([0; 4]));
    Some(
        body.chunks_exact(ROW)
            .map(|row| StoredCopy {
                event_id: Uuid::from_u64_pair(u64_at(row, 0), u64_at(row, 8)),
                insert_id: u64_at(row, 16),
                event_time: u32_at(row, 24),
            })
            .collect(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(received_at_ms: i64, insert_id: u64) -> CopyRow {
        CopyRow {
            event_time: 100,
            event_id: Uuid::nil(),
            insert_id,
            event_time_ms: 100_000,
            received_at_ms,
            app_version: String::new(),
            os: String::new(),
            network: String::new(),
            success: 1,
            conflicts: 0,
            duration_bucket: 0,
            weight: 1.0,
        }
    }

    #[test]
    fn the_first_received_copy_counts_and_ties_go_to_the_smaller_insert() {
        let (first, rest) = split_first(vec![row(20, 1), row(10, 9), row(10, 3)]);
        assert_eq!((first.received_at_ms, first.insert_id), (10, 3));
        let mut rest: Vec<_> = rest.iter().map(|r| r.insert_id).collect();
        rest.sort_unstable();
        assert_eq!(rest, vec![1, 9]);
    }

    #[test]
    fn one_copy_found_twice_is_one_copy_and_two_inserts_of_an_event_are_two() {
        let id = Uuid::from_u128(7);
        let copy = |insert_id| StoredCopy { event_id: id, insert_id, event_time: 100 };
        let rows = vec![copy(1), copy(1), copy(2), copy(1)];
        assert_eq!(one_row_per_copy(rows, |c| (c.event_id, c.insert_id)), vec![copy(1), copy(2)]);
    }

    #[test]
    fn device_seconds_are_floored_as_clickhouse_floors_them() {
        assert_eq!(occurred_s(1_700_000_000_999), 1_700_000_000);
        assert_eq!(occurred_s(-1), 0);
    }

    #[test]
    fn answers_decode_as_uuid_halves_then_the_insert_id_and_time() {
        let id = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        // As ClickHouse 18.16 writes this UUID in RowBinary.
        let mut body =
            vec![0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88];
        body.extend_from_slice(&7u64.to_le_bytes());
        body.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        assert_eq!(
            decode_copies(&body),
            Some(vec![StoredCopy { event_id: id, insert_id: 7, event_time: 1_700_000_000 }])
        );
        assert_eq!(decode_copies(&body[..27]), None);
    }

    #[test]
    fn literals_are_quoted_and_escaped() {
        assert_eq!(quote_literal("default"), "'default'");
        assert_eq!(quote_literal("a'b\\"), "'a\\'b\\\\'");
    }
}
