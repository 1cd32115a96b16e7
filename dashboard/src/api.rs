//! The JSON API: every number the dashboard shows, for scripts and incident
//! bots. All endpoints take the parameters of [`QueryParams`], each with its
//! own typed parameters beside them, read by the `Params` extractor (a bad
//! one is a JSON 400 naming it; see `crate::params`). A handler builds the
//! store query and calls one function per view, over that checked query;
//! the pages call the same functions ([`overview::overview`],
//! [`devices::device_list_over`], [`devices::device_detail_over`],
//! [`releases::release_comparison_over`], [`signals::conflicts_over`],
//! [`signals::errors_over`], [`breakdown_over`]), so a page and
//! its JSON never disagree.

pub mod csv_export;
pub mod devices;
pub mod overview;
pub mod releases;
pub mod signals;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_store::metrics::Metric;
use synchealth_store::signals::{QueueLagSummary, DEFAULT_QUEUE_LAG_THRESHOLD_MS};
use synchealth_store::{Dimension, Filters, GroupKey, Grouping, Query, Summary};
use time::OffsetDateTime;

use self::csv_export::Format;
use crate::params::{format_ms, param, Params, Step};
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// Most points one time series may have.
pub(crate) const MAX_POINTS: i64 = 2000;

/// What the response was computed over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// The project.
    pub project: String,
    /// Window start, RFC 3339 UTC.
    pub from: String,
    /// Window end (exclusive), RFC 3339 UTC.
    pub to: String,
    /// The filters applied.
    pub filters: Filters,
}

impl Window {
    /// The window of a store query.
    pub fn of(query: &Query) -> Self {
        Window {
            project: query.project.to_string(),
            from: format_ms(query.from_ms),
            to: format_ms(query.to_ms),
            filters: query.filters.clone(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct SummaryResponse {
    window: Window,
    #[serde(flatten)]
    summary: Summary,
    /// Conflicts by kind and resolution (`synchealth_store::signals`), with
    /// `include=conflicts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    conflicts: Option<SummaryConflicts>,
    /// Each device's latest queue lag: percentiles and the share behind,
    /// with `include=queue_lag`.
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_lag_ms: Option<QueueLagSummary>,
}

/// The conflicts part of a summary.
#[derive(Debug, Serialize)]
pub(crate) struct SummaryConflicts {
    /// Every conflict (sample-weighted).
    count: f64,
    /// Overwritten over classified conflicts.
    overwrite_share: Option<f64>,
    /// By kind; `unclassified` for conflicts without details.
    by_kind: std::collections::BTreeMap<String, f64>,
    /// By resolution; `unclassified` likewise.
    by_resolution: std::collections::BTreeMap<String, f64>,
}

/// `include`: the summary's optional sections, comma-separated:
/// `conflicts`, `queue_lag` (both: `signals`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Include {
    conflicts: bool,
    queue_lag: bool,
}

impl crate::params::ParamValue for Include {
    const NAME: &'static str = "include";
    fn parse(text: &str) -> Result<Self, String> {
        let mut include = Include::default();
        for part in text.split(',').map(str::trim) {
            match part {
                "conflicts" => include.conflicts = true,
                "queue_lag" => include.queue_lag = true,
                "signals" => include = Include { conflicts: true, queue_lag: true },
                other => return Err(format!("{other:?} is not a section: conflicts, queue_lag or signals")),
            }
        }
        Ok(include)
    }
}

/// Parameters of `/api/v1/summary` besides the window.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct SummaryParams {
    /// Optional sections (default none).
    #[serde(deserialize_with = "param")]
    include: Option<Include>,
}

/// `GET /api/v1/summary`: every metric over the window, and with `include`
/// the conflicts and queue-lag sections. Those are opt-in because they read
/// the window's events rather than rollups (README, "JSON API"): at ten
/// million events a day they cost seconds, where the rest costs tens of ms.
pub(crate) async fn summary(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<SummaryParams>,
) -> Result<Json<SummaryResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let include = params.include.unwrap_or_default();
    // One bucket as wide as any window: the whole window's conflicts.
    let (groups, conflicts, lags) = tokio::try_join!(
        async { state.store.aggregate(&query, Grouping::Total).await.map_err(AppError::from) },
        async {
            match include.conflicts {
                true => state.store.conflicts(&query, u32::MAX, 0).await.map(Some).map_err(AppError::from),
                false => Ok(None),
            }
        },
        async {
            match include.queue_lag {
                true => state.store.queue_lags(&query).await.map(Some).map_err(AppError::from),
                false => Ok(None),
            }
        },
    )?;
    let summary = groups.first().map(|(_, a)| Summary::from_aggregate(a)).unwrap_or_default();
    let conflicts = conflicts.map(|conflicts| {
        let (by_kind, by_resolution) = signals::totals(&conflicts);
        SummaryConflicts {
            count: conflicts.total(),
            overwrite_share: conflicts.overwrite_share(),
            by_kind,
            by_resolution,
        }
    });
    let queue_lag_ms = lags.map(|lags| lags.summary(DEFAULT_QUEUE_LAG_THRESHOLD_MS));
    Ok(Json(SummaryResponse { window: Window::of(&query), summary, conflicts, queue_lag_ms }))
}

/// Parameters of `/api/v1/timeseries` besides the window.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TimeseriesParams {
    /// Bucket width in seconds (default: the window split in about 60 buckets).
    #[serde(deserialize_with = "param")]
    step: Option<Step>,
    /// Only this metric's value per point (default: every metric).
    #[serde(deserialize_with = "param")]
    metric: Option<Metric>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Point {
    /// Bucket start, RFC 3339 UTC.
    t: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Option<f64>>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    summary: Option<Summary>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TimeseriesResponse {
    window: Window,
    step_seconds: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    metric: Option<Metric>,
    /// Only buckets with events; a missing bucket had no data (not zero).
    points: Vec<Point>,
}

/// `GET /api/v1/timeseries`: metrics per time bucket.
pub(crate) async fn timeseries(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<TimeseriesParams>,
) -> Result<Json<TimeseriesResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let window_s = (query.to_ms - query.from_ms) / 1000;
    let step_seconds = match params.step {
        Some(Step(step)) => step,
        // The overview's default: whole hours over a day, which the stores
        // serve from their per-device rollups rather than from every event.
        None => overview::default_step_seconds(query.to_ms - query.from_ms),
    };
    if window_s / i64::from(step_seconds) > MAX_POINTS {
        return Err(AppError::BadParameter {
            parameter: "step",
            reason: format!("{step_seconds} s gives more than {MAX_POINTS} points over this window"),
        });
    }
    let metric = params.metric;
    if let Some(m) = metric.filter(|m| m.is_queue_lag()) {
        return Err(AppError::BadParameter {
            parameter: "metric",
            reason: format!("{m:?} is read per window, not per bucket: see queue_lag_ms in /api/v1/summary"),
        });
    }
    let groups = state.store.aggregate(&query, Grouping::Time { step_seconds }).await?;
    let points = groups
        .into_iter()
        .filter_map(|(key, aggregate)| {
            let GroupKey::Time(start) = key else { return None };
            let summary = Summary::from_aggregate(&aggregate);
            Some(match metric {
                Some(m) => Point { t: format_ms(start * 1000), value: Some(summary.value(m)), summary: None },
                None => Point { t: format_ms(start * 1000), value: None, summary: Some(summary) },
            })
        })
        .collect();
    Ok(Json(TimeseriesResponse { window: Window::of(&query), step_seconds, metric, points }))
}

/// Parameters of `/api/v1/breakdown` besides the window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct BreakdownParams {
    /// `app_version` (default), `os` or `network`.
    #[serde(deserialize_with = "param")]
    pub by: Option<Dimension>,
    /// `json` (default) or `csv`.
    #[serde(deserialize_with = "param")]
    pub format: Option<Format>,
}

/// One segment of a breakdown.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    /// The app version, OS or network.
    pub segment: String,
    /// Every metric over it.
    #[serde(flatten)]
    pub summary: Summary,
}

/// The body of `/api/v1/breakdown`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakdownResponse {
    /// What it covers.
    pub window: Window,
    /// The dimension.
    pub by: Dimension,
    /// One per value, in key order.
    pub segments: Vec<Segment>,
}

/// `GET /api/v1/breakdown`: every metric per app version, OS or network.
pub(crate) async fn breakdown(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<BreakdownParams>,
) -> Result<Response, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let response = breakdown_over(&state, &query, params.by.unwrap_or(Dimension::AppVersion)).await?;
    match params.format.unwrap_or_default() {
        Format::Csv => breakdown_csv(&response),
        Format::Json => Ok(Json(response).into_response()),
    }
}

/// `GET /api/v1/breakdown.csv`: the same as `format=csv`.
pub(crate) async fn breakdown_csv_route(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<BreakdownParams>,
) -> Result<Response, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    breakdown_csv(&breakdown_over(&state, &query, params.by.unwrap_or(Dimension::AppVersion)).await?)
}

fn breakdown_csv(response: &BreakdownResponse) -> Result<Response, AppError> {
    use csv_export::Cell;
    let header = [
        response.by.column(),
        "events",
        "attempts",
        "devices",
        "success_rate",
        "conflict_rate",
        "duration_p50_ms",
        "duration_p90_ms",
        "duration_p99_ms",
        "queue_depth_avg",
        "queue_depth_p95",
        "queue_depth_max",
        "queue_over_threshold_share",
        "staleness_p50_ms",
        "staleness_p90_ms",
        "staleness_p99_ms",
        "never_synced_devices",
        "late_events",
    ];
    let rows = response
        .segments
        .iter()
        .map(|segment| {
            let s = &segment.summary;
            vec![
                Cell::Text(segment.segment.clone()),
                Cell::num(s.events),
                Cell::num(s.attempts),
                Cell::num(s.devices),
                Cell::opt(s.success_rate),
                Cell::opt(s.conflict_rate),
                Cell::opt(s.duration_ms.p50),
                Cell::opt(s.duration_ms.p90),
                Cell::opt(s.duration_ms.p99),
                Cell::opt(s.queue_depth.avg),
                Cell::opt(s.queue_depth.p95),
                Cell::opt(s.queue_depth.max),
                Cell::opt(s.queue_depth.over_threshold_share),
                Cell::opt(s.staleness_ms.p50),
                Cell::opt(s.staleness_ms.p90),
                Cell::opt(s.staleness_ms.p99),
                Cell::num(s.never_synced_devices),
                Cell::num(s.late_events),
            ]
        })
        .collect();
    csv_export::csv_response(&format!("breakdown-{}.csv", response.by.column()), &header, rows)
}

/// The breakdown over a checked query: what `/api/v1/breakdown` answers and
/// the Breakdown page renders.
pub async fn breakdown_over(
    state: &DashboardState,
    query: &Query,
    by: Dimension,
) -> Result<BreakdownResponse, AppError> {
    let groups = state.store.aggregate(query, Grouping::By(by)).await?;
    let segments = groups
        .into_iter()
        .filter_map(|(key, aggregate)| match key {
            GroupKey::Segment(segment) => Some(Segment { segment, summary: Summary::from_aggregate(&aggregate) }),
            _ => None,
        })
        .collect();
    Ok(BreakdownResponse { window: Window::of(query), by, segments })
}
