//! `GET /conflicts`: which entities conflict and how the conflicts are
//! settled. The question behind it is whether users' edits are being
//! silently overwritten: the overwrite share (conflicts resolved by keeping
//! one side) is the headline, against the previous window as its trend.
//! Everything is rendered from [`conflicts_over`], the same answer as
//! `/api/v1/conflicts`, so the page and its JSON never disagree.

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use synchealth_schema::{ConflictKind, ConflictResolution};
use synchealth_store::{GroupKey, Grouping};

use super::overview::Tile;
use super::{render, Layout, Page, PageError, PageView};
use crate::api::signals::{conflicts_over, ConflictPoint, ConflictsResponse, EntityLine, SignalParams};
use crate::charts::{LineChart, Series};
use crate::format::{count, num, pct, Unit};
use crate::DashboardState;

/// The key the API gives conflicts sent without details.
const UNCLASSIFIED: &str = "unclassified";

/// The Conflicts page's own parameters: those of its JSON endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ConflictsView {
    #[serde(flatten)]
    signal: SignalParams,
}

impl PageView for ConflictsView {
    const PATH: &'static str = "/conflicts";
    const TITLE: &'static str = "Conflicts";
}

/// A line of the totals by kind or by resolution.
#[derive(Debug, Clone)]
pub(crate) struct TotalRow {
    name: String,
    conflicts: String,
    share: String,
    /// Why the line matters, e.g. that a resolution overwrites.
    note: &'static str,
}

/// A line of a top-entities table.
#[derive(Debug, Clone)]
pub(crate) struct EntityRow {
    entity: String,
    conflicts: String,
    overwrite_share: String,
    attempts: String,
    rate: String,
    devices: String,
}

/// A chart panel, as the overview's.
#[derive(Debug, Clone)]
pub(crate) struct Panel {
    title: String,
    svg: String,
    has_data: bool,
}

#[derive(Template)]
#[template(path = "conflicts.html")]
struct ConflictsPage {
    layout: Layout,
    tiles: Vec<Tile>,
    empty: bool,
    attempts: String,
    charts: Vec<Panel>,
    kinds: Vec<TotalRow>,
    resolutions: Vec<TotalRow>,
    by_conflicts: Vec<EntityRow>,
    by_rate: Vec<EntityRow>,
    /// Where an entity row leads: the segments' conflict rates.
    entity_href: String,
    json_href: String,
}

/// The overwrite share's trend against the previous window: an arrow, the
/// change in points and the previous share itself. A rising share is
/// worse: more edits may have been lost.
fn overwrite_trend(now: Option<f64>, before: Option<f64>) -> (String, &'static str) {
    match (now, before) {
        (Some(n), Some(b)) => {
            let points = (n - b) * 100.0;
            let previous = pct(Some(b));
            if points.abs() < 0.05 {
                (format!("= 0.0 pp vs previous ({previous})"), "")
            } else if points > 0.0 {
                (format!("▲ {points:.1} pp vs previous ({previous})"), "worse")
            } else {
                (format!("▼ {:.1} pp vs previous ({previous})", -points), "better")
            }
        }
        (_, None) => ("no classified conflicts in the previous window".into(), ""),
        (None, Some(b)) => (format!("previous window: {}", pct(Some(b))), ""),
    }
}

fn tiles(r: &ConflictsResponse) -> Vec<Tile> {
    let (change, change_class) = overwrite_trend(r.overwrite_share, r.previous_overwrite_share);
    let tile =
        |name, value, change, change_class| Tile { name, value, change, change_class, level: "", rule: String::new() };
    vec![
        tile("Conflicts", num(Some(r.conflicts)), format!("in {} attempts", num(Some(r.attempts))), ""),
        tile("Overwrite share", pct(r.overwrite_share), change, change_class),
        tile(
            "Unclassified conflicts",
            num(Some(r.unclassified)),
            match (r.conflicts > 0.0).then(|| r.unclassified / r.conflicts) {
                Some(share) => format!("{} of conflicts, sent without details", pct(Some(share))),
                None => "sent without details".into(),
            },
            "",
        ),
    ]
}

/// The keys of `totals`, most conflicts first (ties by name), unclassified last.
fn ranked(totals: &BTreeMap<String, f64>) -> Vec<(&str, f64)> {
    let mut keys: Vec<(&str, f64)> = totals.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    keys.sort_by(|a, b| (a.0 == UNCLASSIFIED).cmp(&(b.0 == UNCLASSIFIED)).then(b.1.total_cmp(&a.1)).then(a.0.cmp(b.0)));
    keys
}

fn total_rows(totals: &BTreeMap<String, f64>, all: f64, note: impl Fn(&str) -> &'static str) -> Vec<TotalRow> {
    ranked(totals)
        .into_iter()
        .map(|(name, v)| TotalRow {
            name: name.to_string(),
            conflicts: num(Some(v)),
            share: pct((all > 0.0).then(|| v / all)),
            note: note(name),
        })
        .collect()
}

fn resolution_note(name: &str) -> &'static str {
    match ConflictResolution::parse(name) {
        Some(r) if r.overwrites() => "overwrites: one side's edit dropped",
        Some(ConflictResolution::Unresolved) => "left unresolved",
        Some(_) => "",
        None if name == UNCLASSIFIED => "sent without details",
        None => "",
    }
}

/// The legend's name of a kind or resolution. Legends take static names, and
/// the store returns only wire spellings, which these are.
fn legend_name(key: &str) -> &'static str {
    if key == UNCLASSIFIED {
        return UNCLASSIFIED;
    }
    ConflictKind::parse(key)
        .map(ConflictKind::as_str)
        .or_else(|| ConflictResolution::parse(key).map(ConflictResolution::as_str))
        .unwrap_or("unknown")
}

/// One line per key of `totals`, over every bucket of the window. The chart
/// tells three lines apart, so beyond three keys the two largest keep
/// their own line and the rest are summed into one: the chart shows where
/// conflicts come from, the table beside it every key.
fn lines(
    buckets: &[i64],
    points: &BTreeMap<i64, &ConflictPoint>,
    with_events: &BTreeSet<i64>,
    totals: &BTreeMap<String, f64>,
    pick: impl Fn(&ConflictPoint) -> &BTreeMap<String, f64>,
    rest: &'static str,
) -> Vec<Series> {
    let keys: Vec<&str> = ranked(totals).into_iter().map(|(k, _)| k).collect();
    let groups: Vec<(&'static str, Vec<&str>)> = if keys.len() <= 3 {
        keys.iter().map(|k| (legend_name(k), vec![*k])).collect()
    } else {
        let mut by_size = keys.clone();
        by_size.sort_by(|a, b| totals[*b].total_cmp(&totals[*a]).then(a.cmp(b)));
        vec![
            (legend_name(by_size[0]), vec![by_size[0]]),
            (legend_name(by_size[1]), vec![by_size[1]]),
            (rest, by_size[2..].to_vec()),
        ]
    };
    groups
        .into_iter()
        .map(|(name, members)| Series {
            name,
            points: buckets
                .iter()
                .map(|b| {
                    // A bucket with events but no conflicts is a real zero;
                    // one without events is a gap, not good news.
                    let value = match points.get(b) {
                        Some(p) => Some(members.iter().map(|k| pick(p).get(*k).copied().unwrap_or(0.0)).sum()),
                        None if with_events.contains(b) => Some(0.0),
                        None => None,
                    };
                    (*b, value)
                })
                .collect(),
        })
        .collect()
}

fn charts(r: &ConflictsResponse, from_ms: i64, to_ms: i64, with_events: &BTreeSet<i64>) -> Vec<Panel> {
    let step_s = i64::from(r.step_seconds);
    let from_s = from_ms.div_euclid(1000).div_euclid(step_s) * step_s;
    let to_s = to_ms.div_euclid(1000);
    let buckets: Vec<i64> = (0..).map(|i| from_s + i * step_s).take_while(|s| *s < to_s).collect();
    let points: BTreeMap<i64, &ConflictPoint> = r.series.iter().map(|p| (p.start_ms.div_euclid(1000), p)).collect();
    let step_text = crate::format::ms(Some(step_s as f64 * 1000.0));
    let chart = |title: String, series: Vec<Series>| {
        let chart =
            LineChart { title: title.clone(), unit: Unit::Plain, from_s, to_s, step_s, series, thresholds: vec![] };
        Panel { title, svg: chart.svg(), has_data: chart.has_data() }
    };
    vec![
        chart(
            format!("Conflicts by kind (per {step_text})"),
            lines(&buckets, &points, with_events, &r.by_kind, |p| &p.by_kind, "all other kinds"),
        ),
        chart(
            format!("Conflicts by resolution (per {step_text})"),
            lines(&buckets, &points, with_events, &r.by_resolution, |p| &p.by_resolution, "all other resolutions"),
        ),
    ]
}

fn entity_rows(lines: &[EntityLine]) -> Vec<EntityRow> {
    lines
        .iter()
        .map(|e| EntityRow {
            entity: e.entity.clone(),
            conflicts: num(Some(e.conflicts)),
            overwrite_share: pct(e.overwrite_share),
            attempts: num(Some(e.attempts)),
            rate: pct(e.conflict_rate),
            devices: count(e.devices),
        })
        .collect()
}

/// `GET /conflicts`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { params, query, layout, .. }: Page<ConflictsView>,
) -> Result<Response, PageError> {
    let params = params.signal;
    let step = params.step_seconds(&query)?;
    // Which buckets had events at all, so an empty bucket of the charts
    // reads as zero conflicts or as no data, whichever it is.
    let (response, buckets) = tokio::try_join!(conflicts_over(&state, &query, &params), async {
        state.store.aggregate(&query, Grouping::Time { step_seconds: step }).await.map_err(crate::AppError::from)
    })?;
    let with_events: BTreeSet<i64> = buckets
        .iter()
        .filter_map(|(key, _)| match key {
            GroupKey::Time(s) => Some(*s),
            _ => None,
        })
        .collect();
    let link = &layout.link;
    let step_text = params.step.map(|s| s.0.to_string());
    let limit_text = params.limit.map(|l| l.0.to_string());
    let json_href = link.to(
        "/api/v1/conflicts",
        &[("step", step_text.as_deref()), ("limit", limit_text.as_deref()), ("refresh", None)],
    );
    let entity_href =
        link.to("/breakdown", &[("by", Some("app_version")), ("sort", Some("conflict_rate")), ("dir", Some("desc"))]);
    let all = response.conflicts;
    render(&ConflictsPage {
        tiles: tiles(&response),
        empty: all <= 0.0,
        attempts: num(Some(response.attempts)),
        charts: charts(&response, query.from_ms, query.to_ms, &with_events),
        kinds: total_rows(&response.by_kind, all, |k| if k == UNCLASSIFIED { "sent without details" } else { "" }),
        resolutions: total_rows(&response.by_resolution, all, resolution_note),
        by_conflicts: entity_rows(&response.entities_by_conflicts),
        by_rate: entity_rows(&response.entities_by_rate),
        entity_href,
        json_href,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_overwrite_trend_points_up_when_more_edits_may_be_lost() {
        assert_eq!(overwrite_trend(Some(0.5), Some(0.459)), ("▲ 4.1 pp vs previous (45.9 %)".into(), "worse"));
        assert_eq!(overwrite_trend(Some(0.25), Some(0.5)), ("▼ 25.0 pp vs previous (50.0 %)".into(), "better"));
        assert_eq!(overwrite_trend(Some(0.5), None).1, "");
    }

    #[test]
    fn unclassified_conflicts_rank_last_whatever_their_number() {
        let totals: BTreeMap<String, f64> =
            [("unclassified".to_string(), 9.0), ("constraint".into(), 1.0), ("update_update".into(), 3.0)].into();
        let names: Vec<&str> = ranked(&totals).into_iter().map(|(k, _)| k).collect();
        assert_eq!(names, ["update_update", "constraint", "unclassified"]);
    }
}
