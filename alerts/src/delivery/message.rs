//! One alert notification, as every channel renders it: the subject line,
//! plain text and HTML bodies, and the dashboard link pre-filtered to the
//! segment and the evaluated window; and [`AlertGroup`], what one evaluation
//! has to say about one rule in one project (every segment that changed, and
//! those still firing), which email, Slack and Alertmanager send as one
//! message, as Alertmanager's `group_wait` would, instead of one per segment.

use std::fmt::Write as _;
use std::ops::Range;

use synchealth_schema::ProjectName;
use synchealth_store::metrics::Metric;
use synchealth_store::{Dimension, Filters};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::rule::{is_fraction, metric_name, Comparison, Rule, Severity};
use crate::state::{Notification, ResolveReason};

/// What a notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// The alert started firing.
    Firing,
    /// Still firing, `repeat_interval` after the last notice.
    Repeat,
    /// The alert stopped firing.
    Resolved(ResolveReason),
    /// `synchealth alerts test`: no alert behind it.
    Test,
}

impl MessageKind {
    /// From the state machine's notification.
    pub fn of(notification: Notification) -> MessageKind {
        match notification {
            Notification::Firing => MessageKind::Firing,
            Notification::Repeat => MessageKind::Repeat,
            Notification::Resolved { reason } => MessageKind::Resolved(reason),
        }
    }

    /// `firing`, `repeat`, `resolved` or `test`: the stored kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Firing => "firing",
            MessageKind::Repeat => "repeat",
            MessageKind::Resolved(_) => "resolved",
            MessageKind::Test => "test",
        }
    }

    /// The alert's state as receivers see it: `firing`, `resolved`, or
    /// `test` for a test, which no receiver should take for an alert.
    pub fn state(self) -> &'static str {
        match self {
            MessageKind::Resolved(_) => "resolved",
            MessageKind::Test => "test",
            _ => "firing",
        }
    }
}

/// The rule name and fingerprint of `synchealth alerts test`'s notices: a
/// real fingerprint (receivers keyed on it keep tests apart from alerts),
/// never one of a rule's.
pub const TEST_RULE: &str = "synchealth-test";

/// Everything a channel needs to tell people about one alert instance.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertMessage {
    /// What happened.
    pub kind: MessageKind,
    /// The project.
    pub project: ProjectName,
    /// The rule's name.
    pub rule: String,
    /// The rule's description, if any.
    pub description: Option<String>,
    /// The metric watched.
    pub metric: Metric,
    /// The comparison with the threshold.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// How urgent.
    pub severity: Severity,
    /// The segment of a `group_by` rule.
    pub segment: Option<(Dimension, String)>,
    /// The rule's filters.
    pub filters: Filters,
    /// The metric's value over the window (`None`: no data).
    pub value: Option<f64>,
    /// Stored events in the window.
    pub events: u64,
    /// The window evaluated.
    pub window: Range<OffsetDateTime>,
    /// Since when the condition held (firing), or when it resolved.
    pub since: OffsetDateTime,
    /// When this firing episode started (the start of pending): the same in
    /// every notice of the episode, resolved included, so receivers can tell
    /// it is the same alert (Alertmanager's `startsAt`).
    pub started_at: OffsetDateTime,
    /// The alert instance's fingerprint.
    pub fingerprint: String,
    /// The dashboard, filtered to the segment and window.
    pub dashboard_url: String,
}

impl AlertMessage {
    /// A message about `rule`'s instance for `segment` in `project`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: MessageKind,
        project: &ProjectName,
        rule: &Rule,
        segment: Option<(Dimension, String)>,
        value: Option<f64>,
        events: u64,
        now: OffsetDateTime,
        since: OffsetDateTime,
        started_at: OffsetDateTime,
        fingerprint: String,
        public_url: &str,
    ) -> AlertMessage {
        let window = rule.window_at(now);
        let dashboard_url = dashboard_url(public_url, project, &window, &rule.filters, segment.as_ref());
        AlertMessage {
            kind,
            project: project.clone(),
            rule: rule.name.clone(),
            description: rule.description.clone(),
            metric: rule.metric,
            comparison: rule.comparison,
            threshold: rule.threshold,
            severity: rule.severity,
            segment,
            filters: rule.filters.clone(),
            value,
            events,
            window,
            since,
            started_at,
            fingerprint,
            dashboard_url,
        }
    }

    /// The severity as receivers see it: the rule's, or `test` for a test
    /// (not `page`: a test must not page anyone).
    pub fn severity_text(&self) -> &'static str {
        match self.kind {
            MessageKind::Test => "test",
            _ => self.severity.as_str(),
        }
    }

    /// The key incident tools deduplicate by (PagerDuty's `dedup_key`,
    /// Opsgenie's `alias`): the fingerprint, so every notice of an alert
    /// updates its one incident; for a test, one of its own
    /// (`synchealth-test-<notification id>`), which touches no alert's
    /// incident and no earlier test's.
    pub fn incident_key(&self, notification_id: &str) -> String {
        match self.kind {
            MessageKind::Test => format!("synchealth-test-{notification_id}"),
            _ => self.fingerprint.clone(),
        }
    }

    /// `dimension=value`, as stored and silenced.
    pub fn segment_label(&self) -> Option<String> {
        self.segment.as_ref().map(|(d, v)| format!("{}={v}", d.column()))
    }

    /// Where it happened, in words: `release 2.3.0`, `os android`, or the
    /// project for a rule without `group_by`.
    pub fn place(&self) -> String {
        match &self.segment {
            Some((Dimension::AppVersion, v)) => format!("release {v}"),
            Some((Dimension::Os, v)) => format!("os {v}"),
            Some((Dimension::Network, v)) => format!("network {v}"),
            None => format!("project {}", self.project),
        }
    }

    /// `success rate 91.2% < 95%`.
    pub fn condition_text(&self) -> String {
        format!(
            "{} {} {} {}",
            metric_label(self.metric),
            self.value_text(),
            self.comparison.symbol(),
            format_value(self.metric, self.threshold)
        )
    }

    /// The value, formatted for the metric, or `no data`.
    pub fn value_text(&self) -> String {
        self.value.map_or_else(|| "no data".into(), |v| format_value(self.metric, v))
    }

    /// `[FIRING] success rate 91.2% < 95% — release 2.3.0`.
    pub fn subject(&self) -> String {
        let place = self.place();
        match self.kind {
            MessageKind::Firing => format!("[FIRING] {} — {place}", self.condition_text()),
            MessageKind::Repeat => format!("[FIRING, still] {} — {place}", self.condition_text()),
            MessageKind::Resolved(ResolveReason::Recovered) => format!(
                "[RESOLVED] {} back to {} (alert: {} {}) — {place}",
                metric_label(self.metric),
                self.value_text(),
                self.comparison.symbol(),
                format_value(self.metric, self.threshold)
            ),
            MessageKind::Resolved(ResolveReason::InsufficientData) => format!(
                "[RESOLVED] {} — not enough data any more (alert: {} {}) — {place}",
                metric_label(self.metric),
                self.comparison.symbol(),
                format_value(self.metric, self.threshold)
            ),
            MessageKind::Test => format!("[TEST] synchealth notification test — {place}"),
        }
    }

    /// The facts, one `label: value` pair per line, shared by every format.
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            ("Rule", self.rule.clone()),
            ("Project", self.project.to_string()),
            ("Severity", self.severity_text().to_string()),
            ("Value", self.value_text()),
            ("Threshold", format!("{} {}", self.comparison.symbol(), format_value(self.metric, self.threshold))),
            ("Events in window", self.events.to_string()),
            ("Window", format!("{} to {}", rfc3339(self.window.start), rfc3339(self.window.end))),
        ];
        if let Some(segment) = self.segment_label() {
            facts.insert(2, ("Segment", segment));
        }
        let since_label = if matches!(self.kind, MessageKind::Resolved(_)) { "Resolved at" } else { "Since" };
        facts.push((since_label, rfc3339(self.since)));
        facts.push(("Fingerprint", self.fingerprint.clone()));
        facts
    }

    /// The plain text body.
    pub fn text_body(&self) -> String {
        let mut body = format!("{}\n\n", self.subject());
        if let Some(description) = &self.description {
            let _ = writeln!(body, "{description}\n");
        }
        for (label, value) in self.facts() {
            let _ = writeln!(body, "{label}: {value}");
        }
        let _ = writeln!(body, "\nDashboard: {}", self.dashboard_url);
        body
    }

    /// The HTML body (every interpolated value escaped).
    pub fn html_body(&self) -> String {
        format!("<!doctype html><html><body>{}</body></html>", self.html_section("h2"))
    }

    /// The subject as a `heading`, the description, the facts' table and
    /// the dashboard link, every interpolated value escaped.
    fn html_section(&self, heading: &str) -> String {
        let mut rows = String::new();
        for (label, value) in self.facts() {
            let _ = write!(rows, "<tr><th align=\"left\">{}</th><td>{}</td></tr>", escape(label), escape(&value));
        }
        let description = self.description.as_deref().map(|d| format!("<p>{}</p>", escape(d))).unwrap_or_default();
        format!(
            "<{heading}>{subject}</{heading}>{description}<table>{rows}</table>\
             <p><a href=\"{url}\">Open the dashboard for this segment and window</a></p>",
            subject = escape(&self.subject()),
            url = escape(&self.dashboard_url),
        )
    }
}

/// What one evaluation says about one rule in one project: the notices of
/// every instance that changed (never empty), and the instances of the rule
/// still firing without a notice this time (for formats that carry the
/// group's whole state, as Alertmanager's does).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertGroup {
    changed: Vec<AlertMessage>,
    firing: Vec<AlertMessage>,
}

/// Segments named in a group's subject before "and N more".
const SUBJECT_PLACES: usize = 4;

impl AlertGroup {
    /// A group of the notices `changed` (sorted by segment) beside the
    /// instances `firing` without one; `None` if nothing changed.
    pub fn new(mut changed: Vec<AlertMessage>, mut firing: Vec<AlertMessage>) -> Option<AlertGroup> {
        if changed.is_empty() {
            return None;
        }
        changed.sort_by_key(AlertMessage::segment_label);
        firing.retain(|f| !changed.iter().any(|c| c.fingerprint == f.fingerprint));
        firing.sort_by_key(AlertMessage::segment_label);
        Some(AlertGroup { changed, firing })
    }

    /// A group of one notice.
    pub fn single(message: AlertMessage) -> AlertGroup {
        AlertGroup { changed: vec![message], firing: Vec::new() }
    }

    /// The notices of this evaluation, by segment.
    pub fn changed(&self) -> &[AlertMessage] {
        &self.changed
    }

    /// The instances still firing without a notice this time.
    pub fn firing(&self) -> &[AlertMessage] {
        &self.firing
    }

    /// The first notice: rule, project, metric and threshold are the same
    /// in every one.
    pub fn lead(&self) -> &AlertMessage {
        &self.changed[0]
    }

    /// The same group with only the notices `keep` accepts (a channel with
    /// `send_resolved = false`); `None` if none is left.
    pub fn filtered(&self, keep: impl Fn(&AlertMessage) -> bool) -> Option<AlertGroup> {
        let changed: Vec<AlertMessage> = self.changed.iter().filter(|m| keep(m)).cloned().collect();
        AlertGroup::new(changed, self.firing.clone())
    }

    /// One notice's subject as it is; for several, `[2 FIRING, 1 RESOLVED]
    /// success rate < 95% — release 2.3.0, release 2.4.0, os ios`.
    pub fn subject(&self) -> String {
        if let [only] = self.changed.as_slice() {
            return only.subject();
        }
        let lead = self.lead();
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for m in &self.changed {
            let label = match m.kind {
                MessageKind::Firing => "FIRING",
                MessageKind::Repeat => "STILL FIRING",
                MessageKind::Resolved(_) => "RESOLVED",
                MessageKind::Test => "TEST",
            };
            match counts.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => counts.push((label, 1)),
            }
        }
        let counts: Vec<String> = counts.iter().map(|(label, n)| format!("{n} {label}")).collect();
        let mut places: Vec<String> = self.changed.iter().take(SUBJECT_PLACES).map(AlertMessage::place).collect();
        if self.changed.len() > SUBJECT_PLACES {
            places.push(format!("and {} more", self.changed.len() - SUBJECT_PLACES));
        }
        format!(
            "[{}] {} {} {} — {}",
            counts.join(", "),
            metric_label(lead.metric),
            lead.comparison.symbol(),
            format_value(lead.metric, lead.threshold),
            places.join(", ")
        )
    }

    /// The plain text body: the group's subject, then each notice's.
    pub fn text_body(&self) -> String {
        if let [only] = self.changed.as_slice() {
            return only.text_body();
        }
        let mut body = format!("{}\n", self.subject());
        for m in &self.changed {
            let _ = write!(body, "\n----\n{}", m.text_body());
        }
        body
    }

    /// The HTML body: the group's subject, then each notice's facts.
    pub fn html_body(&self) -> String {
        if let [only] = self.changed.as_slice() {
            return only.html_body();
        }
        let mut sections = String::new();
        for m in &self.changed {
            let _ = write!(sections, "<hr>{}", m.html_section("h3"));
        }
        format!("<!doctype html><html><body><h2>{}</h2>{sections}</body></html>", escape(&self.subject()))
    }
}

/// The metric in words.
pub fn metric_label(metric: Metric) -> &'static str {
    match metric {
        Metric::SuccessRate => "success rate",
        Metric::ConflictRate => "conflict rate",
        Metric::DurationP50 => "p50 duration",
        Metric::DurationP90 => "p90 duration",
        Metric::DurationP99 => "p99 duration",
        Metric::QueueDepthAvg => "average queue depth",
        Metric::QueueDepthP95 => "p95 queue depth",
        Metric::QueueDepthMax => "largest queue depth",
        Metric::QueueDepthOverThresholdShare => "share of devices with a backed-up queue",
        Metric::StalenessP50 => "p50 staleness",
        Metric::StalenessP90 => "p90 staleness",
        Metric::StalenessP99 => "p99 staleness",
        other => metric_name(other),
    }
}

/// A value in the metric's unit: `91.2%`, `61.2 s`, `850 ms`, `1234`.
pub fn format_value(metric: Metric, value: f64) -> String {
    if is_fraction(metric) {
        let percent = value * 100.0;
        let text = format!("{percent:.1}");
        return format!("{}%", text.strip_suffix(".0").unwrap_or(&text));
    }
    let is_ms = matches!(
        metric,
        Metric::DurationP50
            | Metric::DurationP90
            | Metric::DurationP99
            | Metric::StalenessP50
            | Metric::StalenessP90
            | Metric::StalenessP99
    );
    if is_ms {
        return if value >= 1000.0 { format!("{:.1} s", value / 1000.0) } else { format!("{value:.0} ms") };
    }
    if value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// `{public_url}/?project=P&from=..&to=..&app_version=..&os=..&network=..`:
/// the rule's filters, narrowed to the segment.
pub fn dashboard_url(
    public_url: &str,
    project: &ProjectName,
    window: &Range<OffsetDateTime>,
    filters: &Filters,
    segment: Option<&(Dimension, String)>,
) -> String {
    let mut params: Vec<(&str, String)> =
        vec![("project", project.to_string()), ("from", rfc3339(window.start)), ("to", rfc3339(window.end))];
    let mut app_version = filters.app_version.clone();
    let mut os = filters.os.clone();
    let mut network = filters.network.map(|n| n.as_str().to_string());
    match segment {
        Some((Dimension::AppVersion, v)) => app_version = Some(v.clone()),
        Some((Dimension::Os, v)) => os = Some(v.clone()),
        Some((Dimension::Network, v)) => network = Some(v.clone()),
        None => {}
    }
    for (key, value) in [("app_version", app_version), ("os", os), ("network", network)] {
        if let Some(value) = value {
            params.push((key, value));
        }
    }
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", percent_encode(v))).collect();
    format!("{}/?{}", public_url.trim_end_matches('/'), query.join("&"))
}

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t).to_offset(time::UtcOffset::UTC);
    t.format(&Rfc3339).unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `text` cut to `max_chars` characters, ending in `…` when cut: the
/// services' length limits count characters.
pub fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use time::macros::datetime;

    /// A notice of the default rule for release 2.3.0, for every format's tests.
    pub(crate) fn message(kind: MessageKind, value: Option<f64>) -> AlertMessage {
        let rule = Rule::defaults().remove(0);
        let project = ProjectName::parse("demo").unwrap_or_else(|e| panic!("{e}"));
        AlertMessage::new(
            kind,
            &project,
            &rule,
            Some((Dimension::AppVersion, "2.3.0".into())),
            value,
            812,
            datetime!(2026-11-22 10:11:00 UTC),
            datetime!(2026-11-22 10:05:00 UTC),
            datetime!(2026-11-22 10:05:00 UTC),
            "c7f4b477020b48ea".into(),
            "https://health.example.com/",
        )
    }

    #[test]
    fn the_firing_subject_reads_value_comparison_threshold_and_release() {
        assert_eq!(
            message(MessageKind::Firing, Some(0.912)).subject(),
            "[FIRING] success rate 91.2% < 95% — release 2.3.0"
        );
        assert_eq!(
            message(MessageKind::Resolved(ResolveReason::Recovered), Some(0.981)).subject(),
            "[RESOLVED] success rate back to 98.1% (alert: < 95%) — release 2.3.0"
        );
    }

    #[test]
    fn the_dashboard_link_is_filtered_to_the_segment_and_the_window() {
        // Default rule: 10 minute window, 1 minute behind the evaluation.
        assert_eq!(
            message(MessageKind::Firing, Some(0.9)).dashboard_url,
            "https://health.example.com/?project=demo&from=2026-11-22T10%3A00%3A00Z&to=2026-11-22T10%3A10%3A00Z&app_version=2.3.0"
        );
    }

    #[test]
    fn values_are_formatted_in_the_metrics_unit() {
        assert_eq!(format_value(Metric::SuccessRate, 0.95), "95%");
        assert_eq!(format_value(Metric::DurationP99, 61_234.0), "61.2 s");
        assert_eq!(format_value(Metric::DurationP99, 850.0), "850 ms");
        assert_eq!(format_value(Metric::Events, 1234.0), "1234");
    }

    #[test]
    fn a_group_of_several_segments_says_how_many_of_each_kind_and_where() {
        let mut a = message(MessageKind::Firing, Some(0.5));
        let mut b = message(MessageKind::Resolved(ResolveReason::Recovered), Some(0.99));
        b.segment = Some((Dimension::AppVersion, "2.4.0".into()));
        b.fingerprint = "b".into();
        a.fingerprint = "a".into();
        let group = AlertGroup::new(vec![b, a.clone()], vec![a]).unwrap();
        assert_eq!(group.subject(), "[1 FIRING, 1 RESOLVED] success rate < 95% — release 2.3.0, release 2.4.0");
        assert!(group.firing().is_empty(), "an instance with a notice is not also listed as still firing");
        let text = group.text_body();
        assert!(text.contains("[FIRING] success rate 50% < 95% — release 2.3.0"), "{text}");
        assert!(text.contains("[RESOLVED] success rate back to 99% (alert: < 95%) — release 2.4.0"), "{text}");
        assert_eq!(AlertGroup::new(vec![], vec![]), None);
    }

    #[test]
    fn a_test_message_has_its_own_severity_and_state() {
        let m = message(MessageKind::Test, None);
        assert_eq!((m.severity_text(), m.kind.state()), ("test", "test"));
        assert!(m.facts().contains(&("Severity", "test".to_string())));
    }

    #[test]
    fn html_bodies_escape_what_they_interpolate() {
        let mut m = message(MessageKind::Firing, Some(0.9));
        m.segment = Some((Dimension::AppVersion, "<script>".into()));
        let html = m.html_body();
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
    }
}
