//! The server-rendered pages: Overview, Breakdown, Releases, Conflicts,
//! Errors, Devices, Alerts, plus login, the error page and the 404 fallback.
//!
//! Every page is a GET whose whole state is in the URL (project, window,
//! filters, sort...), so a link pasted into an incident channel shows the
//! next person the same thing. Pages work without JavaScript; the CSS is
//! compiled into the binary and inlined, so nothing is fetched from
//! elsewhere.
//!
//! Every page starts with the same preamble, the [`Page`] extractor: the
//! logged-in viewer, the shared parameters ([`PageParams`]: project, window,
//! filters, refresh) checked into a store [`Query`] by the same
//! [`QueryParams::to_query`] as the JSON API, the page's own typed
//! parameters (a [`PageView`], often the very struct its JSON endpoint
//! takes), and the [`Layout`]. A bad parameter is the HTML 400 page
//! ([`PageError`]); a missing login, the login redirect. The handler then
//! calls the same function as the JSON endpoint over that query and only
//! renders, so a number on a page and in the API is the same number.

pub(crate) mod alerts;
pub(crate) mod breakdown;
pub(crate) mod conflicts;
pub(crate) mod devices;
pub(crate) mod errors;
pub(crate) mod login;
pub(crate) mod overview;
pub(crate) mod releases;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use synchealth_schema::{Network, ProjectName};
use synchealth_store::Query;
use time::OffsetDateTime;

use crate::format::{input_utc, time_utc};
use crate::params::{from_query_string, param, ParamValue, RANGE_PRESETS};
use crate::session::{NoViewer, Viewer};
use crate::{AppError, DashboardState, QueryParams};

/// The stylesheet, inlined in every page.
pub(crate) const STYLE: &str = include_str!("../../static/style.css");

/// The parameters every page takes; each page adds its own ([`PageView`]).
/// Unknown ones are ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageParams {
    #[serde(flatten)]
    pub(crate) common: QueryParams,
    /// Seconds between automatic reloads (`<meta refresh>`), off when absent.
    #[serde(deserialize_with = "param")]
    pub(crate) refresh: Option<Refresh>,
}

/// `refresh`: seconds between reloads, at least 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refresh(pub(crate) u32);

impl ParamValue for Refresh {
    const NAME: &'static str = "refresh";
    fn parse(text: &str) -> Result<Self, String> {
        text.parse::<u32>()
            .ok()
            .filter(|s| *s >= 10)
            .map(Refresh)
            .ok_or_else(|| format!("expected a number of seconds, at least 10, got {text:?}"))
    }
}

/// A page's own parameters, and where it sits in the navigation.
pub(crate) trait PageView: DeserializeOwned + Send {
    /// The path its navigation entry and links point to.
    const PATH: &'static str;
    /// The page title.
    const TITLE: &'static str;
}

/// The preamble of every page: the checked query of the logged-in viewer,
/// the page's own parameters and the layout around it.
#[derive(Debug)]
pub(crate) struct Page<P> {
    /// The page's own parameters.
    pub(crate) params: P,
    /// The store query of the shared parameters.
    pub(crate) query: Query,
    pub(crate) layout: Layout,
}

impl<P: PageView> FromRequestParts<DashboardState> for Page<P> {
    /// The login redirect, or the error page.
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &DashboardState) -> Result<Self, Self::Rejection> {
        let viewer = Viewer::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let raw = parts.uri.query().unwrap_or_default();
        let preamble = async {
            let shared: PageParams = from_query_string(raw)?;
            let params: P = from_query_string(raw)?;
            let query = shared.common.to_query(&viewer.user, OffsetDateTime::now_utc())?;
            let layout = Layout::new(state, &viewer, &shared, &query, P::PATH, P::TITLE).await?;
            Ok::<_, PageError>((params, query, layout))
        };
        let (params, query, layout) = preamble.await.map_err(IntoResponse::into_response)?;
        Ok(Page { params, query, layout })
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
            ("project", c.project.as_ref().map(|p| p.to_string())),
            ("range", c.range.map(|r| r.name.to_string())),
            ("from", c.from.as_ref().map(|t| t.0.text.clone())),
            ("to", c.to.as_ref().map(|t| t.0.text.clone())),
            ("app_version", c.app_version.as_ref().map(|v| v.0.clone())),
            ("os", c.os.as_ref().map(|v| v.0.clone())),
            ("network", c.network.map(|n| n.as_str().to_string())),
            ("refresh", params.refresh.map(|r| r.0.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
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

const NAV: [(&str, &str); 7] = [
    ("Overview", "/"),
    ("Breakdown", "/breakdown"),
    ("Releases", "/releases"),
    ("Conflicts", "/conflicts"),
    ("Errors", "/errors"),
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
        let custom = params.common.from.is_some();
        let active_range = params.common.range.map_or("1h", |r| r.name);
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
        let (app_version, os, network) = (
            params.common.app_version.as_ref().map(|v| v.0.clone()),
            params.common.os.as_ref().map(|v| v.0.clone()),
            params.common.network.map(|n| n.as_str().to_string()),
        );
        for (name, value) in [("app_version", &app_version), ("os", &os), ("network", &network)] {
            if let Some(v) = value {
                chips.push(Chip { name, value: v.clone(), remove: link.to(path, &[(name, None)]) });
            }
        }
        let refresh = params.refresh.map(|r| r.0);
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
            app_version: app_version.unwrap_or_default(),
            os: os.unwrap_or_default(),
            network: network.unwrap_or_default(),
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
