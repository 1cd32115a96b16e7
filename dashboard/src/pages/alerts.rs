//! `GET /alerts`: the configured rules with the current state of their
//! instances in this project (ok / pending / firing / silenced), recent
//! notifications with their delivery status, and silences, which can be
//! added and removed here (`POST /alerts/silences`, `POST
//! /alerts/silences/remove`, both CSRF-protected).

use askama::Template;
use axum::extract::{Form, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use synchealth_alerts::delivery::UNCONFIGURED;
use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{AlertInstanceRecord, Dimension, Silence};
use time::OffsetDateTime;

use super::{render, Layout, Page, PageError, PageView};
use crate::format::{count, ms, time_utc, Unit};
use crate::params::read;
use crate::session::{random_token, Viewer};
use crate::{AppError, DashboardState, QueryParams};

/// Notifications listed.
const NOTIFICATIONS_SHOWN: u32 = 50;
/// Silence lengths offered by the form.
const DURATIONS: [&str; 7] = ["30m", "1h", "2h", "4h", "8h", "24h", "7d"];
/// Longest comment kept.
const MAX_COMMENT: usize = 500;

#[derive(Debug, Clone)]
pub(crate) struct RuleRow {
    name: String,
    description: String,
    condition: String,
    severity: &'static str,
    state: String,
    instances: Vec<InstanceRow>,
    /// Channels the rule names that are not configured.
    unconfigured: Vec<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct InstanceRow {
    segment: String,
    state: String,
    value: String,
    since: String,
    events: String,
    verdict: String,
}

#[derive(Debug, Clone)]
pub(crate) struct NotificationRow {
    time: String,
    rule: String,
    kind: String,
    channel: String,
    status: String,
    status_class: String,
    attempts: u32,
    error: String,
    summary: String,
}

#[derive(Debug, Clone)]
pub(crate) struct SilenceRow {
    id: String,
    rule: String,
    segment: String,
    from: String,
    until: String,
    by: String,
    comment: String,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct AlertsPage {
    layout: Layout,
    rules: Vec<RuleRow>,
    rule_names: Vec<String>,
    notifications: Vec<NotificationRow>,
    silences: Vec<SilenceRow>,
    durations: [&'static str; 7],
}

/// The state a page shows for an instance: a silence in force wins over
/// `firing`/`pending` (the alert still holds, but nobody is being told).
fn shown_state(instance: &AlertInstanceRecord, silences: &[Silence], now_ms: i64) -> String {
    let silenced =
        silences.iter().any(|s| s.covers(&instance.project, &instance.rule, instance.segment.as_deref(), now_ms));
    match instance.state.as_str() {
        "firing" | "pending" if silenced => format!("silenced ({})", instance.state),
        other => other.to_string(),
    }
}

/// The Alerts page takes only the shared parameters.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AlertsView {}

impl PageView for AlertsView {
    const PATH: &'static str = "/alerts";
    const TITLE: &'static str = "Alerts";
}

/// `GET /alerts`.
pub(crate) async fn page(
    State(state): State<DashboardState>,
    Page { query, layout, .. }: Page<AlertsView>,
) -> Result<Response, PageError> {
    let now_ms = unix_ms(OffsetDateTime::now_utc());
    let (instances, notifications, silences) = tokio::join!(
        state.store.alert_instances(),
        state.store.notifications(Some(&query.project), NOTIFICATIONS_SHOWN),
        state.store.silences(now_ms),
    );
    let instances: Vec<AlertInstanceRecord> = instances?.into_iter().filter(|i| i.project == query.project).collect();
    let silences: Vec<Silence> = silences?.into_iter().filter(|s| s.project == query.project).collect();
    let rules = state
        .rules
        .iter()
        .map(|rule| {
            let unit = Unit::of(rule.metric);
            let mine: Vec<&AlertInstanceRecord> = instances.iter().filter(|i| i.rule == rule.name).collect();
            let states: Vec<String> = mine.iter().map(|i| shown_state(i, &silences, now_ms)).collect();
            let overall = ["firing", "pending", "silenced (firing)", "silenced (pending)"]
                .into_iter()
                .find(|s| states.iter().any(|x| x == s))
                .map(str::to_string)
                .unwrap_or_else(|| if mine.is_empty() { "not evaluated yet".into() } else { "ok".into() });
            let unconfigured = match &state.channels {
                Some(known) => rule.channels.iter().filter(|c| !known.contains(*c)).cloned().collect(),
                None => Vec::new(),
            };
            RuleRow {
                unconfigured,
                name: rule.name.clone(),
                description: rule.description.clone().unwrap_or_default(),
                condition: format!(
                    "{} {} {} over {}{}, at least {} events",
                    synchealth_alerts::metric_name(rule.metric),
                    rule.comparison.symbol(),
                    unit.show(Some(rule.threshold)),
                    synchealth_alerts::duration::format(rule.window),
                    rule.group_by.map(|d| format!(", per {}", d.column())).unwrap_or_default(),
                    rule.min_events
                ),
                severity: rule.severity.as_str(),
                state: overall,
                instances: mine
                    .iter()
                    .zip(states)
                    .map(|(i, shown)| InstanceRow {
                        segment: i.segment.clone().unwrap_or_else(|| "all devices".into()),
                        state: shown,
                        value: unit.show(i.value),
                        since: time_utc(i.since_ms),
                        events: count(i.events),
                        verdict: i.verdict.replace('_', " "),
                    })
                    .collect(),
            }
        })
        .collect();
    let notifications = notifications?
        .into_iter()
        .map(|n| NotificationRow {
            time: time_utc(n.created_at_ms),
            rule: n.rule,
            kind: n.kind,
            channel: n.channel,
            // Nothing was tried, nothing failed: say what to do instead.
            status: if n.status == UNCONFIGURED { "no channel configured".into() } else { n.status.clone() },
            status_class: if n.status == UNCONFIGURED { "unconfigured".into() } else { n.status },
            attempts: n.attempts,
            error: n.last_error.unwrap_or_default(),
            summary: n.summary,
        })
        .collect();
    let silences = silences
        .into_iter()
        .map(|s| SilenceRow {
            id: s.id,
            rule: s.rule,
            segment: s.segment.unwrap_or_else(|| "all segments".into()),
            from: time_utc(s.starts_at_ms),
            until: format!("{} (in {})", time_utc(s.ends_at_ms), ms(Some((s.ends_at_ms - now_ms) as f64))),
            by: s.created_by,
            comment: s.comment,
        })
        .collect();
    let rule_names = state.rules.iter().map(|r| r.name.clone()).collect();
    render(&AlertsPage { rules, rule_names, notifications, silences, durations: DURATIONS, layout })
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct SilenceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    rule: String,
    #[serde(default)]
    segment: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

fn bad(parameter: &'static str, reason: impl Into<String>) -> PageError {
    PageError(AppError::BadParameter { parameter, reason: reason.into() })
}

/// The project a form acts on, checked against the user's grants.
fn form_project(viewer: &Viewer, name: &str) -> Result<ProjectName, PageError> {
    let params = QueryParams { project: read(name)?, ..Default::default() };
    Ok(params.to_query(&viewer.user, OffsetDateTime::now_utc())?.project)
}

fn back_to_alerts(project: &ProjectName) -> Response {
    let target =
        format!("/alerts?{}", serde_urlencoded::to_string([("project", project.as_str())]).unwrap_or_default());
    Redirect::to(&target).into_response()
}

/// `POST /alerts/silences`: adds a silence.
pub(crate) async fn add_silence(
    State(state): State<DashboardState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<SilenceForm>,
) -> Result<Response, PageError> {
    viewer.check_form(&headers, &form.csrf)?;
    let project = form_project(&viewer, &form.project)?;
    let rule = form.rule.trim();
    if !state.rules.iter().any(|r| r.name == rule) {
        return Err(bad("rule", format!("no configured rule is named {rule:?}")));
    }
    let segment = match form.segment.trim() {
        "" => None,
        text => {
            let (dimension, value) = text.split_once('=').ok_or_else(|| {
                bad("segment", format!("expected dimension=value such as app_version=2.3.0, got {text:?}"))
            })?;
            let dimension = Dimension::parse(dimension.trim())
                .ok_or_else(|| bad("segment", "the dimension must be app_version, os or network"))?;
            if value.trim().is_empty() {
                return Err(bad("segment", "the segment's value is empty"));
            }
            Some(format!("{}={}", dimension.column(), value.trim()))
        }
    };
    let length =
        synchealth_alerts::duration::parse(form.duration.trim()).map_err(|e| bad("duration", format!("{e}")))?;
    if length < time::Duration::minutes(1) || length > time::Duration::days(30) {
        return Err(bad("duration", "a silence lasts from 1 minute to 30 days"));
    }
    let comment: String = form.comment.trim().chars().take(MAX_COMMENT).collect();
    let now = OffsetDateTime::now_utc();
    let silence = Silence {
        id: random_token()[..32].to_string(),
        rule: rule.to_string(),
        project: project.clone(),
        segment,
        starts_at_ms: unix_ms(now),
        ends_at_ms: unix_ms(now + length),
        created_by: viewer.user.0.username.clone(),
        comment,
    };
    state.store.put_silence(&silence).await?;
    tracing::info!(username = ?silence.created_by, rule = ?silence.rule, project = %project, "Added a silence.");
    Ok(back_to_alerts(&project))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RemoveForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

/// `POST /alerts/silences/remove`: ends a silence now.
pub(crate) async fn remove_silence(
    State(state): State<DashboardState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<RemoveForm>,
) -> Result<Response, PageError> {
    viewer.check_form(&headers, &form.csrf)?;
    let now_ms = unix_ms(OffsetDateTime::now_utc());
    let silence = state
        .store
        .silences(now_ms)
        .await?
        .into_iter()
        .find(|s| s.id == form.id)
        .ok_or_else(|| PageError(AppError::NotFound(format!("no active silence has id {:?}", form.id))))?;
    // The user must have the silence's project, like for reading it.
    let project = form_project(&viewer, silence.project.as_str())?;
    state.store.remove_silence(&silence.id).await?;
    tracing::info!(username = ?viewer.user.0.username, rule = ?silence.rule, project = %project, "Removed a silence.");
    Ok(back_to_alerts(&project))
}
