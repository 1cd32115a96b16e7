//! The device lists ([`crate::DeviceList`]) of the embedded store, from runs
//! (`crate::device_runs`): the whole hours and minutes of a window from the
//! store's [`RunCache`], stamped with `rollup_hour`/`rollup_minute` counts
//! read in the same snapshot as their events (so an unchanged count is an
//! unchanged unit, whoever wrote), the partial minutes at its edges from
//! `events` through `events_by_time`. A filtered list has runs of its own,
//! read with its filters ([`crate::device_runs::space`]).
//!
//! Then the listed devices' latest events (at most the list's limit) are
//! read by their key for what the list shows beyond its run.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use uuid::Uuid;

use crate::device_runs::{
    chain, select, space, stamp_reads, summary, units, Attempt, Details, Key, Run, RunCache, Unit,
};
use crate::devices::{DeviceList, DeviceSummary};
use crate::metrics::Query;
use crate::{Error, Result};

pub(super) fn devices(
    conn: &Connection,
    cache: &RunCache,
    query: &Query,
    list: DeviceList,
    limit: u32,
) -> Result<Vec<DeviceSummary>> {
    // One snapshot: the stamps, the units and the edges agree.
    let snapshot = conn.unchecked_transaction()?;
    let conn = &*snapshot;
    let project = query.project.as_str();
    let space = space(query);
    let (units, raw) = units(query.from_ms, query.to_ms);
    let counts = unit_counts(conn, project, &units)?;
    for unit in cache.stale(&space, &units, &counts) {
        let runs = cache.runs(&space, attempts(conn, query, unit)?);
        cache.put(&space, unit, counts.get(&unit).copied().unwrap_or(0), runs);
    }
    let mut extra = Vec::new();
    for range in raw {
        extra.push((range.0, cache.runs(&space, attempts(conn, query, range)?)));
    }
    let pieces = cache.pieces(&space, &units, extra);
    let chained = chain(pieces.names.len(), pieces.pieces.iter().map(|p| p.as_slice()));
    let listed = select(list, query.to_ms, &chained, |d| pieces.names[d as usize].as_str(), limit);
    let mut out = Vec::with_capacity(listed.len());
    for (device, run) in listed {
        let device_id = pieces.names[device as usize].clone();
        let details = details(conn, project, &run)?;
        out.push(summary(device_id, &run, details, list, query.to_ms));
    }
    snapshot.commit()?;
    Ok(out)
}

/// Each unit's event count in its rollup; minutes and hours by their length.
fn unit_counts(conn: &Connection, project: &str, units: &[Unit]) -> Result<HashMap<Unit, u64>> {
    let mut counts = HashMap::new();
    for (table, column, length, first, last) in stamp_reads(units) {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {column}, SUM(events) FROM {table} WHERE project = ?1 AND {column} >= ?2 AND {column} < ?3 \
             GROUP BY {column}"
        ))?;
        let mut rows = stmt.query(params![project, first.div_euclid(1000), last.div_euclid(1000)])?;
        while let Some(row) = rows.next()? {
            let start = row.get::<_, i64>(0)? * 1000;
            counts.insert((start, start + length), u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0));
        }
    }
    Ok(counts)
}

/// The attempts of `[from, to)` that the query's filters keep.
fn attempts(conn: &Connection, query: &Query, (from, to): (i64, i64)) -> Result<Vec<(String, Attempt)>> {
    let f = &query.filters;
    let (app_version, os, network) = (&f.app_version, &f.os, f.network.map(|n| n.as_str()));
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, event_time_ms, event_id, success, queue_depth, staleness_ms FROM events
         WHERE project = ?1 AND event_time_ms >= ?2 AND event_time_ms < ?3
           AND (?4 IS NULL OR app_version = ?4) AND (?5 IS NULL OR os = ?5) AND (?6 IS NULL OR network = ?6)",
    )?;
    let mut rows = stmt.query(params![query.project.as_str(), from, to, app_version, os, network])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get(2)?;
        let id = Uuid::parse_str(&id).map_err(|e| Error::Corrupt(format!("event_id {id:?}: {e}")))?;
        out.push((
            row.get(0)?,
            Attempt {
                key: Key::new(row.get(1)?, id),
                success: row.get(3)?,
                queue_depth: row.get(4)?,
                staleness_ms: row.get(5)?,
            },
        ));
    }
    Ok(out)
}

/// What a list shows of a device's latest event beyond its run.
fn details(conn: &Connection, project: &str, run: &Run) -> Result<Details> {
    let key = run.latest();
    let mut stmt = conn.prepare_cached(
        "SELECT app_version, os, network, error_kind, error_message FROM events
         WHERE project = ?1 AND event_time_ms = ?2 AND event_id = ?3 LIMIT 1",
    )?;
    let mut rows = stmt.query(params![project, key.time_ms, key.uuid().hyphenated().to_string()])?;
    let Some(row) = rows.next()? else {
        return Ok(Details::default());
    };
    Ok(Details {
        app_version: row.get(0)?,
        os: row.get(1)?,
        network: row.get(2)?,
        error_kind: row.get(3)?,
        error_message: row.get(4)?,
    })
}
