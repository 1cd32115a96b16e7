//! `GET /api/v1/devices` (the device lists, JSON or CSV) and
//! `GET /api/v1/devices/{id}` (one device's recent attempts).

use axum::extract::{Path, Query as UrlQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_schema::StoredEvent;
use synchealth_store::devices::MAX_DEVICE_LIST;
use synchealth_store::{DeviceList, DeviceSummary, Query};
use time::OffsetDateTime;

use super::csv_export::{csv_response, wants_csv, Cell};
use super::Window;
use crate::params::format_ms;
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// Devices a list shows unless `limit` says otherwise.
pub const DEFAULT_DEVICE_LIMIT: u32 = 50;
/// Silence that makes a device quiet unless `silent_for` says otherwise:
/// 30 minutes, several report intervals of a healthy client.
pub const DEFAULT_SILENT_FOR_SECONDS: i64 = 30 * 60;
/// Attempts the device page shows unless `limit` says otherwise.
pub const DEFAULT_ATTEMPT_LIMIT: u32 = 50;
/// Most attempts the device page may ask for.
pub const MAX_ATTEMPT_LIMIT: u32 = 500;

/// Parameters of `/api/v1/devices`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DevicesParams {
    /// Project, window and filters.
    #[serde(flatten)]
    pub common: QueryParams,
    /// `queue_depth` (default), `staleness`, `consecutive_failures`, `stuck`
    /// or `quiet`.
    pub list: Option<String>,
    /// How many devices (1..=1000, default 50).
    pub limit: Option<String>,
    /// Quiet list only: seconds without a report that make a device quiet
    /// (default 1800).
    pub silent_for: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

impl DevicesParams {
    /// The list asked for, checked: a bad name or number is a 400 naming it.
    pub fn device_list(&self) -> Result<DeviceList, AppError> {
        let silent_for_s = match self.silent_for.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
            Some(text) => text.parse::<i64>().ok().filter(|s| *s >= 1 && *s <= 90 * 86_400).ok_or_else(|| {
                AppError::BadParameter {
                    parameter: "silent_for",
                    reason: format!("expected whole seconds between 1 and 7776000, got {text:?}"),
                }
            })?,
            None => DEFAULT_SILENT_FOR_SECONDS,
        };
        match self.list.as_deref().map(str::trim).unwrap_or("") {
            "" | "queue_depth" => Ok(DeviceList::QueueDepth),
            "staleness" => Ok(DeviceList::Staleness),
            "consecutive_failures" => Ok(DeviceList::ConsecutiveFailures),
            "stuck" => Ok(DeviceList::Stuck),
            "quiet" => Ok(DeviceList::Quiet { silent_for_ms: silent_for_s * 1000 }),
            other => Err(AppError::BadParameter {
                parameter: "list",
                reason: format!(
                    "unknown list {other:?}, expected queue_depth, staleness, consecutive_failures, stuck or quiet"
                ),
            }),
        }
    }

    /// The limit asked for, checked.
    pub fn limit(&self) -> Result<u32, AppError> {
        parse_limit(self.limit.as_deref(), DEFAULT_DEVICE_LIMIT, MAX_DEVICE_LIST)
    }
}

pub(crate) fn parse_limit(text: Option<&str>, default: u32, max: u32) -> Result<u32, AppError> {
    match text.map(str::trim).filter(|s| !s.is_empty()) {
        Some(text) => {
            text.parse::<u32>().ok().filter(|n| (1..=max).contains(n)).ok_or_else(|| AppError::BadParameter {
                parameter: "limit",
                reason: format!("expected a number from 1 to {max}, got {text:?}"),
            })
        }
        None => Ok(default),
    }
}

/// One listed device: the store's summary, and its last report's time as
/// RFC 3339 for people.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceEntry {
    /// Everything the store says about the device (see [`DeviceSummary`]).
    #[serde(flatten)]
    pub device: DeviceSummary,
    /// `last_seen_ms` as RFC 3339 UTC.
    pub last_seen: String,
}

/// The body of `/api/v1/devices`.
#[derive(Debug, Clone, Serialize)]
pub struct DevicesResponse {
    /// What the list covers.
    pub window: Window,
    /// Which list, and for `quiet` the silence threshold in ms.
    #[serde(flatten)]
    pub list: DeviceList,
    /// The limit applied.
    pub limit: u32,
    /// The devices, in the list's order.
    pub devices: Vec<DeviceEntry>,
}

/// Runs the list for a request (the query and the list checked first).
pub async fn device_list(
    state: &DashboardState,
    user: &CurrentUser,
    params: &DevicesParams,
) -> Result<(Query, DevicesResponse), AppError> {
    let query = params.common.to_query(user, OffsetDateTime::now_utc())?;
    let list = params.device_list()?;
    let limit = params.limit()?;
    let response = device_list_over(state, &query, list, limit).await?;
    Ok((query, response))
}

/// The device list over a checked query: what `/api/v1/devices` answers and
/// the Devices page renders (which builds the query once, for its layout too).
pub async fn device_list_over(
    state: &DashboardState,
    query: &Query,
    list: DeviceList,
    limit: u32,
) -> Result<DevicesResponse, AppError> {
    let devices = state.store.devices(query, list, limit).await?;
    let devices =
        devices.into_iter().map(|device| DeviceEntry { last_seen: format_ms(device.last_seen_ms), device }).collect();
    Ok(DevicesResponse { window: Window::of(query), list, limit, devices })
}

/// `GET /api/v1/devices`.
pub(crate) async fn devices(
    State(state): State<DashboardState>,
    user: CurrentUser,
    UrlQuery(params): UrlQuery<DevicesParams>,
) -> Result<Response, AppError> {
    let csv = wants_csv(params.format.as_deref())?;
    let (_, response) = device_list(&state, &user, &params).await?;
    if csv {
        devices_csv(&response)
    } else {
        Ok(Json(response).into_response())
    }
}

/// `GET /api/v1/devices.csv`: the same as `format=csv`.
pub(crate) async fn devices_csv_route(
    State(state): State<DashboardState>,
    user: CurrentUser,
    UrlQuery(params): UrlQuery<DevicesParams>,
) -> Result<Response, AppError> {
    let (_, response) = device_list(&state, &user, &params).await?;
    devices_csv(&response)
}

fn devices_csv(response: &DevicesResponse) -> Result<Response, AppError> {
    let header = [
        "device_id",
        "last_seen",
        "app_version",
        "os",
        "network",
        "queue_depth",
        "staleness_ms",
        "consecutive_failures",
        "last_success",
        "last_error_kind",
        "last_error_message",
        "attempts_in_window",
        "silent_for_ms",
    ];
    let rows = response
        .devices
        .iter()
        .map(|e| {
            let d = &e.device;
            vec![
                Cell::Text(d.device_id.clone()),
                Cell::num(&e.last_seen),
                Cell::Text(d.app_version.clone()),
                Cell::Text(d.os.clone()),
                Cell::Text(d.network.clone()),
                Cell::num(d.queue_depth),
                Cell::opt(d.staleness_ms),
                Cell::num(d.consecutive_failures),
                Cell::num(d.last_success),
                Cell::text(d.last_error_kind.as_deref()),
                Cell::text(d.last_error_message.as_deref()),
                Cell::num(d.attempts_in_window),
                Cell::opt(d.silent_for_ms),
            ]
        })
        .collect();
    csv_response(&format!("devices-{}.csv", response.list.name()), &header, rows)
}

/// Parameters of `/api/v1/devices/{id}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeviceParams {
    /// The project (the window and filters are not used: the latest
    /// attempts are shown whenever they were).
    #[serde(flatten)]
    pub common: QueryParams,
    /// How many attempts (1..=500, default 50).
    pub limit: Option<String>,
}

/// One attempt of a device, as its page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    /// Corrected event time, RFC 3339 UTC.
    pub time: String,
    /// Corrected event time, Unix ms.
    pub event_time_ms: i64,
    /// When the collector received it, Unix ms.
    pub received_at_ms: i64,
    /// The outcome.
    pub success: bool,
    /// Sync duration, ms.
    pub duration_ms: u64,
    /// Conflicts the attempt resolved.
    pub conflicts: u32,
    /// Upload queue depth after it.
    pub queue_depth: u32,
    /// Staleness it reported, ms (`None`: never synced).
    pub staleness_ms: Option<u64>,
    /// Error kind, when it failed with one.
    pub error_kind: Option<&'static str>,
    /// Error message, if any.
    pub error_message: Option<String>,
    /// App version.
    pub app_version: String,
    /// OS.
    pub os: String,
    /// Network type.
    pub network: &'static str,
    /// What started it.
    pub trigger: Option<&'static str>,
    /// Retries inside the attempt.
    pub retries: u32,
}

impl Attempt {
    fn of(e: &StoredEvent) -> Attempt {
        Attempt {
            time: format_ms(e.event_time_ms),
            event_time_ms: e.event_time_ms,
            received_at_ms: e.received_at_ms,
            success: e.event.success,
            duration_ms: e.event.duration_ms,
            conflicts: e.event.conflicts,
            queue_depth: e.event.queue_depth,
            staleness_ms: e.staleness_ms,
            error_kind: e.event.error_kind.map(|k| k.as_str()),
            error_message: e.event.error_message.clone(),
            app_version: e.event.app_version.clone(),
            os: e.event.os.clone(),
            network: e.event.network.as_str(),
            trigger: e.event.trigger.map(|t| t.as_str()),
            retries: e.event.retries,
        }
    }
}

/// The body of `/api/v1/devices/{id}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceResponse {
    /// The project.
    pub project: String,
    /// The device.
    pub device_id: String,
    /// Its most recent attempts, newest first.
    pub attempts: Vec<Attempt>,
}

/// A device's recent attempts: what the device page renders. 404 when the
/// project has no event of that device.
pub async fn device_detail(
    state: &DashboardState,
    user: &CurrentUser,
    device_id: &str,
    params: &DeviceParams,
) -> Result<DeviceResponse, AppError> {
    let query = params.common.to_query(user, OffsetDateTime::now_utc())?;
    if device_id.is_empty() || device_id.len() > 256 {
        return Err(AppError::BadParameter {
            parameter: "id",
            reason: "expected a device id of 1 to 256 bytes".into(),
        });
    }
    let limit = parse_limit(params.limit.as_deref(), DEFAULT_ATTEMPT_LIMIT, MAX_ATTEMPT_LIMIT)?;
    let events = state.store.device_events(&query.project, device_id, limit).await?;
    if events.is_empty() {
        return Err(AppError::NotFound(format!("no events of device {device_id:?} in project {}", query.project)));
    }
    Ok(DeviceResponse {
        project: query.project.to_string(),
        device_id: device_id.to_string(),
        attempts: events.iter().map(Attempt::of).collect(),
    })
}

/// `GET /api/v1/devices/{id}`.
pub(crate) async fn device(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Path(device_id): Path<String>,
    UrlQuery(params): UrlQuery<DeviceParams>,
) -> Result<Json<DeviceResponse>, AppError> {
    Ok(Json(device_detail(&state, &user, &device_id, &params).await?))
}
