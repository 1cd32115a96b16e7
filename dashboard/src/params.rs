//! Query parameters shared by every API endpoint and page: project, window
//! and filters, all in the URL so a link pasted into an incident channel
//! shows the same thing to the next person.

use serde::Deserialize;
use synchealth_schema::{unix_ms, Network, ProjectName};
use synchealth_store::metrics::DEFAULT_QUEUE_THRESHOLD;
use synchealth_store::{Filters, Query};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{AppError, CurrentUser};

/// The project shown when none is named.
pub const DEFAULT_PROJECT: &str = "default";
/// Default window: the last hour.
const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;
/// Longest window one request may ask for.
const MAX_WINDOW_MS: i64 = 90 * 24 * 3600 * 1000;

/// The raw parameters, as they come in the URL.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct QueryParams {
    /// Project name (default: `default`).
    pub project: Option<String>,
    /// A preset window ending now: `15m`, `1h`, `6h`, `24h` or `7d`
    /// (default `1h`); ignored when `from` is given.
    pub range: Option<String>,
    /// Window start, RFC 3339 (default: `to` minus `range`).
    pub from: Option<String>,
    /// Window end, RFC 3339 (default: now).
    pub to: Option<String>,
    /// Only this app version.
    pub app_version: Option<String>,
    /// Only this OS.
    pub os: Option<String>,
    /// Only this network type.
    pub network: Option<String>,
}

impl QueryParams {
    /// Checks the parameters and the user's access, and builds the store query.
    pub fn to_query(&self, user: &CurrentUser, now: OffsetDateTime) -> Result<Query, AppError> {
        let project_name = non_empty(&self.project).unwrap_or(DEFAULT_PROJECT);
        let project = ProjectName::parse(project_name)
            .map_err(|e| AppError::BadParameter { parameter: "project", reason: e.to_string() })?;
        if !user.may_read(&project) {
            return Err(AppError::Forbidden(project.to_string()));
        }
        let to_ms = match non_empty(&self.to) {
            Some(t) => parse_time("to", t)?,
            None => unix_ms(now),
        };
        let from_ms = match (non_empty(&self.from), non_empty(&self.range)) {
            (Some(t), _) => parse_time("from", t)?,
            (None, Some(range)) => to_ms - preset_ms(range)?,
            (None, None) => to_ms - DEFAULT_WINDOW_MS,
        };
        if from_ms >= to_ms {
            return Err(AppError::BadParameter { parameter: "from", reason: "must be before `to`".into() });
        }
        if to_ms - from_ms > MAX_WINDOW_MS {
            return Err(AppError::BadParameter {
                parameter: "from",
                reason: "the window is longer than 90 days".into(),
            });
        }
        let network = match non_empty(&self.network) {
            Some(n) => Some(Network::parse(n).ok_or_else(|| AppError::BadParameter {
                parameter: "network",
                reason: format!(
                    "unknown network {n:?}, expected one of {}",
                    Network::ALL.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            })?),
            None => None,
        };
        Ok(Query {
            project,
            from_ms,
            to_ms,
            filters: Filters {
                app_version: non_empty(&self.app_version).map(str::to_string),
                os: non_empty(&self.os).map(str::to_string),
                network,
            },
            queue_threshold: DEFAULT_QUEUE_THRESHOLD,
        })
    }
}

/// The time range presets, by URL name, with their length.
pub(crate) const RANGE_PRESETS: [(&str, i64); 5] = [
    ("15m", 15 * 60 * 1000),
    ("1h", 3600 * 1000),
    ("6h", 6 * 3600 * 1000),
    ("24h", 24 * 3600 * 1000),
    ("7d", 7 * 24 * 3600 * 1000),
];

fn preset_ms(name: &str) -> Result<i64, AppError> {
    RANGE_PRESETS.iter().find(|(n, _)| *n == name).map(|(_, ms)| *ms).ok_or_else(|| AppError::BadParameter {
        parameter: "range",
        reason: format!(
            "unknown range {name:?}, expected one of {}",
            RANGE_PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// Empty form fields mean "not given".
pub(crate) fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

fn parse_time(parameter: &'static str, text: &str) -> Result<i64, AppError> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(unix_ms)
        .or_else(|_| utc_without_offset(text).ok_or(()))
        .map_err(|_| AppError::BadParameter {
            parameter,
            reason: format!(
                "expected an RFC 3339 timestamp such as 2026-11-21T10:00:00Z (or 2026-11-21T10:00, read as UTC), got {text:?}"
            ),
        })
}

/// `2026-11-21T10:00` or `2026-11-21 10:00[:00]`, as the pages' custom range
/// form sends it: UTC, like every time the pages show.
fn utc_without_offset(text: &str) -> Option<i64> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let with_seconds = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let text = text.trim().replacen(' ', "T", 1);
    time::PrimitiveDateTime::parse(&text, &format)
        .or_else(|_| time::PrimitiveDateTime::parse(&text, &with_seconds))
        .ok()
        .map(|t| unix_ms(t.assume_utc()))
}

/// Formats Unix milliseconds as RFC 3339 UTC.
pub(crate) fn format_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_store::User;
    use time::macros::datetime;

    fn admin() -> CurrentUser {
        CurrentUser(User { username: "admin".into(), password_hash: String::new(), admin: true, projects: vec![] })
    }

    #[test]
    fn the_default_window_is_the_last_hour_of_the_default_project() {
        let now = datetime!(2026-11-21 10:00 UTC);
        let q = QueryParams::default().to_query(&admin(), now).unwrap();
        assert_eq!(q.project.as_str(), "default");
        assert_eq!(q.to_ms - q.from_ms, 3_600_000);
        assert_eq!(q.to_ms, unix_ms(now));
        let day = QueryParams { range: Some("24h".into()), ..Default::default() }.to_query(&admin(), now).unwrap();
        assert_eq!(day.to_ms - day.from_ms, 24 * 3_600_000);
        let form = QueryParams {
            from: Some("2026-11-21T09:00".into()),
            to: Some("2026-11-21 09:30".into()),
            ..Default::default()
        };
        let q = form.to_query(&admin(), now).unwrap();
        assert_eq!(q.from_ms, unix_ms(datetime!(2026-11-21 09:00 UTC)));
        assert_eq!(q.to_ms - q.from_ms, 30 * 60_000);
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let now = datetime!(2026-11-21 10:00 UTC);
        let bad = |p: QueryParams| match p.to_query(&admin(), now) {
            Err(AppError::BadParameter { parameter, .. }) => parameter,
            other => panic!("expected a bad parameter, got {other:?}"),
        };
        assert_eq!(bad(QueryParams { from: Some("yesterday".into()), ..Default::default() }), "from");
        assert_eq!(bad(QueryParams { network: Some("5g".into()), ..Default::default() }), "network");
        assert_eq!(bad(QueryParams { range: Some("2w".into()), ..Default::default() }), "range");
        assert_eq!(bad(QueryParams { project: Some("Not Valid".into()), ..Default::default() }), "project");
        let reversed = QueryParams {
            from: Some("2026-11-21T10:00:00Z".into()),
            to: Some("2026-11-21T09:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(bad(reversed), "from");
    }

    #[test]
    fn a_user_without_the_project_is_forbidden() {
        let user = CurrentUser(User {
            username: "ana".into(),
            password_hash: String::new(),
            admin: false,
            projects: vec![ProjectName::parse("mobile").unwrap()],
        });
        let now = datetime!(2026-11-21 10:00 UTC);
        assert!(matches!(QueryParams::default().to_query(&user, now), Err(AppError::Forbidden(_))));
        let mobile = QueryParams { project: Some("mobile".into()), ..Default::default() };
        assert!(mobile.to_query(&user, now).is_ok());
    }
}
