//! `GET /devices?list=` (the devices falling behind, stuck uploads, devices
//! gone quiet) and `GET /devices/{id}` (one device's recent attempts). The
//! lists come from the store's device queries through the same functions as
//! `/api/v1/devices`.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use synchealth_store::DeviceList;

use super::{render, Choice, Layout, Page, PageError, PageView};
use crate::api::devices::{device_detail_over, device_list_over, AttemptParams, DeviceListParams};
use crate::format::{count, ms, time_utc};
use crate::DashboardState;

impl PageView for DeviceListParams {
    const PATH: &'static str = "/devices";
    const TITLE: &'static str = "Devices";
}

impl PageView for AttemptParams {
    const PATH: &'static str = "/devices";
    const TITLE: &'static str = "Device";
}

const LISTS: [(&str, &str, &str); 5] = [
    ("queue_depth", "Highest queue depth", "Devices by the upload queue of their latest report, deepest first."),
    ("staleness", "Highest staleness", "Devices by the staleness of their latest report, stalest first (never-synced devices are counted on the overview)."),
    ("consecutive_failures", "Consecutive failures", "Devices by failed attempts since their last success in the window."),
    ("stuck", "Stuck uploads", "Devices whose queue never shrank across their last attempts: uploads that do not get through."),
    ("quiet", "Gone quiet", "Devices seen in the window but silent for its last part: their staleness now is unknown, not absent."),
];

#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    id: String,
    href: String,
    last_seen: String,
    silent_for: String,
    segment: String,
    queue_depth: String,
    staleness: String,
    failures: String,
    outcome: &'static str,
    error: String,
    attempts: String,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    layout: Layout,
    tabs: Vec<Choice>,
    description: &'static str,
    quiet: bool,
    rows: Vec<DeviceRow>,
    csv_href: String,
    json_href: String,
}

/// `GET /devices`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { params, query, layout, .. }: Page<DeviceListParams>,
) -> Result<Response, PageError> {
    let list = params.device_list();
    let response = device_list_over(&state, &query, list, params.limit()).await?;
    let link = &layout.link;
    let tabs = LISTS
        .iter()
        .map(|(name, label, _)| Choice {
            label: (*label).to_string(),
            href: link.to("/devices", &[("list", Some(name))]),
            active: *name == list.name(),
        })
        .collect();
    let description = LISTS.iter().find(|(n, _, _)| *n == list.name()).map(|(_, _, d)| *d).unwrap_or_default();
    let rows = response
        .devices
        .iter()
        .map(|entry| {
            let d = &entry.device;
            DeviceRow {
                id: d.device_id.clone(),
                href: link.to(&format!("/devices/{}", encode_segment(&d.device_id)), &[]),
                last_seen: time_utc(d.last_seen_ms),
                silent_for: d.silent_for_ms.map(|s| ms(Some(s as f64))).unwrap_or_default(),
                segment: format!("{} · {} · {}", d.app_version, d.os, d.network),
                queue_depth: count(u64::from(d.queue_depth)),
                staleness: match d.staleness_ms {
                    Some(s) => ms(Some(s as f64)),
                    None => "never synced".into(),
                },
                failures: count(u64::from(d.consecutive_failures)),
                outcome: if d.last_success { "ok" } else { "failed" },
                error: match (&d.last_error_kind, &d.last_error_message) {
                    (Some(k), Some(m)) => format!("{k}: {m}"),
                    (Some(k), None) => k.clone(),
                    (None, Some(m)) => m.clone(),
                    (None, None) => String::new(),
                },
                attempts: count(d.attempts_in_window),
            }
        })
        .collect();
    let list_name = Some(list.name());
    let silent_for = params.silent_for.map(|s| s.0.to_string());
    let silent_for = ("silent_for", silent_for.as_deref());
    let csv_href =
        link.to("/api/v1/devices", &[("list", list_name), silent_for, ("format", Some("csv")), ("refresh", None)]);
    let json_href = link.to("/api/v1/devices", &[("list", list_name), silent_for, ("refresh", None)]);
    render(&DevicesPage {
        tabs,
        description,
        quiet: matches!(list, DeviceList::Quiet { .. }),
        rows,
        csv_href,
        json_href,
        layout,
    })
}

/// A device id as one URL path segment.
fn encode_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Clone)]
pub(crate) struct AttemptRow {
    time: String,
    outcome: &'static str,
    duration: String,
    conflicts: String,
    queue_depth: String,
    staleness: String,
    error_kind: String,
    error_message: String,
    segment: String,
    late: String,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    layout: Layout,
    device_id: String,
    attempts: Vec<AttemptRow>,
    back: String,
    json_href: String,
}

/// `GET /devices/{id}`.
pub(crate) async fn device(
    State(state): State<DashboardState>,
    Path(device_id): Path<String>,
    Page { params, query, layout, .. }: Page<AttemptParams>,
) -> Result<Response, PageError> {
    let response = device_detail_over(&state, &query, &device_id, &params).await?;
    let attempts = response
        .attempts
        .iter()
        .map(|a| AttemptRow {
            time: time_utc(a.event_time_ms),
            outcome: if a.success { "ok" } else { "failed" },
            duration: ms(Some(a.duration_ms as f64)),
            conflicts: count(u64::from(a.conflicts)),
            queue_depth: count(u64::from(a.queue_depth)),
            staleness: match a.staleness_ms {
                Some(s) => ms(Some(s as f64)),
                None => "never synced".into(),
            },
            error_kind: a.error_kind.unwrap_or_default().to_string(),
            error_message: a.error_message.clone().unwrap_or_default(),
            segment: format!("{} · {} · {}", a.app_version, a.os, a.network),
            late: {
                let late_ms = a.received_at_ms - a.event_time_ms;
                if late_ms > 5 * 60_000 {
                    ms(Some(late_ms as f64))
                } else {
                    String::new()
                }
            },
        })
        .collect();
    let back = layout.link.to("/devices", &[]);
    let json_href = layout.link.to(&format!("/api/v1/devices/{}", encode_segment(&device_id)), &[("refresh", None)]);
    render(&DevicePage { device_id, attempts, back, json_href, layout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_become_one_path_segment() {
        assert_eq!(encode_segment("pixel-7_a.b"), "pixel-7_a.b");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
