//! `GET /`: the overview. Tiles for every vital sign with the change
//! against the previous window of the same length, coloured against the
//! alert rules; time-series charts; the duration histogram and staleness
//! distribution; and a telemetry-health strip, so that missing data is not
//! mistaken for good news.

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use synchealth_alerts::{Rule, Severity};
use synchealth_store::metrics::Metric;
use synchealth_store::{Query, Summary, TelemetryLoss};

use serde::Deserialize;

use super::{collector_url, render, Layout, Page, PageError, PageView};
use crate::api::overview::{default_step_seconds, overview, Bin, Overview};
use crate::charts::{BarChart, LineChart, Series};
use crate::format::{count, Unit};
use crate::DashboardState;

/// Fewest events in the previous window for a change to be shown.
const MIN_PREVIOUS_EVENTS: u64 = 30;

/// One vital sign.
#[derive(Debug, Clone)]
pub(crate) struct Tile {
    pub(crate) name: &'static str,
    pub(crate) value: String,
    pub(crate) change: String,
    /// `better`, `worse` or empty.
    pub(crate) change_class: &'static str,
    /// `ok`, `amber`, `red`, or empty when no rule watches the metric.
    pub(crate) level: &'static str,
    /// The rule line that decided the colour.
    pub(crate) rule: String,
}

/// A chart panel.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    pub(crate) title: String,
    pub(crate) svg: String,
    pub(crate) has_data: bool,
}

/// One item of the telemetry-health strip.
#[derive(Debug, Clone)]
pub(crate) struct HealthItem {
    pub(crate) label: &'static str,
    pub(crate) value: String,
    pub(crate) detail: String,
    pub(crate) warn: bool,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    tiles: Vec<Tile>,
    charts: Vec<Panel>,
    histograms: Vec<Panel>,
    health: Vec<HealthItem>,
    empty: bool,
    collector_url: String,
    breakdown_href: String,
}

/// Whether a higher value is worse (`Some(true)`), better, or neither.
fn higher_is_worse(metric: Metric) -> Option<bool> {
    match metric {
        Metric::SuccessRate => Some(false),
        Metric::Events | Metric::Attempts | Metric::Devices => None,
        _ => Some(true),
    }
}

/// The rules that judge a metric on this view: the fleet-wide ones, and
/// those whose filters are exactly the page's.
fn rules_for<'a>(rules: &'a [Rule], metric: Metric, query: &'a Query) -> impl Iterator<Item = &'a Rule> {
    rules.iter().filter(move |r| r.metric == metric && (r.filters == Default::default() || r.filters == query.filters))
}

/// A tile's colour: red when a paging rule's condition holds, amber for any
/// other rule, green when rules watch the metric and none holds, and no
/// colour when there are too few events for the rules to judge.
pub(crate) fn tile_level(rules: &[Rule], metric: Metric, query: &Query, summary: &Summary) -> (&'static str, String) {
    let watching: Vec<&Rule> = rules_for(rules, metric, query).collect();
    let Some(first) = watching.first() else { return ("", String::new()) };
    let Some(value) = summary.value(metric) else { return ("", format!("rule {}: no data", first.name)) };
    let mut level = "ok";
    let mut line = format!("alert {} {}", first.comparison.symbol(), Unit::of(metric).show(Some(first.threshold)));
    for rule in &watching {
        if summary.events < rule.min_events {
            return (
                "",
                format!(
                    "{} events: fewer than the {} rule {} needs",
                    count(summary.events),
                    rule.min_events,
                    rule.name
                ),
            );
        }
        if rule.condition().holds(value) {
            let this = if rule.severity == Severity::Page { "red" } else { "amber" };
            if this == "red" || level == "ok" {
                level = this;
                line = format!(
                    "{} {} {} ({})",
                    rule.name,
                    rule.comparison.symbol(),
                    Unit::of(metric).show(Some(rule.threshold)),
                    rule.severity.as_str()
                );
            }
        }
    }
    (level, line)
}

fn tile(name: &'static str, metric: Metric, now: &Summary, before: &Summary, rules: &[Rule], query: &Query) -> Tile {
    let unit = Unit::of(metric);
    let (value, previous) = (now.value(metric), before.value(metric));
    let change = unit.change(value, previous);
    let change_class = match (value, previous, higher_is_worse(metric)) {
        (Some(v), Some(p), Some(worse_up)) if (v - p).abs() > f64::EPSILON => {
            if (v > p) == worse_up {
                "worse"
            } else {
                "better"
            }
        }
        _ => "",
    };
    let (level, rule) = tile_level(rules, metric, query, now);
    // A change against a handful of events is noise, not news.
    let (change, change_class) = if before.events == 0 {
        ("no data in the previous window".to_string(), "")
    } else if before.events < MIN_PREVIOUS_EVENTS && now.events >= MIN_PREVIOUS_EVENTS {
        (format!("previous window: only {} events", count(before.events)), "")
    } else {
        (change.map(|c| format!("{c} vs previous")).unwrap_or_else(|| "no previous value".into()), change_class)
    };
    Tile { name, value: unit.show(value), change, change_class, level, rule }
}

/// Every tile of the overview, in reading order.
pub(crate) fn tiles(now: &Summary, before: &Summary, rules: &[Rule], query: &Query) -> Vec<Tile> {
    let t = |name, metric| tile(name, metric, now, before, rules, query);
    vec![
        t("Success rate", Metric::SuccessRate),
        t("Duration p50", Metric::DurationP50),
        t("Duration p90", Metric::DurationP90),
        t("Duration p99", Metric::DurationP99),
        t("Conflict rate", Metric::ConflictRate),
        t("Queue depth avg", Metric::QueueDepthAvg),
        t("Queue depth p95", Metric::QueueDepthP95),
        t("Devices over 1000 queued", Metric::QueueDepthOverThresholdShare),
        t("Staleness p50", Metric::StalenessP50),
        t("Staleness p90", Metric::StalenessP90),
        t("Staleness p99", Metric::StalenessP99),
        t("Never-synced devices", Metric::NeverSyncedDevices),
        t("Events", Metric::Events),
        t("Devices", Metric::Devices),
    ]
}

fn thresholds(rules: &[Rule], metric: Metric, query: &Query) -> Vec<(f64, String)> {
    rules_for(rules, metric, query)
        .map(|r| {
            (r.threshold, format!("{} {} {}", r.name, r.comparison.symbol(), Unit::of(metric).show(Some(r.threshold))))
        })
        .collect()
}

fn charts(rules: &[Rule], query: &Query, overview: &Overview) -> Vec<Panel> {
    let step_s = i64::from(overview.step_seconds);
    let from_s = query.from_ms.div_euclid(1000).div_euclid(step_s) * step_s;
    let to_s = query.to_ms.div_euclid(1000);
    // Every bucket of the window is in the series; an empty one is a gap.
    let line = |name: &'static str, metric: Metric| Series {
        name,
        points: overview
            .series
            .iter()
            .map(|p| (p.start_ms.div_euclid(1000), p.summary.as_ref().and_then(|s| s.value(metric))))
            .collect(),
    };
    let chart = |title: &str, unit: Unit, lines: Vec<Series>, marks: Vec<(f64, String)>| {
        let chart =
            LineChart { title: title.to_string(), unit, from_s, to_s, step_s, series: lines, thresholds: marks };
        Panel { title: title.to_string(), svg: chart.svg(), has_data: chart.has_data() }
    };
    let step_text = crate::format::ms(Some(step_s as f64 * 1000.0));
    vec![
        chart(
            &format!("Success rate (per {step_text})"),
            Unit::Ratio,
            vec![line("success rate", Metric::SuccessRate)],
            thresholds(rules, Metric::SuccessRate, query),
        ),
        chart(
            &format!("Sync duration p50 / p90 / p99 (per {step_text})"),
            Unit::Millis,
            vec![line("p50", Metric::DurationP50), line("p90", Metric::DurationP90), line("p99", Metric::DurationP99)],
            thresholds(rules, Metric::DurationP99, query),
        ),
        chart(
            &format!("Conflict rate (per {step_text})"),
            Unit::Ratio,
            vec![line("conflict rate", Metric::ConflictRate)],
            thresholds(rules, Metric::ConflictRate, query),
        ),
        chart(
            &format!("Upload queue depth, items (per {step_text})"),
            Unit::Plain,
            vec![line("avg", Metric::QueueDepthAvg), line("p95", Metric::QueueDepthP95)],
            thresholds(rules, Metric::QueueDepthP95, query),
        ),
        chart(
            &format!("Staleness p50 / p90 / p99 (per {step_text})"),
            Unit::Millis,
            vec![
                line("p50", Metric::StalenessP50),
                line("p90", Metric::StalenessP90),
                line("p99", Metric::StalenessP99),
            ],
            thresholds(rules, Metric::StalenessP99, query),
        ),
    ]
}

/// A bin bound in few characters: `500ms`, `2s`, `17m`, `6h`, `1d`.
pub(crate) fn compact_ms(v: f64) -> String {
    if v < 1000.0 {
        format!("{v:.0}ms")
    } else if v < 60_000.0 {
        format!("{:.0}s", v / 1000.0)
    } else if v < 3_600_000.0 {
        format!("{:.0}m", v / 60_000.0)
    } else if v < 86_400_000.0 {
        format!("{:.0}h", v / 3_600_000.0)
    } else {
        format!("{:.0}d", v / 86_400_000.0)
    }
}

fn bars(bins: &[Bin]) -> Vec<(String, f64)> {
    bins.iter().map(|b| (format!("<{}", compact_ms(b.high)), b.weight)).collect()
}

fn histograms(overview: &Overview) -> Vec<Panel> {
    let duration = BarChart {
        title: "Sync duration distribution (attempts)".into(),
        bars: bars(&overview.duration_histogram),
        what: "attempts",
    };
    let mut stale = bars(&overview.staleness_histogram);
    stale.push(("never".into(), overview.current.never_synced_devices as f64));
    let staleness =
        BarChart { title: "Staleness distribution (devices, latest report)".into(), bars: stale, what: "devices" };
    [duration, staleness]
        .into_iter()
        .map(|c| Panel { title: c.title.clone(), svg: c.svg(), has_data: c.has_data() })
        .collect()
}

fn health(loss: &TelemetryLoss, overview: &Overview) -> Vec<HealthItem> {
    let dropped = loss.total_dropped();
    let reasons =
        loss.dropped_by_reason.iter().map(|(r, n)| format!("{r}: {}", count(*n))).collect::<Vec<_>>().join(", ");
    let h = &overview.health;
    let late_share = h.late_share.unwrap_or(0.0);
    let mut items = vec![
        HealthItem {
            label: "Dropped by probes",
            value: count(dropped),
            detail: if dropped == 0 {
                "no device reported losing telemetry in this window".into()
            } else {
                format!("{} devices reported losses ({reasons})", count(loss.devices_reporting_loss))
            },
            warn: dropped > 0,
        },
        HealthItem {
            label: "Late-arriving events",
            value: format!("{} ({})", count(h.late_events), crate::format::pct(h.late_share)),
            detail: format!(
                "received more than {} after they happened (offline devices catching up): recent buckets still change",
                crate::format::ms(Some(h.late_threshold_ms as f64))
            ),
            warn: late_share > 0.05,
        },
    ];
    // Late uploads fill recent buckets over minutes: a low figure there
    // says "not in yet", not "traffic fell".
    let buckets: Vec<String> = h
        .recent_buckets
        .iter()
        .map(|b| {
            let at = crate::format::time_utc(b.start_ms);
            let hhmm = at.get(11..16).unwrap_or_default();
            let part = if b.partial { ", filling" } else { "" };
            match (b.completeness, b.expected_events) {
                (Some(c), Some(e)) => format!("{hhmm}: {:.0} % ({} of ~{:.0}{part})", c * 100.0, count(b.events), e),
                _ => format!("{hhmm}: {} events{part}", count(b.events)),
            }
        })
        .collect();
    let low = h.recent_buckets.iter().any(|b| !b.partial && b.completeness.is_some_and(|c| c < 0.5));
    items.push(HealthItem {
        label: "Latest buckets vs typical",
        value: if low { "incomplete".into() } else { "normal".into() },
        detail: if buckets.is_empty() { "no buckets yet".into() } else { buckets.join(" · ") },
        warn: low,
    });
    items
}

/// The Overview takes only the shared parameters (its step is the default
/// one for the window).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct OverviewView {}

impl PageView for OverviewView {
    const PATH: &'static str = "/";
    const TITLE: &'static str = "Overview";
}

/// `GET /`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    headers: HeaderMap,
    Page { query, layout, .. }: Page<OverviewView>,
) -> Result<Response, PageError> {
    let step = default_step_seconds(query.to_ms - query.from_ms);
    // The same function as `/api/v1/overview` (and the benchmark), plus the
    // probes' loss reports.
    let (overview, loss) = tokio::join!(
        overview(state.store.as_ref(), &query, step),
        state.store.telemetry_loss(&query.project, query.from_ms, query.to_ms),
    );
    let (overview, loss) = (overview?, loss?);
    let breakdown_href = layout.link.to("/breakdown", &[]);
    render(&OverviewPage {
        tiles: tiles(&overview.current, &overview.previous, &state.rules, &query),
        charts: charts(&state.rules, &query, &overview),
        histograms: histograms(&overview),
        health: health(&loss, &overview),
        empty: overview.current.events == 0,
        collector_url: collector_url(&headers),
        breakdown_href,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bin_bounds_read_short() {
        assert_eq!(compact_ms(500.0), "500ms");
        assert_eq!(compact_ms(2000.0), "2s");
        assert_eq!(compact_ms(1_000_000.0), "17m");
        assert_eq!(compact_ms(86_400_000.0), "1d");
    }
}
