//! [`crate::Aggregates`] for ClickHouse: the read side. [`crate::Aggregates::aggregate`] comes from the pre-aggregates where
//! they apply and from `events` for the rest of the window.
//!
//! The rollups:
//! - `rollup_minute` and `rollup_hour` (migration 0006, fed by materialized
//!   views on every insert into `events`): per minute (per hour) and segment
//!   (app version, OS, network), the per-event sums and the duration
//!   histogram;
//! - `device_hour_latest` (migration 0007, written by the store, see
//!   `device_state.rs`): per hour and device, its latest event (greatest
//!   `(event_time_ms, event_id as text)`) as one text whose `max` is the
//!   latest; `device_segment_hour` (migration 0010) the same per hour,
//!   device and segment, for filters and breakdowns (`segment_cache.rs`).
//!
//! A window is cut into whole units of the rollups (read from them: whole
//! hours, then whole minutes around them) and the partial units at its edges
//! (read from `events`), and the parts are merged
//! in SQL: sums add up, histograms merge with `sumMap`, and each device's
//! latest event is the greatest of its parts' latest texts. So the answer is
//! the same, to the last event, as reading `events` alone; the conformance
//! suite checks it against brute force. The per-device part uses
//! `device_hour_latest` for totals and time buckets of whole hours without
//! filters (the rollup has no segment columns); everything else reads
//! `events`.
//!
//! Exactness and duplicates (`dedup.rs`): the rollups count every copy of an
//! event ever inserted, so the partial minutes at the edges are read from
//! `event_copies`, which holds every copy too (`events` collapses copies at
//! merges, whenever those happen), and every answer subtracts the
//! compensations in `event_duplicates` over the whole window: each copy
//! beyond an event's first, with what it added. The device half needs none
//! of this: a device's latest event is the same however often it is stored.
//!
//! On `events`, a device's latest event is found in two steps: each device's
//! greatest `event_time_ms`, then the greatest text only among the rows at
//! that time. Formatting every event's text was most of the cost of a plain
//! `max` over millions of rows.

//!
//! The device lists ([`crate::DeviceList`]) are `lists.rs`'s.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use clickhouse::Row;
use serde::Deserialize;
use synchealth_schema::{ErrorKind, Network, ProjectName, StoredEvent, SyncEvent, Trigger};
use uuid::Uuid;

use super::dedup::{events_filter, NOT_COMPENSATED_SQL, SHIFTED_HOURS_SQL, SUSPECT_HOURS_SQL};
use super::device_state::{DECODED_SQL, LATEST_SQL};
use super::sql::{
    add_durations, group_key, histogram, optional_enum, optional_text, parse_project, raw_filter, segment_filter,
    time_from_ms, Arg, Sql,
};
use super::ClickHouseStore;
use crate::bucket_cache::{self, Bucket};
use crate::devices::{DeviceList, DeviceSummary};
use crate::metrics::{Aggregate, Filters, GroupKey, Grouping, Query, LATE_ARRIVAL_MS};
use crate::pieces::{aligned, pieces, split, Piece, HOUR_MS};
use crate::{Error, Result};

/// The group-key expressions over a table whose time column is `time` (a
/// `DateTime`): a bucket start (0 when not grouping by time) and a segment
/// value ('' when not grouping by segment). Only constants, whitelisted
/// column names and a formatted u32 reach the text. `toStartOfInterval` is
/// missing on 18.16, and `intDiv` of Unix seconds is the same in every time
/// zone. The constants are `materialize`d: 18.16 refuses a constant
/// column in a `Distributed` table's answer ("non constant in source stream
/// but must be constant in result"), which cluster mode reads.
pub(super) fn group_expressions(grouping: Grouping, time: &str) -> (String, String) {
    const NO_TIME: &str = "materialize(toUInt64(0))";
    const NO_SEGMENT: &str = "materialize('')";
    match grouping {
        Grouping::Total => (NO_TIME.into(), NO_SEGMENT.into()),
        Grouping::Time { step_seconds } => {
            let step = step_seconds.max(1);
            (format!("toUInt64(intDiv(toUInt32({time}), {step}) * {step})"), NO_SEGMENT.into())
        }
        Grouping::By(dimension) => (NO_TIME.into(), format!("toString({})", dimension.column())),
    }
}

fn seconds(ms: i64) -> Arg {
    Arg::Seconds(u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX))
}

/// The hour (`DateTime`) of a `DateTime` column, in SQL: what the hour sets
/// of `dedup.rs` hold.
fn hour_of(column: &str) -> String {
    format!("toDateTime(intDiv(toUInt32({column}), 3600) * 3600)")
}

/// `filter` narrowed to the rows whose `event_time` falls in an hour of
/// `hours` (a subquery of `dedup.rs` with one bind, the project, and its
/// column named `h`).
///
/// The bounds come first: ClickHouse evaluates the scalar subqueries before
/// it reads, so they narrow the sorting-key range to the hours of the set,
/// to none when it is empty (as it almost always is), whereas the `IN` of a
/// function of `event_time` narrows nothing and read every row of the
/// window's partial hours (about 450,000 rows a request at ten million
/// events a day, for none kept).
fn in_hours(query: &Query, (mut filter, mut args): (String, Vec<Arg>), hours: &str) -> (String, Vec<Arg>) {
    filter.push_str(&format!(
        " AND event_time >= (SELECT min(h) FROM {hours}) AND event_time < (SELECT max(h) FROM {hours}) + 3600 \
         AND {} IN {hours}",
        hour_of("event_time")
    ));
    args.extend(std::iter::repeat_n(Arg::Text(query.project.as_str().to_string()), 3));
    (filter, args)
}

/// Per group: counts, weighted sums, late events and the duration histogram.
/// With `whole_hours` false, the whole hours are left out (the device cache
/// holds their sums). Counts are `Int64` in every branch and in the answer:
/// the compensations subtract (from the cache's sums too, so a group's SQL
/// part alone may be negative), and 18.16 wants one type per column across
/// `UNION ALL`.
fn totals_sql(query: &Query, grouping: Grouping, whole_hours: bool) -> Sql {
    totals_sql_over(query, grouping, whole_hours, &[(query.from_ms, query.to_ms)])
}

/// [`totals_sql`] of the parts of the window in `spans` only (a sub-hour
/// series' partial buckets, whose whole ones `crate::bucket_cache` holds),
/// the compensations still over the whole window.
fn totals_sql_over(query: &Query, grouping: Grouping, whole_hours: bool, spans: &[(i64, i64)]) -> Sql {
    let (gt_raw, gs_raw) = group_expressions(grouping, "event_time");
    let mut sql = Sql::default();
    sql.push(
        "SELECT gt, gs, toInt64(sum(e)), toFloat64(sum(a)), toFloat64(sum(s)), toFloat64(sum(c)), \
         sumMap(b, w), toInt64(sum(l)) FROM (",
    );
    let pieces = spans
        .iter()
        .flat_map(|&(from, to)| pieces(from, to, grouping))
        .filter(|p| whole_hours || !matches!(p, Piece::Hours(..)));
    // The per-event sums of `event_copies` rows selected by `filter`, a
    // copy's row written twice counted once (`dedup.rs`, `one_row_per_copy`).
    let raw = |sql: &mut Sql, filter: String, args: Vec<Arg>| {
        sql.push_with(
            &format!(
                "SELECT {gt_raw} AS gt, {gs_raw} AS gs, toInt64(count()) AS e, toFloat64(sum(weight)) AS a, \
                 toFloat64(sumIf(weight, success = 1)) AS s, toFloat64(sumIf(weight, conflicts > 0)) AS c, \
                 tupleElement(sumMap([duration_bucket], [toFloat64(weight)]) AS durations, 1) AS b, \
                 tupleElement(durations, 2) AS w, \
                 toInt64(countIf(received_at_ms - event_time_ms > {LATE_ARRIVAL_MS})) AS l \
                 FROM (SELECT * FROM event_copies WHERE {filter} LIMIT 1 BY event_id, insert_id) \
                 GROUP BY gt, gs UNION ALL "
            ),
            args,
        );
    };
    let project = || Arg::Text(query.project.as_str().to_string());
    for piece in pieces {
        let rollup = match piece {
            Piece::Hours(from, to) => Some(("rollup_hour", "hour", from, to)),
            Piece::Minutes(from, to) => Some(("rollup_minute", "minute", from, to)),
            Piece::Raw(..) => None,
        };
        if let Some((table, time, from, to)) = rollup {
            let (gt, gs) = group_expressions(grouping, time);
            let (segments, args) = segment_filter(&query.filters);
            // Hours an interrupted write may have left in part of the
            // rollups (dedup.rs) come from `event_copies` instead.
            sql.push_with(
                &format!(
                    "SELECT {gt} AS gt, {gs} AS gs, toInt64(events) AS e, attempts AS a, successes AS s, \
                     conflicted AS c, durationMap.bucket AS b, durationMap.weight AS w, toInt64(late) AS l \
                     FROM {table} \
                     WHERE project = ? AND {time} >= toDateTime(?) AND {time} < toDateTime(?){segments} \
                     AND {} NOT IN {SUSPECT_HOURS_SQL} UNION ALL ",
                    hour_of(time)
                ),
                [vec![project(), seconds(from), seconds(to)], args, vec![project()]].concat(),
            );
            let (filter, args) = in_hours(query, raw_filter(query, from, to), SUSPECT_HOURS_SQL);
            raw(&mut sql, filter, args);
        } else if let Piece::Raw(from, to) = piece {
            let (filter, args) = raw_filter(query, from, to);
            raw(&mut sql, filter, args);
        }
    }
    // Last, and over the whole window: what the copies beyond each event's
    // first added, in whichever piece they were counted.
    let (filter, args) = raw_filter(query, query.from_ms, query.to_ms);
    sql.push_with(
        &format!(
            "SELECT {gt_raw} AS gt, {gs_raw} AS gs, -toInt64(count()) AS e, -toFloat64(sum(weight)) AS a, \
             -toFloat64(sumIf(weight, success = 1)) AS s, -toFloat64(sumIf(weight, conflicts > 0)) AS c, \
             tupleElement(sumMap([duration_bucket], [-toFloat64(weight)]) AS compensated, 1) AS b, \
             tupleElement(compensated, 2) AS w, -toInt64(sum(late)) AS l \
             FROM event_duplicates FINAL WHERE {filter} GROUP BY gt, gs"
        ),
        args,
    );
    sql.push(") GROUP BY gt, gs");
    sql
}

/// Per group, over each device's latest event: devices, queue depth sums
/// and histograms, staleness histogram, never-synced devices. Each piece
/// gives a device's latest-event text (`device_state.rs`), the greatest of
/// them is its latest in the group, and its values are decoded only then.
fn devices_sql(query: &Query, grouping: Grouping) -> Sql {
    let (gt_raw, gs_raw) = group_expressions(grouping, "event_time");
    let hourly = aligned(grouping, 3600) && !matches!(grouping, Grouping::By(_)) && query.filters == Filters::default();
    let (whole, edges) =
        if hourly { split(query.from_ms, query.to_ms, HOUR_MS) } else { (None, vec![(query.from_ms, query.to_ms)]) };
    // `FINAL` gives one row per (hour, device), merged in key order, which
    // is about twice as fast as grouping the rows by hash. Hourly buckets
    // never share a (bucket, device) between the pieces (a partial hour at
    // an edge is a bucket of its own), so they need no grouping by device at
    // all; any other grouping takes the greatest of each device's pieces.
    let disjoint = grouping == Grouping::Time { step_seconds: 3600 };
    let mut sql = Sql::default();
    sql.push_with(
        &format!(
            "SELECT gt, gs, toUInt64(count()), toUInt64(sum(q)), toUInt64(max(q)), toUInt64(countIf(q > ?)), \
             toUInt64(countIf(n = 1)), sumMap([qb], [toUInt64(1)]), sumMapIf([sb], [toUInt64(1)], n = 0) \
             FROM (SELECT gt, gs, {DECODED_SQL} FROM ({}",
            if disjoint { "" } else { "SELECT gt, gs, device_id, max(v) AS v FROM (" }
        ),
        vec![Arg::Int(i64::from(query.queue_threshold))],
    );
    let project = || Arg::Text(query.project.as_str().to_string());
    // Formatting every event's text is most of the cost over millions of
    // rows, so only the rows at each device's greatest time get it.
    let from_events = |sql: &mut Sql, (filter, args): (String, Vec<Arg>)| {
        sql.push_with(
            &format!(
                "SELECT {gt_raw} AS gt, {gs_raw} AS gs, device_id, max({LATEST_SQL}) AS v FROM events \
                 WHERE {filter} AND ({gt_raw}, {gs_raw}, device_id, event_time_ms) IN \
                 (SELECT {gt_raw}, {gs_raw}, device_id, max(event_time_ms) FROM events WHERE {filter} \
                 GROUP BY {gt_raw}, {gs_raw}, device_id) \
                 GROUP BY gt, gs, device_id"
            ),
            [args.clone(), args].concat(),
        );
    };
    let mut first = true;
    if let Some((from, to)) = whole {
        let (gt, gs) = group_expressions(grouping, "hour");
        // An hour holding a recorded copy at another corrected time than its first copy
        // (dedup.rs) may have that copy as a device's latest in
        // device_hour_latest, whose `max` cannot forget it: those hours
        // (almost never any) are read from `events` without the copy.
        sql.push_with(
            &format!(
                "SELECT {gt} AS gt, {gs} AS gs, device_id, finalizeAggregation(latest) AS v FROM device_hour_latest FINAL \
                 WHERE project = ? AND hour >= toDateTime(?) AND hour < toDateTime(?) AND hour NOT IN {SHIFTED_HOURS_SQL} \
                 UNION ALL "
            ),
            vec![project(), seconds(from), seconds(to), project()],
        );
        from_events(&mut sql, in_hours(query, events_filter(query, from, to), SHIFTED_HOURS_SQL));
        first = false;
    }
    for (from, to) in edges {
        if !first {
            sql.push(" UNION ALL ");
        }
        first = false;
        from_events(&mut sql, events_filter(query, from, to));
    }
    sql.push(if disjoint { ")) GROUP BY gt, gs" } else { ") GROUP BY gt, gs, device_id)) GROUP BY gt, gs" });
    sql
}

#[async_trait]
impl crate::Aggregates for ClickHouseStore {
    /// [`crate::Aggregates::aggregate`] for ClickHouse: two queries at once, the
    /// per-event totals and the per-device latest values.
    #[tracing::instrument(
        skip_all,
        fields(project = %query.project, from_ms = query.from_ms, to_ms = query.to_ms, grouping = ?grouping)
    )]
    async fn aggregate(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        if query.from_ms >= query.to_ms {
            return Ok(Vec::new());
        }
        if let Some(step_ms) = bucket_cache::serves(query, grouping) {
            if let Some(groups) = self.cached_series(query, grouping, step_ms).await? {
                return Ok(groups);
            }
        }
        // Unfiltered totals and buckets from `device_cache.rs` (with the whole
        // hours' per-event sums), filtered and broken-down ones from
        // `segment_cache.rs` (per-device figures only).
        let plain = super::device_cache::serves(query, grouping).is_some();
        let segmented = super::segment_cache::serves(query, grouping).is_some();
        let cached = (plain || segmented) && !self.past_hours_unsafe(query).await?;
        let totals = totals_sql(query, grouping, !(cached && plain));
        let totals_query = totals.query(&self.reader);
        // The per-device half: from memory (the two caches above) or from SQL.
        let devices = async {
            let from_memory = match (cached, plain) {
                (true, true) => self.cached_devices(query, grouping).await?,
                (true, false) => self.cached_segment_devices(query, grouping).await?,
                (false, _) => None,
            };
            match from_memory {
                Some(groups) => Ok::<_, crate::Error>(groups),
                None => self.sql_devices(query, grouping).await,
            }
        };
        let totals = async { Ok::<_, crate::Error>(totals_query.fetch_all::<TotalsRow>().await?) };
        let (totals, devices) = tokio::try_join!(totals, devices)?;
        Ok(merge(grouping, devices, totals))
    }

    #[tracing::instrument(skip_all, fields(project = %query.project, list = list.name(), limit))]
    async fn devices(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
        if query.from_ms >= query.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        self.list_devices(query, list, limit).await
    }

    /// `device_hour_latest` names the hours the device has events in (a
    /// scan of a few rows per device-hour, where `events` is ordered by time
    /// and has no per-device index), and `events` is read in those hours
    /// only, newest first, in growing chunks until `limit` are found. Hours
    /// are disjoint, so newest-first per chunk is newest-first overall.
    #[tracing::instrument(skip_all, fields(project = %project, limit = limit))]
    async fn device_events(&self, project: &ProjectName, device_id: &str, limit: u32) -> Result<Vec<StoredEvent>> {
        let hours = self
            .reader
            .query(
                "SELECT DISTINCT toUInt32(hour) AS h FROM device_hour_latest \
                 WHERE project = ? AND device_id = ? ORDER BY h DESC",
            )
            .bind(project.as_str())
            .bind(device_id)
            .fetch_all::<u32>()
            .await?;
        let mut events = Vec::new();
        let mut rest = hours.as_slice();
        let mut chunk = 2;
        while !rest.is_empty() && events.len() < limit as usize {
            let (these, later) = rest.split_at(chunk.min(rest.len()));
            rest = later;
            chunk *= 4;
            let ranges = vec!["(event_time >= toDateTime(?) AND event_time < toDateTime(?))"; these.len()].join(" OR ");
            let left = limit - events.len() as u32;
            // Without `FINAL` first: the device filter then runs as a
            // PREWHERE, reading one column of the hours' other devices rather
            // than merging them all. Rows sharing the table's key are copies
            // `FINAL` would collapse; only then is the chunk read with it.
            let read = |final_: &str, limit: u32| {
                let q = self.reader.query(&format!(
                    "SELECT ?fields FROM events {final_} WHERE project = ? AND device_id = ? AND ({ranges}) AND {} \
                     ORDER BY event_time_ms DESC, toString(event_id) DESC LIMIT ?",
                    NOT_COMPENSATED_SQL
                ));
                let q = these
                    .iter()
                    .fold(q.bind(project.as_str()).bind(device_id), |q, h| q.bind(h).bind(h.saturating_add(3600)));
                q.bind(project.as_str()).bind(limit).fetch_all::<EventRow>()
            };
            let mut rows = read("", MAX_DEVICE_CHUNK).await?;
            let keys: std::collections::HashSet<(u32, Uuid)> =
                rows.iter().map(|r| (r.event_time, r.event_id)).collect();
            if keys.len() < rows.len() || rows.len() >= MAX_DEVICE_CHUNK as usize {
                rows = read("FINAL", left).await?;
            }
            for row in rows.into_iter().take(left as usize) {
                events.push(row.into_stored()?);
            }
        }
        Ok(events)
    }
}

impl ClickHouseStore {
    /// The per-device half from `events` (and `device_hour_latest` where
    /// it applies), by group.
    async fn sql_devices(&self, query: &Query, grouping: Grouping) -> Result<Vec<(GroupKey, Aggregate)>> {
        let devices = devices_sql(query, grouping);
        let rows = devices.query(&self.reader).fetch_all::<DevicesRow>().await?;
        Ok(rows
            .into_iter()
            .map(|mut row| (group_key(grouping, row.gt, std::mem::take(&mut row.gs)), row.into_devices()))
            .collect())
    }

    /// A sub-hour series from `crate::bucket_cache`: its whole buckets'
    /// per-device figures and `rollup_minute` sums from memory while their
    /// stamps hold, the stale ones read again (devices from `events`, sums
    /// from `rollup_minute`) and kept; the partial buckets at the edges and
    /// the compensations over the window from SQL every time. `None` when
    /// the window holds an interrupted write's hours or a copy (its counts
    /// are then no stamp): read as any other window.
    async fn cached_series(
        &self,
        query: &Query,
        grouping: Grouping,
        step_ms: i64,
    ) -> Result<Option<Vec<(GroupKey, Aggregate)>>> {
        let (unsafe_hours, counts) =
            tokio::try_join!(self.past_hours_unsafe(query), self.bucket_counts(query, step_ms))?;
        if unsafe_hours {
            self.buckets.forget(query.project.as_str());
            return Ok(None);
        }
        let plan = self.buckets.plan(query, step_ms, &counts);
        let read = |ranges: Vec<(i64, i64)>| async move {
            let mut out = Vec::new();
            for (from_ms, to_ms) in ranges {
                out.extend(self.sql_devices(&Query { from_ms, to_ms, ..query.clone() }, grouping).await?);
            }
            Ok::<_, crate::Error>(out)
        };
        // The partial buckets side by side, each from memory where it can be.
        let edges = async {
            let edges = plan.edges.iter().map(|&(from_ms, to_ms)| async move {
                let piece = Query { from_ms, to_ms, ..query.clone() };
                match self.bucket_edge(&piece, grouping).await? {
                    Some(groups) => Ok::<_, crate::Error>(groups),
                    None => self.sql_devices(&piece, grouping).await,
                }
            });
            Ok::<_, crate::Error>(
                futures_util::future::try_join_all(edges).await?.into_iter().flatten().collect::<Vec<_>>(),
            )
        };
        let totals = totals_sql_over(query, grouping, true, &plan.edges);
        let totals = async {
            let q = totals.query(&self.reader);
            Ok::<_, crate::Error>(q.fetch_all::<TotalsRow>().await?)
        };
        let (loaded, edges, sums, totals) =
            tokio::try_join!(read(plan.loads.clone()), edges, self.bucket_sums(query, grouping, &plan.loads), totals)?;
        // The stale buckets kept with their sums, so a bucket in memory is
        // whole: its devices and what its events add up to.
        let mut loaded = merge(grouping, loaded, sums);
        loaded.extend(edges);
        let devices = self.buckets.answer(query, plan, &counts, loaded);
        Ok(Some(merge(grouping, devices, totals)))
    }

    /// `rollup_minute`'s per-event sums of whole buckets in `ranges`, by
    /// group (the series' filters applied).
    async fn bucket_sums(&self, query: &Query, grouping: Grouping, ranges: &[(i64, i64)]) -> Result<Vec<TotalsRow>> {
        if ranges.is_empty() {
            return Ok(Vec::new());
        }
        let (gt, gs) = group_expressions(grouping, "minute");
        let (segments, segment_args) = segment_filter(&query.filters);
        let spans = vec!["(minute >= toDateTime(?) AND minute < toDateTime(?))"; ranges.len()].join(" OR ");
        let mut args = vec![Arg::Text(query.project.as_str().to_string())];
        for &(from, to) in ranges {
            args.extend([seconds(from), seconds(to)]);
        }
        args.extend(segment_args);
        let text = format!(
            "SELECT gt, gs, toInt64(sum(e)), toFloat64(sum(a)), toFloat64(sum(s)), toFloat64(sum(c)), \
             sumMap(b, w), toInt64(sum(l)) FROM (SELECT {gt} AS gt, {gs} AS gs, toInt64(events) AS e, \
             attempts AS a, successes AS s, conflicted AS c, durationMap.bucket AS b, durationMap.weight AS w, \
             toInt64(late) AS l FROM rollup_minute WHERE project = ? AND ({spans}){segments}) GROUP BY gt, gs"
        );
        Ok(args.iter().fold(self.reader.query(&text), |q, a| q.bind(a)).fetch_all::<TotalsRow>().await?)
    }

    /// The stamps of a series' whole buckets: each one's event count in
    /// `rollup_minute`, all segments.
    async fn bucket_counts(&self, query: &Query, step_ms: i64) -> Result<HashMap<Bucket, u64>> {
        let Some((first, last)) = bucket_cache::stamp_span(query, step_ms) else { return Ok(HashMap::new()) };
        let step_s = step_ms / 1000;
        let rows = self
            .reader
            .query(&format!(
                "SELECT toInt64(intDiv(toUInt32(minute), {step_s}) * {step_s}) * 1000 AS b, toUInt64(sum(events)) \
                 FROM rollup_minute WHERE project = ? AND minute >= toDateTime(?) AND minute < toDateTime(?) \
                 GROUP BY b"
            ))
            .bind(query.project.as_str())
            .bind(seconds(first))
            .bind(seconds(last))
            .fetch_all::<(i64, u64)>()
            .await?;
        Ok(rows.into_iter().collect())
    }
}

/// The groups of an aggregate: the per-device half (`devices`, with any
/// sums a cache holds) and the SQL totals added to it, which may subtract.
fn merge(
    grouping: Grouping,
    devices: Vec<(GroupKey, Aggregate)>,
    totals: Vec<TotalsRow>,
) -> Vec<(GroupKey, Aggregate)> {
    let mut groups: BTreeMap<GroupKey, Aggregate> = BTreeMap::new();

    for (key, mut figures) in devices {
        let a = groups.entry(key).or_default();
        a.events += figures.events;
        a.attempts += figures.attempts;
        a.successes += figures.successes;
        a.conflicted += figures.conflicted;
        a.late_events += figures.late_events;
        add_durations(&mut a.duration_histogram, std::mem::take(&mut figures.duration_histogram).into_iter());
        a.set_devices_from(figures);
    }
    // After the cached sums: the SQL part may subtract from them.
    for row in totals {
        let a = groups.entry(group_key(grouping, row.gt, row.gs)).or_default();
        a.events = a.events.saturating_add_signed(row.events);
        a.attempts += row.attempts;
        a.successes += row.successes;
        a.conflicted += row.conflicted;
        add_durations(&mut a.duration_histogram, histogram(row.duration).into_iter());
        a.late_events = a.late_events.saturating_add_signed(row.late);
    }
    groups.into_iter().filter(|(_, a)| a.events > 0).collect()
}

/// Most rows of one device a chunk of hours is read with before `FINAL`.
const MAX_DEVICE_CHUNK: u32 = 100_000;

/// One `events` row as read back: the columns of `0001_events.sql`, in
/// order and type (RowBinary without validation is positional), then the
/// ones migration 0012 added (`?fields` names each).
#[derive(Debug, Row, Deserialize)]
pub(super) struct EventRow {
    project: String,
    #[serde(with = "clickhouse::serde::uuid")]
    event_id: Uuid,
    device_id: String,
    /// Whole seconds, part of the table's key (copies that share it are
    /// collapsed by `FINAL`).
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
    app_version: String,
    os: String,
    os_version: String,
    network: String,
    device_model: String,
    sync_type: String,
    trigger: String,
    error_kind: String,
    error_message: String,
    retries: u32,
    records_up: u64,
    records_down: u64,
    bytes_up: u64,
    bytes_down: u64,
    sample_rate: f64,
    weight: f64,
    queue_oldest_at_ms: Option<i64>,
    queue_lag_ms: Option<u64>,
    conflict_entity: Vec<String>,
    conflict_kind: Vec<String>,
    conflict_resolution: Vec<String>,
    conflict_count: Vec<u32>,
    dimension_keys: Vec<String>,
    dimension_values: Vec<String>,
}

impl EventRow {
    /// `conflict_details` from its parallel arrays; arrays of different
    /// lengths or an unknown spelling are a corrupt row, not a shorter list.
    fn conflict_details(&mut self) -> Result<Vec<synchealth_schema::ConflictDetail>> {
        let n = self.conflict_entity.len();
        if [self.conflict_kind.len(), self.conflict_resolution.len(), self.conflict_count.len()] != [n; 3] {
            return Err(Error::Corrupt(format!("conflict arrays of different lengths in event {}", self.event_id)));
        }
        let entities = std::mem::take(&mut self.conflict_entity);
        entities
            .into_iter()
            .zip(&self.conflict_kind)
            .zip(&self.conflict_resolution)
            .zip(&self.conflict_count)
            .map(|(((entity, kind), resolution), &count)| {
                Ok(synchealth_schema::ConflictDetail {
                    entity,
                    kind: synchealth_schema::ConflictKind::parse(kind)
                        .ok_or_else(|| Error::Corrupt(format!("conflict_kind {kind:?}")))?,
                    resolution: synchealth_schema::ConflictResolution::parse(resolution)
                        .ok_or_else(|| Error::Corrupt(format!("conflict_resolution {resolution:?}")))?,
                    count,
                })
            })
            .collect()
    }

    fn dimensions(&mut self) -> Result<BTreeMap<String, String>> {
        if self.dimension_keys.len() != self.dimension_values.len() {
            return Err(Error::Corrupt(format!("dimension arrays of different lengths in event {}", self.event_id)));
        }
        let keys = std::mem::take(&mut self.dimension_keys);
        Ok(keys.into_iter().zip(std::mem::take(&mut self.dimension_values)).collect())
    }

    fn into_stored(mut self) -> Result<StoredEvent> {
        let network =
            Network::parse(&self.network).ok_or_else(|| Error::Corrupt(format!("network {:?}", self.network)))?;
        let conflict_details = self.conflict_details()?;
        let dimensions = self.dimensions()?;
        let event = SyncEvent {
            event_id: self.event_id,
            device_id: self.device_id,
            occurred_at: time_from_ms(self.occurred_at_ms)?,
            success: self.success != 0,
            duration_ms: self.duration_ms,
            conflicts: self.conflicts,
            queue_depth: self.queue_depth,
            last_success_at: self.last_success_at_ms.map(time_from_ms).transpose()?,
            app_version: self.app_version,
            os: self.os,
            os_version: optional_text(self.os_version),
            network,
            device_model: optional_text(self.device_model),
            sync_type: optional_text(self.sync_type),
            trigger: optional_enum(&self.trigger, Trigger::parse, "trigger")?,
            error_kind: optional_enum(&self.error_kind, ErrorKind::parse, "error_kind")?,
            error_message: optional_text(self.error_message),
            retries: self.retries,
            records_up: self.records_up,
            records_down: self.records_down,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            sample_rate: self.sample_rate,
            conflict_details,
            queue_oldest_at: self.queue_oldest_at_ms.map(time_from_ms).transpose()?,
            dimensions,
        };
        Ok(StoredEvent {
            project: parse_project(&self.project)?,
            event,
            sent_at_ms: self.sent_at_ms,
            received_at_ms: self.received_at_ms,
            clock_skew_ms: self.clock_skew_ms,
            event_time_ms: self.event_time_ms,
            staleness_ms: self.staleness_ms,
            queue_lag_ms: self.queue_lag_ms,
            weight: self.weight,
            duration_bucket: self.duration_bucket,
            queue_bucket: self.queue_bucket,
            staleness_bucket: self.staleness_bucket,
        })
    }
}

/// The totals query's row, in its column order.
#[derive(Row, Deserialize)]
pub(super) struct TotalsRow {
    gt: u64,
    gs: String,
    /// Signed: the compensations for duplicates subtract (`dedup.rs`).
    events: i64,
    attempts: f64,
    successes: f64,
    conflicted: f64,
    duration: (Vec<u16>, Vec<f64>),
    late: i64,
}

/// The per-device-latest query's row, in its column order.
#[derive(Row, Deserialize)]
pub(super) struct DevicesRow {
    gt: u64,
    gs: String,
    devices: u64,
    queue_sum: u64,
    queue_max: u64,
    queue_over_threshold: u64,
    never_synced: u64,
    queue_histogram: (Vec<u16>, Vec<u64>),
    staleness_histogram: (Vec<u16>, Vec<u64>),
}

impl DevicesRow {
    /// The row's per-device figures, as an [`Aggregate`] with no per-event sums.
    fn into_devices(self) -> Aggregate {
        Aggregate {
            devices: self.devices,
            queue_sum: self.queue_sum,
            queue_max: self.queue_max,
            queue_over_threshold: self.queue_over_threshold,
            never_synced_devices: self.never_synced,
            queue_histogram: histogram(self.queue_histogram),
            staleness_histogram: histogram(self.staleness_histogram),
            ..Aggregate::default()
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn time_buckets_follow_the_step() {
        let (time, segment) = group_expressions(Grouping::Time { step_seconds: 300 }, "event_time");
        assert_eq!(time, "toUInt64(intDiv(toUInt32(event_time), 300) * 300)");
        assert_eq!(segment, "materialize('')");
        assert_eq!(group_key(Grouping::Time { step_seconds: 300 }, 600, String::new()), GroupKey::Time(600));
    }

    #[test]
    fn every_placeholder_has_its_value_in_order() {
        let query = Query {
            project: synchealth_schema::ProjectName::parse("p").unwrap(),
            from_ms: 1_700_000_030_000,
            to_ms: 1_700_090_030_000,
            filters: Filters::default(),
            queue_threshold: 10,
        };
        for grouping in [Grouping::Total, Grouping::Time { step_seconds: 3600 }, Grouping::Time { step_seconds: 90 }] {
            for sql in [totals_sql(&query, grouping, true), devices_sql(&query, grouping)] {
                assert_eq!(sql.text.matches('?').count(), sql.args.len(), "{}", sql.text);
            }
        }
        assert!(devices_sql(&query, Grouping::Total).text.contains("FROM device_hour_latest"));
        assert!(!devices_sql(&query, Grouping::Time { step_seconds: 900 }).text.contains("FROM device_hour_latest"));
        assert!(totals_sql(&query, Grouping::Time { step_seconds: 900 }, true).text.contains("FROM rollup_minute"));
    }
}
