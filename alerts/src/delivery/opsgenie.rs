//! Opsgenie (`kind = "opsgenie"`): the Alert API v2, one alert per alert
//! instance, on the US (`api.opsgenie.com`) or EU (`api.eu.opsgenie.com`)
//! host, authenticated with `Authorization: GenieKey <key>`.
//!
//! Opsgenie keeps one open alert per `alias`, so the alias is the alert's
//! fingerprint: firing creates the alert, a repeat is the same create
//! (Opsgenie counts it on the open alert instead of opening another), and
//! resolution closes it (`POST /v2/alerts/{alias}/close?identifierType=alias`).
//! `priority` comes from the rule's severity (`page` → P1, `ticket` → P3,
//! `info` → P5); `responders` and `tags` are configured per channel.
//! Opsgenie answers 202 and processes requests asynchronously.
//!
//! A test cannot page: priority P5, an alias of its own
//! (`synchealth-test-<notification id>`), closed right after.
//!
//! JSON escapes every value; Opsgenie shows `message` and `description` as
//! plain text. `message` is cut to 130 characters, `alias` fits in 512,
//! `description` in 15,000, detail values are strings, as the API requires.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::message::{rfc3339, truncate, AlertMessage, MessageKind};
use crate::error::{Error, Result};
use crate::rule::Severity;

/// Opsgenie's limits.
const MESSAGE_CHARS: usize = 130;
const DESCRIPTION_CHARS: usize = 15_000;

/// Which Opsgenie instance an account lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    /// `https://api.opsgenie.com`.
    #[default]
    Us,
    /// `https://api.eu.opsgenie.com`.
    Eu,
}

impl Region {
    /// The API's base URL.
    pub fn api_url(self) -> &'static str {
        match self {
            Region::Us => "https://api.opsgenie.com",
            Region::Eu => "https://api.eu.opsgenie.com",
        }
    }
}

/// Who is notified of an alert: a team, user, escalation or schedule, by
/// name (`username` for a user) or id, as the Alert API takes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Responder {
    /// `team`, `user`, `escalation` or `schedule`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The team's, escalation's or schedule's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The responder's id, instead of a name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A user's username (their email).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// An Opsgenie channel's settings.
#[derive(Clone)]
pub struct OpsgenieConfig {
    /// The API integration's key (a secret).
    pub api_key: String,
    /// The API's base URL (a [`Region`]'s, or another for a proxy or test).
    pub api_url: String,
    /// Who is notified.
    pub responders: Vec<Responder>,
    /// Tags on every alert.
    pub tags: Vec<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for OpsgenieConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpsgenieConfig")
            .field("api_key", &"<redacted>")
            .field("api_url", &self.api_url)
            .field("responders", &self.responders)
            .field("tags", &self.tags)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The priority Opsgenie gets for a notice.
pub fn priority(m: &AlertMessage) -> &'static str {
    match (m.kind, m.severity) {
        (MessageKind::Test, _) | (_, Severity::Info) => "P5",
        (_, Severity::Ticket) => "P3",
        (_, Severity::Page) => "P1",
    }
}

/// The create-alert request's body.
pub fn create_body(config: &OpsgenieConfig, m: &AlertMessage, alias: &str) -> Value {
    let mut details = Map::new();
    for (label, value) in m.facts() {
        details.insert(label.to_string(), json!(value));
    }
    details.insert("Dashboard".into(), json!(m.dashboard_url));
    let mut tags = config.tags.clone();
    tags.push(format!("severity:{}", m.severity_text()));
    json!({
        "message": truncate(&m.subject(), MESSAGE_CHARS),
        "alias": alias,
        "description": truncate(&m.text_body(), DESCRIPTION_CHARS),
        "responders": config.responders,
        "tags": tags,
        "details": details,
        "entity": m.segment_label().unwrap_or_else(|| m.project.to_string()),
        "source": "synchealth",
        "priority": priority(m),
    })
}

fn close_body(m: &AlertMessage) -> Value {
    let note = match m.kind {
        MessageKind::Test => "synchealth notification test: closed right after it was created.".to_string(),
        _ => format!("{} ({})", m.subject(), rfc3339(m.since)),
    };
    json!({"source": "synchealth", "note": truncate(&note, 25_000)})
}

fn endpoint(config: &OpsgenieConfig, segments: &[&str]) -> Result<reqwest::Url> {
    let mut url = reqwest::Url::parse(&config.api_url).map_err(|e| Error::permanent(format!("api_url: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| Error::permanent("api_url cannot be a base"))?
        .pop_if_empty()
        .extend(["v2", "alerts"])
        .extend(segments);
    Ok(url)
}

/// Sends a notice: create (firing, repeat), close (resolved), or create
/// and close (a test).
#[tracing::instrument(skip_all, fields(kind = m.kind.as_str()))]
pub async fn send(
    http: &reqwest::Client,
    config: &OpsgenieConfig,
    m: &AlertMessage,
    notification_id: &str,
) -> Result<()> {
    let alias = m.incident_key(notification_id);
    let auth = format!("GenieKey {}", config.api_key);
    let post = |url: reqwest::Url, body: Value| {
        http.post(url).timeout(config.timeout).header(reqwest::header::AUTHORIZATION, auth.clone()).json(&body)
    };
    if !matches!(m.kind, MessageKind::Resolved(_)) {
        super::http::send(post(endpoint(config, &[])?, create_body(config, m, &alias))).await?;
    }
    if matches!(m.kind, MessageKind::Resolved(_) | MessageKind::Test) {
        let mut url = endpoint(config, &[&alias, "close"])?;
        url.query_pairs_mut().append_pair("identifierType", "alias");
        super::http::send(post(url, close_body(m))).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::message::tests::message;

    fn config() -> OpsgenieConfig {
        OpsgenieConfig {
            api_key: "secret-key".into(),
            api_url: Region::Eu.api_url().into(),
            responders: vec![Responder { kind: "team".into(), name: Some("mobile".into()), id: None, username: None }],
            tags: vec!["sync".into()],
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn the_alert_is_keyed_by_fingerprint_with_the_rules_priority_and_the_configured_responders() {
        let m = message(MessageKind::Firing, Some(0.5));
        let body = create_body(&config(), &m, &m.incident_key("n1"));
        assert_eq!((body["alias"].as_str(), body["priority"].as_str()), (Some("c7f4b477020b48ea"), Some("P1")));
        assert_eq!(body["responders"], json!([{"type": "team", "name": "mobile"}]));
        assert!(body["message"].as_str().unwrap().chars().count() <= MESSAGE_CHARS);
        assert!(body["details"].as_object().unwrap().values().all(Value::is_string));
        let test = message(MessageKind::Test, None);
        assert_eq!((priority(&test), test.incident_key("n2").as_str()), ("P5", "synchealth-test-n2"));
    }

    #[test]
    fn the_close_url_names_the_alias_and_its_type_and_the_key_never_prints() {
        let mut url = endpoint(&config(), &["c7f4b477020b48ea", "close"]).unwrap();
        url.query_pairs_mut().append_pair("identifierType", "alias");
        assert_eq!(url.as_str(), "https://api.eu.opsgenie.com/v2/alerts/c7f4b477020b48ea/close?identifierType=alias");
        assert!(!format!("{:?}", config()).contains("secret-key"));
    }
}
