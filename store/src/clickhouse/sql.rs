//! SQL helpers every ClickHouse file shares: quoting, bound arguments and
//! the builder that keeps them in order, the window filter, time
//! conversions, and reading rows back (histograms, projects, optional text).
//! Nothing here runs a query, so every other file may use it and it uses
//! none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use synchealth_schema::ProjectName;
use time::OffsetDateTime;

use crate::metrics::{Filters, GroupKey, Grouping, Query};
use crate::{Error, Result};

/// A backquoted ClickHouse identifier.
pub(super) fn quote_identifier(name: &str) -> String {
    quote(name, '`')
}

/// `text` between `mark`s, with `mark` and `\\` escaped by a backslash:
/// ClickHouse's rule for identifiers (`` ` ``) and string literals (`'`).
pub(super) fn quote(text: &str, mark: char) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push(mark);
    for c in text.chars() {
        if c == mark || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push(mark);
    quoted
}

pub(super) fn group_key(grouping: Grouping, time: u64, segment: String) -> GroupKey {
    match grouping {
        Grouping::Total => GroupKey::Total,
        Grouping::Time { .. } => GroupKey::Time(i64::try_from(time).unwrap_or(i64::MAX)),
        Grouping::By(_) => GroupKey::Segment(segment),
    }
}

/// A bound query argument of one of the types the filters use.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
    Seconds(u32),
}

/// The WHERE clause of an aggregate and its arguments, in order. The
/// `DateTime` bounds let ClickHouse prune partitions and granules by the
/// sorting key; the millisecond bounds are the exact window.
pub(super) fn window_filter(query: &Query) -> (String, Vec<Arg>) {
    let mut sql = String::from(
        "project = ? AND event_time >= toDateTime(?) AND event_time <= toDateTime(?) \
         AND event_time_ms >= ? AND event_time_ms < ?",
    );
    let mut args = vec![
        Arg::Text(query.project.as_str().to_string()),
        Arg::Seconds(event_time_s(query.from_ms)),
        Arg::Seconds(event_time_s(query.to_ms.saturating_add(999))),
        Arg::Int(query.from_ms),
        Arg::Int(query.to_ms),
    ];
    let (segments, segment_args) = segment_filter(&query.filters);
    sql.push_str(&segments);
    args.extend(segment_args);
    (sql, args)
}

/// The segment filters (app version, OS, network), on `events` or a
/// rollup's columns alike.
pub(super) fn segment_filter(filters: &Filters) -> (String, Vec<Arg>) {
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

/// ` AND device_id IN (...)` of `devices`, with their binds.
pub(super) fn only_devices(devices: &[String]) -> (String, Vec<Arg>) {
    let placeholders = vec!["?"; devices.len()].join(", ");
    (format!(" AND device_id IN ({placeholders})"), devices.iter().map(|d| Arg::Text(d.clone())).collect())
}

/// `event_time` of a millisecond time: whole seconds, clamped to what
/// `DateTime` holds (clamping is monotonic, so window bounds stay valid).
pub(super) fn event_time_s(ms: i64) -> u32 {
    u32::try_from(ms.div_euclid(1000).max(0)).unwrap_or(u32::MAX)
}

/// `max(previous + 1, now)`, recorded as the new previous.
pub(super) fn next_row_version(last: &AtomicU64, now: u64) -> u64 {
    let bump = |prev: u64| now.max(prev.saturating_add(1));
    match last.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |prev| Some(bump(prev))) {
        Ok(prev) | Err(prev) => bump(prev),
    }
}

pub(super) fn unix_seconds_u32(seconds: u64) -> u32 {
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

pub(super) fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).unwrap_or(0)
}

/// A `sumMap` result as `(bucket, value)` pairs, without empty buckets.
pub(super) fn histogram<T: Default + PartialEq + Copy>((buckets, values): (Vec<u16>, Vec<T>)) -> Vec<(u16, T)> {
    buckets.into_iter().zip(values).filter(|(_, v)| *v != T::default()).collect()
}

pub(super) fn parse_project(name: &str) -> Result<ProjectName> {
    ProjectName::parse(name).map_err(|e| Error::Corrupt(e.to_string()))
}

pub(super) fn time_from_ms(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| Error::Corrupt(format!("time {ms} ms: {e}")))
}

/// Optional text is stored as '' (no Nullable for labels): '' reads as absent.
pub(super) fn optional_text(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

pub(super) fn optional_enum<T>(text: &str, parse: impl Fn(&str) -> Option<T>, column: &str) -> Result<Option<T>> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).ok_or_else(|| Error::Corrupt(format!("{column} {text:?}")))
}

/// SQL text and its bound values, built side by side so that the `?` and
/// the values stay in the same order.
#[derive(Default)]
pub(super) struct Sql {
    pub(super) text: String,
    pub(super) args: Vec<Arg>,
}

impl Sql {
    pub(super) fn push(&mut self, text: &str) {
        self.text.push_str(text);
    }

    pub(super) fn push_with(&mut self, text: &str, args: Vec<Arg>) {
        self.text.push_str(text);
        self.args.extend(args);
    }

    /// The statement as a query of `client`, its values bound in order.
    pub(super) fn query(&self, client: &clickhouse::Client) -> clickhouse::query::Query {
        self.args.iter().fold(client.query(&self.text), |q, a| q.bind(a))
    }
}

/// `events` filtered to `[from_ms, to_ms)` and the query's segments.
pub(super) fn raw_filter(query: &Query, from_ms: i64, to_ms: i64) -> (String, Vec<Arg>) {
    window_filter(&Query { from_ms, to_ms, ..query.clone() })
}

/// Adds `(bucket, weight)` pairs into a histogram.
pub(super) fn add_durations(histogram: &mut Vec<(u16, f64)>, pairs: impl Iterator<Item = (u16, f64)>) {
    // Most groups get one histogram only (all from SQL, or all from the
    // cache): taken as it is, without a search per bucket.
    if histogram.is_empty() {
        histogram.extend(pairs);
        return;
    }
    let mut merged: BTreeMap<u16, f64> = histogram.drain(..).collect();
    for (bucket, weight) in pairs {
        *merged.entry(bucket).or_default() += weight;
    }
    // A compensation (dedup.rs) may empty a bucket of the cache's sums.
    histogram.extend(merged.into_iter().filter(|(_, w)| *w != 0.0));
}

#[cfg(test)]
mod tests {
    use synchealth_schema::Network;

    use super::*;

    #[test]
    fn identifiers_are_backquoted_and_escaped() {
        assert_eq!(quote_identifier("synchealth"), "`synchealth`");
        assert_eq!(quote_identifier("a`b\\c"), "`a\\`b\\\\c`");
    }

    #[test]
    fn event_time_is_floored_and_clamped() {
        assert_eq!(event_time_s(1_700_000_000_999), 1_700_000_000);
        assert_eq!(event_time_s(1_700_000_001_000), 1_700_000_001);
        assert_eq!(event_time_s(-1), 0);
        assert_eq!(event_time_s(i64::MAX), u32::MAX);
    }

    #[test]
    fn the_window_filter_binds_every_value() {
        let query = Query {
            project: ProjectName::parse("p").unwrap(),
            from_ms: 1_500,
            to_ms: 2_001,
            filters: crate::Filters { app_version: Some("1' OR 1=1".into()), os: None, network: Some(Network::Wifi) },
            queue_threshold: 10,
        };
        let (sql, args) = window_filter(&query);
        assert_eq!(sql.matches('?').count(), args.len());
        assert!(!sql.contains("OR 1=1"));
        assert!(matches!(args[1], Arg::Seconds(1)));
        assert!(matches!(args[2], Arg::Seconds(3)));
        assert!(sql.ends_with("AND app_version = ? AND network = ?"));
    }

    #[test]
    fn histograms_drop_empty_buckets() {
        assert_eq!(histogram((vec![1, 2, 3], vec![2u64, 0, 1])), vec![(1, 2), (3, 1)]);
    }

    #[test]
    fn control_plane_versions_increase_even_when_the_clock_does_not() {
        let last = AtomicU64::new(0);
        assert_eq!(next_row_version(&last, 100), 100);
        assert_eq!(next_row_version(&last, 100), 101);
        assert_eq!(next_row_version(&last, 50), 102);
        assert_eq!(next_row_version(&last, 500), 500);
        assert_eq!(last.load(Ordering::Relaxed), 500);
    }
}
