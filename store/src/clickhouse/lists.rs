//! The device lists ([`crate::DeviceList`]) on ClickHouse, from runs
//! (`crate::device_runs`): the whole hours and minutes of a window from the
//! store's [`crate::device_runs::RunCache`], the partial minutes at its
//! edges from `events`; a filtered list has runs of its own, read with its
//! filters ([`crate::device_runs::space`]). A list whose window holds hours
//! an interrupted write left partly counted (`dedup.rs`) reads its window's
//! events an hour at a time and caches nothing.
//!
//! A unit's stamp is its count in `rollup_hour`/`rollup_minute`, read before
//! its events. The rollups are written by views of the insert into `events`,
//! after the rows themselves, so a count never runs ahead of the rows it
//! counts: at worst a unit is read with rows newer than its stamp, and read
//! again next time. Rows come through `events_filter`, without the copies
//! `dedup.rs` compensates, and copies under one key count once
//! ([`crate::device_runs::runs_of`]), as `FINAL` would have it.
//!
//! Then the listed devices' latest events are read through the sorting key
//! (their seconds) for what the list shows beyond its run.

use std::collections::HashMap;

use clickhouse::Row;
use serde::Deserialize;
use uuid::Uuid;

use super::dedup::events_filter;
use super::sql::{event_time_s, only_devices, Arg};
use super::ClickHouseStore;
use crate::device_runs::{chain, hours, select, space, stamp_reads, summary, units, Attempt, Details, Key, Run, Unit};
use crate::devices::{DeviceList, DeviceSummary};
use crate::metrics::Query;
use crate::pieces::HOUR_MS;
use crate::Result;

#[derive(Row, Deserialize)]
struct AttemptRow {
    device_id: String,
    event_time_ms: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    success: u8,
    queue_depth: u32,
    staleness_ms: i64,
}

#[derive(Row, Deserialize)]
struct CountRow {
    start_ms: i64,
    events: u64,
}

#[derive(Row, Deserialize)]
struct DetailsRow {
    device_id: String,
    event_time_ms: i64,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    app_version: String,
    os: String,
    network: String,
    error_kind: String,
    error_message: String,
}

/// Units read in one request at most: an hour of events.
const LOAD_SPAN_MS: i64 = HOUR_MS;

impl ClickHouseStore {
    pub(super) async fn list_devices(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
        let project = query.project.as_str();
        let cache = &self.device_runs;
        let space = space(query);
        let (units, raw) = units(query.from_ms, query.to_ms);
        let (unsafe_hours, counts) =
            tokio::try_join!(self.past_hours_unsafe(query), self.unit_counts(project, &units))?;
        // An interrupted write may have left events its rollups do not
        // count (`dedup.rs`): their counts are no stamp there, so such a
        // window reads everything from `events`, an hour at a time, and what
        // was cached of the project is forgotten.
        let (units, raw) = if unsafe_hours {
            cache.forget(project);
            (Vec::new(), hours(query.from_ms, query.to_ms))
        } else {
            (units, raw)
        };
        let stale = cache.stale(&space, &units, &counts);
        let loads = async {
            for (from, to) in load_spans(&stale) {
                let rows = self.attempts(query, from, to).await?;
                let mut by_unit: HashMap<Unit, Vec<(String, Attempt)>> = HashMap::new();
                for (device, attempt) in rows {
                    let at = stale.partition_point(|u| u.1 <= attempt.key.time_ms);
                    if let Some(unit) = stale.get(at).filter(|u| u.0 <= attempt.key.time_ms) {
                        by_unit.entry(*unit).or_default().push((device, attempt));
                    }
                }
                for unit in stale.iter().filter(|u| u.0 >= from && u.1 <= to) {
                    let runs = cache.runs(&space, by_unit.remove(unit).unwrap_or_default());
                    cache.put(&space, *unit, counts.get(unit).copied().unwrap_or(0), runs);
                }
            }
            Ok::<_, crate::Error>(())
        };
        // The edges (at most two partial minutes, or the hours of an unsafe
        // window) beside the loads.
        let edges = async {
            let mut extra = Vec::new();
            for (from, to) in raw {
                extra.push((from, cache.runs(&space, self.attempts(query, from, to).await?)));
            }
            Ok::<_, crate::Error>(extra)
        };
        let ((), extra) = tokio::try_join!(loads, edges)?;
        let pieces = cache.pieces(&space, &units, extra);
        let chained = chain(pieces.names.len(), pieces.pieces.iter().map(|p| p.as_slice()));
        let listed = select(list, query.to_ms, &chained, |d| pieces.names[d as usize].as_str(), limit);
        let listed: Vec<(String, Run)> =
            listed.into_iter().map(|(device, run)| (pieces.names[device as usize].clone(), run)).collect();
        let mut details = self.details(project, &listed).await?;
        Ok(listed
            .into_iter()
            .map(|(device_id, run)| {
                let found = details.remove(&(device_id.clone(), run.latest())).unwrap_or_default();
                summary(device_id, &run, found, list, query.to_ms)
            })
            .collect())
    }

    /// Each unit's event count in its rollup.
    async fn unit_counts(&self, project: &str, units: &[Unit]) -> Result<HashMap<Unit, u64>> {
        let mut counts = HashMap::new();
        for (table, column, length, first, last) in stamp_reads(units) {
            let rows = self
                .reader
                .query(&format!(
                    "SELECT toInt64(toUInt32({column})) * 1000 AS start_ms, toUInt64(sum(events)) AS events \
                     FROM {table} WHERE project = ? AND {column} >= toDateTime(?) AND {column} < toDateTime(?) \
                     GROUP BY {column}"
                ))
                .bind(project)
                .bind(event_time_s(first))
                .bind(event_time_s(last))
                .fetch_all::<CountRow>()
                .await?;
            counts.extend(rows.into_iter().map(|r| ((r.start_ms, r.start_ms + length), r.events)));
        }
        Ok(counts)
    }

    /// The attempts of `[from, to)` that `query`'s filters keep.
    async fn attempts(&self, query: &Query, from: i64, to: i64) -> Result<Vec<(String, Attempt)>> {
        let (filter, args) = events_filter(query, from, to);
        let sql = format!(
            "SELECT device_id, event_time_ms, event_id, success, queue_depth, \
             if(isNull(staleness_ms), toInt64(-1), toInt64(assumeNotNull(staleness_ms))) AS staleness_ms \
             FROM events WHERE {filter}"
        );
        let rows = args.iter().fold(self.reader.query(&sql), |q, a| q.bind(a)).fetch_all::<AttemptRow>().await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let attempt = Attempt {
                    key: Key::new(r.event_time_ms, r.event_id),
                    success: r.success != 0,
                    queue_depth: r.queue_depth,
                    staleness_ms: (r.staleness_ms >= 0).then_some(r.staleness_ms),
                };
                (r.device_id, attempt)
            })
            .collect())
    }

    /// The listed devices' latest events, by (device, key).
    async fn details(&self, project: &str, listed: &[(String, Run)]) -> Result<HashMap<(String, Key), Details>> {
        if listed.is_empty() {
            return Ok(HashMap::new());
        }
        let mut seconds: Vec<u32> = listed.iter().map(|(_, r)| event_time_s(r.latest().time_ms)).collect();
        seconds.sort_unstable();
        seconds.dedup();
        let devices: Vec<String> = listed.iter().map(|(d, _)| d.clone()).collect();
        let (only, names) = only_devices(&devices);
        let placeholders = vec!["toDateTime(?)"; seconds.len()].join(", ");
        let sql = format!(
            "SELECT device_id, event_time_ms, event_id, CAST(app_version AS String) AS app_version, \
             CAST(os AS String) AS os, CAST(network AS String) AS network, \
             CAST(error_kind AS String) AS error_kind, error_message \
             FROM events WHERE project = ? AND event_time IN ({placeholders}){only}"
        );
        let args: Vec<Arg> = std::iter::once(Arg::Text(project.to_string()))
            .chain(seconds.into_iter().map(Arg::Seconds))
            .chain(names)
            .collect();
        let rows = args.iter().fold(self.reader.query(&sql), |q, a| q.bind(a)).fetch_all::<DetailsRow>().await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let details = Details {
                    app_version: r.app_version,
                    os: r.os,
                    network: r.network,
                    error_kind: r.error_kind,
                    error_message: r.error_message,
                };
                ((r.device_id, Key::new(r.event_time_ms, r.event_id)), details)
            })
            .collect())
    }
}

/// Stale units (sorted) gathered into requests: adjacent units, at most
/// [`LOAD_SPAN_MS`] of them a request.
fn load_spans(stale: &[Unit]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = Vec::new();
    for &(from, to) in stale {
        match spans.last_mut() {
            Some(span) if span.1 == from && to - span.0 <= LOAD_SPAN_MS => span.1 = to,
            _ => spans.push((from, to)),
        }
    }
    spans
}
