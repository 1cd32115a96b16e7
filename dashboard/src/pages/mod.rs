//! The server-rendered pages: Overview, Breakdown, Releases, Devices,
//! Alerts, plus login, errors and the 404 fallback.
//!
//! Every page is a GET whose whole state is in the URL (project, window,
//! filters, sort...), so a link pasted into an incident channel shows the
//! next person the same thing. Pages work without JavaScript; the CSS is
//! compiled into the binary and inlined, so nothing is fetched from
//! elsewhere. Each handler reads the store through the same
//! [`QueryParams::to_query`] and [`synchealth_store::Summary`] as the JSON
//! API, so a number on a page and in the API is the same number.

pub(crate) mod alerts;
pub(crate) mod breakdown;
pub(crate) mod devices;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod releases;

use askama::Template;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use synchealth_schema::{Network, ProjectName};
use synchealth_store::Query;
use time::OffsetDateTime;

use crate::format::{input_utc, time_utc};
use crate::params::{non_empty, RANGE_PRESETS};
use crate::session::{NoViewer, Viewer};
use crate::{AppError, DashboardState, QueryParams};

/// The stylesheet, inlined in every page.
pub(crate) const STYLE: &str = include_str!("../../static/style.css");

/// Every parameter any page takes. Unknown ones are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct PageParams {
    #[serde(flatten)]
    pub(crate) common: QueryParams,
    /// Seconds between automatic reloads (`<meta refresh>`), off when absent.
    pub(crate) refresh: Option<String>,
    /// Breakdown: the dimension.
    pub(crate) by: Option<String>,
    /// Breakdown: the column to sort by.
    pub(crate) sort: Option<String>,
    /// Breakdown: `asc` or `desc`.
    pub(crate) dir: Option<String>,
    /// Releases: the baseline version.
    pub(crate) a: Option<String>,
    /// Releases: the version under test.
    pub(crate) b: Option<String>,
    /// Devices: which list.
    pub(crate) list: Option<String>,
    /// Devices: how many.
    pub(crate) limit: Option<String>,
    /// Devices: seconds without a report that make a device quiet.
    pub(crate) silent_for: Option<String>,
}

impl PageParams {
    /// Parses a raw query string; a malformed one is a 400 like any bad parameter.
    pub(crate) fn parse(raw: Option<&str>) -> Result<PageParams, PageError> {
        serde_urlencoded::from_str(raw.unwrap_or_default()).map_err(|e| {
            PageError(AppError::BadParameter { parameter: "query", reason: format!("unreadable query string: {e}") })
        })
    }

    /// Seconds between reloads, if asked for (at least 10).
    pub(crate) fn refresh_seconds(&self) -> Result<Option<u32>, PageError> {
        match non_empty(&self.refresh) {
            None => Ok(None),
            Some(text) => text.parse::<u32>().ok().filter(|s| *s >= 10).map(Some).ok_or_else(|| {
                PageError(AppError::BadParameter {
                    parameter: "refresh",
                    reason: format!("expected a number of seconds, at least 10, got {text:?}"),
                })
            }),
        }
    }
}

/// The parameters that stay when moving between pages: project, window,
/// filters, refresh. URLs are built from them with changes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Link {
    pairs: Vec<(&'static str, String)>,
}

impl Link {
    fn of(params: &PageParams) -> Link {
        let c = &params.common;
        let pairs = [
            ("project", &c.project),
            ("range", &c.range),
            ("from", &c.from),
            ("to", &c.to),
            ("app_version", &c.app_version),
            ("os", &c.os),
            ("network", &c.network),
            ("refresh", &params.refresh),
        ]
        .into_iter()
        .filter_map(|(k, v)| non_empty(v).map(|v| (k, v.to_string())))
        .collect();
        Link { pairs }
    }

    /// `path?...` with `changes` applied (`None` removes a parameter).
    pub(crate) fn to(&self, path: &str, changes: &[(&'static str, Option<&str>)]) -> String {
        let mut pairs: Vec<(&str, String)> = self
            .pairs
            .iter()
            .filter(|(k, _)| !changes.iter().any(|(c, _)| c == k))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (k, v) in changes {
            if let Some(v) = v {
                pairs.push((k, (*v).to_string()));
            }
        }
        if pairs.is_empty() {
            return path.to_string();
        }
        format!("{path}?{}", serde_urlencoded::to_string(&pairs).unwrap_or_default())
    }

    /// The kept parameters except `skip`, for hidden form fields.
    pub(crate) fn hidden(&self, skip: &[&str]) -> Vec<(&'static str, String)> {
        self.pairs.iter().filter(|(k, _)| !skip.contains(k)).cloned().collect()
    }
}

/// A link in a row of choices (nav, presets, tabs).
#[derive(Debug, Clone)]
pub(crate) struct Choice {
    pub(crate) label: String,
    pub(crate) href: String,
    pub(crate) active: bool,
}

/// An active filter, with the link that removes it.
#[derive(Debug, Clone)]
pub(crate) struct Chip {
    pub(crate) name: &'static str,
    pub(crate) value: String,
    pub(crate) remove: String,
}

/// What the base template needs: navigation, project, window and filters.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) title: String,
    pub(crate) style: &'static str,
    pub(crate) username: String,
    pub(crate) csrf: String,
    pub(crate) nav: Vec<Choice>,
    pub(crate) project: String,
    pub(crate) projects: Vec<String>,
    pub(crate) presets: Vec<Choice>,
    pub(crate) window: String,
    pub(crate) from_input: String,
    pub(crate) to_input: String,
    pub(crate) app_version: String,
    pub(crate) os: String,
    pub(crate) network: String,
    pub(crate) networks: Vec<&'static str>,
    pub(crate) chips: Vec<Chip>,
    pub(crate) refresh: Option<u32>,
    pub(crate) refresh_toggle: String,
    pub(crate) hidden_for_project: Vec<(&'static str, String)>,
    pub(crate) hidden_for_range: Vec<(&'static str, String)>,
    pub(crate) hidden_for_filters: Vec<(&'static str, String)>,
    pub(crate) path: &'static str,
    pub(crate) link: Link,
    pub(crate) api_json: String,
}

const NAV: [(&str, &str); 5] = [
    ("Overview", "/"),
    ("Breakdown", "/breakdown"),
    ("Releases", "/releases"),
    ("Devices", "/devices"),
    ("Alerts", "/alerts"),
];

impl Layout {
    /// The layout of a page at `path` over `query`.
    pub(crate) async fn new(
        state: &DashboardState,
        viewer: &Viewer,
        params: &PageParams,
        query: &Query,
        path: &'static str,
        title: &str,
    ) -> Result<Layout, PageError> {
        let link = Link::of(params);
        let user = &viewer.user.0;
        let projects: Vec<String> = if user.admin {
            state.store.projects().await.map_err(AppError::from)?.iter().map(ProjectName::to_string).collect()
        } else {
            user.projects.iter().map(ProjectName::to_string).collect()
        };
        let custom = non_empty(&params.common.from).is_some();
        let active_range = non_empty(&params.common.range).unwrap_or("1h");
        let presets = RANGE_PRESETS
            .iter()
            .map(|(name, _)| Choice {
                label: (*name).to_string(),
                href: link.to(path, &[("range", Some(name)), ("from", None), ("to", None)]),
                active: !custom && *name == active_range,
            })
            .collect();
        let nav = NAV
            .iter()
            .map(|(label, href)| Choice {
                label: (*label).to_string(),
                href: link.to(href, &[]),
                active: *href == path,
            })
            .collect();
        let mut chips = Vec::new();
        for (name, value) in [
            ("app_version", &params.common.app_version),
            ("os", &params.common.os),
            ("network", &params.common.network),
        ] {
            if let Some(v) = non_empty(value) {
                chips.push(Chip { name, value: v.to_string(), remove: link.to(path, &[(name, None)]) });
            }
        }
        let refresh = params.refresh_seconds()?;
        let refresh_toggle = match refresh {
            Some(_) => link.to(path, &[("refresh", None)]),
            None => link.to(path, &[("refresh", Some("60"))]),
        };
        let api_json = link.to("/api/v1/overview", &[("refresh", None)]);
        Ok(Layout {
            title: title.to_string(),
            style: STYLE,
            username: user.username.clone(),
            csrf: viewer.csrf.clone(),
            nav,
            project: query.project.to_string(),
            projects,
            presets,
            window: format!(
                "{} → {} (times in UTC, offset +00:00)",
                time_utc(query.from_ms).trim_end_matches(" UTC"),
                time_utc(query.to_ms).trim_end_matches(" UTC")
            ),
            from_input: input_utc(query.from_ms),
            to_input: input_utc(query.to_ms),
            app_version: params.common.app_version.clone().unwrap_or_default(),
            os: params.common.os.clone().unwrap_or_default(),
            network: params.common.network.clone().unwrap_or_default(),
            networks: Network::ALL.iter().map(|n| n.as_str()).collect(),
            chips,
            refresh,
            refresh_toggle,
            hidden_for_project: link.hidden(&["project", "app_version", "os", "network"]),
            hidden_for_range: link.hidden(&["range", "from", "to"]),
            hidden_for_filters: link.hidden(&["app_version", "os", "network"]),
            path,
            link,
            api_json,
        })
    }
}

/// The query of a page: the user's access and the parameters checked.
pub(crate) fn query_of(viewer: &Viewer, params: &PageParams) -> Result<Query, PageError> {
    params.common.to_query(&viewer.user, OffsetDateTime::now_utc()).map_err(PageError)
}

/// Where the probes should send events, as this request reached us.
pub(crate) fn collector_url(headers: &HeaderMap) -> String {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<collector host>");
    let scheme = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).unwrap_or("http");
    format!("{scheme}://{host}/v1/events")
}

/// Renders a template as a 200 page.
pub(crate) fn render(template: &impl Template) -> Result<Response, PageError> {
    render_with(StatusCode::OK, template)
}

/// Renders a template with a status.
pub(crate) fn render_with(status: StatusCode, template: &impl Template) -> Result<Response, PageError> {
    let html = template.render().map_err(|e| PageError(AppError::Unavailable(format!("rendering a page: {e}"))))?;
    Ok(html_response(status, html))
}

/// The pages run no script and load nothing from elsewhere; the policy
/// says so to the browser, so an injection that slipped past escaping
/// still could not run or phone home, and no other site can frame a page.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
    form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// An HTML page with the security headers every page carries.
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    (
        status,
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "same-origin"),
        ],
        Html(html),
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    style: &'static str,
    status: u16,
    heading: String,
    detail: String,
    parameter: Option<String>,
}

/// A page that failed: rendered as the error page (not JSON), and a
/// missing login becomes a redirect to the login page.
#[derive(Debug)]
pub(crate) struct PageError(pub(crate) AppError);

impl From<AppError> for PageError {
    fn from(e: AppError) -> Self {
        PageError(e)
    }
}

impl From<synchealth_store::Error> for PageError {
    fn from(e: synchealth_store::Error) -> Self {
        PageError(AppError::from(e))
    }
}

impl From<NoViewer> for PageError {
    fn from(e: NoViewer) -> Self {
        match e {
            NoViewer::Login { .. } => PageError(AppError::Unauthorized),
            NoViewer::Error(e) => PageError(e),
        }
    }
}

impl IntoResponse for NoViewer {
    fn into_response(self) -> Response {
        match self {
            NoViewer::Login { next, cross_site: true } => {
                // Reload the same URL from our own page: that navigation is
                // same-site, so a logged-in browser sends its Strict cookie
                // and a link pasted in a chat opens without a second login.
                let next = html_attribute(&next);
                let html = format!(
                    "<!doctype html><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={next}\"><title>synchealth</title><a href=\"{next}\">Continue</a>"
                );
                html_response(StatusCode::OK, html)
            }
            NoViewer::Login { next, .. } => {
                let target =
                    format!("/login?{}", serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default());
                Redirect::to(&target).into_response()
            }
            NoViewer::Error(e) => PageError(e).into_response(),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let retry_after = self.0.retry_after();
        let (status, heading, detail, parameter) = match self.0 {
            AppError::Unauthorized => return Redirect::to("/login").into_response(),
            AppError::BadParameter { parameter, reason } => (
                StatusCode::BAD_REQUEST,
                "Bad request".to_string(),
                format!("The URL parameter `{parameter}` is not valid: {reason}."),
                Some(parameter.to_string()),
            ),
            AppError::Forbidden(project) => (
                StatusCode::FORBIDDEN,
                "No access".to_string(),
                format!("Your user is not granted project \"{project}\". Ask an admin: `synchealth users add --projects {project}`."),
                None,
            ),
            AppError::Csrf => (
                StatusCode::FORBIDDEN,
                "Form expired".to_string(),
                "The form's security token is missing or wrong (an old tab, or a form from another site). Reload the page and submit again.".to_string(),
                None,
            ),
            AppError::NotFound(what) => (StatusCode::NOT_FOUND, "Not found".to_string(), what, None),
            AppError::TooManyAttempts(seconds) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many failed logins".to_string(),
                format!("Logins for this user or from this address are paused; try again in {seconds} s."),
                None,
            ),
            AppError::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Busy".to_string(),
                "Too many logins at once. Try again in a moment.".to_string(),
                None,
            ),
            AppError::Unavailable(internal) => {
                tracing::error!(error = %internal, "Page failed.");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Storage unavailable".to_string(),
                    "The store did not answer. This page shows no data rather than wrong data; retry in a moment, and check /readyz.".to_string(),
                    None,
                )
            }
        };
        let page = ErrorPage { style: STYLE, status: status.as_u16(), heading, detail, parameter };
        let response = match page.render() {
            Ok(html) => html_response(status, html),
            Err(_) => status.into_response(),
        };
        crate::error::with_retry_after(response, retry_after)
    }
}

fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The 404 page for any unknown path; JSON under `/api/`.
pub(crate) async fn fallback(uri: Uri) -> Response {
    let what = format!("There is no page at {}.", uri.path());
    if uri.path().starts_with("/api/") {
        return AppError::NotFound(what).into_response();
    }
    PageError(AppError::NotFound(format!("{what} Start from the overview: /"))).into_response()
}
