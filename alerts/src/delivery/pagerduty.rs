//! PagerDuty (`kind = "pagerduty"`): the Events API v2
//! (`POST https://events.pagerduty.com/v2/enqueue`), one event per alert
//! instance.
//!
//! PagerDuty deduplicates by `dedup_key`, so the key is the alert's
//! fingerprint: firing and every repeat are a `trigger` with that key (one
//! incident, however many repeats; a repeat after PagerDuty resolved it by
//! hand opens a new one, which is what a still-failing release deserves),
//! and resolution is a `resolve` with it. `payload.severity` is mapped from
//! the rule's (`page` → `critical`, `ticket` → `warning`, `info` → `info`);
//! `custom_details` carries the figures (value, threshold, window, segment,
//! events) and `links` the dashboard view. The top explanation of a
//! breach would go into `custom_details` too once that feature exists; it
//! does not yet, so nothing is sent for it.
//!
//! A test (`synchealth alerts test`) cannot page: severity `info`, a
//! `dedup_key` of its own (`synchealth-test-<notification id>`, never an
//! alert's), and a `resolve` right after the `trigger`.
//!
//! JSON escapes every value; PagerDuty shows `summary` as plain text.

use std::time::Duration;

use serde_json::{json, Value};

use super::message::{format_value, rfc3339, truncate, AlertMessage, MessageKind};
use crate::error::Result;
use crate::rule::{metric_name, Severity};

/// Where events go unless configured otherwise.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty's limits: `summary` 1024 characters, `dedup_key` 255.
const SUMMARY_CHARS: usize = 1024;

/// A PagerDuty channel's settings.
#[derive(Clone)]
pub struct PagerDutyConfig {
    /// The integration's routing key (a secret: it lets anyone page).
    pub routing_key: String,
    /// The Events API v2 endpoint ([`DEFAULT_URL`]).
    pub url: String,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for PagerDutyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagerDutyConfig")
            .field("routing_key", &"<redacted>")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The severity PagerDuty gets for a notice.
pub fn severity(m: &AlertMessage) -> &'static str {
    match (m.kind, m.severity) {
        (MessageKind::Test, _) | (_, Severity::Info) => "info",
        (_, Severity::Ticket) => "warning",
        (_, Severity::Page) => "critical",
    }
}

/// The events one notice sends, in order: a trigger (firing, repeat), a
/// resolve (resolved), or a trigger and its resolve (a test).
pub fn events(config: &PagerDutyConfig, m: &AlertMessage, notification_id: &str) -> Vec<Value> {
    let key = m.incident_key(notification_id);
    let resolve = json!({"routing_key": config.routing_key, "event_action": "resolve", "dedup_key": key});
    match m.kind {
        MessageKind::Resolved(_) => vec![resolve],
        MessageKind::Test => vec![trigger(config, m, &key), resolve],
        MessageKind::Firing | MessageKind::Repeat => vec![trigger(config, m, &key)],
    }
}

fn trigger(config: &PagerDutyConfig, m: &AlertMessage, key: &str) -> Value {
    let segment = m.segment.as_ref().map(|(d, v)| json!({"dimension": d.column(), "value": v}));
    json!({
        "routing_key": config.routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": truncate(&m.subject(), SUMMARY_CHARS),
            "source": format!("synchealth/{}", m.project),
            "severity": severity(m),
            "timestamp": rfc3339(m.since),
            "component": m.segment_label().unwrap_or_else(|| m.project.to_string()),
            "group": m.project.as_str(),
            "class": metric_name(m.metric),
            "custom_details": {
                "rule": m.rule,
                "description": m.description,
                "value": m.value_text(),
                "threshold": format!("{} {}", m.comparison.symbol(), format_value(m.metric, m.threshold)),
                "window": {"from": rfc3339(m.window.start), "to": rfc3339(m.window.end)},
                "segment": segment,
                "events": m.events,
                "fingerprint": m.fingerprint,
            },
        },
        "client": "synchealth",
        "client_url": m.dashboard_url,
        "links": [{"href": m.dashboard_url, "text": "Open the dashboard for this segment and window"}],
    })
}

/// Sends a notice's events, in order.
#[tracing::instrument(skip_all, fields(kind = m.kind.as_str()))]
pub async fn send(
    http: &reqwest::Client,
    config: &PagerDutyConfig,
    m: &AlertMessage,
    notification_id: &str,
) -> Result<()> {
    for event in events(config, m, notification_id) {
        super::http::send(http.post(&config.url).timeout(config.timeout).json(&event)).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::message::tests::message;
    use crate::state::ResolveReason;

    fn config() -> PagerDutyConfig {
        PagerDutyConfig { routing_key: "r".repeat(32), url: DEFAULT_URL.into(), timeout: Duration::from_secs(1) }
    }

    #[test]
    fn firing_and_repeat_trigger_the_fingerprint_and_resolution_resolves_it() {
        for kind in [MessageKind::Firing, MessageKind::Repeat] {
            let events = events(&config(), &message(kind, Some(0.5)), "n1");
            assert_eq!(events.len(), 1);
            assert_eq!(events[0]["event_action"], "trigger");
            assert_eq!(events[0]["dedup_key"], "c7f4b477020b48ea");
            assert_eq!(events[0]["payload"]["severity"], "critical", "the default rule pages");
        }
        let resolved = events(&config(), &message(MessageKind::Resolved(ResolveReason::Recovered), Some(0.99)), "n2");
        assert_eq!((resolved.len(), &resolved[0]["event_action"]), (1, &json!("resolve")));
        assert_eq!(resolved[0]["dedup_key"], "c7f4b477020b48ea");
    }

    #[test]
    fn a_test_is_an_info_trigger_with_its_own_key_resolved_right_after() {
        let events = events(&config(), &message(MessageKind::Test, None), "n3");
        let actions: Vec<&Value> = events.iter().map(|e| &e["event_action"]).collect();
        assert_eq!(actions, [&json!("trigger"), &json!("resolve")]);
        assert_eq!(events[0]["payload"]["severity"], "info");
        assert!(events.iter().all(|e| e["dedup_key"] == "synchealth-test-n3"));
    }

    #[test]
    fn the_routing_key_never_prints() {
        assert!(!format!("{:?}", config()).contains("rrrr"));
    }
}
