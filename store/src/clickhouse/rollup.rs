//! [`crate::Store::aggregate`] for ClickHouse, from the pre-aggregates where
//! they apply and from `events` for the rest of the window.
//!
//! Three rollups:
//! - `rollup_minute` and `rollup_hour` (migration 0006, fed by materialized
//!   views on every insert into `events`): per minute (per hour) and segment
//!   (app version, OS, network), the per-event sums and the duration
//!   histogram;
//! - `device_hour_latest` (migration 0007, written by the store, see
//!   `device_state.rs`): per hour and device, its latest event (greatest
//!   `(event_time_ms, event_id as text)`) as one text whose `max` is the
//!   latest.
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

use std::collections::BTreeMap;

use super::device_cache::add_durations;
use super::dedup::{NOT_COMPENSATED_SQL, SHIFTED_HOURS_SQL, SUSPECT_HOURS_SQL};
use super::device_state::{DECODED_SQL, LATEST_SQL};
use super::{group_key, histogram, window_filter, Arg, ClickHouseStore, DevicesRow, TotalsRow};
use crate::metrics::{Aggregate, Filters, GroupKey, Grouping, Query, LATE_ARRIVAL_MS};
use crate::pieces::{aligned, pieces, split, Piece, HOUR_MS};
use crate::Result;

/// SQL text and its bound values, built side by side so that the `?` and
/// the values stay in the same order.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) args: Vec<Arg>,
}

impl Sql {
    fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub(super) fn push_with(&mut self, text: &str, args: Vec<Arg>) {
        self.text.push_str(text);
        self.args.extend(args);
    }
}

/// The group-key expressions over a table whose time column is `time` (a
/// `DateTime`): a bucket start (0 when not grouping by time) and a segment
/// value ('' when not grouping by segment). Only constants, whitelisted
/// column names and a formatted u32 reach the text. `toStartOfInterval` is
/// missing on 18.16, and `intDiv` of Unix seconds is the same in every time
/// zone.
pub(super) fn group_expressions(grouping: Grouping, time: &str) -> (String, String) {
    match grouping {
        Grouping::Total => ("toUInt64(0)".into(), "''".into()),
        Grouping::Time { step_seconds } => {
            let step = step_seconds.max(1);
            (
                format!("toUInt64(intDiv(toUInt32({time}), {step}) * {step})"),
                "''".into(),
            )
        }
        Grouping::By(dimension) => (
            "toUInt64(0)".into(),
            format!("toString({})", dimension.column()),
        ),
    }
}

/// The segment filters on a rollup's columns.
fn segment_filter(filters: &Filters) -> (String, Vec<Arg>) {
    let mut sql = String::new();
    let mut args = Vec::new();
    let segments = [
        ("app_version", filters.app_version.clone()),
        ("os", filters.os.clone()),
        ("network", filters.network.map(|n| n.as_str().to_string())),
    ];
    for (column, value) in segments {
        if let Some(value) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(Arg::Text(value));
        }
    }
    (sql, args)
}

fn seconds(ms: i64) -> Arg {
    Arg::Seconds(u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX))
}

/// `events` filtered to `[from_ms, to_ms)` and the query's segments.
pub(super) fn raw_filter(query: &Query, from_ms: i64, to_ms: i64) -> (String, Vec<Arg>) {
    window_filter(&Query {
        from_ms,
        to_ms,
        ..query.clone()
    })
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

/// The hour (`DateTime`) of a `DateTime` column, in SQL: what the hour sets
/// of `dedup.rs` hold.
fn hour_of(column: &str) -> String {
    format!("toDateTime(intDiv(toUInt32({column}), 3600) * 3600)")
}

/// `filter` narrowed to the rows whose `event_time` falls in an hour of
/// `hours` (a subquery of `dedup.rs` with one bind, the project).
fn in_hours(query: &Query, (mut filter, mut args): (String, Vec<Arg>), hours: &str) -> (String, Vec<Arg>) {
    filter.push_str(&format!(" AND {} IN {hours}", hour_of("event_time")));
    args.push(Arg::Text(query.project.as_str().to_string()));
    (filter, args)
}

/// Per group: counts, weighted sums, late events and the duration histogram.
/// With `whole_hours` false, the whole hours are left out (the device cache
/// holds their sums). Counts are `Int64` in every branch and in the answer:
/// the compensations subtract (from the cache's sums too, so a group's SQL
/// part alone may be negative), and 18.16 wants one type per column across
/// `UNION ALL`.
fn totals_sql(query: &Query, grouping: Grouping, whole_hours: bool) -> Sql {
    let (gt_raw, gs_raw) = group_expressions(grouping, "event_time");
    let mut sql = Sql::default();
    sql.push(
        "SELECT gt, gs, toInt64(sum(e)), toFloat64(sum(a)), toFloat64(sum(s)), toFloat64(sum(c)), \
         sumMap(b, w), toInt64(sum(l)) FROM (",
    );
    let pieces = pieces(query.from_ms, query.to_ms, grouping)
        .into_iter()
        .filter(|p| whole_hours || !matches!(p, Piece::Hours(..)));
    // The per-event sums of `event_copies` rows selected by `filter`.
    let raw = |sql: &mut Sql, filter: String, args: Vec<Arg>| {
        sql.push_with(
            &format!(
                "SELECT {gt_raw} AS gt, {gs_raw} AS gs, toInt64(count()) AS e, toFloat64(sum(weight)) AS a, \
                 toFloat64(sumIf(weight, success = 1)) AS s, toFloat64(sumIf(weight, conflicts > 0)) AS c, \
                 tupleElement(sumMap([duration_bucket], [toFloat64(weight)]) AS durations, 1) AS b, \
                 tupleElement(durations, 2) AS w, \
                 toInt64(countIf(received_at_ms - event_time_ms > {LATE_ARRIVAL_MS})) AS l \
                 FROM event_copies WHERE {filter} GROUP BY gt, gs UNION ALL "
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
    let hourly = aligned(grouping, 3600)
        && !matches!(grouping, Grouping::By(_))
        && query.filters == Filters::default();
    let (whole, edges) = if hourly {
        split(query.from_ms, query.to_ms, HOUR_MS)
    } else {
        (None, vec![(query.from_ms, query.to_ms)])
    };
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
    sql.push(if disjoint {
        ")) GROUP BY gt, gs"
    } else {
        ") GROUP BY gt, gs, device_id)) GROUP BY gt, gs"
    });
    sql
}

/// The per-device half of an aggregate: from memory (`device_cache.rs`)
/// or from SQL.
enum Devices {
    Cached(Vec<(GroupKey, Aggregate)>),
    Rows(Vec<DevicesRow>),
}

impl ClickHouseStore {
    /// [`crate::Store::aggregate`] for ClickHouse: two queries at once, the
    /// per-event totals and the per-device latest values.
    pub(super) async fn aggregate_impl(
        &self,
        query: &Query,
        grouping: Grouping,
    ) -> Result<Vec<(GroupKey, Aggregate)>> {
        if query.from_ms >= query.to_ms {
            return Ok(Vec::new());
        }
        let cached = super::device_cache::serves(query, grouping).is_some() && !self.past_hours_unsafe(query).await?;
        let totals = totals_sql(query, grouping, !cached);
        let totals_query = totals.args.iter().fold(self.reader.query(&totals.text), |q, a| q.bind(a));
        let devices = async {
            match if cached { self.cached_devices(query, grouping).await? } else { None } {
                Some(groups) => Ok::<_, crate::Error>(Devices::Cached(groups)),
                None => {
                    let devices = devices_sql(query, grouping);
                    let rows = devices
                        .args
                        .iter()
                        .fold(self.reader.query(&devices.text), |q, a| q.bind(a))
                        .fetch_all::<DevicesRow>()
                        .await?;
                    Ok(Devices::Rows(rows))
                }
            }
        };
        let totals = async { Ok::<_, crate::Error>(totals_query.fetch_all::<TotalsRow>().await?) };
        let (totals, devices) = tokio::try_join!(totals, devices)?;

        let mut groups: BTreeMap<GroupKey, Aggregate> = BTreeMap::new();
        match devices {
            Devices::Cached(cached) => {
                for (key, figures) in cached {
                    let a = groups.entry(key).or_default();
                    a.events += figures.events;
                    a.attempts += figures.attempts;
                    a.successes += figures.successes;
                    a.conflicted += figures.conflicted;
                    a.late_events += figures.late_events;
                    add_durations(&mut a.duration_histogram, figures.duration_histogram.into_iter());
                    a.devices = figures.devices;
                    a.queue_sum = figures.queue_sum;
                    a.queue_max = figures.queue_max;
                    a.queue_over_threshold = figures.queue_over_threshold;
                    a.never_synced_devices = figures.never_synced_devices;
                    a.queue_histogram = figures.queue_histogram;
                    a.staleness_histogram = figures.staleness_histogram;
                }
            }
            Devices::Rows(rows) => {
                for row in rows {
                    let a = groups
                        .entry(group_key(grouping, row.gt, row.gs))
                        .or_default();
                    a.devices = row.devices;
                    a.queue_sum = row.queue_sum;
                    a.queue_max = row.queue_max;
                    a.queue_over_threshold = row.queue_over_threshold;
                    a.never_synced_devices = row.never_synced;
                    a.queue_histogram = histogram(row.queue_histogram);
                    a.staleness_histogram = histogram(row.staleness_histogram);
                }
            }
        }
        // After the cached sums: the SQL part may subtract from them.
        for row in totals {
            let a = groups
                .entry(group_key(grouping, row.gt, row.gs))
                .or_default();
            a.events = a.events.saturating_add_signed(row.events);
            a.attempts += row.attempts;
            a.successes += row.successes;
            a.conflicted += row.conflicted;
            add_durations(&mut a.duration_histogram, histogram(row.duration).into_iter());
            a.late_events = a.late_events.saturating_add_signed(row.late);
        }
        Ok(groups.into_iter().filter(|(_, a)| a.events > 0).collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_has_its_value_in_order() {
        let query = Query {
            project: synchealth_schema::ProjectName::parse("p").unwrap(),
            from_ms: 1_700_000_030_000,
            to_ms: 1_700_090_030_000,
            filters: Filters::default(),
            queue_threshold: 10,
        };
        for grouping in [
            Grouping::Total,
            Grouping::Time { step_seconds: 3600 },
            Grouping::Time { step_seconds: 90 },
        ] {
            for sql in [totals_sql(&query, grouping, true), devices_sql(&query, grouping)] {
                assert_eq!(
                    sql.text.matches('?').count(),
                    sql.args.len(),
                    "{}",
                    sql.text
                );
            }
        }
        assert!(devices_sql(&query, Grouping::Total)
            .text
            .contains("FROM device_hour_latest"));
        assert!(!devices_sql(&query, Grouping::Time { step_seconds: 900 })
            .text
            .contains("FROM device_hour_latest"));
        assert!(totals_sql(&query, Grouping::Time { step_seconds: 900 }, true)
            .text
            .contains("FROM rollup_minute"));
    }
}
