//! `GET /releases?a=&b=`: two app versions side by side (default: the
//! newest against the one before), every metric with its difference, a 95%
//! interval on the rates and the sample size needed to see a 2-point change.
//! A regression is flagged only when it is significant (the statistics are
//! in [`crate::stats`]), so a release manager is not scared off by noise.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use synchealth_store::metrics::Metric;

use super::{render, Layout, Page, PageError, PageView};
use crate::api::releases::{release_comparison_over, ReleasesParams};
use crate::format::{count, ms, num, pct};
use crate::stats::{Interval, MetricComparison};
use crate::DashboardState;

impl PageView for ReleasesParams {
    const PATH: &'static str = "/releases";
    const TITLE: &'static str = "Releases";
}

#[derive(Debug, Clone)]
pub(crate) struct CompareRow {
    name: &'static str,
    a: String,
    b: String,
    difference: String,
    /// `worse`, `better` or empty.
    class: &'static str,
    a_interval: String,
    b_interval: String,
    difference_interval: String,
    verdict: String,
    regression: bool,
}

#[derive(Template)]
#[template(path = "releases.html")]
struct ReleasesPage {
    layout: Layout,
    versions: Vec<String>,
    a: String,
    b: String,
    a_events: String,
    b_events: String,
    min_events: u64,
    rows: Vec<CompareRow>,
    regression: bool,
    hidden: Vec<(&'static str, String)>,
    json_href: String,
}

fn label(metric: Metric) -> &'static str {
    match metric {
        Metric::Events => "Events",
        Metric::Attempts => "Attempts (weighted)",
        Metric::Devices => "Devices",
        Metric::SuccessRate => "Success rate",
        Metric::ConflictRate => "Conflict rate",
        Metric::DurationP50 => "Duration p50",
        Metric::DurationP90 => "Duration p90",
        Metric::DurationP99 => "Duration p99",
        Metric::QueueDepthAvg => "Queue depth avg",
        Metric::QueueDepthP95 => "Queue depth p95",
        Metric::QueueDepthMax => "Queue depth max",
        Metric::QueueDepthOverThresholdShare => "Devices over 1000 queued",
        Metric::StalenessP50 => "Staleness p50",
        Metric::StalenessP90 => "Staleness p90",
        Metric::StalenessP99 => "Staleness p99",
        Metric::NeverSyncedDevices => "Never-synced devices",
        Metric::QueueLagP90 => "Queue lag p90",
        Metric::QueueLagOverThresholdShare => "Devices over 5 min behind",
    }
}

fn show(metric: Metric, v: Option<f64>) -> String {
    match metric {
        Metric::SuccessRate | Metric::ConflictRate | Metric::QueueDepthOverThresholdShare => pct(v),
        Metric::DurationP50
        | Metric::DurationP90
        | Metric::DurationP99
        | Metric::StalenessP50
        | Metric::StalenessP90
        | Metric::StalenessP99 => ms(v),
        _ => num(v),
    }
}

fn interval(i: Option<Interval>) -> String {
    i.map(|i| format!("{:.1} … {:.1} %", i.low * 100.0, i.high * 100.0)).unwrap_or_default()
}

fn row(m: &MetricComparison, a_events: u64, b_events: u64) -> CompareRow {
    let difference = match (m.metric, m.difference) {
        (Metric::SuccessRate | Metric::ConflictRate | Metric::QueueDepthOverThresholdShare, Some(d)) => {
            format!("{:+.1} pp", d * 100.0)
        }
        (_, Some(d)) => match m.relative_difference {
            Some(r) => format!("{} ({:+.0} %)", show_signed(m.metric, d), r * 100.0),
            None => show_signed(m.metric, d),
        },
        (_, None) => crate::format::NONE.into(),
    };
    let class = match (m.difference, m.higher_is_worse, &m.rate) {
        // A rate is coloured only when the difference is significant.
        (_, _, Some(rate)) if !rate.significant => "",
        (Some(d), Some(worse_up), _) if d.abs() > f64::EPSILON => {
            if (d > 0.0) == worse_up {
                "worse"
            } else {
                "better"
            }
        }
        _ => "",
    };
    let (verdict, regression) = match &m.rate {
        None => (String::new(), false),
        Some(rate) if rate.regression => ("regression (significant)".into(), true),
        Some(rate) if rate.significant => ("significant difference".into(), false),
        Some(rate) => {
            let needed = rate.min_sample_size.unwrap_or(0);
            if a_events.min(b_events) < needed {
                (
                    format!("no significant difference yet; {} events per version needed to see ±2 pp", count(needed)),
                    false,
                )
            } else {
                ("no significant difference".into(), false)
            }
        }
    };
    CompareRow {
        name: label(m.metric),
        a: show(m.metric, m.a),
        b: show(m.metric, m.b),
        difference,
        class,
        a_interval: interval(m.rate.as_ref().and_then(|r| r.a_interval)),
        b_interval: interval(m.rate.as_ref().and_then(|r| r.b_interval)),
        difference_interval: m
            .rate
            .as_ref()
            .and_then(|r| r.difference_interval)
            .map(|i| format!("{:+.1} … {:+.1} pp", i.low * 100.0, i.high * 100.0))
            .unwrap_or_default(),
        verdict,
        regression,
    }
}

fn show_signed(metric: Metric, d: f64) -> String {
    let text = show(metric, Some(d.abs()));
    if d < 0.0 {
        format!("−{text}")
    } else {
        format!("+{text}")
    }
}

/// `GET /releases`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { params, query, layout, .. }: Page<ReleasesParams>,
) -> Result<Response, PageError> {
    let response = release_comparison_over(&state, &query, &params).await?;
    let (a, b, a_events, b_events, min_events, rows, regression) = match &response.comparison {
        Some(c) => (
            c.a.clone(),
            c.b.clone(),
            count(c.a_events),
            count(c.b_events),
            c.min_events,
            c.metrics.iter().filter(|m| m.metric != Metric::Attempts).map(|m| row(m, c.a_events, c.b_events)).collect(),
            c.regression,
        ),
        None => (String::new(), String::new(), String::new(), String::new(), 0, Vec::new(), false),
    };
    let hidden = layout.link.hidden(&["app_version"]);
    let json_href = layout.link.to("/api/v1/releases", &[("a", Some(&a)), ("b", Some(&b)), ("refresh", None)]);
    render(&ReleasesPage {
        versions: response.versions,
        a,
        b,
        a_events,
        b_events,
        min_events,
        rows,
        regression,
        hidden,
        json_href,
        layout,
    })
}
