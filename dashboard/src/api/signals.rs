//! `GET /api/v1/conflicts` and `GET /api/v1/errors`: which entities
//! conflict and how conflicts are resolved (are users' edits being silently
//! overwritten?), and which errors fail syncs (issue 19). Both take the
//! window and filters of every view plus `step` (bucket width, default as
//! the overview's) and `limit` (entities or error groups, default 20). The
//! figures are defined in `synchealth_store::signals`; the Conflicts and
//! Errors pages render these same answers.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_store::signals::{ConflictAggregate, ErrorAggregate};
use synchealth_store::{Grouping, Query, Summary};
use time::OffsetDateTime;

use super::{overview, Window, MAX_POINTS};
use crate::params::{format_ms, param, ParamValue, Params, Step};
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// Default and largest number of entities or error groups listed.
pub const DEFAULT_LIMIT: u32 = 20;
const MAX_LIMIT: u32 = 200;

/// `limit`: how many entities or error groups, 1 to 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u32);

impl ParamValue for Limit {
    const NAME: &'static str = "limit";
    fn parse(text: &str) -> Result<Self, String> {
        match text.parse::<u32>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Limit(n)),
            _ => Err(format!("must be a whole number from 1 to {MAX_LIMIT}")),
        }
    }
}

/// Parameters of `/api/v1/conflicts` and `/api/v1/errors` besides the window.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SignalParams {
    /// Bucket width in seconds (default: as the overview's series).
    #[serde(deserialize_with = "param")]
    pub step: Option<Step>,
    /// Entities or error groups listed (default 20).
    #[serde(deserialize_with = "param")]
    pub limit: Option<Limit>,
}

impl SignalParams {
    /// The step to use over `query`'s window, refused when it makes too many points.
    pub fn step_seconds(&self, query: &Query) -> Result<u32, AppError> {
        let window_ms = query.to_ms - query.from_ms;
        let step = self.step.map_or_else(|| overview::default_step_seconds(window_ms), |Step(s)| s);
        if window_ms / 1000 / i64::from(step) > MAX_POINTS {
            return Err(AppError::BadParameter {
                parameter: "step",
                reason: format!("{step} s gives more than {MAX_POINTS} points over this window"),
            });
        }
        Ok(step)
    }

    fn limit(&self) -> u32 {
        self.limit.map_or(DEFAULT_LIMIT, |Limit(n)| n)
    }
}

/// One bucket of the conflicts series.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictPoint {
    /// Bucket start, RFC 3339 UTC.
    pub t: String,
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Every conflict in the bucket (sample-weighted).
    pub conflicts: f64,
    /// By kind; `unclassified` for conflicts without details.
    pub by_kind: BTreeMap<String, f64>,
    /// By resolution; `unclassified` likewise.
    pub by_resolution: BTreeMap<String, f64>,
    /// Overwritten over classified conflicts in the bucket.
    pub overwrite_share: Option<f64>,
}

/// One entity's line.
#[derive(Debug, Clone, Serialize)]
pub struct EntityLine {
    /// The entity as devices name it.
    pub entity: String,
    /// Sample-weighted conflicts.
    pub conflicts: f64,
    /// Overwritten over its conflicts.
    pub overwrite_share: Option<f64>,
    /// Sample-weighted attempts naming it.
    pub attempts: f64,
    /// Those attempts over all attempts in the window: its conflict rate.
    pub conflict_rate: Option<f64>,
    /// Devices whose attempts name it.
    pub devices: u64,
}

/// The body of `/api/v1/conflicts`.
#[derive(Debug, Clone, Serialize)]
pub struct ConflictsResponse {
    /// What it covers.
    pub window: Window,
    /// The series' bucket width.
    pub step_seconds: u32,
    /// Sample-weighted attempts in the window.
    pub attempts: f64,
    /// Every conflict in the window.
    pub conflicts: f64,
    /// Conflicts counted without details.
    pub unclassified: f64,
    /// Overwritten over classified conflicts (`last_write_wins`,
    /// `server_wins`, `client_wins`: edits one side may have lost).
    pub overwrite_share: Option<f64>,
    /// The same over the window of the same length before this one: the trend.
    pub previous_overwrite_share: Option<f64>,
    /// Conflicts by kind over the window.
    pub by_kind: BTreeMap<String, f64>,
    /// Conflicts by resolution over the window.
    pub by_resolution: BTreeMap<String, f64>,
    /// Buckets with conflicts, oldest first.
    pub series: Vec<ConflictPoint>,
    /// Entities with the most conflicts, most first.
    pub entities_by_conflicts: Vec<EntityLine>,
    /// Entities with the highest conflict rate (the share of the window's
    /// attempts that met a conflict on it), highest first.
    pub entities_by_rate: Vec<EntityLine>,
}

const UNCLASSIFIED: &str = "unclassified";

fn add_to(map: &mut BTreeMap<String, f64>, key: Option<&String>, value: f64) {
    *map.entry(key.cloned().unwrap_or_else(|| UNCLASSIFIED.into())).or_default() += value;
}

fn share(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// The sample-weighted attempts of a window.
async fn attempts(state: &DashboardState, query: &Query) -> Result<f64, AppError> {
    let groups = state.store.aggregate(query, Grouping::Total).await?;
    Ok(groups.first().map(|(_, a)| Summary::from_aggregate(a).attempts).unwrap_or(0.0))
}

/// The conflicts view over a checked query.
pub async fn conflicts_over(
    state: &DashboardState,
    query: &Query,
    params: &SignalParams,
) -> Result<ConflictsResponse, AppError> {
    let step = params.step_seconds(query)?;
    let limit = params.limit();
    let length = query.to_ms - query.from_ms;
    let previous = Query { from_ms: query.from_ms - length, to_ms: query.from_ms, ..query.clone() };
    let (current, before, attempts) = tokio::try_join!(
        async { state.store.conflicts(query, step, limit).await.map_err(AppError::from) },
        async { state.store.conflicts(&previous, step, 1).await.map_err(AppError::from) },
        attempts(state, query),
    )?;
    Ok(conflicts_response(query, step, &current, &before, attempts))
}

/// Conflicts by kind and by resolution over every cell.
pub(crate) fn totals(conflicts: &ConflictAggregate) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let (mut by_kind, mut by_resolution) = (BTreeMap::new(), BTreeMap::new());
    for cell in &conflicts.series {
        add_to(&mut by_kind, cell.kind.as_ref(), cell.conflicts);
        add_to(&mut by_resolution, cell.resolution.as_ref(), cell.conflicts);
    }
    (by_kind, by_resolution)
}

fn conflicts_response(
    query: &Query,
    step: u32,
    current: &ConflictAggregate,
    before: &ConflictAggregate,
    attempts: f64,
) -> ConflictsResponse {
    let mut buckets: BTreeMap<i64, ConflictAggregate> = BTreeMap::new();
    for cell in &current.series {
        buckets.entry(cell.bucket).or_default().series.push(cell.clone());
    }
    let (by_kind, by_resolution) = totals(current);
    let series = buckets
        .into_iter()
        .map(|(bucket, cells)| {
            let (kinds, resolutions) = totals(&cells);
            ConflictPoint {
                t: format_ms(bucket * 1000),
                start_ms: bucket * 1000,
                conflicts: cells.total(),
                by_kind: kinds,
                by_resolution: resolutions,
                overwrite_share: cells.overwrite_share(),
            }
        })
        .collect();
    let lines = |entities: &[synchealth_store::signals::EntityConflicts]| -> Vec<EntityLine> {
        entities
            .iter()
            .map(|e| EntityLine {
                entity: e.entity.clone(),
                conflicts: e.conflicts,
                overwrite_share: share(e.overwrites, e.conflicts),
                attempts: e.attempts,
                conflict_rate: share(e.attempts, attempts),
                devices: e.devices,
            })
            .collect()
    };
    ConflictsResponse {
        window: Window::of(query),
        step_seconds: step,
        attempts,
        conflicts: current.total(),
        unclassified: by_kind.get(UNCLASSIFIED).copied().unwrap_or(0.0),
        overwrite_share: current.overwrite_share(),
        previous_overwrite_share: before.overwrite_share(),
        by_kind,
        by_resolution,
        series,
        entities_by_conflicts: lines(&current.entities),
        entities_by_rate: lines(&current.entities_by_attempts),
    }
}

/// Failed attempts of one error kind.
#[derive(Debug, Clone, Serialize)]
pub struct KindLine {
    /// Wire spelling; `null` for failures that named none.
    pub kind: Option<String>,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
    /// Of all failed attempts in the window.
    pub share: Option<f64>,
    /// Stored events.
    pub events: u64,
    /// Distinct devices.
    pub devices: u64,
}

/// One error group (kind and message fingerprint).
#[derive(Debug, Clone, Serialize)]
pub struct ErrorLine {
    /// Wire spelling, `null` when not given.
    pub kind: Option<String>,
    /// The messages with what varies taken out.
    pub fingerprint: String,
    /// One of its latest messages.
    pub example: String,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
    /// Of all failed attempts in the window.
    pub share: Option<f64>,
    /// Stored events.
    pub events: u64,
    /// Distinct devices.
    pub devices: u64,
    /// First occurrence in the window, RFC 3339 UTC.
    pub first_seen: String,
    /// Last occurrence in the window, RFC 3339 UTC.
    pub last_seen: String,
    /// Its attempts by app version, most first, with their share of it.
    pub releases: Vec<ReleaseShare>,
    /// Its attempts per bucket, oldest first (empty buckets left out).
    pub series: Vec<ErrorPoint>,
}

/// A release's part of an error group.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseShare {
    /// The app version.
    pub app_version: String,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
    /// Of the group's.
    pub share: Option<f64>,
}

/// One bucket of an error group's series.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorPoint {
    /// Bucket start, RFC 3339 UTC.
    pub t: String,
    /// Bucket start, Unix ms.
    pub start_ms: i64,
    /// Sample-weighted failed attempts.
    pub attempts: f64,
}

/// The body of `/api/v1/errors`.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorsResponse {
    /// What it covers.
    pub window: Window,
    /// The series' bucket width.
    pub step_seconds: u32,
    /// Sample-weighted failed attempts in the window.
    pub failed_attempts: f64,
    /// By error kind, most first.
    pub kinds: Vec<KindLine>,
    /// The largest error groups, most first.
    pub errors: Vec<ErrorLine>,
}

/// The errors view over a checked query.
pub async fn errors_over(
    state: &DashboardState,
    query: &Query,
    params: &SignalParams,
) -> Result<ErrorsResponse, AppError> {
    let step = params.step_seconds(query)?;
    let errors = state.store.errors(query, step, params.limit()).await?;
    Ok(errors_response(query, step, &errors))
}

fn errors_response(query: &Query, step: u32, errors: &ErrorAggregate) -> ErrorsResponse {
    let failed: f64 = errors.kinds.iter().map(|k| k.attempts).sum();
    let kinds = errors
        .kinds
        .iter()
        .map(|k| KindLine {
            kind: k.kind.clone(),
            attempts: k.attempts,
            share: share(k.attempts, failed),
            events: k.events,
            devices: k.devices,
        })
        .collect();
    let lines = errors
        .groups
        .iter()
        .map(|g| ErrorLine {
            kind: g.kind.clone(),
            fingerprint: g.fingerprint.clone(),
            example: g.example.clone(),
            attempts: g.attempts,
            share: share(g.attempts, failed),
            events: g.events,
            devices: g.devices,
            first_seen: format_ms(g.first_seen_ms),
            last_seen: format_ms(g.last_seen_ms),
            releases: g
                .releases
                .iter()
                .map(|(v, a)| ReleaseShare { app_version: v.clone(), attempts: *a, share: share(*a, g.attempts) })
                .collect(),
            series: g
                .series
                .iter()
                .map(|(b, a)| ErrorPoint { t: format_ms(b * 1000), start_ms: b * 1000, attempts: *a })
                .collect(),
        })
        .collect();
    ErrorsResponse { window: Window::of(query), step_seconds: step, failed_attempts: failed, kinds, errors: lines }
}

/// `GET /api/v1/conflicts`.
pub(crate) async fn conflicts(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<SignalParams>,
) -> Result<Json<ConflictsResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    Ok(Json(conflicts_over(&state, &query, &params).await?))
}

/// `GET /api/v1/errors`.
pub(crate) async fn errors(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<SignalParams>,
) -> Result<Json<ErrorsResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    Ok(Json(errors_over(&state, &query, &params).await?))
}
