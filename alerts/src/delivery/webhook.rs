//! Webhooks: the same notification as three JSON payloads, POSTed with
//! `Content-Type: application/json`.
//!
//! - **Slack-compatible** (`kind = "slack"`): `text` (the subject, what
//!   notifications and clients without blocks show) and `blocks` (a header, the
//!   facts, a dashboard button). Mattermost, Rocket.Chat and Discord's Slack
//!   endpoint take it too.
//! - **Alertmanager** (`kind = "alertmanager"`): the Prometheus Alertmanager
//!   webhook payload, `"version": "4"`, one per group (a rule in a project:
//!   `groupLabels` `alertname` and `project`, `groupKey`
//!   `{}:{alertname="…", project="…"}` as Alertmanager builds it) with every
//!   alert of the group in its current state, each labelled `alertname`,
//!   `project`, `severity` and the segment (`app_version="2.3.0"`), with
//!   annotations `summary`, `description`, `value`, `threshold`; receivers
//!   written for Alertmanager take it unchanged.
//! - **Generic** (`kind = "webhook"`), schema version 1:
//!
//! ```json
//! {
//!   "schema": "synchealth.alert.v1",
//!   "kind": "firing",            // firing | repeat | resolved | test
//!   "state": "firing",           // firing | resolved
//!   "rule": "sync-success-rate",
//!   "project": "demo",
//!   "segment": {"dimension": "app_version", "value": "2.3.0"},  // or null
//!   "metric": "success_rate",
//!   "comparison": "<",
//!   "value": 0.912,              // or null (no data)
//!   "threshold": 0.95,
//!   "events": 812,
//!   "window": {"from": "2026-11-22T10:00:00Z", "to": "2026-11-22T10:10:00Z"},
//!   "since": "2026-11-22T10:05:00Z",
//!   "severity": "page",
//!   "summary": "[FIRING] success rate 91.2% < 95% — release 2.3.0",
//!   "description": "Fewer than 95% of sync attempts succeed.",  // or null
//!   "dashboard_url": "https://…/?project=demo&from=…&to=…&app_version=2.3.0",
//!   "fingerprint": "c7f4b477020b48ea",
//!   "notification_id": "6f1c…"
//! }
//! ```
//!
//! With a `secret`, every request carries `X-Synchealth-Timestamp: <unix
//! seconds>` and `X-Synchealth-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<body>">`, so the receiver can check it came from us (compare
//! in constant time) and recently: signing the timestamp with the body means
//! a captured request cannot be replayed later with a fresh timestamp, and a
//! receiver rejecting timestamps older than a few minutes ([`verify`]) turns
//! a replay away. Each attempt (retries too) is signed anew at its own time.
//!
//! Every text that comes from events or config (an app version, a rule's
//! description) is escaped for Slack's mrkdwn (`&`, `<`, `>`), so a release
//! named `<!channel>` neither notifies a whole channel nor shows a link, and
//! cut to Slack's limits (3,000 characters per section text, 2,000 per
//! field, 150 per header) after escaping, never inside an entity.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::message::{format_value, rfc3339, truncate, AlertGroup, AlertMessage, MessageKind};
use crate::error::Result;
use crate::rule::metric_name;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "X-Synchealth-Signature";
/// The header with the signing time, unix seconds.
pub const TIMESTAMP_HEADER: &str = "X-Synchealth-Timestamp";
/// How old a signed request [`verify`] accepts by default: clocks a little
/// apart plus a slow network, not a replay hours later.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Which payload a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// Slack-compatible `text` + `blocks`.
    Slack,
    /// Alertmanager webhook v4.
    Alertmanager,
    /// The generic schema of the module doc.
    Generic,
}

/// A webhook channel's settings.
#[derive(Clone)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// Shared secret for the signature header, if any.
    pub secret: Option<String>,
    /// Per-attempt timeout.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The payload of a group in a format. The generic format is one instance's
/// (schema v1): the dispatcher gives it groups of one notice.
pub fn payload(format: WebhookFormat, group: &AlertGroup, channel: &str, notification_id: &str) -> Value {
    match format {
        WebhookFormat::Slack => slack(group),
        WebhookFormat::Alertmanager => alertmanager(group, channel),
        WebhookFormat::Generic => generic(group.lead(), notification_id),
    }
}

/// `sha256=<hex>` of `<timestamp>.<body>` under the secret.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    format!("sha256={}", hex::encode(hmac_sha256(secret, &signed)))
}

fn hmac_sha256(secret: &str, bytes: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return Vec::new();
    };
    mac.update(bytes);
    mac.finalize().into_bytes().to_vec()
}

/// What a receiver does with a signed request: the signature must be
/// `sha256=` the HMAC of `<timestamp>.<body>` (compared in constant time) and
/// the timestamp at most `tolerance` away from `now_s` (unix seconds), so a
/// replayed request is rejected once it is older than that.
pub fn verify(
    secret: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_s: i64,
    tolerance: Duration,
) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now_s.abs_diff(ts) > tolerance.unsigned_abs() {
        return false;
    }
    let Some(given) = signature_header.trim().strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let mut signed = format!("{ts}.").into_bytes();
    signed.extend_from_slice(body);
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(&signed);
    mac.verify_slice(&given).is_ok()
}

/// One POST: 2xx is delivered; failures are classified by [`super::http`]
/// (no answer, 408, 429 and 5xx are worth retrying; other statuses are not).
#[tracing::instrument(skip_all)]
pub async fn post(http: &reqwest::Client, config: &WebhookConfig, body: Vec<u8>) -> Result<()> {
    let mut request =
        http.post(&config.url).timeout(config.timeout).header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &config.secret {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        request =
            request.header(TIMESTAMP_HEADER, now.to_string()).header(SIGNATURE_HEADER, signature(secret, now, &body));
    }
    super::http::send(request.body(body)).await.map(drop)
}

fn segment_json(message: &AlertMessage) -> Value {
    match &message.segment {
        Some((dimension, value)) => json!({"dimension": dimension.column(), "value": value}),
        None => Value::Null,
    }
}

fn generic(m: &AlertMessage, notification_id: &str) -> Value {
    json!({
        "schema": "synchealth.alert.v1",
        "kind": m.kind.as_str(),
        "state": m.kind.state(),
        "rule": m.rule,
        "project": m.project.as_str(),
        "segment": segment_json(m),
        "metric": metric_name(m.metric),
        "comparison": m.comparison.symbol(),
        "value": m.value,
        "threshold": m.threshold,
        "events": m.events,
        "window": {"from": rfc3339(m.window.start), "to": rfc3339(m.window.end)},
        "since": rfc3339(m.since),
        "severity": m.severity_text(),
        "summary": m.subject(),
        "description": m.description,
        "dashboard_url": m.dashboard_url,
        "fingerprint": m.fingerprint,
        "notification_id": notification_id,
    })
}

/// Slack's limits (<https://api.slack.com/reference/block-kit/blocks>).
const SLACK_SECTION_TEXT: usize = 3000;
const SLACK_FIELD_TEXT: usize = 2000;
const SLACK_HEADER_TEXT: usize = 150;
const SLACK_FIELDS_PER_SECTION: usize = 10;
/// Slack takes 50 blocks; a group shows this many segments, then a count.
const SLACK_SEGMENTS_SHOWN: usize = 10;

/// Escapes text for Slack's mrkdwn (`&`, `<`, `>` as Slack asks: nothing
/// else is decoded) and cuts it to `max_chars` characters after escaping,
/// never inside an entity, ending in `…` when cut.
pub fn slack_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len());
    let mut used = 0;
    let total: usize = text.chars().map(|c| slack_escape(c).map_or(1, str::len)).sum();
    for c in text.chars() {
        let piece = slack_escape(c);
        let width = piece.map_or(1, str::len);
        if total > max_chars && used + width > max_chars.saturating_sub(1) {
            out.push('…');
            return out;
        }
        match piece {
            Some(entity) => out.push_str(entity),
            None => out.push(c),
        }
        used += width;
    }
    out
}

fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// One notice's facts as Slack fields, labels in bold, values escaped.
fn slack_fields(m: &AlertMessage) -> Vec<Value> {
    m.facts()
        .into_iter()
        .filter(|(label, _)| *label != "Fingerprint")
        .map(|(label, value)| {
            let text = format!("*{label}*\n{}", slack_text(&value, SLACK_FIELD_TEXT - label.len() - 3));
            json!({"type": "mrkdwn", "text": text})
        })
        .collect()
}

fn slack(group: &AlertGroup) -> Value {
    let lead = group.lead();
    let subject = group.subject();
    // A header is plain_text, which Slack never parses for mentions or links.
    let mut blocks =
        vec![json!({"type": "header", "text": {"type": "plain_text", "text": truncate(&subject, SLACK_HEADER_TEXT)}})];
    if let Some(description) = &lead.description {
        blocks.push(
            json!({"type": "section", "text": {"type": "mrkdwn", "text": slack_text(description, SLACK_SECTION_TEXT)}}),
        );
    }
    let several = group.changed().len() > 1;
    for m in group.changed().iter().take(SLACK_SEGMENTS_SHOWN) {
        if several {
            let text = format!("*{}*", slack_text(&m.subject(), SLACK_SECTION_TEXT - 2));
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        }
        for chunk in slack_fields(m).chunks(SLACK_FIELDS_PER_SECTION) {
            blocks.push(json!({"type": "section", "fields": chunk}));
        }
        // The URL is ours, with every value percent-encoded.
        blocks.push(json!({
            "type": "actions",
            "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": m.dashboard_url}]
        }));
    }
    if group.changed().len() > SLACK_SEGMENTS_SHOWN {
        let more = format!("…and {} more segments", group.changed().len() - SLACK_SEGMENTS_SHOWN);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": more}}));
    }
    let fingerprints: Vec<String> = group.changed().iter().map(|m| format!("`{}`", m.fingerprint)).collect();
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": format!("fingerprint {}", fingerprints.join(" "))}]}));
    json!({"text": slack_text(&subject, SLACK_SECTION_TEXT), "blocks": blocks})
}

/// The labels of one alert: `alertname`, `project`, `severity` and the
/// segment's dimension.
fn am_labels(m: &AlertMessage) -> serde_json::Map<String, Value> {
    let mut labels = serde_json::Map::new();
    labels.insert("alertname".into(), json!(m.rule));
    labels.insert("project".into(), json!(m.project.as_str()));
    labels.insert("severity".into(), json!(m.severity_text()));
    if let Some((dimension, value)) = &m.segment {
        labels.insert(dimension.column().into(), json!(value));
    }
    labels
}

fn am_annotations(m: &AlertMessage) -> serde_json::Map<String, Value> {
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), json!(m.subject()));
    annotations.insert("description".into(), json!(m.description.clone().unwrap_or_default()));
    annotations.insert("value".into(), json!(m.value_text()));
    annotations.insert(
        "threshold".into(),
        json!(format!("{} {}", m.comparison.symbol(), format_value(m.metric, m.threshold))),
    );
    annotations
}

/// The pairs every map has with the same value (Alertmanager's
/// `commonLabels`, `commonAnnotations`).
fn common(maps: &[serde_json::Map<String, Value>]) -> serde_json::Map<String, Value> {
    let Some((first, rest)) = maps.split_first() else {
        return serde_json::Map::new();
    };
    first
        .iter()
        .filter(|(k, v)| rest.iter().all(|m| m.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// A label value as Go's `%q` writes it in Alertmanager's `groupKey`.
fn go_quote(value: &str) -> String {
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// "Never": Alertmanager's zero time, for `endsAt` of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Alertmanager's semantics: one message per group, the group being the
/// rule in a project (`groupLabels` `alertname` and `project`; `group_by`
/// segments are alerts of the group, told apart by their labels), carrying
/// every alert of the group in its current state, so a receiver that takes
/// a message as the group's whole state (as Alertmanager's own receivers
/// do) sees the segments still firing beside the one that resolved.
/// `groupKey` is built as Alertmanager builds it, the route's key (`{}`),
/// `:`, and the group labels; `startsAt` is the episode's start in every
/// message, `endsAt` the resolution on a resolved alert.
fn alertmanager(group: &AlertGroup, channel: &str) -> Value {
    let lead = group.lead();
    let mut alerts = Vec::new();
    let mut all_labels = Vec::new();
    let mut all_annotations = Vec::new();
    for m in group.changed().iter().chain(group.firing()) {
        let labels = am_labels(m);
        let annotations = am_annotations(m);
        // A test is sent resolved: Alertmanager's statuses are firing and
        // resolved, and only firing opens incidents.
        let ends_at = match m.kind {
            MessageKind::Resolved(_) | MessageKind::Test => rfc3339(m.since),
            _ => ZERO_TIME.to_string(),
        };
        let status = if matches!(m.kind, MessageKind::Test) { "resolved" } else { m.kind.state() };
        alerts.push(json!({
            "status": status,
            "labels": labels,
            "annotations": annotations,
            "startsAt": rfc3339(m.started_at),
            "endsAt": ends_at,
            "generatorURL": m.dashboard_url,
            "fingerprint": m.fingerprint,
        }));
        all_labels.push(labels);
        all_annotations.push(annotations);
    }
    let status = if alerts.iter().any(|a| a["status"] == "firing") { "firing" } else { "resolved" };
    let group_labels = json!({"alertname": lead.rule, "project": lead.project.as_str()});
    let group_key = format!("{{}}:{{alertname={}, project={}}}", go_quote(&lead.rule), go_quote(lead.project.as_str()));
    let external = lead.dashboard_url.split("/?").next().unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": channel,
        "groupLabels": group_labels,
        "commonLabels": common(&all_labels),
        "commonAnnotations": common(&all_annotations),
        "externalURL": external,
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_text_escapes_the_three_characters_slack_decodes_and_nothing_else() {
        assert_eq!(
            slack_text("<!channel> <https://evil.example/login|Open dashboard> & 'x'", 3000),
            "&lt;!channel&gt; &lt;https://evil.example/login|Open dashboard&gt; &amp; 'x'"
        );
    }

    #[test]
    fn slack_text_is_cut_to_the_limit_after_escaping_and_never_inside_an_entity() {
        let cut = slack_text(&"<".repeat(1000), 3000);
        assert!(cut.chars().count() <= 3000, "{}", cut.chars().count());
        assert!(cut.ends_with("&lt;…"), "{}", &cut[cut.len() - 10..]);
        assert_eq!(slack_text("short", 3000), "short");
        assert_eq!(slack_text("abcdef", 4), "abc…");
    }

    #[test]
    fn go_quote_escapes_quotes_and_backslashes_as_alertmanager_group_keys_do() {
        assert_eq!(go_quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn the_hmac_is_the_published_hmac_sha256_test_vector() {
        // RFC 4231, test case 2.
        assert_eq!(
            hex::encode(hmac_sha256("Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_signature_covers_the_timestamp_then_a_dot_then_the_body() {
        let body = br#"{"kind":"firing"}"#;
        let expected = format!("sha256={}", hex::encode(hmac_sha256("s3cret", br#"1700000000.{"kind":"firing"}"#)));
        assert_eq!(signature("s3cret", 1_700_000_000, body), expected);
        assert_ne!(signature("s3cret", 1_700_000_001, body), expected, "another timestamp, another signature");
    }

    #[test]
    fn verify_accepts_a_fresh_request_and_rejects_a_replay_a_changed_body_or_a_moved_timestamp() {
        let body = br#"{"kind":"firing"}"#;
        let sig = signature("s3cret", 1_700_000_000, body);
        let tolerance = DEFAULT_TOLERANCE;
        assert!(verify("s3cret", "1700000000", &sig, body, 1_700_000_010, tolerance));
        assert!(
            !verify("s3cret", "1700000000", &sig, body, 1_700_000_000 + 301, tolerance),
            "replayed 5 minutes later"
        );
        assert!(!verify("s3cret", "1700000400", &sig, body, 1_700_000_400, tolerance), "timestamp moved forward");
        assert!(!verify("s3cret", "1700000000", &sig, br#"{"kind":"resolved"}"#, 1_700_000_000, tolerance));
        assert!(!verify("other", "1700000000", &sig, body, 1_700_000_000, tolerance));
        assert!(!verify("s3cret", "soon", &sig, body, 1_700_000_000, tolerance));
    }
}
