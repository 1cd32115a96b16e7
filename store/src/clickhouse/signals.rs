//! [`crate::Signals`] on ClickHouse: conflicts through `ARRAY JOIN` of the
//! detail arrays (migration 12), errors grouped by the stored fingerprint
//! (migration 13), each event once whatever copies `events` holds
//! ([`read`], `dedup.rs`; definitions in [`crate::signals`]).

use async_trait::async_trait;
use clickhouse::Row;
use serde::Deserialize;

use super::sql::{quote, raw_filter, Arg, Sql};
use super::ClickHouseStore;
use crate::metrics::Query;
use crate::signals::{
    overwriting_resolutions, top, ConflictAggregate, ConflictCell, EntityConflicts, ErrorAggregate, ErrorGroup,
    ErrorKindCount, QueueLags,
};
use crate::Result;

#[derive(Row, Deserialize)]
struct CellRow {
    b: i64,
    k: String,
    r: String,
    n: f64,
}

#[derive(Row, Deserialize)]
struct RestRow {
    b: i64,
    n: f64,
}

#[derive(Row, Deserialize)]
struct EntityRow {
    entity: String,
    conflicts: f64,
    overwrites: f64,
    attempts: f64,
    devices: u64,
}

#[derive(Row, Deserialize)]
struct KindRow {
    k: String,
    attempts: f64,
    events: u64,
    devices: u64,
}

#[derive(Row, Deserialize)]
struct GroupRow {
    k: String,
    f: String,
    attempts: f64,
    events: u64,
    devices: u64,
    first: i64,
    last: i64,
    example: String,
}

#[derive(Row, Deserialize)]
struct SplitRow {
    k: String,
    f: String,
    by: String,
    attempts: f64,
}

/// The bucket of an event, Unix seconds.
fn bucket(step_seconds: u32) -> String {
    let step = step_seconds.max(1);
    format!("toInt64(intDiv(event_time_ms, {}) * {step})", u64::from(step) * 1000)
}

/// The keys `(event_time, event_id)` of every copy an aggregate subtracts
/// (`dedup.rs`); one bind: the project.
const COMPENSATED_KEYS_SQL: &str = "(SELECT event_time, event_id FROM event_duplicates WHERE project = ?)";

/// Of those, the keys a compensated copy shares with its event's counted
/// copy; one bind: the project.
const SHARED_KEYS_SQL: &str = "(SELECT event_time, event_id FROM event_duplicates WHERE project = ? AND same_key = 1)";

/// `SELECT {select} FROM` the query's events, each once, `{join} WHERE
/// {and}`, then `{rest}`.
///
/// Not `events FINAL`: on 18.16 that merges every row of the window on the
/// fly in one stream, seconds for a day at ten million events. Each event
/// once instead: the rows whose key no compensation names (almost all; a
/// copy at another time is left out by its own key), plus one row for each
/// key a compensated copy shares with its counted copy (`LIMIT 1 BY`: a
/// merge may or may not have collapsed them yet). Both read through the
/// sorting key, in parallel.
fn read(query: &Query, select: &str, join: &str, and: &str, rest: &str) -> Sql {
    let (filter, window) = raw_filter(query, query.from_ms, query.to_ms);
    let project = Arg::Text(query.project.as_str().to_string());
    let mut args = window.clone();
    args.push(project.clone());
    args.extend(window);
    args.push(project);
    Sql {
        text: format!(
            "SELECT {select} FROM (SELECT * FROM events WHERE {filter} AND (event_time, event_id) NOT IN \
             {COMPENSATED_KEYS_SQL} UNION ALL SELECT * FROM events WHERE {filter} AND (event_time, event_id) IN \
             {SHARED_KEYS_SQL} LIMIT 1 BY event_time, event_id) {join} WHERE {and} {rest}"
        ),
        args,
    }
}

/// The key the chosen error groups are found by: kind and fingerprint
/// (a kind is a wire spelling, never holding the separator).
const GROUP_KEY: &str = "concat(CAST(error_kind AS String), '\\0', error_fingerprint)";

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[async_trait]
impl crate::Signals for ClickHouseStore {
    async fn conflicts(&self, query: &Query, step_seconds: u32, entities: u32) -> Result<ConflictAggregate> {
        let b = bucket(step_seconds);
        let cells = read(
            query,
            &format!("{b} AS b, k, r, sum(weight * c) AS n"),
            "ARRAY JOIN conflict_kind AS k, conflict_resolution AS r, conflict_count AS c",
            "notEmpty(conflict_count)",
            "GROUP BY b, k, r",
        );
        let rest = read(
            query,
            &format!("{b} AS b, sum(weight * (toInt64(conflicts) - toInt64(arraySum(conflict_count)))) AS n"),
            "",
            "conflicts > arraySum(conflict_count)",
            "GROUP BY b",
        );
        let overwriting: Vec<String> = overwriting_resolutions().into_iter().map(|r| quote(r, '\'')).collect();
        let overwriting = overwriting.join(", ");
        // One row per (event, entity), so an attempt naming an entity twice
        // (two kinds) counts once among its attempts.
        let by_entity = |order: &str| {
            let mut sql = read(
                query,
                &format!(
                    "entity, sum(weight * arraySum(arrayMap((c, e) -> if(e = entity, c, 0), conflict_count, \
                     conflict_entity))) AS conflicts, sum(weight * arraySum(arrayMap((c, e, r) -> \
                     if(e = entity AND has([{overwriting}], r), c, 0), conflict_count, conflict_entity, \
                     conflict_resolution))) AS overwrites, sum(weight) AS attempts, uniqExact(device_id) AS devices"
                ),
                "ARRAY JOIN arrayDistinct(conflict_entity) AS entity",
                "notEmpty(conflict_entity)",
                &format!("GROUP BY entity ORDER BY {order} DESC, entity LIMIT ?"),
            );
            sql.args.push(Arg::Int(i64::from(entities)));
            sql
        };
        let (by_conflicts, by_attempts) = (by_entity("conflicts"), by_entity("attempts"));
        let read_entities = |sql: Sql| async move {
            if entities == 0 {
                return Ok(Vec::new());
            }
            sql.query(&self.reader).fetch_all::<EntityRow>().await
        };
        let (cells, rest, by_conflicts, by_attempts) = tokio::try_join!(
            cells.query(&self.reader).fetch_all::<CellRow>(),
            rest.query(&self.reader).fetch_all::<RestRow>(),
            read_entities(by_conflicts),
            read_entities(by_attempts),
        )?;
        let mut out = ConflictAggregate::default();
        out.series.extend(cells.into_iter().map(|c| ConflictCell {
            bucket: c.b,
            kind: Some(c.k),
            resolution: Some(c.r),
            conflicts: c.n,
        }));
        out.series.extend(rest.into_iter().map(|c| ConflictCell {
            bucket: c.b,
            kind: None,
            resolution: None,
            conflicts: c.n,
        }));
        let lines = |rows: Vec<EntityRow>| -> Vec<EntityConflicts> {
            rows.into_iter()
                .map(|e| EntityConflicts {
                    entity: e.entity,
                    conflicts: e.conflicts,
                    overwrites: e.overwrites,
                    attempts: e.attempts,
                    devices: e.devices,
                })
                .collect()
        };
        out.entities = lines(by_conflicts);
        out.entities_by_attempts = lines(by_attempts);
        top(&mut out.entities, entities, |e| e.conflicts, |e| e.entity.clone());
        top(&mut out.entities_by_attempts, entities, |e| e.attempts, |e| e.entity.clone());
        Ok(out)
    }

    async fn errors(&self, query: &Query, step_seconds: u32, groups: u32) -> Result<ErrorAggregate> {
        let kinds = read(
            query,
            "CAST(error_kind AS String) AS k, sum(weight) AS attempts, count() AS events, \
             uniqExact(device_id) AS devices",
            "",
            "success = 0",
            "GROUP BY k",
        );
        let mut chosen = read(
            query,
            "CAST(error_kind AS String) AS k, error_fingerprint AS f, sum(weight) AS attempts, count() AS events, \
             uniqExact(device_id) AS devices, min(event_time_ms) AS first, max(event_time_ms) AS last, \
             argMax(error_message, event_time_ms) AS example",
            "",
            "success = 0",
            "GROUP BY k, f ORDER BY attempts DESC, k, f LIMIT ?",
        );
        chosen.args.push(Arg::Int(i64::from(groups)));
        let (kinds, chosen) = tokio::try_join!(
            kinds.query(&self.reader).fetch_all::<KindRow>(),
            chosen.query(&self.reader).fetch_all::<GroupRow>(),
        )?;
        let mut out = ErrorAggregate { kinds: Vec::new(), groups: Vec::new() };
        out.kinds = kinds
            .into_iter()
            .map(|k| ErrorKindCount {
                kind: non_empty(k.k),
                attempts: k.attempts,
                events: k.events,
                devices: k.devices,
            })
            .collect();
        top(&mut out.kinds, u32::MAX, |k| k.attempts, |k| k.kind.clone().unwrap_or_default());
        out.groups = chosen
            .into_iter()
            .map(|g| ErrorGroup {
                kind: non_empty(g.k),
                fingerprint: g.f,
                example: g.example,
                attempts: g.attempts,
                events: g.events,
                devices: g.devices,
                first_seen_ms: g.first,
                last_seen_ms: g.last,
                releases: Vec::new(),
                series: Vec::new(),
            })
            .collect();
        let key = |g: &ErrorGroup| format!("{}\u{0}{}", g.kind.as_deref().unwrap_or_default(), g.fingerprint);
        top(&mut out.groups, groups, |g| g.attempts, key);
        if out.groups.is_empty() {
            return Ok(out);
        }
        let keys: Vec<String> = out.groups.iter().map(key).collect();
        let split = |by: &str| {
            let marks = vec!["?"; keys.len()].join(", ");
            let mut sql = read(
                query,
                &format!(
                    "CAST(error_kind AS String) AS k, error_fingerprint AS f, {by} AS by, sum(weight) AS attempts"
                ),
                "",
                &format!("success = 0 AND {GROUP_KEY} IN ({marks})"),
                "GROUP BY k, f, by",
            );
            sql.args.extend(keys.iter().map(|k| Arg::Text(k.clone())));
            sql
        };
        let releases = split("CAST(app_version AS String)");
        let series = split(&format!("toString({})", bucket(step_seconds)));
        let (releases, series) = tokio::try_join!(
            releases.query(&self.reader).fetch_all::<SplitRow>(),
            series.query(&self.reader).fetch_all::<SplitRow>(),
        )?;
        let index = |row: &SplitRow| {
            let key = format!("{}\u{0}{}", row.k, row.f);
            keys.iter().position(|k| *k == key)
        };
        for row in releases {
            if let Some(i) = index(&row) {
                out.groups[i].releases.push((row.by, row.attempts));
            }
        }
        for row in series {
            if let (Some(i), Ok(bucket)) = (index(&row), row.by.parse::<i64>()) {
                out.groups[i].series.push((bucket, row.attempts));
            }
        }
        for group in &mut out.groups {
            group.releases.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            group.series.sort_by_key(|(bucket, _)| *bucket);
        }
        Ok(out)
    }

    async fn queue_lags(&self, query: &Query) -> Result<QueueLags> {
        // -1: pending changes without a known age. The latest event is the
        // greatest (time, event id text), as every read defines it.
        let sql = read(
            query,
            "argMax(if(isNull(queue_lag_ms), if(queue_depth = 0, toInt64(0), toInt64(-1)), \
             toInt64(assumeNotNull(queue_lag_ms))), (event_time_ms, toString(event_id))) AS lag",
            "",
            "1",
            "GROUP BY device_id",
        );
        let lags = sql.query(&self.reader).fetch_all::<i64>().await?;
        let mut out = QueueLags { devices: lags.len() as u64, lags_ms: Vec::new() };
        out.lags_ms = lags.into_iter().filter_map(|l| u64::try_from(l).ok()).collect();
        out.lags_ms.sort_unstable();
        Ok(out)
    }
}
