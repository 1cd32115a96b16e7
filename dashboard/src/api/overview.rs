//! The Overview's data in one call ([`overview`]), served as
//! `GET /api/v1/overview`, and the telemetry-health strip alone as
//! `GET /api/v1/health`.
//!
//! The overview issues three store aggregates at once (the window, the
//! previous window of the same length, and the window in time buckets) and
//! derives everything else in Rust: tiles with their change, one series per
//! metric, the duration and staleness histograms, and how complete the most
//! recent buckets are. `synchealth bench dashboard` times exactly this
//! function, so the benchmark measures what the page costs.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_schema::bucket_value;
use synchealth_store::metrics::LATE_ARRIVAL_MS;
use synchealth_store::{Aggregate, GroupKey, Grouping, Query, Store, Summary};
use time::OffsetDateTime;

use super::Window;
use crate::params::{format_ms, param, Params, Step};
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// Bucket widths the overview picks from, seconds.
const NICE_STEPS: [u32; 9] = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86_400];
/// Most buckets the default step gives.
const TARGET_POINTS: i64 = 120;
/// Recent buckets whose completeness the health strip shows.
const RECENT_BUCKETS: usize = 3;

/// The default bucket width for a window: the smallest of 1, 5, 15, 30 min,
/// 1, 3, 6, 12 h, 1 d that gives at most 120 buckets, and at least an hour
/// for windows over 12 h (1 h: 1 min, 6 h: 5 min, 24 h: 1 h, 7 d: 3 h).
/// Whole hours are what the ClickHouse store keeps per-device rollups of, so
/// a day's queue and staleness series come from the rollup, not from
/// millions of events.
pub fn default_step_seconds(window_ms: i64) -> u32 {
    let window_s = (window_ms / 1000).max(1);
    let floor = if window_s > 12 * 3600 { 3600 } else { 1 };
    NICE_STEPS.into_iter().find(|s| *s >= floor && window_s / i64::from(*s) <= TARGET_POINTS).unwrap_or(86_400)
}

/// One bucket of the series.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesPoint {
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Bucket start, RFC 3339 UTC.
    pub t: String,
    /// Every metric over the bucket; `None` when the bucket had no events
    /// (no data, drawn as a gap, never as zero).
    pub summary: Option<Summary>,
}

/// One bar of a histogram chart: `[low, high)` in the metric's unit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    /// Lower bound (inclusive).
    pub low: f64,
    /// Upper bound (exclusive).
    pub high: f64,
    /// Attempts (durations, sample-weighted) or devices (staleness).
    pub weight: f64,
}

/// Completeness of one recent bucket.
#[derive(Debug, Clone, Serialize)]
pub struct BucketCompleteness {
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Bucket start, RFC 3339 UTC.
    pub t: String,
    /// Events stored for it so far.
    pub events: u64,
    /// What a bucket usually holds: the median of the earlier full buckets
    /// of the window (empty ones count as 0), scaled to the part of this
    /// bucket inside the window. `None` without earlier full buckets.
    pub expected_events: Option<f64>,
    /// `events / expected_events`; below 1 means data still missing (or a
    /// real drop), `None` when nothing is expected.
    pub completeness: Option<f64>,
    /// The window ends inside this bucket.
    pub partial: bool,
}

/// The telemetry-health strip: is the data there, or only late?
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryHealth {
    /// Events received more than this long after their event time are late.
    pub late_threshold_ms: i64,
    /// Late events in the window.
    pub late_events: u64,
    /// Late events / events (`None` without events).
    pub late_share: Option<f64>,
    /// The most recent buckets of the window, oldest first, with how full
    /// they are against the usual bucket.
    pub recent_buckets: Vec<BucketCompleteness>,
}

/// Everything the Overview page shows.
#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// The window.
    pub window: Window,
    /// The previous window of the same length (what the tiles' change is
    /// against).
    pub previous_window: Window,
    /// Every metric over the window (the tiles).
    pub current: Summary,
    /// Every metric over the previous window.
    pub previous: Summary,
    /// Bucket width of the series, seconds.
    pub step_seconds: u32,
    /// Every bucket of the window, oldest first, empty ones included.
    pub series: Vec<SeriesPoint>,
    /// Sync durations over the window, ms, sample-weighted, in 1-2-5 bins.
    pub duration_histogram: Vec<Bin>,
    /// Staleness of each device's latest report, ms, in 1-2-5 bins (devices
    /// that never synced are not in it: see `current.never_synced_devices`).
    pub staleness_histogram: Vec<Bin>,
    /// Late data and completeness of the latest buckets.
    pub health: TelemetryHealth,
}

/// Parameters of `/api/v1/overview` and `/api/v1/health` besides the window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OverviewParams {
    /// Bucket width in seconds (default: [`default_step_seconds`]).
    #[serde(deserialize_with = "param")]
    pub step: Option<Step>,
}

impl OverviewParams {
    /// The checked step for a query's window.
    pub fn step_seconds(&self, query: &Query) -> Result<u32, AppError> {
        let window_ms = query.to_ms - query.from_ms;
        let step = self.step.map_or_else(|| default_step_seconds(window_ms), |s| s.0);
        if window_ms / 1000 / i64::from(step) > super::MAX_POINTS {
            return Err(AppError::BadParameter {
                parameter: "step",
                reason: format!("{step} s gives more than {} buckets over this window", super::MAX_POINTS),
            });
        }
        Ok(step)
    }
}

/// The overview of `query` in buckets of `step_seconds`: three aggregates,
/// concurrently.
#[tracing::instrument(skip_all, fields(project = %query.project, step_seconds))]
pub async fn overview(store: &dyn Store, query: &Query, step_seconds: u32) -> Result<Overview, AppError> {
    let length = query.to_ms - query.from_ms;
    let previous_query = Query { from_ms: query.from_ms - length, to_ms: query.from_ms, ..query.clone() };
    let (current, previous, buckets) = tokio::try_join!(
        store.aggregate(query, Grouping::Total),
        store.aggregate(&previous_query, Grouping::Total),
        store.aggregate(query, Grouping::Time { step_seconds }),
    )?;
    let current = total(current);
    let series = series(query, step_seconds, &buckets);
    let current_summary = Summary::from_aggregate(&current);
    let health = health(query, step_seconds, &current_summary, &series);
    Ok(Overview {
        window: Window::of(query),
        previous_window: Window::of(&previous_query),
        previous: Summary::from_aggregate(&total(previous)),
        step_seconds,
        series,
        duration_histogram: bins(current.duration_histogram.iter().copied()),
        staleness_histogram: bins(current.staleness_histogram.iter().map(|(b, n)| (*b, *n as f64))),
        health,
        current: current_summary,
    })
}

/// The telemetry health of `query` alone (two aggregates).
pub async fn telemetry_health(
    store: &dyn Store,
    query: &Query,
    step_seconds: u32,
) -> Result<TelemetryHealth, AppError> {
    let (current, buckets) = tokio::try_join!(
        store.aggregate(query, Grouping::Total),
        store.aggregate(query, Grouping::Time { step_seconds })
    )?;
    let summary = Summary::from_aggregate(&total(current));
    Ok(health(query, step_seconds, &summary, &series(query, step_seconds, &buckets)))
}

fn total(groups: Vec<(GroupKey, Aggregate)>) -> Aggregate {
    groups.into_iter().next().map(|(_, a)| a).unwrap_or_default()
}

/// Every bucket start of the window (aligned to multiples of the step since
/// the epoch, as the stores align them), with its summary if it had events.
fn series(query: &Query, step_seconds: u32, groups: &[(GroupKey, Aggregate)]) -> Vec<SeriesPoint> {
    let step_ms = i64::from(step_seconds) * 1000;
    let first = query.from_ms.div_euclid(step_ms) * step_ms;
    let mut points = Vec::new();
    let mut found = groups.iter().peekable();
    let mut start = first;
    while start < query.to_ms {
        let mut summary = None;
        while let Some((key, aggregate)) = found.peek() {
            match key {
                GroupKey::Time(s) if s * 1000 < start => {
                    found.next();
                }
                GroupKey::Time(s) if s * 1000 == start => {
                    summary = Some(Summary::from_aggregate(aggregate));
                    found.next();
                    break;
                }
                GroupKey::Time(_) => break,
                _ => {
                    found.next();
                }
            }
        }
        points.push(SeriesPoint { start_ms: start, t: format_ms(start), summary });
        start += step_ms;
    }
    points
}

fn health(query: &Query, step_seconds: u32, summary: &Summary, series: &[SeriesPoint]) -> TelemetryHealth {
    let step_ms = i64::from(step_seconds) * 1000;
    // Share of a bucket inside the window: the first and last may be cut.
    let inside = |start: i64| {
        let (lo, hi) = (start.max(query.from_ms), (start + step_ms).min(query.to_ms));
        (hi - lo).max(0) as f64 / step_ms as f64
    };
    let recent_from = series.len().saturating_sub(RECENT_BUCKETS);
    let mut baseline: Vec<f64> = series[..recent_from]
        .iter()
        .filter(|p| inside(p.start_ms) >= 1.0)
        .map(|p| p.summary.as_ref().map_or(0.0, |s| s.events as f64))
        .collect();
    baseline.sort_by(f64::total_cmp);
    let median = match baseline.len() {
        0 => None,
        n if n % 2 == 1 => Some(baseline[n / 2]),
        n => Some((baseline[n / 2 - 1] + baseline[n / 2]) / 2.0),
    };
    let recent_buckets = series[recent_from..]
        .iter()
        .map(|p| {
            let events = p.summary.as_ref().map_or(0, |s| s.events);
            let share = inside(p.start_ms);
            let expected_events = median.map(|m| m * share);
            BucketCompleteness {
                start_ms: p.start_ms,
                t: p.t.clone(),
                events,
                expected_events,
                completeness: expected_events.filter(|e| *e > 0.0).map(|e| events as f64 / e),
                partial: p.start_ms + step_ms > query.to_ms,
            }
        })
        .collect();
    TelemetryHealth {
        late_threshold_ms: LATE_ARRIVAL_MS,
        late_events: summary.late_events,
        late_share: summary.late_share,
        recent_buckets,
    }
}

/// Log buckets folded into 1-2-5 bins (0-1, 1-2, 2-5, 5-10, 10-20, ...),
/// from the lowest non-empty bin to the highest, empty bins between kept.
pub fn bins(histogram: impl Iterator<Item = (u16, f64)>) -> Vec<Bin> {
    let edge = |i: usize| -> f64 {
        match i {
            0 => 0.0,
            i => [1.0, 2.0, 5.0][(i - 1) % 3] * 10f64.powi(((i - 1) / 3) as i32),
        }
    };
    let mut weights: Vec<f64> = Vec::new();
    for (bucket, weight) in histogram.filter(|(_, w)| *w > 0.0) {
        let value = bucket_value(bucket);
        let mut i = 0;
        while edge(i + 1) <= value {
            i += 1;
        }
        if weights.len() <= i {
            weights.resize(i + 1, 0.0);
        }
        weights[i] += weight;
    }
    let first = weights.iter().position(|w| *w > 0.0).unwrap_or(weights.len());
    weights.iter().enumerate().skip(first).map(|(i, w)| Bin { low: edge(i), high: edge(i + 1), weight: *w }).collect()
}

/// `GET /api/v1/overview`.
pub(crate) async fn overview_route(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<OverviewParams>,
) -> Result<Json<Overview>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let step = params.step_seconds(&query)?;
    Ok(Json(overview(state.store.as_ref(), &query, step).await?))
}

/// The body of `/api/v1/health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthResponse {
    /// The window.
    pub window: Window,
    /// Bucket width the completeness is measured in, seconds.
    pub step_seconds: u32,
    /// The strip's data.
    #[serde(flatten)]
    pub health: TelemetryHealth,
}

/// `GET /api/v1/health`.
pub(crate) async fn health_route(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<OverviewParams>,
) -> Result<Json<HealthResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let step_seconds = params.step_seconds(&query)?;
    let health = telemetry_health(state.store.as_ref(), &query, step_seconds).await?;
    Ok(Json(HealthResponse { window: Window::of(&query), step_seconds, health }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::{bucket_of, ProjectName};
    use synchealth_store::Filters;

    #[test]
    fn default_steps_give_at_most_120_buckets() {
        assert_eq!(default_step_seconds(15 * 60_000), 60);
        assert_eq!(default_step_seconds(3_600_000), 60);
        assert_eq!(default_step_seconds(6 * 3_600_000), 300);
        assert_eq!(default_step_seconds(12 * 3_600_000), 900);
        assert_eq!(default_step_seconds(24 * 3_600_000), 3600);
        assert_eq!(default_step_seconds(7 * 24 * 3_600_000), 3 * 3600);
    }

    #[test]
    fn bins_follow_one_two_five() {
        let b = bins([(bucket_of(3), 2.0), (bucket_of(30), 1.0), (bucket_of(700), 4.0)].into_iter());
        let bounds: Vec<(f64, f64, f64)> = b.iter().map(|x| (x.low, x.high, x.weight)).collect();
        assert_eq!(
            bounds,
            vec![
                (2.0, 5.0, 2.0),
                (5.0, 10.0, 0.0),
                (10.0, 20.0, 0.0),
                (20.0, 50.0, 1.0),
                (50.0, 100.0, 0.0),
                (100.0, 200.0, 0.0),
                (200.0, 500.0, 0.0),
                (500.0, 1000.0, 4.0)
            ]
        );
        assert!(bins(std::iter::empty()).is_empty());
    }

    fn query(from_ms: i64, to_ms: i64) -> Query {
        Query {
            project: ProjectName::parse("p").unwrap(),
            from_ms,
            to_ms,
            filters: Filters::default(),
            queue_threshold: 1000,
        }
    }

    #[test]
    fn the_latest_bucket_is_measured_against_the_median_bucket_scaled_to_its_elapsed_part() {
        // Window 00:00:30 to 00:10:30 in 1-minute buckets: the first bucket
        // is cut (not in the baseline), the last is half inside.
        let q = query(30_000, 630_000);
        let counts = [(0, 100), (60, 10), (120, 12), (180, 14), (300, 16), (360, 18), (420, 11), (540, 9), (600, 5)];
        let groups: Vec<(GroupKey, Aggregate)> = counts
            .iter()
            .map(|(s, n)| (GroupKey::Time(*s), Aggregate { events: *n, attempts: *n as f64, ..Default::default() }))
            .collect();
        let s = series(&q, 60, &groups);
        assert_eq!(s.len(), 11);
        assert!(s[4].summary.is_none(), "240 s had no events");
        let summary = Summary { late_events: 3, late_share: Some(0.1), ..Summary::default() };
        let h = health(&q, 60, &summary, &s);
        // Baseline: buckets 60..420 (full, before the last three) = 10, 12,
        // 14, 0, 16, 18, 11 -> median 12.
        let recent: Vec<(i64, u64, Option<f64>, bool)> =
            h.recent_buckets.iter().map(|b| (b.start_ms, b.events, b.expected_events, b.partial)).collect();
        assert_eq!(
            recent,
            vec![(480_000, 0, Some(12.0), false), (540_000, 9, Some(12.0), false), (600_000, 5, Some(6.0), true)]
        );
        assert_eq!(h.recent_buckets[2].completeness, Some(5.0 / 6.0));
        assert_eq!(h.recent_buckets[0].completeness, Some(0.0));
        assert_eq!((h.late_events, h.late_threshold_ms), (3, 300_000));
    }
}
