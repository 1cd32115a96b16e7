//! The alerts role built from `[alerts]`: its channels, retry policy and
//! dispatcher, and the evaluator with its lease. `synchealth alerts test`
//! (in `commands/`) sends through the same dispatcher, so a test proves the
//! configuration the role runs with.

use std::time::Duration;

use anyhow::Context;
use synchealth_alerts::delivery::{
    Channel, ChannelKind, Dispatcher, EmailConfig, JiraAuth, JiraConfig, OpsgenieConfig, PagerDutyConfig, RetryPolicy,
    TeamsConfig, WebhookConfig, WebhookFormat,
};
use synchealth_alerts::{duration, Evaluator};
use synchealth_store::SharedStore;

use crate::settings::{AlertSettings, ChannelSettings, JiraChannelSettings};

/// A positive duration setting (`"10s"`) as a std duration.
pub(crate) fn positive(text: &str, key: &str) -> anyhow::Result<Duration> {
    let d = duration::parse(text).with_context(|| key.to_string())?;
    anyhow::ensure!(d.is_positive(), "{key} must be positive");
    Ok(d.unsigned_abs())
}

/// The configured channels, ready for the dispatcher.
pub fn channels(settings: &AlertSettings) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for (name, config) in &settings.channels {
        let key = |field: &str| format!("alerts.channels.{name}.{field}");
        let channel = match config {
            ChannelSettings::Email(e) => Channel {
                name: name.clone(),
                send_resolved: e.send_resolved,
                kind: ChannelKind::Email(EmailConfig {
                    host: e.smtp_host.clone(),
                    port: e.smtp_port,
                    security: e.security,
                    username: e.username.clone(),
                    password: e.password.as_ref().map(|p| p.expose().to_string()),
                    from: e.from.clone(),
                    to: e.to.clone(),
                    timeout: positive(&e.timeout, &key("timeout"))?,
                    ca_file: e.tls_ca_file.clone(),
                }),
            },
            ChannelSettings::Slack(w) | ChannelSettings::Alertmanager(w) | ChannelSettings::Webhook(w) => {
                let format = match config {
                    ChannelSettings::Slack(_) => WebhookFormat::Slack,
                    ChannelSettings::Alertmanager(_) => WebhookFormat::Alertmanager,
                    _ => WebhookFormat::Generic,
                };
                Channel {
                    name: name.clone(),
                    send_resolved: w.send_resolved,
                    kind: ChannelKind::Webhook(
                        format,
                        WebhookConfig {
                            url: w.url.expose().to_string(),
                            secret: w.secret.as_ref().map(|s| s.expose().to_string()),
                            timeout: positive(&w.timeout, &key("timeout"))?,
                        },
                    ),
                }
            }
            ChannelSettings::PagerDuty(p) => Channel {
                name: name.clone(),
                send_resolved: p.send_resolved,
                kind: ChannelKind::PagerDuty(PagerDutyConfig {
                    routing_key: p.routing_key.expose().to_string(),
                    url: p.url.clone(),
                    timeout: positive(&p.timeout, &key("timeout"))?,
                }),
            },
            ChannelSettings::Opsgenie(o) => Channel {
                name: name.clone(),
                send_resolved: o.send_resolved,
                kind: ChannelKind::Opsgenie(OpsgenieConfig {
                    api_key: o.api_key.expose().to_string(),
                    api_url: o.api_url.clone().unwrap_or_else(|| o.region.api_url().to_string()),
                    responders: o.responders.clone(),
                    tags: o.tags.clone(),
                    timeout: positive(&o.timeout, &key("timeout"))?,
                }),
            },
            ChannelSettings::Jira(j) => Channel {
                name: name.clone(),
                send_resolved: j.send_resolved,
                kind: ChannelKind::Jira(JiraConfig {
                    base_url: j.base_url.clone(),
                    auth: jira_auth(j, &key)?,
                    project_key: j.project_key.clone(),
                    issue_type: j.issue_type.clone(),
                    labels: j.labels.clone(),
                    fields: j.fields.clone(),
                    resolve_transition: j.resolve_transition.clone(),
                    timeout: positive(&j.timeout, &key("timeout"))?,
                }),
            },
            ChannelSettings::Teams(t) => Channel {
                name: name.clone(),
                send_resolved: t.send_resolved,
                kind: ChannelKind::Teams(TeamsConfig {
                    url: t.url.expose().to_string(),
                    timeout: positive(&t.timeout, &key("timeout"))?,
                }),
            },
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// Jira Cloud's email and API token, or Data Center's personal access
/// token: exactly one.
fn jira_auth(j: &JiraChannelSettings, key: &dyn Fn(&str) -> String) -> anyhow::Result<JiraAuth> {
    match (&j.email, &j.api_token, &j.personal_access_token) {
        (Some(email), Some(token), None) => {
            Ok(JiraAuth::Cloud { email: email.clone(), api_token: token.expose().to_string() })
        }
        (None, None, Some(token)) => Ok(JiraAuth::DataCenter { token: token.expose().to_string() }),
        _ => anyhow::bail!(
            "{}: give email and api_token (Jira Cloud) or personal_access_token (Data Center), not both",
            key("*")
        ),
    }
}

/// The retry policy of `[alerts.retry]`.
pub fn retry_policy(settings: &AlertSettings) -> anyhow::Result<RetryPolicy> {
    let r = &settings.retry;
    anyhow::ensure!(r.max_attempts >= 1, "alerts.retry.max_attempts must be at least 1");
    anyhow::ensure!(r.initial_delay_ms >= 1, "alerts.retry.initial_delay_ms must be at least 1");
    anyhow::ensure!(
        r.max_delay_ms >= r.initial_delay_ms,
        "alerts.retry.max_delay_ms must be at least initial_delay_ms"
    );
    Ok(RetryPolicy {
        initial: Duration::from_millis(r.initial_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms),
        max_attempts: r.max_attempts,
    })
}

/// The dispatcher for the configured channels.
pub fn dispatcher(store: SharedStore, settings: &AlertSettings) -> anyhow::Result<Dispatcher> {
    Dispatcher::new(store, channels(settings)?, retry_policy(settings)?, &settings.public_url)
        .context("configuring the alert channels")
}

/// The alerts role's evaluator: rules, channels, and a lease held under a
/// name unique to this process.
pub fn evaluator(store: SharedStore, settings: &AlertSettings) -> anyhow::Result<Evaluator> {
    let dispatcher = dispatcher(store.clone(), settings)?;
    let missing: Vec<String> = settings
        .rules
        .iter()
        .flat_map(|rule| {
            rule.channels.iter().filter(|c| !dispatcher.has_channel(c)).map(move |c| format!("{} → {c}", rule.name))
        })
        .collect();
    if !missing.is_empty() {
        // Once, at start: the shipped rules name `email` and `chat`, which a
        // fresh install has not configured yet.
        tracing::warn!(
            missing = %missing.join(", "),
            "Rules name channels that are not configured; their notices are recorded as \"no channel configured\" and not sent."
        );
    }
    let interval = settings.interval()?;
    let ttl = match &settings.lease_ttl {
        Some(text) => positive(text, "alerts.lease_ttl")?,
        None => interval * 3,
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let holder = format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().to_string()[..8]);
    Ok(Evaluator::new(store, settings.rules.clone()).with_dispatcher(dispatcher).with_lease(holder, ttl))
}
