//! `GET /api/v1/releases?a=&b=`: release comparison (see [`crate::stats`]).
//! One breakdown by app version over the window (the `app_version` filter
//! does not apply; the other filters do), then two of its segments compared.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_store::{Dimension, Filters, GroupKey, Grouping, Query, Summary};
use time::OffsetDateTime;

use super::Window;
use crate::params::{param, ParamValue, Params};
use crate::stats::{compare, compare_versions, Comparison};
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// `a`: the baseline app version (checked against the versions with events
/// in the window when compared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Baseline(pub String);

/// `b`: the app version under test (checked like [`Baseline`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate(pub String);

impl ParamValue for Baseline {
    const NAME: &'static str = "a";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Baseline(text.to_string()))
    }
}

impl ParamValue for Candidate {
    const NAME: &'static str = "b";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Candidate(text.to_string()))
    }
}

/// Parameters of `/api/v1/releases` and the Releases page besides the
/// window (whose `app_version` is ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ReleasesParams {
    /// Baseline version (default: the one before `b`).
    #[serde(deserialize_with = "param")]
    pub a: Option<Baseline>,
    /// Version under test (default: the newest in the window).
    #[serde(deserialize_with = "param")]
    pub b: Option<Candidate>,
}

/// The body of `/api/v1/releases`.
#[derive(Debug, Clone, Serialize)]
pub struct ReleasesResponse {
    /// What the comparison covers.
    pub window: Window,
    /// Every app version with events in the window, newest first
    /// (semantic-version order, lexical for other names).
    pub versions: Vec<String>,
    /// The comparison; `None` when fewer than two versions have events and
    /// none were named.
    pub comparison: Option<Comparison>,
}

/// Compares two versions over a checked query (its `app_version` filter
/// left out): what `/api/v1/releases` answers and the Releases page renders.
pub async fn release_comparison_over(
    state: &DashboardState,
    query: &Query,
    params: &ReleasesParams,
) -> Result<ReleasesResponse, AppError> {
    let query = Query { filters: Filters { app_version: None, ..query.filters.clone() }, ..query.clone() };
    let groups = state.store.aggregate(&query, Grouping::By(Dimension::AppVersion)).await?;
    let summaries: BTreeMap<String, Summary> = groups
        .into_iter()
        .filter_map(|(key, a)| match key {
            GroupKey::Segment(version) => Some((version, Summary::from_aggregate(&a))),
            _ => None,
        })
        .collect();
    let mut versions: Vec<String> = summaries.keys().cloned().collect();
    versions.sort_by(|x, y| compare_versions(y, x));
    let named = |value: Option<&str>, parameter: &'static str| -> Result<Option<String>, AppError> {
        match value {
            Some(v) if summaries.contains_key(v) => Ok(Some(v.to_string())),
            Some(v) => Err(AppError::BadParameter {
                parameter,
                reason: format!(
                    "no events of app version {v:?} in this window; versions with events: {}",
                    versions.join(", ")
                ),
            }),
            None => Ok(None),
        }
    };
    let a = named(params.a.as_ref().map(|v| v.0.as_str()), "a")?;
    let b = named(params.b.as_ref().map(|v| v.0.as_str()), "b")?;
    let b = b.or_else(|| versions.first().cloned());
    // The default baseline is the version just older than `b`.
    let a = a.or_else(|| {
        let b = b.as_deref()?;
        versions.iter().find(|v| compare_versions(v, b).is_lt()).cloned()
    });
    let comparison = match (a, b) {
        (Some(a), Some(b)) => {
            let (sa, sb) = (&summaries[&a], &summaries[&b]);
            Some(compare(&a, sa, &b, sb))
        }
        _ => None,
    };
    Ok(ReleasesResponse { window: Window::of(&query), versions, comparison })
}

/// `GET /api/v1/releases`.
pub(crate) async fn releases(
    State(state): State<DashboardState>,
    user: CurrentUser,
    Params(window): Params<QueryParams>,
    Params(params): Params<ReleasesParams>,
) -> Result<Json<ReleasesResponse>, AppError> {
    let query = window.to_query(&user, OffsetDateTime::now_utc())?;
    Ok(Json(release_comparison_over(&state, &query, &params).await?))
}
