//! `GET /api/v1/devices` (the device lists, JSON or CSV) and
//! `GET /api/v1/devices/{id}` (one device's recent attempts), with their
//! typed parameters ([`DeviceListParams`], [`AttemptParams`]), which the
//! Devices and device pages take too.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_schema::StoredEvent;
use synchealth_store::devices::MAX_DEVICE_LIST;
use synchealth_store::{DeviceList, DeviceSummary, Query};
use time::OffsetDateTime;

use super::csv_export::{csv_response, Cell, Format};
use super::Window;
use crate::params::{format_ms, param, parse_limit, ParamValue, Params};
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

/// The device list asked for, without its silence threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListName {
    /// `queue_depth` (the default).
    #[default]
    QueueDepth,
    /// `staleness`.
    Staleness,
    /// `consecutive_failures`.
    ConsecutiveFailures,
    /// `stuck`.
    Stuck,
    /// `quiet`.
    Quiet,
}

impl ParamValue for ListName {
    const NAME: &'static str = "list";
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "queue_depth" => Ok(ListName::QueueDepth),
            "staleness" => Ok(ListName::Staleness),
            "consecutive_failures" => Ok(ListName::ConsecutiveFailures),
            "stuck" => Ok(ListName::Stuck),
            "quiet" => Ok(ListName::Quiet),
            other => Err(format!(
                "unknown list {other:?}, expected queue_depth, staleness, consecutive_failures, stuck or quiet"
            )),
        }
    }
}

/// `silent_for`: whole seconds, 1 to 90 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SilentFor(pub i64);

impl ParamValue for SilentFor {
    const NAME: &'static str = "silent_for";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse::<i64>()
            .ok()
            .filter(|s| *s >= 1 && *s <= 90 * 86_400)
            .map(SilentFor)
            .ok_or_else(|| format!("expected whole seconds between 1 and 7776000, got {text:?}"))
    }
}

/// `limit` of a device list: 1 to [`MAX_DEVICE_LIST`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceLimit(pub u32);

impl ParamValue for DeviceLimit {
    const NAME: &'static str = "limit";
    fn parse(text: &str) -> Result<Self, String> {
        parse_limit(text, MAX_DEVICE_LIST).map(DeviceLimit)
    }
}

/// `limit` of a device's attempts: 1 to [`MAX_ATTEMPT_LIMIT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptLimit(pub u32);

impl ParamValue for AttemptLimit {
    const NAME: &'static str = "limit";
    fn parse(text: &str) -> Result<Self, String> {
        parse_limit(text, MAX_ATTEMPT_LIMIT).map(AttemptLimit)
    }
}

/// Which device list, and how long: the parameters of `/api/v1/devices`
/// (besides the window and `format`) and of the Devices page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct DeviceListParams {
    /// `queue_depth` (default), `staleness`, `consecutive_failures`, `stuck`
    /// or `quiet`.
    #[serde(deserialize_with = "param")]
    pub list: Option<ListName>,
    /// How many devices (1..=1000, default 50).
    #[serde(deserialize_with = "param")]
    pub limit: Option<DeviceLimit>,
    /// Quiet list only: seconds without a report that make a device quiet
    /// (default 1800).
    #[serde(deserialize_with = "param")]
    pub silent_for: Option<SilentFor>,
}

impl DeviceListParams {
    /// The list asked for.
    pub fn device_list(&self) -> DeviceList {
        match self.list.unwrap_or_default() {
            ListName::QueueDepth => DeviceList::QueueDepth,
            ListName::Staleness => DeviceList::Staleness,
            ListName::ConsecutiveFailures => DeviceList::ConsecutiveFailures,
            ListName::Stuck => DeviceList::Stuck,
            ListName::Quiet => {
                DeviceList::Quiet { silent_for_ms: self.silent_for.map_or(DEFAULT_SILENT_FOR_SECONDS, |s| s.0) * 1000 }
            }
        }
    }

    /// The limit asked for.
    pub fn limit(&self) -> u32 {
        self.limit.map_or(DEFAULT_DEVICE_LIMIT, |l| l.0)
    }
}

/// `format` of `/api/v1/devices`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct FormatParam {
    /// `json` (default) or `csv`.
    #[serde(deserialize_with = "param")]
    format: Option<Format>,
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

/// The device list over a checked query: what `/api/v1/devices` answers and
/// the Devices page renders.
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
    Params(window): Params<QueryParams>,
    Params(params): Params<DeviceListParams>,
    Params(FormatParam { format }): Params<FormatParam>,
) -> Result<Response, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    let response = device_list_over(&state, &query, params.device_list(), params.limit()).await?;
    match format.unwrap_or_default() {
        Format::Csv => devices_csv(&response),
        Format::Json => Ok(Json(response).into_response()),
    }
}

/// `GET /api/v1/devices.csv`: the same as `format=csv`.
pub(crate) async fn devices_csv_route(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<DeviceListParams>,
) -> Result<Response, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    devices_csv(&device_list_over(&state, &query, params.device_list(), params.limit()).await?)
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

/// Parameters of `/api/v1/devices/{id}` and the device page besides the
/// project (the window and filters are not used: the latest attempts are
/// shown whenever they were).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AttemptParams {
    /// How many attempts (1..=500, default 50).
    #[serde(deserialize_with = "param")]
    pub limit: Option<AttemptLimit>,
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

/// A device's recent attempts in the project of a checked query: what
/// `/api/v1/devices/{id}` answers and the device page renders. 404 when the
/// project has no event of that device.
pub async fn device_detail_over(
    state: &DashboardState,
    query: &Query,
    device_id: &str,
    params: &AttemptParams,
) -> Result<DeviceResponse, AppError> {
    if device_id.is_empty() || device_id.len() > 256 {
        return Err(AppError::BadParameter {
            parameter: "id",
            reason: "expected a device id of 1 to 256 bytes".into(),
        });
    }
    let limit = params.limit.map_or(DEFAULT_ATTEMPT_LIMIT, |l| l.0);
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
    Params(window): Params<QueryParams>,
    Params(params): Params<AttemptParams>,
) -> Result<Json<DeviceResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    Ok(Json(device_detail_over(&state, &query, &device_id, &params).await?))
}
