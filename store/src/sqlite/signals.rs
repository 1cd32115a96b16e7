//! [`crate::Signals`] on the embedded store: conflicts from the stored
//! `conflict_details` JSON through `json_each`, errors grouped by the
//! stored fingerprint, all read through `events_by_time` (definitions in
//! [`crate::signals`]).

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};

use super::sql::bound_query;
use super::SqliteStore;
use crate::metrics::Query;
use crate::signals::{
    overwriting_resolutions, top, ConflictAggregate, ConflictCell, EntityConflicts, ErrorAggregate, ErrorGroup,
    ErrorKindCount, QueueLags,
};
use crate::Result;

/// The window and the segment filters, named parameters `:project`,
/// `:from`, `:to`, `:app_version`, `:os`, `:network`.
const WINDOW: &str = "project = :project AND event_time_ms >= :from AND event_time_ms < :to \
     AND (:app_version IS NULL OR app_version = :app_version) AND (:os IS NULL OR os = :os) \
     AND (:network IS NULL OR network = :network)";

/// The bucket of an event, Unix seconds, for `:step` seconds.
const BUCKET: &str = "(event_time_ms / (:step * 1000)) * :step";

fn params(query: &Query, step_seconds: u32) -> Vec<(&'static str, Value)> {
    let text = |v: Option<&str>| v.map_or(Value::Null, |v| Value::Text(v.to_string()));
    let f = &query.filters;
    vec![
        (":project", Value::Text(query.project.as_str().to_string())),
        (":from", Value::Integer(query.from_ms)),
        (":to", Value::Integer(query.to_ms)),
        (":app_version", text(f.app_version.as_deref())),
        (":os", text(f.os.as_deref())),
        (":network", text(f.network.map(|n| n.as_str()))),
        (":step", Value::Integer(i64::from(step_seconds.max(1)))),
    ]
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// One of the reads below: a connection, the named parameters and a limit.
type SnapshotRead<T> = fn(&Connection, &[(&str, Value)], u32) -> Result<T>;

impl SqliteStore {
    /// `read(conn, params, limit)` in one read transaction, so its several
    /// statements see the same events.
    async fn in_snapshot<T: Send + 'static>(
        &self,
        params: Vec<(&'static str, Value)>,
        limit: u32,
        read: SnapshotRead<T>,
    ) -> Result<T> {
        self.read(move |conn| {
            let snapshot = conn.unchecked_transaction()?;
            let out = read(&snapshot, &params, limit)?;
            snapshot.commit()?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl crate::Signals for SqliteStore {
    async fn conflicts(&self, query: &Query, step_seconds: u32, entities: u32) -> Result<ConflictAggregate> {
        self.in_snapshot(params(query, step_seconds), entities, conflicts).await
    }

    async fn errors(&self, query: &Query, step_seconds: u32, groups: u32) -> Result<ErrorAggregate> {
        self.in_snapshot(params(query, step_seconds), groups, errors).await
    }

    async fn queue_lags(&self, query: &Query) -> Result<QueueLags> {
        let params = params(query, 1);
        let (from, to) = (query.from_ms, query.to_ms);
        self.read(move |conn| {
            let snapshot = conn.unchecked_transaction()?;
            let out = queue_lags(&snapshot, &params, from, to)?;
            snapshot.commit()?;
            Ok(out)
        })
        .await
    }
}

fn conflicts(conn: &Connection, params: &[(&str, Value)], limit: u32) -> Result<ConflictAggregate> {
    let mut out = ConflictAggregate::default();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {BUCKET} AS b, json_extract(d.value, '$.kind') AS k, json_extract(d.value, '$.resolution') AS r, \
         SUM(weight * json_extract(d.value, '$.count')) FROM events INDEXED BY events_conflicted, json_each(events.conflict_details) AS d \
         WHERE {WINDOW} AND conflicts > 0 AND conflict_details IS NOT NULL GROUP BY b, k, r"
    ))?;
    let mut rows = bound_query(&mut stmt, params)?;
    while let Some(row) = rows.next()? {
        out.series.push(ConflictCell {
            bucket: row.get(0)?,
            kind: Some(row.get(1)?),
            resolution: Some(row.get(2)?),
            conflicts: row.get(3)?,
        });
    }
    // What the details do not account for.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT b, SUM(weight * rest) FROM (SELECT {BUCKET} AS b, weight, conflicts - COALESCE((SELECT \
         SUM(json_extract(d.value, '$.count')) FROM json_each(events.conflict_details) AS d), 0) AS rest \
         FROM events INDEXED BY events_conflicted WHERE {WINDOW} AND conflicts > 0) WHERE rest > 0 GROUP BY b"
    ))?;
    let mut rows = bound_query(&mut stmt, params)?;
    while let Some(row) = rows.next()? {
        out.series.push(ConflictCell { bucket: row.get(0)?, kind: None, resolution: None, conflicts: row.get(1)? });
    }
    if limit == 0 {
        return Ok(out);
    }
    let overwriting = overwriting_resolutions().iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(", ");
    // One row per (event, entity) first, so an attempt naming an entity
    // twice (two kinds) counts once among its attempts.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT entity, SUM(weight * n), SUM(weight * o), SUM(weight), COUNT(DISTINCT device_id) FROM (\
         SELECT event_id, weight, device_id, json_extract(d.value, '$.entity') AS entity, \
         SUM(json_extract(d.value, '$.count')) AS n, SUM(CASE WHEN json_extract(d.value, '$.resolution') \
         IN ({overwriting}) THEN json_extract(d.value, '$.count') ELSE 0 END) AS o \
         FROM events INDEXED BY events_conflicted, json_each(events.conflict_details) AS d WHERE {WINDOW} AND conflicts > 0 AND conflict_details IS NOT NULL \
         GROUP BY event_id, entity) GROUP BY entity"
    ))?;
    let mut rows = bound_query(&mut stmt, params)?;
    while let Some(row) = rows.next()? {
        out.entities.push(EntityConflicts {
            entity: row.get(0)?,
            conflicts: row.get(1)?,
            overwrites: row.get(2)?,
            attempts: row.get(3)?,
            devices: row.get(4)?,
        });
    }
    out.entities_by_attempts = out.entities.clone();
    top(&mut out.entities, limit, |e| e.conflicts, |e| e.entity.clone());
    top(&mut out.entities_by_attempts, limit, |e| e.attempts, |e| e.entity.clone());
    Ok(out)
}
fn errors(conn: &Connection, params: &[(&str, Value)], limit: u32) -> Result<ErrorAggregate> {
    let mut out = ErrorAggregate::default();
    let failed = format!("{WINDOW} AND success = 0");
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT COALESCE(error_kind, ''), SUM(weight), COUNT(*), COUNT(DISTINCT device_id) FROM events INDEXED BY events_failed \
         WHERE {failed} GROUP BY 1"
    ))?;
    let mut rows = bound_query(&mut stmt, params)?;
    while let Some(row) = rows.next()? {
        out.kinds.push(ErrorKindCount {
            kind: non_empty(row.get(0)?),
            attempts: row.get(1)?,
            events: row.get(2)?,
            devices: row.get(3)?,
        });
    }
    top(&mut out.kinds, u32::MAX, |k| k.attempts, |k| k.kind.clone().unwrap_or_default());
    // SQLite gives a bare column the row of the group's single max().
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT COALESCE(error_kind, ''), COALESCE(error_fingerprint, ''), SUM(weight), COUNT(*), \
         COUNT(DISTINCT device_id), MIN(event_time_ms) FROM events INDEXED BY events_failed WHERE {failed} GROUP BY 1, 2"
    ))?;
    let mut rows = bound_query(&mut stmt, params)?;
    while let Some(row) = rows.next()? {
        out.groups.push(ErrorGroup {
            kind: non_empty(row.get(0)?),
            fingerprint: row.get(1)?,
            example: String::new(),
            attempts: row.get(2)?,
            events: row.get(3)?,
            devices: row.get(4)?,
            first_seen_ms: row.get(5)?,
            last_seen_ms: 0,
            releases: Vec::new(),
            series: Vec::new(),
        });
    }
    let name = |g: &ErrorGroup| format!("{}\u{0}{}", g.kind.as_deref().unwrap_or_default(), g.fingerprint);
    top(&mut out.groups, limit, |g| g.attempts, name);
    if out.groups.is_empty() {
        return Ok(out);
    }
    // The chosen groups as named pairs `(:kI, :fI)`.
    let names: Vec<(String, String)> = (0..out.groups.len()).map(|i| (format!(":k{i}"), format!(":f{i}"))).collect();
    let mut chosen: Vec<(&str, Value)> = params.to_vec();
    for ((k, f), group) in names.iter().zip(&out.groups) {
        chosen.push((k, Value::Text(group.kind.clone().unwrap_or_default())));
        chosen.push((f, Value::Text(group.fingerprint.clone())));
    }
    let pairs: Vec<String> = names.iter().map(|(k, f)| format!("({k}, {f})")).collect();
    let chosen_sql = format!(
        "{failed} AND (COALESCE(error_kind, ''), COALESCE(error_fingerprint, '')) IN (VALUES {})",
        pairs.join(", ")
    );
    let mut stmt = conn.prepare(&format!(
        "SELECT COALESCE(error_kind, ''), COALESCE(error_fingerprint, ''), MAX(event_time_ms), \
         COALESCE(error_message, '') FROM events INDEXED BY events_failed WHERE {chosen_sql} GROUP BY 1, 2"
    ))?;
    let mut rows = bound_query(&mut stmt, &chosen)?;
    while let Some(row) = rows.next()? {
        let (kind, fingerprint): (String, String) = (row.get(0)?, row.get(1)?);
        if let Some(i) = group_of(&out.groups, &kind, &fingerprint) {
            out.groups[i].last_seen_ms = row.get(2)?;
            out.groups[i].example = row.get(3)?;
        }
    }
    split_groups(conn, &chosen_sql, &chosen, "app_version", &mut out.groups, |group, row| {
        group.releases.push((row.get(2)?, row.get(3)?));
        Ok(())
    })?;
    split_groups(conn, &chosen_sql, &chosen, BUCKET, &mut out.groups, |group, row| {
        group.series.push((row.get(2)?, row.get(3)?));
        Ok(())
    })?;
    for group in &mut out.groups {
        group.releases.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        group.series.sort_by_key(|(bucket, _)| *bucket);
    }
    Ok(out)
}

/// The index of the group of `(kind, fingerprint)`, kind `""` for none.
fn group_of(groups: &[ErrorGroup], kind: &str, fingerprint: &str) -> Option<usize> {
    groups.iter().position(|g| g.kind.as_deref().unwrap_or_default() == kind && g.fingerprint == fingerprint)
}

/// The chosen groups' failed attempts split by `by` (a column or
/// [`BUCKET`]): each `(kind, fingerprint, by, attempts)` row handed to `add`
/// with its group.
fn split_groups(
    conn: &Connection,
    chosen_sql: &str,
    chosen: &[(&str, Value)],
    by: &str,
    groups: &mut [ErrorGroup],
    add: impl Fn(&mut ErrorGroup, &rusqlite::Row<'_>) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare(&format!(
        "SELECT COALESCE(error_kind, ''), COALESCE(error_fingerprint, ''), {by} AS b, SUM(weight) \
         FROM events INDEXED BY events_failed WHERE {chosen_sql} GROUP BY 1, 2, 3"
    ))?;
    let mut rows = bound_query(&mut stmt, chosen)?;
    while let Some(row) = rows.next()? {
        let (kind, fingerprint): (String, String) = (row.get(0)?, row.get(1)?);
        if let Some(i) = group_of(groups, &kind, &fingerprint) {
            add(&mut groups[i], row)?;
        }
    }
    Ok(())
}

/// Each device's latest event in `[from, to)` is found without reading the
/// window's events: the whole hours' latest per device and segment are in
/// `device_segment_hour` (`device_state.rs`, filtered like `events`), the
/// partial hours at the edges come from `events`; then only the latest
/// events themselves are read, by their key, for their lag. The latest is
/// the greatest `(time, event id text)`, as everywhere.
fn queue_lags(conn: &Connection, params: &[(&str, Value)], from: i64, to: i64) -> Result<QueueLags> {
    use std::collections::HashMap;
    let mut latest: HashMap<String, (i64, String)> = HashMap::new();
    let mut offer = |device: String, time: i64, id: String| {
        let slot = latest.entry(device).or_insert((i64::MIN, String::new()));
        if (time, id.as_str()) > (slot.0, slot.1.as_str()) {
            *slot = (time, id);
        }
    };
    let (whole, edges) = crate::pieces::split(from, to, crate::pieces::HOUR_MS);
    if let Some((first, last)) = whole {
        let mut stmt = conn.prepare_cached(
            "SELECT device_id, latest_time_ms, latest_event_id FROM device_segment_hour \
             WHERE project = :project AND hour >= :first AND hour < :last \
             AND (:app_version IS NULL OR app_version = :app_version) AND (:os IS NULL OR os = :os) \
             AND (:network IS NULL OR network = :network)",
        )?;
        let mut hours = params.to_vec();
        hours.push((":first", Value::Integer(first / 1000)));
        hours.push((":last", Value::Integer(last / 1000)));
        let mut rows = bound_query(&mut stmt, &hours)?;
        while let Some(row) = rows.next()? {
            offer(row.get(0)?, row.get(1)?, row.get(2)?);
        }
    }
    for (edge_from, edge_to) in edges {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT device_id, event_time_ms, event_id FROM events WHERE {}",
            WINDOW.replace(":from", ":edge_from").replace(":to", ":edge_to")
        ))?;
        let mut edge = params.to_vec();
        edge.push((":edge_from", Value::Integer(edge_from)));
        edge.push((":edge_to", Value::Integer(edge_to)));
        let mut rows = bound_query(&mut stmt, &edge)?;
        while let Some(row) = rows.next()? {
            offer(row.get(0)?, row.get(1)?, row.get(2)?);
        }
    }
    let project = params.iter().find(|(n, _)| *n == ":project").map(|(_, v)| v.clone()).unwrap_or(Value::Null);
    let mut stmt = conn.prepare_cached(
        "SELECT CASE WHEN queue_lag_ms IS NOT NULL THEN queue_lag_ms WHEN queue_depth = 0 THEN 0 ELSE -1 END \
         FROM events WHERE project = ?1 AND event_id = ?2",
    )?;
    let mut out = QueueLags { devices: latest.len() as u64, lags_ms: Vec::new() };
    for (_, id) in latest.values() {
        let lag: Option<i64> = stmt.query_row(rusqlite::params![project, id], |row| row.get(0)).optional()?;
        if let Some(lag) = lag.and_then(|l| u64::try_from(l).ok()) {
            out.lags_ms.push(lag);
        }
    }
    out.lags_ms.sort_unstable();
    Ok(out)
}
