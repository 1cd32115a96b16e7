//! `GET /breakdown?by=app_version|os|network&sort=&dir=`: every metric per
//! segment, sorted on the server (works without JavaScript), each segment a
//! link that filters the whole dashboard to it. A bad release on one OS or
//! network hides in the fleet average; this table is where it shows.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use synchealth_store::metrics::Metric;
use synchealth_store::{Dimension, Grouping, Summary};

use super::overview::tile_level;
use super::{render, Choice, Layout, Page, PageError, PageView};
use crate::api::breakdown_over;
use crate::format::{count, ms, num, pct};
use crate::params::{param, ParamValue};
use crate::DashboardState;

/// The table's columns: URL name, header, metric (`None`: the segment name).
const COLUMNS: [(&str, &str, Option<Metric>); 14] = [
    ("segment", "Segment", None),
    ("events", "Events", Some(Metric::Events)),
    ("devices", "Devices", Some(Metric::Devices)),
    ("success_rate", "Success", Some(Metric::SuccessRate)),
    ("conflict_rate", "Conflicts", Some(Metric::ConflictRate)),
    ("duration_p50", "Dur. p50", Some(Metric::DurationP50)),
    ("duration_p90", "Dur. p90", Some(Metric::DurationP90)),
    ("duration_p99", "Dur. p99", Some(Metric::DurationP99)),
    ("queue_depth_avg", "Queue avg", Some(Metric::QueueDepthAvg)),
    ("queue_depth_p95", "Queue p95", Some(Metric::QueueDepthP95)),
    ("queue_depth_over_threshold_share", "Queue >1000", Some(Metric::QueueDepthOverThresholdShare)),
    ("staleness_p50", "Stale p50", Some(Metric::StalenessP50)),
    ("staleness_p99", "Stale p99", Some(Metric::StalenessP99)),
    ("never_synced_devices", "Never synced", Some(Metric::NeverSyncedDevices)),
];

#[derive(Debug, Clone)]
pub(crate) struct Header {
    label: &'static str,
    href: String,
    arrow: &'static str,
}

#[derive(Debug, Clone)]
pub(crate) struct Row {
    segment: String,
    href: String,
    /// `(text, css class)`.
    cells: Vec<(String, &'static str)>,
}

#[derive(Template)]
#[template(path = "breakdown.html")]
struct BreakdownPage {
    layout: Layout,
    tabs: Vec<Choice>,
    by: &'static str,
    headers: Vec<Header>,
    total: Option<Row>,
    rows: Vec<Row>,
    csv_href: String,
    json_href: String,
}

fn cell(metric: Metric, summary: &Summary) -> String {
    let v = summary.value(metric);
    match metric {
        Metric::SuccessRate | Metric::ConflictRate | Metric::QueueDepthOverThresholdShare => pct(v),
        Metric::DurationP50
        | Metric::DurationP90
        | Metric::DurationP99
        | Metric::StalenessP50
        | Metric::StalenessP90
        | Metric::StalenessP99 => ms(v),
        Metric::Events | Metric::Devices | Metric::NeverSyncedDevices => count(v.unwrap_or(0.0) as u64),
        _ => num(v),
    }
}

/// `sort`: one of [`COLUMNS`], by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SortColumn(usize);

impl ParamValue for SortColumn {
    const NAME: &'static str = "sort";
    fn parse(text: &str) -> Result<Self, String> {
        COLUMNS.iter().position(|(name, _, _)| *name == text).map(SortColumn).ok_or_else(|| {
            format!(
                "unknown column {text:?}, expected one of {}",
                COLUMNS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// `dir`: `asc` or `desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Direction(&'static str);

impl ParamValue for Direction {
    const NAME: &'static str = "dir";
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "asc" => Ok(Direction("asc")),
            "desc" => Ok(Direction("desc")),
            other => Err(format!("expected asc or desc, got {other:?}")),
        }
    }
}

/// The Breakdown page's own parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct BreakdownView {
    /// The dimension (default `app_version`).
    #[serde(deserialize_with = "param")]
    by: Option<Dimension>,
    /// The column to sort by (default `success_rate`).
    #[serde(deserialize_with = "param")]
    sort: Option<SortColumn>,
    /// The order (default: worst first).
    #[serde(deserialize_with = "param")]
    dir: Option<Direction>,
}

impl PageView for BreakdownView {
    const PATH: &'static str = "/breakdown";
    const TITLE: &'static str = "Breakdown";
}

/// The default sort column.
const DEFAULT_SORT: usize = 3;

/// `GET /breakdown`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { params, query, layout, .. }: Page<BreakdownView>,
) -> Result<Response, PageError> {
    let by = params.by.unwrap_or(Dimension::AppVersion);
    let column = params.sort.map_or(DEFAULT_SORT, |s| s.0);
    let sort = COLUMNS[column].0;
    // Worst first by default: lowest success rate, highest everything else.
    let default_dir = if matches!(COLUMNS[column].2, Some(Metric::SuccessRate) | None) { "asc" } else { "desc" };
    let dir = params.dir.map_or(default_dir, |d| d.0);
    // The segments as the API computes them; the page adds the total row.
    let (breakdown, total) =
        tokio::join!(breakdown_over(&state, &query, by), state.store.aggregate(&query, Grouping::Total));
    let mut segments: Vec<(String, Summary)> =
        breakdown?.segments.into_iter().map(|segment| (segment.segment, segment.summary)).collect();
    let total = total?.into_iter().next().map(|(_, a)| Summary::from_aggregate(&a));

    match COLUMNS[column].2 {
        None => segments.sort_by(|a, b| a.0.cmp(&b.0)),
        Some(metric) => segments.sort_by(|a, b| {
            // Segments without a value sort last either way.
            match (a.1.value(metric), b.1.value(metric)) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => a.0.cmp(&b.0),
            }
        }),
    }
    if dir == "desc" {
        let (with, without): (Vec<_>, Vec<_>) =
            segments.into_iter().partition(|(_, s)| COLUMNS[column].2.is_none_or(|m| s.value(m).is_some()));
        segments = with.into_iter().rev().chain(without).collect();
    }

    let link = &layout.link;
    let headers = COLUMNS
        .iter()
        .map(|(name, label, _)| {
            let active = *name == sort;
            let next_dir = if active && dir == "asc" {
                "desc"
            } else if active {
                "asc"
            } else {
                ""
            };
            let dir_param = if next_dir.is_empty() { None } else { Some(next_dir) };
            Header {
                label,
                href: link.to("/breakdown", &[("by", Some(by.column())), ("sort", Some(name)), ("dir", dir_param)]),
                arrow: if !active {
                    ""
                } else if dir == "asc" {
                    " ▲"
                } else {
                    " ▼"
                },
            }
        })
        .collect();
    let row = |segment: String, href: String, s: &Summary| Row {
        segment,
        href,
        cells: COLUMNS
            .iter()
            .filter_map(|(_, _, m)| *m)
            .map(|m| {
                let (level, _) = tile_level(&state.rules, m, &query, s);
                (cell(m, s), if level == "red" || level == "amber" { "worse" } else { "" })
            })
            .collect(),
    };
    let rows = segments
        .iter()
        .map(|(segment, s)| row(segment.clone(), link.to("/", &[(by.column(), Some(segment))]), s))
        .collect();
    let total = total.map(|s| row("All segments".into(), String::new(), &s));
    let tabs = Dimension::ALL
        .iter()
        .map(|d| Choice {
            label: match d {
                Dimension::AppVersion => "App version".into(),
                Dimension::Os => "OS".into(),
                Dimension::Network => "Network".into(),
            },
            href: link.to("/breakdown", &[("by", Some(d.column()))]),
            active: *d == by,
        })
        .collect();
    let csv_href =
        link.to("/api/v1/breakdown", &[("by", Some(by.column())), ("format", Some("csv")), ("refresh", None)]);
    let json_href = link.to("/api/v1/breakdown", &[("by", Some(by.column())), ("refresh", None)]);
    render(&BreakdownPage { tabs, by: by.column(), headers, total, rows, csv_href, json_href, layout })
}
