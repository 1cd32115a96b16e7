//! Query parameters: project, window and filters, shared by every API
//! endpoint and page, all in the URL so a link pasted into an incident
//! channel shows the same thing to the next person; and the typed values of
//! every other URL parameter.
//!
//! Shape: each parameter's value is a type that can only hold a valid value
//! ([`ParamValue`]: its URL name and how its text is read, with the message a
//! person gets when it is wrong). Endpoints take plain `Deserialize` structs
//! of such values (`#[serde(default, deserialize_with = "param")]`), read
//! from the query string by [`Params`], whose rejection is
//! [`AppError::BadParameter`] naming the parameter: a JSON 400 for the API,
//! and, through the pages' preamble extractor (`pages::Page`), the HTML 400
//! page. A handler takes one `Params<_>` per concern (the window here, its
//! own parameters beside it) rather than one flattened struct, so a page and
//! its JSON share the structs without sharing the parameters only one of
//! them takes. Checks across parameters (`from` before `to`, the user's
//! access to the project, a step against the window) stay in the code that
//! builds the store [`Query`].
//!
//! Why the name travels inside serde's message: `serde_urlencoded` errors are
//! text only, so [`param`] writes `name`, a unit separator and the reason,
//! and [`from_query_string`] reads the name back as one of [`PARAMETERS`];
//! serde's own errors (a repeated key) are a 400 naming `query`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use synchealth_schema::{unix_ms, Network, ProjectName};
use synchealth_store::metrics::{Metric, DEFAULT_QUEUE_THRESHOLD};
use synchealth_store::{Dimension, Filters, Query};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::{AppError, CurrentUser};

/// The project shown when none is named.
pub const DEFAULT_PROJECT: &str = "default";
/// Default window: the last hour.
const DEFAULT_WINDOW_MS: i64 = 3600 * 1000;
/// Longest window one request may ask for.
const MAX_WINDOW_MS: i64 = 90 * 24 * 3600 * 1000;

/// Every URL parameter a [`ParamValue`] is named after.
pub(crate) const PARAMETERS: [&str; 20] = [
    "project",
    "range",
    "from",
    "to",
    "app_version",
    "os",
    "network",
    "refresh",
    "by",
    "sort",
    "dir",
    "a",
    "b",
    "list",
    "limit",
    "silent_for",
    "format",
    "step",
    "metric",
    "include",
];

/// Separates the parameter's name from the reason in a serde message.
const SEPARATOR: char = '\u{1f}';

/// The value of one URL parameter, read from its (trimmed, non-empty) text.
pub(crate) trait ParamValue: Sized {
    /// The parameter's name in URLs (one of [`PARAMETERS`]).
    const NAME: &'static str;
    /// The value, or why the text is not one (shown to people).
    fn parse(text: &str) -> Result<Self, String>;
}

/// A parameter's value: `None` when absent or empty (an empty form field
/// means "not given"), else the parsed value or a 400 naming it.
pub(crate) fn read<T: ParamValue>(text: &str) -> Result<Option<T>, AppError> {
    match text.trim() {
        "" => Ok(None),
        text => T::parse(text).map(Some).map_err(|reason| AppError::BadParameter { parameter: T::NAME, reason }),
    }
}

/// `deserialize_with` for an `Option<T>` field: see [`read`].
pub(crate) fn param<'de, D: Deserializer<'de>, T: ParamValue>(deserializer: D) -> Result<Option<T>, D::Error> {
    let text = String::deserialize(deserializer)?;
    read(&text).map_err(|e| match e {
        AppError::BadParameter { parameter, reason } => D::Error::custom(format!("{parameter}{SEPARATOR}{reason}")),
        other => D::Error::custom(format!("{other:?}")),
    })
}

/// Reads a query string into `T`; a bad value is a 400 that names it.
pub(crate) fn from_query_string<T: DeserializeOwned>(raw: &str) -> Result<T, AppError> {
    serde_urlencoded::from_str(raw).map_err(|e| {
        let text = e.to_string();
        let named = text
            .split_once(SEPARATOR)
            .and_then(|(name, reason)| PARAMETERS.iter().find(|p| **p == name).map(|p| (*p, reason)));
        match named {
            Some((parameter, reason)) => AppError::BadParameter { parameter, reason: reason.to_string() },
            None => AppError::BadParameter { parameter: "query", reason: format!("unreadable query string: {text}") },
        }
    })
}

/// Typed query parameters; a bad one is [`AppError::BadParameter`] (the JSON
/// 400; pages render it as the HTML 400 page).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        from_query_string(parts.uri.query().unwrap_or_default()).map(Params)
    }
}

/// Project, window and filters, as typed values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct QueryParams {
    /// Project name (default: `default`).
    #[serde(deserialize_with = "param")]
    pub project: Option<ProjectName>,
    /// A preset window ending now: `15m`, `1h`, `6h`, `24h` or `7d`
    /// (default `1h`); ignored when `from` is given.
    #[serde(deserialize_with = "param")]
    pub range: Option<RangePreset>,
    /// Window start, RFC 3339 (default: `to` minus `range`).
    #[serde(deserialize_with = "param")]
    pub from: Option<WindowStart>,
    /// Window end, RFC 3339 (default: now).
    #[serde(deserialize_with = "param")]
    pub to: Option<WindowEnd>,
    /// Only this app version.
    #[serde(deserialize_with = "param")]
    pub app_version: Option<AppVersion>,
    /// Only this OS.
    #[serde(deserialize_with = "param")]
    pub os: Option<Os>,
    /// Only this network type.
    #[serde(deserialize_with = "param")]
    pub network: Option<Network>,
}

impl QueryParams {
    /// Checks the window and the user's access, and builds the store query.
    pub fn to_query(&self, user: &CurrentUser, now: OffsetDateTime) -> Result<Query, AppError> {
        let project = match &self.project {
            Some(project) => project.clone(),
            None => ProjectName::parse(DEFAULT_PROJECT)
                .map_err(|e| AppError::BadParameter { parameter: "project", reason: e.to_string() })?,
        };
        if !user.may_read(&project) {
            return Err(AppError::Forbidden(project.to_string()));
        }
        let to_ms = self.to.as_ref().map_or_else(|| unix_ms(now), |t| t.0.ms);
        let from_ms = match (&self.from, &self.range) {
            (Some(t), _) => t.0.ms,
            (None, Some(range)) => to_ms - range.ms,
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
        Ok(Query {
            project,
            from_ms,
            to_ms,
            filters: Filters {
                app_version: self.app_version.as_ref().map(|v| v.0.clone()),
                os: self.os.as_ref().map(|v| v.0.clone()),
                network: self.network,
            },
            queue_threshold: DEFAULT_QUEUE_THRESHOLD,
        })
    }
}

impl ParamValue for ProjectName {
    const NAME: &'static str = "project";
    fn parse(text: &str) -> Result<Self, String> {
        ProjectName::parse(text).map_err(|e| e.to_string())
    }
}

impl ParamValue for Network {
    const NAME: &'static str = "network";
    fn parse(text: &str) -> Result<Self, String> {
        Network::parse(text).ok_or_else(|| {
            format!(
                "unknown network {text:?}, expected one of {}",
                Network::ALL.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
            )
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

/// One of [`RANGE_PRESETS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangePreset {
    /// Its URL name.
    pub name: &'static str,
    /// Its length, ms.
    pub ms: i64,
}

impl ParamValue for RangePreset {
    const NAME: &'static str = "range";
    fn parse(text: &str) -> Result<Self, String> {
        RANGE_PRESETS.iter().find(|(n, _)| *n == text).map(|(name, ms)| RangePreset { name, ms: *ms }).ok_or_else(
            || {
                format!(
                    "unknown range {text:?}, expected one of {}",
                    RANGE_PRESETS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                )
            },
        )
    }
}

/// A point in time as a URL gave it: Unix ms, and the text (kept for links).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant {
    /// Unix milliseconds.
    pub ms: i64,
    /// The text it was read from.
    pub text: String,
}

/// `from`: the window start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowStart(pub Instant);

/// `to`: the window end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowEnd(pub Instant);

impl ParamValue for WindowStart {
    const NAME: &'static str = "from";
    fn parse(text: &str) -> Result<Self, String> {
        parse_time(text).map(WindowStart)
    }
}

impl ParamValue for WindowEnd {
    const NAME: &'static str = "to";
    fn parse(text: &str) -> Result<Self, String> {
        parse_time(text).map(WindowEnd)
    }
}

/// `app_version`: any text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppVersion(pub String);

/// `os`: any text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Os(pub String);

impl ParamValue for AppVersion {
    const NAME: &'static str = "app_version";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(AppVersion(text.to_string()))
    }
}

impl ParamValue for Os {
    const NAME: &'static str = "os";
    fn parse(text: &str) -> Result<Self, String> {
        Ok(Os(text.to_string()))
    }
}

/// `by`: the dimension of a breakdown (default `app_version`).
impl ParamValue for Dimension {
    const NAME: &'static str = "by";
    fn parse(text: &str) -> Result<Self, String> {
        Dimension::parse(text).ok_or_else(|| format!("expected app_version, os or network, got {text:?}"))
    }
}

/// `metric`: one metric by its JSON name.
impl ParamValue for Metric {
    const NAME: &'static str = "metric";
    fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(text.to_string()))
            .map_err(|_: serde_json::Error| format!("unknown metric {text:?}"))
    }
}

/// `step`: a bucket width, whole seconds, at least 1 (checked against the
/// window where it is used).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(pub u32);

impl ParamValue for Step {
    const NAME: &'static str = "step";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse::<u32>()
            .ok()
            .filter(|s| *s >= 1)
            .map(Step)
            .ok_or_else(|| format!("expected a whole number of seconds, got {text:?}"))
    }
}

/// A whole number from 1 to `max`, as `limit`.
pub(crate) fn parse_limit(text: &str, max: u32) -> Result<u32, String> {
    text.parse::<u32>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| format!("expected a number from 1 to {max}, got {text:?}"))
}

fn parse_time(text: &str) -> Result<Instant, String> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(unix_ms)
        .or_else(|_| utc_without_offset(text).ok_or(()))
        .map(|ms| Instant { ms, text: text.to_string() })
        .map_err(|_| {
            format!(
                "expected an RFC 3339 timestamp such as 2026-11-21T10:00:00Z (or 2026-11-21T10:00, read as UTC), got {text:?}"
            )
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

    fn query(raw: &str, user: &CurrentUser, now: OffsetDateTime) -> Result<Query, AppError> {
        from_query_string::<QueryParams>(raw)?.to_query(user, now)
    }

    #[test]
    fn the_default_window_is_the_last_hour_of_the_default_project() {
        let now = datetime!(2026-11-21 10:00 UTC);
        let q = query("", &admin(), now).unwrap();
        assert_eq!(q.project.as_str(), "default");
        assert_eq!(q.to_ms - q.from_ms, 3_600_000);
        assert_eq!(q.to_ms, unix_ms(now));
        let day = query("range=24h", &admin(), now).unwrap();
        assert_eq!(day.to_ms - day.from_ms, 24 * 3_600_000);
        let q = query("from=2026-11-21T09:00&to=2026-11-21+09:30&os=", &admin(), now).unwrap();
        assert_eq!(q.from_ms, unix_ms(datetime!(2026-11-21 09:00 UTC)));
        assert_eq!(q.to_ms - q.from_ms, 30 * 60_000);
        assert_eq!(q.filters.os, None, "an empty field is not given");
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let now = datetime!(2026-11-21 10:00 UTC);
        let bad = |raw: &str| match query(raw, &admin(), now) {
            Err(AppError::BadParameter { parameter, .. }) => parameter,
            other => panic!("expected a bad parameter, got {other:?}"),
        };
        assert_eq!(bad("from=yesterday"), "from");
        assert_eq!(bad("network=5g"), "network");
        assert_eq!(bad("range=2w"), "range");
        assert_eq!(bad("project=Not+Valid"), "project");
        assert_eq!(bad("from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z"), "from");
        assert_eq!(bad("from=2026-11-21T10:00:00Z&from=2026-11-21T09:00:00Z"), "query");
    }

    #[test]
    fn the_messages_are_written_for_people() {
        let reason = |raw: &str| match from_query_string::<QueryParams>(raw) {
            Err(AppError::BadParameter { reason, .. }) => reason,
            other => panic!("expected a bad parameter, got {other:?}"),
        };
        assert_eq!(reason("range=2w"), "unknown range \"2w\", expected one of 15m, 1h, 6h, 24h, 7d");
        assert!(reason("to=soon").ends_with("got \"soon\""), "{}", reason("to=soon"));
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
        assert!(matches!(query("", &user, now), Err(AppError::Forbidden(_))));
        assert!(query("project=mobile", &user, now).is_ok());
    }
}
