//! `GET /api/v1/releases?a=&b=`: release comparison (see [`crate::stats`]).
//! One breakdown by app version over the window (the `app_version` filter
//! does not apply; the other filters do), then two of its segments compared.

use std::collections::BTreeMap;

use axum::extract::{Query as UrlQuery, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use synchealth_store::{Dimension, GroupKey, Grouping, Summary};
use time::OffsetDateTime;

use super::Window;
use crate::params::non_empty;
use crate::stats::{compare, compare_versions, Comparison};
use crate::{AppError, CurrentUser, DashboardState, QueryParams};

/// Parameters of `/api/v1/releases`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReleasesParams {
    /// Project, window and filters (`app_version` is ignored).
    #[serde(flatten)]
    pub common: QueryParams,
    /// Baseline version (default: the one before `b`).
    pub a: Option<String>,
    /// Version under test (default: the newest in the window).
    pub b: Option<String>,
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

/// Compares two versions for a request: what the Breakdown page renders.
pub async fn release_comparison(
    state: &DashboardState,
    user: &CurrentUser,
    params: &ReleasesParams,
) -> Result<ReleasesResponse, AppError> {
    let mut query = params.common.to_query(user, OffsetDateTime::now_utc())?;
    query.filters.app_version = None;
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
    let named = |value: &Option<String>, parameter: &'static str| -> Result<Option<String>, AppError> {
        match non_empty(value) {
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
    let (a, b) = (named(&params.a, "a")?, named(&params.b, "b")?);
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
    UrlQuery(params): UrlQuery<ReleasesParams>,
) -> Result<Json<ReleasesResponse>, AppError> {
    Ok(Json(release_comparison(&state, &user, &params).await?))
}
