//! `[alerts.channels.<name>]`: one notification channel, by `kind`. Each
//! kind has its own struct, with `deny_unknown_fields` so a key of another
//! kind is an error; that is also why `send_resolved` and `timeout` are
//! repeated on each rather than flattened from one struct (serde cannot
//! deny unknown fields through `flatten`). Secrets are [`Secret`]s.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// One notification channel, by `kind`: `email`, `slack` (Slack-compatible
/// `text` + `blocks`), `alertmanager` (Alertmanager webhook v4 payload),
/// `webhook` (the generic JSON schema in the README), or an incident tool:
/// `pagerduty` (Events API v2), `opsgenie` (Alert API v2), `jira` (REST
/// API v2, Cloud or Data Center) or `teams`
/// (Microsoft Teams webhook with an Adaptive Card).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelSettings {
    /// Email over SMTP.
    Email(EmailChannelSettings),
    /// Slack-compatible incoming webhook.
    Slack(WebhookChannelSettings),
    /// Alertmanager-compatible webhook receiver.
    Alertmanager(WebhookChannelSettings),
    /// Generic JSON webhook.
    Webhook(WebhookChannelSettings),
    /// PagerDuty, Events API v2.
    #[serde(rename = "pagerduty")]
    PagerDuty(PagerDutyChannelSettings),
    /// Opsgenie, Alert API v2.
    Opsgenie(OpsgenieChannelSettings),
    /// Microsoft Teams incoming webhook or Workflows URL.
    Teams(TeamsChannelSettings),
    /// Jira Cloud or Data Center: an issue per alert.
    Jira(JiraChannelSettings),
}

/// `kind = "email"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailChannelSettings {
    /// SMTP server host name.
    pub smtp_host: String,
    /// SMTP port [default: 25 with `none`, 587 with `starttls`, 465 with `tls`].
    #[serde(default)]
    pub smtp_port: Option<u16>,
    /// `"none"` (plain, for a local relay or Mailpit), `"starttls"` or `"tls"` [default: starttls].
    #[serde(default = "default_smtp_security")]
    pub security: synchealth_alerts::delivery::SmtpSecurity,
    /// SMTP user, if the server wants authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// SMTP password.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Sender, e.g. `"synchealth <alerts@example.com>"`.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Whether resolutions are sent too [default: true].
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-attempt timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
    /// PEM certificate to trust beside the built-in roots (a private CA, or a
    /// relay's self-signed certificate), for `starttls` and `tls`.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
}

/// `kind = "slack"`, `"alertmanager"` or `"webhook"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookChannelSettings {
    /// The URL POSTed to (a secret: Slack's carry their token).
    pub url: Secret,
    /// Shared secret: when set, requests carry
    /// `X-Synchealth-Signature: sha256=<hex HMAC-SHA256 of the body>`.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Whether resolutions are sent too [default: true].
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-attempt timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
}

/// `kind = "pagerduty"`: firing and repeats trigger, resolution resolves,
/// all with `dedup_key` = the alert's fingerprint (PagerDuty keeps one
/// incident per alert).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyChannelSettings {
    /// The Events API v2 integration's routing key (32 characters).
    pub routing_key: Secret,
    /// The Events API endpoint [default: "https://events.pagerduty.com/v2/enqueue"].
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// Whether resolutions are sent too [default: true]; without them,
    /// incidents stay open until someone resolves them in PagerDuty.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-request timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
}

/// `kind = "opsgenie"`: firing and repeats create the alert with `alias` =
/// the alert's fingerprint (Opsgenie keeps one open alert per alias),
/// resolution closes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsgenieChannelSettings {
    /// The API integration's key, sent as `Authorization: GenieKey <key>`.
    pub api_key: Secret,
    /// `"us"` (api.opsgenie.com) or `"eu"` (api.eu.opsgenie.com) [default: us].
    #[serde(default)]
    pub region: synchealth_alerts::delivery::Region,
    /// Another API base URL instead of the region's (a proxy).
    #[serde(default)]
    pub api_url: Option<String>,
    /// Who is notified: `[{ type = "team", name = "mobile-oncall" }]`
    /// (`type` team, user, escalation or schedule; `name`, `id`, or a user's
    /// `username`) [default: the integration's team].
    #[serde(default)]
    pub responders: Vec<synchealth_alerts::delivery::Responder>,
    /// Tags on every alert (beside `severity:<severity>`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Whether resolutions close the alert [default: true].
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-request timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
}

/// `kind = "teams"`: one Adaptive Card per group of notices.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsChannelSettings {
    /// The incoming webhook's or the Workflows trigger's URL (a secret: it
    /// is the credential).
    pub url: Secret,
    /// Whether resolutions are sent too [default: true].
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-request timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
}

/// `kind = "jira"`: an issue per alert instance and firing episode, created
/// on firing (its key kept in the store), commented on each repeat and on
/// resolution, then moved through `resolve_transition`. Authenticates with
/// `email` + `api_token` (Jira Cloud) or `personal_access_token` (Data
/// Center), exactly one of the two.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JiraChannelSettings {
    /// The site, e.g. `https://example.atlassian.net` or `https://jira.example.com`.
    pub base_url: String,
    /// Jira Cloud: the account's email, with `api_token`.
    #[serde(default)]
    pub email: Option<String>,
    /// Jira Cloud: the account's API token.
    #[serde(default)]
    pub api_token: Option<Secret>,
    /// Jira Data Center: a personal access token (sent as `Bearer`).
    #[serde(default)]
    pub personal_access_token: Option<Secret>,
    /// The project's key, e.g. `OPS`.
    pub project_key: String,
    /// The issue type [default: "Bug"].
    #[serde(default = "default_issue_type")]
    pub issue_type: String,
    /// Labels on every issue (beside `synchealth` and `synchealth-<fingerprint>`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Further fields of the create request, as Jira's REST API takes them,
    /// e.g. `{ priority = { name = "High" }, components = [{ name = "mobile" }] }`.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The transition a resolution moves the issue through, e.g. `"Done"`;
    /// unset = only a comment.
    #[serde(default)]
    pub resolve_transition: Option<String>,
    /// Whether resolutions are sent too [default: true].
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Per-request timeout [default: "10s"].
    #[serde(default = "default_channel_timeout")]
    pub timeout: String,
}

fn default_issue_type() -> String {
    "Bug".into()
}

fn default_pagerduty_url() -> String {
    synchealth_alerts::delivery::pagerduty::DEFAULT_URL.into()
}

fn default_smtp_security() -> synchealth_alerts::delivery::SmtpSecurity {
    synchealth_alerts::delivery::SmtpSecurity::StartTls
}

fn default_true() -> bool {
    true
}

fn default_channel_timeout() -> String {
    "10s".into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use figment::providers::{Format, Toml};
    use figment::Figment;

    use super::*;

    /// The README's examples of the incident tools, as written there.
    const EXAMPLES: &str = r#"
        [page]
        kind = "pagerduty"
        routing_key = "0123456789abcdef0123456789abcdef"

        [opsgenie]
        kind = "opsgenie"
        api_key = "genie-secret"
        region = "eu"
        responders = [{ type = "team", name = "mobile-oncall" }]
        tags = ["mobile", "sync"]

        [tickets]
        kind = "jira"
        base_url = "https://example.atlassian.net"
        email = "alerts-bot@example.com"
        api_token = "jira-secret"
        project_key = "OPS"
        labels = ["mobile"]
        fields = { priority = { name = "High" } }
        resolve_transition = "Done"

        [teams]
        kind = "teams"
        url = "https://example.webhook.office.com/webhookb2/teams-secret"
    "#;

    fn parse(toml: &str) -> Result<BTreeMap<String, ChannelSettings>, String> {
        Figment::from(Toml::string(toml)).extract().map_err(|e| e.to_string())
    }

    #[test]
    fn the_readme_examples_of_the_incident_tools_parse_and_print_no_secret() {
        let channels = parse(EXAMPLES).unwrap();
        let ChannelSettings::PagerDuty(page) = &channels["page"] else { panic!("{channels:?}") };
        assert_eq!(page.url, "https://events.pagerduty.com/v2/enqueue");
        let ChannelSettings::Opsgenie(opsgenie) = &channels["opsgenie"] else { panic!("{channels:?}") };
        assert_eq!(opsgenie.region.api_url(), "https://api.eu.opsgenie.com");
        let ChannelSettings::Jira(jira) = &channels["tickets"] else { panic!("{channels:?}") };
        assert_eq!((jira.issue_type.as_str(), jira.fields["priority"]["name"].as_str()), ("Bug", Some("High")));
        assert!(matches!(channels["teams"], ChannelSettings::Teams(_)));
        let printed = format!("{channels:?}");
        for secret in ["0123456789abcdef", "genie-secret", "jira-secret", "teams-secret"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
    }

    #[test]
    fn a_key_of_another_kind_is_an_error() {
        let error = parse("[page]\nkind = \"pagerduty\"\nrouting_key = \"k\"\napi_key = \"x\"\n").unwrap_err();
        assert!(error.contains("api_key"), "{error}");
    }
}
