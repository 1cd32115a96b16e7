//! `GET /errors`: what fails syncs. Failed attempts by error kind, then by
//! error group (kind and message fingerprint: the message with its ids and
//! numbers taken out, so one bug is one row however many records it hit),
//! each with an example message, a sparkline of when it happens, when it
//! was first and last seen and the releases it comes from. Rendered from
//! [`errors_over`], the same answer as `/api/v1/errors`.
//!
//! Messages, fingerprints and app versions come from devices, and anyone
//! holding an ingest key can send one: they are shown only through the
//! template's escaping, never marked safe.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::overview::Tile;
use super::{render, Layout, Page, PageError, PageView};
use crate::api::signals::{errors_over, ErrorLine, ErrorsResponse, SignalParams};
use crate::charts::sparkline;
use crate::format::{count, num, pct, time_utc};
use crate::DashboardState;

/// Releases listed per error group; the JSON has them all.
const TOP_RELEASES: usize = 3;

/// The Errors page's own parameters: those of its JSON endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorsView {
    #[serde(flatten)]
    signal: SignalParams,
}

impl PageView for ErrorsView {
    const PATH: &'static str = "/errors";
    const TITLE: &'static str = "Errors";
}

/// A line of the error kinds table.
#[derive(Debug, Clone)]
pub(crate) struct KindRow {
    kind: String,
    attempts: String,
    share: String,
    devices: String,
}

/// A line of the error groups table.
#[derive(Debug, Clone)]
pub(crate) struct GroupRow {
    kind: String,
    /// Empty: no message, or stored before fingerprints existed.
    fingerprint: String,
    example: String,
    attempts: String,
    share: String,
    devices: String,
    /// Built by [`sparkline`] from numbers only: no device text in it.
    sparkline: String,
    first_seen: String,
    last_seen: String,
    /// `(app version, its share of the group)`, most first.
    releases: Vec<(String, String)>,
    more_releases: usize,
}

#[derive(Template)]
#[template(path = "errors.html")]
struct ErrorsPage {
    layout: Layout,
    tiles: Vec<Tile>,
    kinds: Vec<KindRow>,
    groups: Vec<GroupRow>,
    json_href: String,
}

/// A kind as shown: failures that named none say so.
fn kind_name(kind: Option<&String>) -> String {
    kind.cloned().unwrap_or_else(|| "not given".into())
}

/// An RFC 3339 time of the API as the pages write times.
fn shown_time(rfc3339: &str) -> String {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .map(|t| time_utc((t.unix_timestamp_nanos() / 1_000_000) as i64))
        .unwrap_or_else(|_| rfc3339.to_string())
}

fn tiles(r: &ErrorsResponse) -> Vec<Tile> {
    let tile =
        |name, value, change: String| Tile { name, value, change, change_class: "", level: "", rule: String::new() };
    let top = r.kinds.first();
    vec![
        tile(
            "Failed attempts",
            num(Some(r.failed_attempts)),
            match r.kinds.len() {
                1 => "of one error kind".to_string(),
                n => format!("of {n} error kinds"),
            },
        ),
        tile(
            "Most common kind",
            top.map(|k| kind_name(k.kind.as_ref())).unwrap_or_else(|| crate::format::NONE.into()),
            top.map(|k| format!("{} of failed attempts", pct(k.share))).unwrap_or_default(),
        ),
        tile(
            "Largest error group",
            r.errors.first().map(|e| pct(e.share)).unwrap_or_else(|| crate::format::NONE.into()),
            "of failed attempts".into(),
        ),
    ]
}

fn group_row(e: &ErrorLine, from_ms: i64, to_ms: i64, step_s: i64) -> GroupRow {
    let points: Vec<(i64, f64)> = e.series.iter().map(|p| (p.start_ms.div_euclid(1000), p.attempts)).collect();
    let label = format!("failed attempts per {}", crate::format::ms(Some(step_s as f64 * 1000.0)));
    GroupRow {
        kind: kind_name(e.kind.as_ref()),
        fingerprint: e.fingerprint.clone(),
        example: e.example.clone(),
        attempts: num(Some(e.attempts)),
        share: pct(e.share),
        devices: count(e.devices),
        sparkline: sparkline(&points, from_ms.div_euclid(1000), to_ms.div_euclid(1000), step_s, &label),
        first_seen: shown_time(&e.first_seen),
        last_seen: shown_time(&e.last_seen),
        releases: e.releases.iter().take(TOP_RELEASES).map(|r| (r.app_version.clone(), pct(r.share))).collect(),
        more_releases: e.releases.len().saturating_sub(TOP_RELEASES),
    }
}

/// `GET /errors`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { params, query, layout, .. }: Page<ErrorsView>,
) -> Result<Response, PageError> {
    let params = params.signal;
    let response = errors_over(&state, &query, &params).await?;
    let step_s = i64::from(response.step_seconds);
    let kinds = response
        .kinds
        .iter()
        .map(|k| KindRow {
            kind: kind_name(k.kind.as_ref()),
            attempts: num(Some(k.attempts)),
            share: pct(k.share),
            devices: count(k.devices),
        })
        .collect();
    let groups = response.errors.iter().map(|e| group_row(e, query.from_ms, query.to_ms, step_s)).collect();
    let step_text = params.step.map(|s| s.0.to_string());
    let limit_text = params.limit.map(|l| l.0.to_string());
    let json_href = layout
        .link
        .to("/api/v1/errors", &[("step", step_text.as_deref()), ("limit", limit_text.as_deref()), ("refresh", None)]);
    render(&ErrorsPage { tiles: tiles(&response), kinds, groups, json_href, layout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_times_read_as_the_other_pages_write_them() {
        assert_eq!(shown_time("2026-11-22T01:05:09Z"), "2026-11-22 01:05:09 UTC");
        assert_eq!(shown_time("not a time"), "not a time");
    }
}
