//! Jira (`kind = "jira"`): one issue per alert instance and firing episode,
//! through the REST API v2, which Jira Cloud (Basic auth with an account's
//! email and API token) and Jira Data Center (`Bearer` personal access
//! token) both serve, with descriptions and comments in wiki markup.
//!
//! - **Firing** creates the issue (`POST /rest/api/2/issue`: the project
//!   key, issue type, labels and any extra `fields` configured; a summary
//!   and a description with the figures and the dashboard link) and keeps
//!   its key in the store ([`synchealth_store::TicketRecord`]) beside the
//!   alert's state, keyed by project, fingerprint, channel and the start of
//!   the firing episode, so a restart neither opens a second issue nor
//!   forgets the first, and the next episode of the same alert gets its own.
//! - **A repeat** comments on that issue (`POST .../comment`).
//! - **Resolution** comments too and, if `resolve_transition` is set (e.g.
//!   `"Done"`), moves the issue through the transition of that name
//!   (`GET .../transitions`, then `POST` its id).
//! - **A test** creates nothing: it reads the project
//!   (`GET /rest/api/2/project/{key}`), which proves the URL, the
//!   credentials and the project key.
//!
//! Limits, stated plainly: an issue created whose key the store then
//! failed to keep (the process stopping in between) is created again by the
//! retry; a retried resolution whose comment went through comments twice.
//!
//! Every text from events or config is escaped for wiki markup (a backslash
//! before each character markup gives meaning to), so an app version
//! `[Open|https://evil.example]` is neither a link nor a mention; the
//! summary is plain text, cut to Jira's 255 characters.

use std::time::Duration;

use serde_json::{json, Map, Value};
use synchealth_schema::unix_ms;
use synchealth_store::{SharedStore, TicketRecord};
use time::OffsetDateTime;

use super::message::{truncate, AlertMessage, MessageKind};
use crate::error::{Error, Result};

/// Jira's summary limit.
const SUMMARY_CHARS: usize = 255;
/// Kept well under Jira's 32,767 characters per text field.
const TEXT_CHARS: usize = 30_000;

/// How a Jira channel authenticates.
#[derive(Clone)]
pub enum JiraAuth {
    /// Jira Cloud: Basic auth with an account's email and API token.
    Cloud {
        /// The account's email.
        email: String,
        /// Its API token (a secret).
        api_token: String,
    },
    /// Jira Data Center / Server: a personal access token, as `Bearer`.
    DataCenter {
        /// The token (a secret).
        token: String,
    },
}

impl std::fmt::Debug for JiraAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JiraAuth::Cloud { email, .. } => write!(f, "Cloud {{ email: {email:?}, api_token: <redacted> }}"),
            JiraAuth::DataCenter { .. } => f.write_str("DataCenter { token: <redacted> }"),
        }
    }
}

/// A Jira channel's settings.
#[derive(Clone)]
pub struct JiraConfig {
    /// The site, e.g. `https://example.atlassian.net`.
    pub base_url: String,
    /// How to authenticate.
    pub auth: JiraAuth,
    /// The project issues go to, e.g. `OPS`.
    pub project_key: String,
    /// The issue type, e.g. `Bug`.
    pub issue_type: String,
    /// Labels on every issue (Jira labels have no spaces).
    pub labels: Vec<String>,
    /// Further `fields` of the create request, as Jira takes them (e.g.
    /// `priority = { name = "High" }`, `components = [{ name = "mobile" }]`).
    pub fields: Map<String, Value>,
    /// The transition a resolution moves the issue through, e.g. `Done`.
    pub resolve_transition: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for JiraConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JiraConfig")
            .field("base_url", &self.base_url)
            .field("auth", &self.auth)
            .field("project_key", &self.project_key)
            .field("issue_type", &self.issue_type)
            .field("labels", &self.labels)
            .field("fields", &self.fields)
            .field("resolve_transition", &self.resolve_transition)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Text as wiki markup shows it literally: a backslash before every
/// character markup gives meaning to (links, mentions, macros, emphasis,
/// tables, lists, images).
pub fn wiki_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for c in text.chars() {
        if matches!(c, '\\' | '[' | ']' | '{' | '}' | '*' | '_' | '-' | '+' | '^' | '~' | '|' | '!' | '#' | '?') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The description (and a comment's text): the subject, the rule's
/// description, the facts as a table and the dashboard link.
pub fn wiki_body(m: &AlertMessage) -> String {
    let mut body = format!("*{}*\n\n", wiki_text(&m.subject()));
    if let Some(description) = &m.description {
        body.push_str(&wiki_text(description));
        body.push_str("\n\n");
    }
    for (label, value) in m.facts() {
        body.push_str(&format!("||{}|{}|\n", wiki_text(label), wiki_text(&value)));
    }
    // The URL is ours, every value in it percent-encoded, so it cannot
    // close the link.
    body.push_str(&format!("\n[Open the dashboard for this segment and window|{}]\n", m.dashboard_url));
    truncate(&body, TEXT_CHARS)
}

/// The create-issue request: the configured fields, then ours.
pub fn issue_body(config: &JiraConfig, m: &AlertMessage) -> Value {
    let mut fields = config.fields.clone();
    fields.insert("project".into(), json!({"key": config.project_key}));
    fields.insert("issuetype".into(), json!({"name": config.issue_type}));
    fields.insert("summary".into(), json!(truncate(&m.subject(), SUMMARY_CHARS)));
    fields.insert("description".into(), json!(wiki_body(m)));
    let mut labels = config.labels.clone();
    labels.push("synchealth".into());
    labels.push(format!("synchealth-{}", m.fingerprint));
    fields.insert("labels".into(), json!(labels));
    json!({"fields": fields})
}

/// Delivers a notice to Jira, keeping issue keys in `store`.
#[tracing::instrument(skip_all, fields(kind = m.kind.as_str()))]
pub async fn send(
    http: &reqwest::Client,
    store: &SharedStore,
    config: &JiraConfig,
    channel: &str,
    m: &AlertMessage,
) -> Result<()> {
    let jira = Client { http, config };
    if m.kind == MessageKind::Test {
        jira.get(&["project", &config.project_key]).await?;
        return Ok(());
    }
    let episode_ms = unix_ms(m.started_at);
    let ticket = store.ticket(&m.project, &m.fingerprint, channel, episode_ms).await?;
    match (m.kind, ticket) {
        // A firing notice retried after its issue was made.
        (MessageKind::Firing, Some(_)) => Ok(()),
        (MessageKind::Firing | MessageKind::Repeat, None) => {
            let created = jira.post(&["issue"], &issue_body(config, m)).await?;
            let Some(key) = created["key"].as_str() else {
                return Err(Error::permanent(format!("jira created an issue but answered no key: {created}")));
            };
            let ticket = TicketRecord {
                project: m.project.clone(),
                fingerprint: m.fingerprint.clone(),
                channel: channel.to_string(),
                episode_ms,
                ticket_key: key.to_string(),
                created_at_ms: unix_ms(OffsetDateTime::now_utc()),
            };
            store.put_ticket(&ticket).await?;
            tracing::info!(issue = key, "Created a Jira issue.");
            Ok(())
        }
        (MessageKind::Repeat, Some(ticket)) => {
            jira.post(&["issue", &ticket.ticket_key, "comment"], &json!({"body": wiki_body(m)})).await.map(drop)
        }
        (MessageKind::Resolved(_), Some(ticket)) => {
            let key = ticket.ticket_key;
            jira.post(&["issue", &key, "comment"], &json!({"body": wiki_body(m)})).await?;
            if let Some(name) = &config.resolve_transition {
                jira.transition(&key, name).await?;
            }
            Ok(())
        }
        (MessageKind::Resolved(_), None) => {
            tracing::info!("No Jira issue of this alert to resolve.");
            Ok(())
        }
        (MessageKind::Test, _) => Ok(()),
    }
}

struct Client<'a> {
    http: &'a reqwest::Client,
    config: &'a JiraConfig,
}

impl Client<'_> {
    fn url(&self, segments: &[&str]) -> Result<reqwest::Url> {
        let mut url =
            reqwest::Url::parse(&self.config.base_url).map_err(|e| Error::permanent(format!("base_url: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| Error::permanent("base_url cannot be a base"))?
            .pop_if_empty()
            .extend(["rest", "api", "2"])
            .extend(segments);
        Ok(url)
    }

    fn authed(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let request = request.timeout(self.config.timeout).header(reqwest::header::ACCEPT, "application/json");
        match &self.config.auth {
            JiraAuth::Cloud { email, api_token } => request.basic_auth(email, Some(api_token)),
            JiraAuth::DataCenter { token } => request.bearer_auth(token),
        }
    }

    async fn get(&self, segments: &[&str]) -> Result<Value> {
        super::http::send_json(self.authed(self.http.get(self.url(segments)?))).await
    }

    async fn post(&self, segments: &[&str], body: &Value) -> Result<Value> {
        super::http::send_json(self.authed(self.http.post(self.url(segments)?)).json(body)).await
    }

    /// Moves an issue through the transition named `name` (any case).
    async fn transition(&self, key: &str, name: &str) -> Result<()> {
        let available = self.get(&["issue", key, "transitions"]).await?;
        let transitions = available["transitions"].as_array().cloned().unwrap_or_default();
        let found = transitions.iter().find(|t| t["name"].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)));
        let Some(id) = found.and_then(|t| t["id"].as_str()) else {
            let names: Vec<&str> = transitions.iter().filter_map(|t| t["name"].as_str()).collect();
            return Err(Error::permanent(format!(
                "issue {key} has no transition named {name:?} (available: {})",
                names.join(", ")
            )));
        };
        self.post(&["issue", key, "transitions"], &json!({"transition": {"id": id}})).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::message::tests::message;
    use synchealth_store::Dimension;

    fn config() -> JiraConfig {
        JiraConfig {
            base_url: "https://example.atlassian.net/".into(),
            auth: JiraAuth::Cloud { email: "bot@example.com".into(), api_token: "tok3n".into() },
            project_key: "OPS".into(),
            issue_type: "Bug".into(),
            labels: vec!["mobile".into()],
            fields: Map::new(),
            resolve_transition: Some("Done".into()),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn wiki_markup_in_a_device_value_is_escaped_and_the_token_never_prints() {
        let mut m = message(MessageKind::Firing, Some(0.5));
        m.segment = Some((Dimension::AppVersion, "[Open|https://evil.example] {code}".into()));
        let body = wiki_body(&m);
        assert!(body.contains(r"\[Open\|https://evil.example\] \{code\}"), "{body}");
        assert!(!body.contains("[Open|"), "{body}");
        assert!(!format!("{:?}", config()).contains("tok3n"));
    }

    #[test]
    fn an_issue_names_the_project_type_and_labels_with_a_summary_within_jiras_limit() {
        let m = message(MessageKind::Firing, Some(0.5));
        let body = issue_body(&config(), &m);
        assert_eq!(body["fields"]["project"]["key"], "OPS");
        assert_eq!(body["fields"]["issuetype"]["name"], "Bug");
        assert_eq!(body["fields"]["labels"], json!(["mobile", "synchealth", "synchealth-c7f4b477020b48ea"]));
        assert!(body["fields"]["summary"].as_str().unwrap().chars().count() <= SUMMARY_CHARS);
        let url = Client { http: &reqwest::Client::new(), config: &config() }.url(&["issue", "OPS-1", "comment"]);
        assert_eq!(url.unwrap().as_str(), "https://example.atlassian.net/rest/api/2/issue/OPS-1/comment");
    }
}
