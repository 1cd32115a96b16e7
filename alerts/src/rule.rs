//! Alert rules: what to watch, when it is bad, and whom to tell.
//!
//! A rule is written in TOML; the doc comment of each [`Rule`] field is the
//! reference for that key. One rule, in full:
//!
//! ```toml
//! [[rules]]
//! name = "sync-success-rate"
//! description = "Sync attempts are failing."
//! metric = "success_rate"
//! comparison = "<"
//! threshold = 0.95
//! window = "10m"
//! for = "5m"
//! min_events = 50
//! group_by = "app_version"
//! severity = "page"
//! channels = ["email"]
//! keep_firing_for = "10m"
//! repeat_interval = "4h"
//! evaluation_delay = "1m"
//! filters = { os = "android", network = "cellular" }
//! ```
//!
//! Deserializing only checks the shape (unknown keys, bad durations and
//! unknown metric names are rejected there, with the key in the message);
//! [`Rule::validate`] checks the values, and [`validate_all`] a whole set.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Deserializer, Serialize};
use synchealth_schema::Network;
use synchealth_store::metrics::{Metric, DEFAULT_QUEUE_THRESHOLD};
use synchealth_store::{Dimension, Filters};
use time::{Duration, OffsetDateTime};

use crate::duration;

/// `min_events` when a rule does not say.
pub const DEFAULT_MIN_EVENTS: u64 = 50;
/// `evaluation_delay` when a rule does not say.
pub const DEFAULT_EVALUATION_DELAY: Duration = Duration::minutes(1);
/// The longest rule name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// One alert rule. Evaluated every so often over the window ending
/// `evaluation_delay` before now, once for the whole (filtered) fleet or, with
/// `group_by`, once per segment; each of those is one alert instance with its
/// own state (see [`crate::state`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Unique name of the rule, shown in notifications and used to tell alert
    /// instances apart: letters, digits, `-`, `_` and `.`, at most 100
    /// characters. Renaming a rule starts its alerts afresh.
    pub name: String,
    /// Optional sentence saying what the alert means or what to do about it,
    /// carried into notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The metric to watch, by its name in the metrics API: `success_rate`,
    /// `conflict_rate`, `duration_p50`/`_p90`/`_p99` (ms), `queue_depth_avg`,
    /// `queue_depth_p95`, `queue_depth_max`,
    /// `queue_depth_over_threshold_share`, `staleness_p50`/`_p90`/`_p99` (ms),
    /// `events`, `attempts`, `devices`, `never_synced_devices`,
    /// `queue_lag_p90` (ms), `queue_lag_over_threshold_share`. Rates and
    /// shares are fractions: 0.95 means 95%.
    pub metric: Metric,
    /// How the metric is compared with `threshold`: `"<"`, `"<="`, `">"` or
    /// `">="`. The condition is bad when `metric comparison threshold` holds.
    pub comparison: Comparison,
    /// The line not to cross, in the metric's unit (a fraction from 0 to 1
    /// for rates and shares, milliseconds for durations and staleness).
    pub threshold: f64,
    /// How far back each evaluation looks, e.g. `"10m"`. Durations are written
    /// as a number and a unit (`s`, `m`, `h`, `d`), several run together
    /// largest first: `"30s"`, `"10m"`, `"1h30m"`, `"7d"`.
    #[serde(with = "duration::serde_str")]
    pub window: Duration,
    /// How long the condition must keep holding before the alert fires
    /// (meanwhile it is pending). Default `"0s"`: fire on the first bad
    /// evaluation.
    #[serde(rename = "for", default, with = "duration::serde_str")]
    pub pending_for: Duration,
    /// Fewest stored events the window must hold for the metric to count.
    /// Below it the instance has insufficient data and never starts firing:
    /// a p99 over a handful of syncs is noise. Default 50.
    #[serde(default = "default_min_events")]
    pub min_events: u64,
    /// Optional segment dimension, `"app_version"`, `"os"` or `"network"`:
    /// one alert instance per value seen in the window, so a bad release on
    /// one OS alerts on its own instead of drowning in the fleet average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<Dimension>,
    /// How urgent: `"page"` (wake someone up now), `"ticket"` (needs a person
    /// within working hours) or `"info"` (for awareness, no action needed).
    pub severity: Severity,
    /// Names of the notification channels to tell, e.g. `["email"]`; at least
    /// one. The channels themselves are configured apart from the rules.
    pub channels: Vec<String>,
    /// How long a firing alert keeps firing after the condition stops holding
    /// (or data becomes insufficient), so that a metric hovering around the
    /// threshold does not resolve and fire again every few minutes. The alert
    /// resolves once the condition has not held for this long. Default
    /// `"0s"`: resolve on the first good evaluation.
    #[serde(default, with = "duration::serde_str")]
    pub keep_firing_for: Duration,
    /// Optional: while the alert keeps firing, notify again this often, e.g.
    /// `"4h"`. Left out, a firing alert is notified once (and once more when
    /// it resolves).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration::serde_opt")]
    pub repeat_interval: Option<Duration>,
    /// How far the window trails real time, so that events still on their way
    /// (batched on devices, queued in the collector) are in it before it is
    /// judged. Default `"1m"`. Days-late uploads from devices that were
    /// offline are not waited for: they change old windows, not alerts.
    #[serde(default = "default_evaluation_delay", with = "duration::serde_str")]
    pub evaluation_delay: Duration,
    /// Optional: for `queue_depth_over_threshold_share` only, the queue depth
    /// above which a device counts as backed up. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_threshold: Option<u32>,
    /// Optional segment filters, each given one must match: `app_version`,
    /// `os`, `network` (`"wifi"`, `"cellular"`, `"ethernet"`, `"offline"`,
    /// `"unknown"`), e.g. `filters = { os = "android" }`.
    #[serde(default, skip_serializing_if = "no_filters", deserialize_with = "strict_filters")]
    pub filters: Filters,
}

fn default_min_events() -> u64 {
    DEFAULT_MIN_EVENTS
}

fn default_evaluation_delay() -> Duration {
    DEFAULT_EVALUATION_DELAY
}

fn no_filters(filters: &Filters) -> bool {
    *filters == Filters::default()
}

/// [`Filters`] as the store defines it ignores unknown keys; in a rule, a
/// misspelt filter (`platform = "ios"`) would silently widen the alert to the
/// whole fleet, so rules read filters through this strict twin.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictFilters {
    app_version: Option<String>,
    os: Option<String>,
    network: Option<Network>,
}

fn strict_filters<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Filters, D::Error> {
    let StrictFilters { app_version, os, network } = StrictFilters::deserialize(deserializer)?;
    Ok(Filters { app_version, os, network })
}

/// How a metric is compared with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Comparison {
    /// `<`: bad below the threshold.
    #[serde(rename = "<")]
    Below,
    /// `<=`: bad at or below the threshold.
    #[serde(rename = "<=")]
    AtMost,
    /// `>`: bad above the threshold.
    #[serde(rename = ">")]
    Above,
    /// `>=`: bad at or above the threshold.
    #[serde(rename = ">=")]
    AtLeast,
}

impl Comparison {
    /// The operator as written in rules.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
        }
    }

    /// Whether `value <op> threshold`. Never for NaN.
    pub fn compare(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// The bad condition of a rule: `value <comparison> threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The operator.
    pub comparison: Comparison,
    /// The line.
    pub threshold: f64,
}

impl Condition {
    /// Whether the value is on the bad side of the line. Never for NaN.
    pub fn holds(&self, value: f64) -> bool {
        self.comparison.compare(value, self.threshold)
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.comparison, self.threshold)
    }
}

/// How urgent an alert is, from least to most: ordered, so that
/// `severity >= Severity::Ticket` reads as expected.
///
/// The names say what happens rather than how bad it is, matching how teams
/// route alerts: a page wakes someone, a ticket waits for working hours, info
/// is for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// For awareness; nobody needs to act.
    Info,
    /// Needs a person within working hours.
    Ticket,
    /// Needs a person now.
    Page,
}

impl Severity {
    /// The name as written in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Ticket => "ticket",
            Severity::Page => "page",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rule whose values do not make sense. The message names the rule and the
/// key at fault: ``rule `p99`: threshold 95 is outside 0..=1 ...``.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule}`: {field} {problem}")]
pub struct RuleError {
    /// The rule's name, as written (possibly empty).
    pub rule: String,
    /// The key at fault.
    pub field: &'static str,
    /// What is wrong, in lowercase.
    pub problem: String,
}

/// The name of a metric as rules and the metrics API write it.
pub fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Events => "events",
        Metric::Attempts => "attempts",
        Metric::Devices => "devices",
        Metric::SuccessRate => "success_rate",
        Metric::ConflictRate => "conflict_rate",
        Metric::DurationP50 => "duration_p50",
        Metric::DurationP90 => "duration_p90",
        Metric::DurationP99 => "duration_p99",
        Metric::QueueDepthAvg => "queue_depth_avg",
        Metric::QueueDepthP95 => "queue_depth_p95",
        Metric::QueueDepthMax => "queue_depth_max",
        Metric::QueueDepthOverThresholdShare => "queue_depth_over_threshold_share",
        Metric::StalenessP50 => "staleness_p50",
        Metric::StalenessP90 => "staleness_p90",
        Metric::StalenessP99 => "staleness_p99",
        Metric::NeverSyncedDevices => "never_synced_devices",
        Metric::QueueLagP90 => "queue_lag_p90",
        Metric::QueueLagOverThresholdShare => "queue_lag_over_threshold_share",
    }
}

/// Whether a metric is a fraction from 0 to 1.
pub(crate) fn is_fraction(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::SuccessRate
            | Metric::ConflictRate
            | Metric::QueueDepthOverThresholdShare
            | Metric::QueueLagOverThresholdShare
    )
}

impl Rule {
    /// The bad condition.
    pub fn condition(&self) -> Condition {
        Condition { comparison: self.comparison, threshold: self.threshold }
    }

    /// The queue depth above which a device counts as backed up, for the
    /// store query.
    pub fn queue_threshold(&self) -> u32 {
        self.queue_threshold.unwrap_or(DEFAULT_QUEUE_THRESHOLD)
    }

    /// The window an evaluation at `now` looks at, `[from, to)` in corrected
    /// event time: `window` long, ending `evaluation_delay` before `now`.
    pub fn window_at(&self, now: OffsetDateTime) -> Range<OffsetDateTime> {
        let to = now - self.evaluation_delay;
        (to - self.window)..to
    }

    /// Checks the values: the name, a threshold that fits the metric,
    /// durations that make sense, at least one channel, no empty filter.
    /// Returns the first problem found.
    pub fn validate(&self) -> Result<(), RuleError> {
        let fail = |field: &'static str, problem: String| Err(RuleError { rule: self.name.clone(), field, problem });
        if self.name.is_empty() {
            return fail("name", "must not be empty".into());
        }
        if self.name.len() > MAX_NAME_LEN {
            return fail("name", format!("is longer than {MAX_NAME_LEN} characters"));
        }
        if let Some(c) = self.name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
            return fail("name", format!("contains {c:?}; use letters, digits, '-', '_' and '.'"));
        }
        let metric = metric_name(self.metric);
        if !self.threshold.is_finite() {
            return fail("threshold", format!("{} is not a finite number", self.threshold));
        }
        if self.threshold < 0.0 {
            return fail("threshold", format!("{} is negative, and {metric} never is", self.threshold));
        }
        if is_fraction(self.metric) && self.threshold > 1.0 {
            return fail(
                "threshold",
                format!("{} is outside 0..=1; {metric} is a fraction (write 0.95 for 95%)", self.threshold),
            );
        }
        if self.metric == Metric::Events
            && matches!(self.comparison, Comparison::Below | Comparison::AtMost)
            && self.threshold <= self.min_events as f64
        {
            return fail(
                "min_events",
                format!(
                    "{} makes `events {} {}` impossible to fire (fewer events is insufficient data); \
                     set min_events = 0",
                    self.min_events, self.comparison, self.threshold
                ),
            );
        }
        if self.window <= Duration::ZERO {
            return fail("window", "must be longer than 0s".into());
        }
        if self.repeat_interval.is_some_and(|r| r <= Duration::ZERO) {
            return fail("repeat_interval", "must be longer than 0s; leave it out to notify once".into());
        }
        if self.queue_threshold.is_some() && self.metric != Metric::QueueDepthOverThresholdShare {
            return fail("queue_threshold", format!("only applies to queue_depth_over_threshold_share, not {metric}"));
        }
        if self.channels.is_empty() {
            return fail("channels", "must name at least one channel".into());
        }
        let mut seen = HashSet::new();
        for channel in &self.channels {
            if channel.trim().is_empty() {
                return fail("channels", "contains an empty name".into());
            }
            if !seen.insert(channel.as_str()) {
                return fail("channels", format!("names `{channel}` twice"));
            }
        }
        if self.filters.app_version.as_deref() == Some("") {
            return fail("filters.app_version", "must not be empty; leave it out to match every version".into());
        }
        if self.filters.os.as_deref() == Some("") {
            return fail("filters.os", "must not be empty; leave it out to match every os".into());
        }
        Ok(())
    }

    /// The four rules shipped by default, from the usual lines in the field:
    /// - `sync-success-rate`: success rate < 95% pages on-call by email;
    /// - `sync-duration-p99`: p99 sync duration > 60 s, a ticket in chat;
    /// - `upload-queue-backlog`: more than 1% of devices with over 1000 items
    ///   queued, a ticket in chat;
    /// - `queue-lag`: more than 1% of devices whose oldest pending change is
    ///   over 5 minutes old (their latest attempt's queue lag), a ticket in
    ///   chat: changes stuck on devices even while attempts "succeed".
    ///
    /// Each looks at the last 10 minutes (1 minute behind real time), needs 50
    /// events to say anything, and keeps firing 10 minutes after recovering;
    /// the page is sent again every hour while it lasts.
    pub fn defaults() -> Vec<Rule> {
        let base = |name: &str, metric, comparison, threshold, severity, channel: &str, pending_for| Rule {
            name: name.to_string(),
            description: None,
            metric,
            comparison,
            threshold,
            window: Duration::minutes(10),
            pending_for,
            min_events: DEFAULT_MIN_EVENTS,
            group_by: None,
            severity,
            channels: vec![channel.to_string()],
            keep_firing_for: Duration::minutes(10),
            repeat_interval: None,
            evaluation_delay: DEFAULT_EVALUATION_DELAY,
            queue_threshold: None,
            filters: Filters::default(),
        };
        vec![
            Rule {
                description: Some("Fewer than 95% of sync attempts succeed.".into()),
                repeat_interval: Some(Duration::hours(1)),
                ..base(
                    "sync-success-rate",
                    Metric::SuccessRate,
                    Comparison::Below,
                    0.95,
                    Severity::Page,
                    "email",
                    Duration::minutes(2),
                )
            },
            Rule {
                description: Some("The slowest 1% of syncs take over a minute.".into()),
                ..base(
                    "sync-duration-p99",
                    Metric::DurationP99,
                    Comparison::Above,
                    60_000.0,
                    Severity::Ticket,
                    "chat",
                    Duration::minutes(5),
                )
            },
            Rule {
                description: Some("Over 1% of devices have more than 1000 uploads queued.".into()),
                queue_threshold: Some(DEFAULT_QUEUE_THRESHOLD),
                ..base(
                    "upload-queue-backlog",
                    Metric::QueueDepthOverThresholdShare,
                    Comparison::Above,
                    0.01,
                    Severity::Ticket,
                    "chat",
                    Duration::minutes(5),
                )
            },
            Rule {
                description: Some("Over 1% of devices have changes pending for more than 5 minutes.".into()),
                ..base(
                    "queue-lag",
                    Metric::QueueLagOverThresholdShare,
                    Comparison::Above,
                    0.01,
                    Severity::Ticket,
                    "chat",
                    Duration::minutes(5),
                )
            },
        ]
    }
}

/// Validates every rule, and that no two share a name (alert instances are
/// told apart by rule name).
pub fn validate_all(rules: &[Rule]) -> Result<(), RuleError> {
    let mut names = HashSet::new();
    for rule in rules {
        rule.validate()?;
        if !names.insert(rule.name.as_str()) {
            return Err(RuleError {
                rule: rule.name.clone(),
                field: "name",
                problem: "is used by another rule".into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    /// A rules file, as the later config will hold it.
    #[derive(Debug, Deserialize, Serialize)]
    #[serde(deny_unknown_fields)]
    struct RulesFile {
        rules: Vec<Rule>,
    }

    fn parse(text: &str) -> Result<Vec<Rule>, String> {
        toml::from_str::<RulesFile>(text).map(|f| f.rules).map_err(|e| e.to_string())
    }

    fn parse_one(text: &str) -> Result<Rule, String> {
        let mut rules = parse(text)?;
        assert_eq!(rules.len(), 1);
        Ok(rules.remove(0))
    }

    const MINIMAL: &str = r#"
        [[rules]]
        name = "p90-staleness"
        metric = "staleness_p90"
        comparison = ">="
        threshold = 3600000
        window = "30m"
        severity = "info"
        channels = ["chat"]
    "#;

    /// `MINIMAL` with one line added to the rule.
    fn minimal_with(line: &str) -> String {
        format!("{MINIMAL}        {line}\n")
    }

    #[test]
    fn a_full_rule_parses_with_every_key() {
        let rule = parse_one(
            r#"
            [[rules]]
            name = "sync-success-rate"
            description = "Sync attempts are failing."
            metric = "success_rate"
            comparison = "<"
            threshold = 0.95
            window = "10m"
            for = "5m"
            min_events = 200
            group_by = "app_version"
            severity = "page"
            channels = ["email", "chat"]
            keep_firing_for = "15m"
            repeat_interval = "4h"
            evaluation_delay = "2m"
            filters = { os = "android", network = "cellular", app_version = "3.2.0" }
            "#,
        )
        .unwrap();
        assert_eq!(
            rule,
            Rule {
                name: "sync-success-rate".into(),
                description: Some("Sync attempts are failing.".into()),
                metric: Metric::SuccessRate,
                comparison: Comparison::Below,
                threshold: 0.95,
                window: Duration::minutes(10),
                pending_for: Duration::minutes(5),
                min_events: 200,
                group_by: Some(Dimension::AppVersion),
                severity: Severity::Page,
                channels: vec!["email".into(), "chat".into()],
                keep_firing_for: Duration::minutes(15),
                repeat_interval: Some(Duration::hours(4)),
                evaluation_delay: Duration::minutes(2),
                queue_threshold: None,
                filters: Filters {
                    app_version: Some("3.2.0".into()),
                    os: Some("android".into()),
                    network: Some(Network::Cellular),
                },
            }
        );
        rule.validate().unwrap();
    }

    #[test]
    fn left_out_keys_take_their_documented_defaults() {
        let rule = parse_one(MINIMAL).unwrap();
        assert_eq!(rule.pending_for, Duration::ZERO);
        assert_eq!(rule.min_events, 50);
        assert_eq!(rule.keep_firing_for, Duration::ZERO);
        assert_eq!(rule.repeat_interval, None);
        assert_eq!(rule.evaluation_delay, Duration::minutes(1));
        assert_eq!(rule.group_by, None);
        assert_eq!(rule.filters, Filters::default());
        assert_eq!(rule.description, None);
        assert_eq!(rule.queue_threshold(), 1000);
        rule.validate().unwrap();
    }

    #[test]
    fn every_metric_name_parses_and_matches_metric_name() {
        for name in [
            "events",
            "attempts",
            "devices",
            "success_rate",
            "conflict_rate",
            "duration_p50",
            "duration_p90",
            "duration_p99",
            "queue_depth_avg",
            "queue_depth_p95",
            "queue_depth_max",
            "queue_depth_over_threshold_share",
            "staleness_p50",
            "staleness_p90",
            "staleness_p99",
            "never_synced_devices",
            "queue_lag_p90",
            "queue_lag_over_threshold_share",
        ] {
            let text = MINIMAL.replace("staleness_p90", name);
            let rule = parse_one(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(metric_name(rule.metric), name);
        }
    }

    #[test]
    fn every_comparison_parses() {
        for (text, comparison) in [
            ("<", Comparison::Below),
            ("<=", Comparison::AtMost),
            (">", Comparison::Above),
            (">=", Comparison::AtLeast),
        ] {
            let rule = parse_one(&MINIMAL.replace("\">=\"", &format!("{text:?}"))).unwrap();
            assert_eq!(rule.comparison, comparison);
            assert_eq!(comparison.symbol(), text);
        }
    }

    #[test]
    fn an_unknown_key_is_rejected_with_its_name() {
        let e = parse(&minimal_with(r#"treshold = 0.9"#)).unwrap_err();
        assert!(e.contains("unknown field `treshold`"), "{e}");
    }

    #[test]
    fn a_misspelt_filter_is_rejected_rather_than_ignored() {
        let e = parse(&minimal_with(r#"filters = { platform = "ios" }"#)).unwrap_err();
        assert!(e.contains("unknown field `platform`"), "{e}");
    }

    #[test]
    fn an_unknown_network_filter_is_rejected() {
        let e = parse(&minimal_with(r#"filters = { network = "5g" }"#)).unwrap_err();
        assert!(e.contains("unknown variant `5g`"), "{e}");
    }

    #[test]
    fn a_bad_duration_is_rejected_with_the_text_and_key() {
        let e = parse(&MINIMAL.replace("\"30m\"", "\"30\"")).unwrap_err();
        assert!(e.contains("invalid duration `30`: `30` has no unit"), "{e}");
        assert!(e.contains("window"), "{e}");
        let e = parse(&minimal_with(r#"for = "5 minutes""#)).unwrap_err();
        assert!(e.contains("invalid duration `5 minutes`"), "{e}");
        assert!(e.contains("for"), "{e}");
        let e = parse(&minimal_with(r#"repeat_interval = "1x""#)).unwrap_err();
        assert!(e.contains("unknown unit `x`"), "{e}");
    }

    #[test]
    fn a_duration_given_as_a_number_is_rejected() {
        let e = parse(&minimal_with("keep_firing_for = 600")).unwrap_err();
        assert!(e.contains("keep_firing_for"), "{e}");
        assert!(e.contains("invalid type: integer `600`, expected a duration string such as \"30s\""), "{e}");
        let e = parse(&minimal_with("repeat_interval = 3600")).unwrap_err();
        assert!(e.contains("expected a duration string"), "{e}");
    }

    #[test]
    fn a_bad_metric_name_is_rejected_listing_the_known_ones() {
        let e = parse(&MINIMAL.replace("staleness_p90", "sucess_rate")).unwrap_err();
        assert!(e.contains("unknown variant `sucess_rate`"), "{e}");
        assert!(e.contains("success_rate"), "{e}");
        assert!(e.contains("metric"), "{e}");
    }

    #[test]
    fn a_bad_comparison_severity_or_group_by_is_rejected() {
        let e = parse(&MINIMAL.replace("\">=\"", "\"=>\"")).unwrap_err();
        assert!(e.contains("unknown variant `=>`"), "{e}");
        let e = parse(&MINIMAL.replace("\"info\"", "\"critical\"")).unwrap_err();
        assert!(e.contains("unknown variant `critical`"), "{e}");
        let e = parse(&minimal_with(r#"group_by = "device""#)).unwrap_err();
        assert!(e.contains("unknown variant `device`"), "{e}");
    }

    #[test]
    fn a_missing_required_key_is_named() {
        let e = parse(&MINIMAL.replace("severity = \"info\"", "")).unwrap_err();
        assert!(e.contains("missing field `severity`"), "{e}");
    }

    #[test]
    fn the_defaults_are_valid_and_as_documented() {
        let rules = Rule::defaults();
        validate_all(&rules).unwrap();
        let by_name = |n: &str| rules.iter().find(|r| r.name == n).unwrap();

        let success = by_name("sync-success-rate");
        assert_eq!(success.metric, Metric::SuccessRate);
        assert!(success.condition().holds(0.94) && !success.condition().holds(0.95));
        assert_eq!((success.severity, success.channels.as_slice()), (Severity::Page, &["email".to_string()][..]));

        let p99 = by_name("sync-duration-p99");
        assert_eq!(p99.metric, Metric::DurationP99);
        assert!(p99.condition().holds(60_001.0) && !p99.condition().holds(60_000.0));
        assert_eq!(p99.channels, ["chat"]);

        let queue = by_name("upload-queue-backlog");
        assert_eq!(queue.metric, Metric::QueueDepthOverThresholdShare);
        assert!(queue.condition().holds(0.011) && !queue.condition().holds(0.01));
        assert_eq!(queue.queue_threshold(), 1000);
        assert_eq!((queue.severity, queue.channels.as_slice()), (Severity::Ticket, &["chat".to_string()][..]));

        for rule in &rules {
            assert_eq!(rule.window, Duration::minutes(10), "{}", rule.name);
            assert!(rule.pending_for >= Duration::minutes(2), "{}", rule.name);
            assert_eq!(rule.min_events, 50, "{}", rule.name);
        }
    }

    #[test]
    fn the_defaults_written_as_toml_parse_to_the_same_rules() {
        let text = r#"
            [[rules]]
            name = "sync-success-rate"
            description = "Fewer than 95% of sync attempts succeed."
            metric = "success_rate"
            comparison = "<"
            threshold = 0.95
            window = "10m"
            for = "2m"
            severity = "page"
            channels = ["email"]
            keep_firing_for = "10m"
            repeat_interval = "1h"

            [[rules]]
            name = "sync-duration-p99"
            description = "The slowest 1% of syncs take over a minute."
            metric = "duration_p99"
            comparison = ">"
            threshold = 60000
            window = "10m"
            for = "5m"
            severity = "ticket"
            channels = ["chat"]
            keep_firing_for = "10m"

            [[rules]]
            name = "upload-queue-backlog"
            description = "Over 1% of devices have more than 1000 uploads queued."
            metric = "queue_depth_over_threshold_share"
            comparison = ">"
            threshold = 0.01
            queue_threshold = 1000
            window = "10m"
            for = "5m"
            severity = "ticket"
            channels = ["chat"]
            keep_firing_for = "10m"

            [[rules]]
            name = "queue-lag"
            description = "Over 1% of devices have changes pending for more than 5 minutes."
            metric = "queue_lag_over_threshold_share"
            comparison = ">"
            threshold = 0.01
            window = "10m"
            for = "5m"
            severity = "ticket"
            channels = ["chat"]
            keep_firing_for = "10m"
        "#;
        assert_eq!(parse(text).unwrap(), Rule::defaults());
    }

    #[test]
    fn rules_survive_a_round_trip_through_toml() {
        let mut rules = Rule::defaults();
        rules[1].group_by = Some(Dimension::Os);
        rules[1].filters.network = Some(Network::Wifi);
        rules[1].pending_for = Duration::seconds(90);
        let text = toml::to_string(&RulesFile { rules: rules.clone() }).unwrap();
        assert!(text.contains("for = \"1m30s\""), "{text}");
        assert!(text.contains("repeat_interval = \"1h\""), "{text}");
        assert_eq!(parse(&text).unwrap(), rules, "{text}");
    }

    fn invalid(rule: &Rule) -> (String, &'static str) {
        let e = rule.validate().unwrap_err();
        (e.to_string(), e.field)
    }

    fn valid_rule() -> Rule {
        parse_one(MINIMAL).unwrap()
    }

    #[test]
    fn validation_messages_name_the_rule_and_the_field_in_lowercase() {
        let mut rule = Rule::defaults().remove(0);
        rule.threshold = 95.0;
        let (message, field) = invalid(&rule);
        assert_eq!(field, "threshold");
        assert_eq!(
            message,
            "rule `sync-success-rate`: threshold 95 is outside 0..=1; success_rate is a fraction (write 0.95 for 95%)"
        );
        assert!(message.starts_with("rule `"));
    }

    #[test]
    fn names_must_be_present_short_and_plain() {
        let mut rule = valid_rule();
        rule.name = String::new();
        assert_eq!(invalid(&rule), ("rule ``: name must not be empty".into(), "name"));
        rule.name = "a".repeat(101);
        assert_eq!(invalid(&rule).1, "name");
        rule.name = "success rate".into();
        assert!(invalid(&rule).0.contains("contains ' '"));
        rule.name = "Success_rate-v2.1".into();
        rule.validate().unwrap();
    }

    #[test]
    fn thresholds_must_be_finite_and_not_negative() {
        let mut rule = valid_rule();
        rule.threshold = f64::NAN;
        assert!(invalid(&rule).0.contains("threshold NaN is not a finite number"));
        rule.threshold = f64::INFINITY;
        assert_eq!(invalid(&rule).1, "threshold");
        rule.threshold = -1.0;
        assert!(invalid(&rule).0.contains("threshold -1 is negative, and staleness_p90 never is"));
    }

    #[test]
    fn fraction_thresholds_must_be_within_zero_and_one() {
        let mut rule = valid_rule();
        rule.metric = Metric::ConflictRate;
        rule.threshold = 5.0;
        assert_eq!(invalid(&rule).1, "threshold");
        rule.threshold = 1.0;
        rule.validate().unwrap();
        rule.metric = Metric::DurationP99;
        rule.threshold = 60_000.0;
        rule.validate().unwrap();
    }

    #[test]
    fn an_events_rule_that_min_events_would_silence_is_rejected() {
        let mut rule = valid_rule();
        rule.metric = Metric::Events;
        rule.comparison = Comparison::Below;
        rule.threshold = 10.0;
        let (message, field) = invalid(&rule);
        assert_eq!(field, "min_events");
        assert!(message.contains("makes `events < 10` impossible to fire"), "{message}");
        rule.min_events = 0;
        rule.validate().unwrap();
        rule.min_events = 50;
        rule.comparison = Comparison::Above;
        rule.validate().unwrap();
    }

    #[test]
    fn windows_must_be_positive_and_repeats_too() {
        let mut rule = valid_rule();
        rule.window = Duration::ZERO;
        assert_eq!(invalid(&rule), ("rule `p90-staleness`: window must be longer than 0s".into(), "window"));
        rule.window = Duration::minutes(5);
        rule.repeat_interval = Some(Duration::ZERO);
        assert_eq!(invalid(&rule).1, "repeat_interval");
    }

    #[test]
    fn queue_threshold_only_goes_with_the_queue_share_metric() {
        let mut rule = valid_rule();
        rule.queue_threshold = Some(500);
        let (message, field) = invalid(&rule);
        assert_eq!(field, "queue_threshold");
        assert!(message.contains("not staleness_p90"), "{message}");
        rule.metric = Metric::QueueDepthOverThresholdShare;
        rule.threshold = 0.05;
        rule.validate().unwrap();
        assert_eq!(rule.queue_threshold(), 500);
    }

    #[test]
    fn channels_must_be_named_once_each() {
        let mut rule = valid_rule();
        rule.channels.clear();
        assert_eq!(invalid(&rule).0, "rule `p90-staleness`: channels must name at least one channel");
        rule.channels = vec!["chat".into(), " ".into()];
        assert!(invalid(&rule).0.contains("empty name"));
        rule.channels = vec!["chat".into(), "chat".into()];
        assert!(invalid(&rule).0.contains("names `chat` twice"));
    }

    #[test]
    fn empty_filter_values_are_rejected() {
        let mut rule = valid_rule();
        rule.filters.os = Some(String::new());
        assert_eq!(invalid(&rule).1, "filters.os");
        rule.filters.os = None;
        rule.filters.app_version = Some(String::new());
        assert_eq!(invalid(&rule).1, "filters.app_version");
    }

    #[test]
    fn two_rules_with_one_name_are_rejected() {
        let mut rules = Rule::defaults();
        rules[2].name = rules[0].name.clone();
        let e = validate_all(&rules).unwrap_err();
        assert_eq!(e.to_string(), "rule `sync-success-rate`: name is used by another rule");
    }

    #[test]
    fn the_window_trails_now_by_the_evaluation_delay() {
        let rule = Rule::defaults().remove(0);
        let window = rule.window_at(datetime!(2025-03-01 12:00 UTC));
        assert_eq!(window, datetime!(2025-03-01 11:49 UTC)..datetime!(2025-03-01 11:59 UTC));
    }

    #[test]
    fn conditions_compare_strictly_or_inclusively_and_never_hold_for_nan() {
        let c = |comparison| Condition { comparison, threshold: 1.0 };
        assert!(c(Comparison::Below).holds(0.5) && !c(Comparison::Below).holds(1.0));
        assert!(c(Comparison::AtMost).holds(1.0) && !c(Comparison::AtMost).holds(1.5));
        assert!(c(Comparison::Above).holds(1.5) && !c(Comparison::Above).holds(1.0));
        assert!(c(Comparison::AtLeast).holds(1.0) && !c(Comparison::AtLeast).holds(0.5));
        for comparison in [Comparison::Below, Comparison::AtMost, Comparison::Above, Comparison::AtLeast] {
            assert!(!c(comparison).holds(f64::NAN));
        }
        assert_eq!(c(Comparison::AtMost).to_string(), "<= 1");
    }

    #[test]
    fn severities_order_from_info_to_page() {
        assert!(Severity::Info < Severity::Ticket && Severity::Ticket < Severity::Page);
        assert_eq!(Severity::Page.to_string(), "page");
    }
}
