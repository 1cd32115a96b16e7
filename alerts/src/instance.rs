//! Alert instances: one per rule, or with `group_by` one per rule and segment
//! value, each with a stable identity and its own state.

use std::fmt;

use serde::{Deserialize, Serialize};
use synchealth_store::Dimension;
use time::OffsetDateTime;

use crate::rule::Rule;
use crate::state::{step, AlertState, Notification, Observation, Verdict};

/// Which alert instance: a rule, and for a rule with `group_by` the segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    /// The rule's name.
    pub rule: String,
    /// The segment, as the rule's `group_by` dimension and the value seen;
    /// `None` for a rule without `group_by`.
    pub segment: Option<(Dimension, String)>,
}

impl AlertKey {
    /// The one instance of a rule without `group_by`.
    pub fn total(rule: impl Into<String>) -> AlertKey {
        AlertKey { rule: rule.into(), segment: None }
    }

    /// The instance of a `group_by` rule for one segment value.
    pub fn segment(rule: impl Into<String>, dimension: Dimension, value: impl Into<String>) -> AlertKey {
        AlertKey { rule: rule.into(), segment: Some((dimension, value.into())) }
    }

    /// A stable identity for the instance: 16 lowercase hex digits, the
    /// FNV-1a 64-bit hash of the rule name and segment. The same on every
    /// machine, release and replica, so it can key stored state and
    /// deduplicate notifications; it changes only when the rule is renamed.
    ///
    /// Hashed bytes: the rule name, `0xFF`, then for a segment the dimension's
    /// column name, `0xFF` and the value. `0xFF` never occurs in UTF-8, so no
    /// two keys hash the same bytes. Not a security boundary: 64 bits
    /// separate a few million instances, not an adversary.
    pub fn fingerprint(&self) -> String {
        let mut hash = Fnv1a64::new();
        hash.write(self.rule.as_bytes());
        hash.write(&[0xFF]);
        if let Some((dimension, value)) = &self.segment {
            hash.write(dimension.column().as_bytes());
            hash.write(&[0xFF]);
            hash.write(value.as_bytes());
        }
        format!("{:016x}", hash.finish())
    }
}

/// A stable identity for what one email or grouped message is about: a
/// rule in a project, sent to a channel (16 hex digits of FNV-1a over the
/// three, `0xFF` between them, like [`AlertKey::fingerprint`]). Email
/// Message-IDs are built from it.
pub fn group_fingerprint(rule: &str, project: &str, channel: &str) -> String {
    let mut hash = Fnv1a64::new();
    for part in [rule, project, channel] {
        hash.write(part.as_bytes());
        hash.write(&[0xFF]);
    }
    format!("{:016x}", hash.finish())
}

/// `rule` or `rule{os="android"}`.
impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule)?;
        if let Some((dimension, value)) = &self.segment {
            write!(f, "{{{}={value:?}}}", dimension.column())?;
        }
        Ok(())
    }
}

/// FNV-1a, 64 bits (<http://www.isthe.com/chongo/tech/comp/fnv/>): tiny,
/// fixed forever, and fine for identities that are not secrets.
#[derive(Debug, Clone, Copy)]
struct Fnv1a64(u64);

impl Fnv1a64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    fn new() -> Self {
        Fnv1a64(Self::OFFSET_BASIS)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn finish(self) -> u64 {
        self.0
    }
}

/// One alert instance as it is kept between evaluations: its key, its state,
/// how the last observation read, and the silence beside the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInstance {
    /// Which instance.
    pub key: AlertKey,
    /// Where it stands.
    pub state: AlertState,
    /// How the last observation read (`None` before the first); the
    /// dashboard shows "insufficient data" beside the state from it.
    pub verdict: Option<Verdict>,
    /// Silenced until then: the state machine runs as usual, notifications
    /// are withheld.
    #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
    pub silenced_until: Option<OffsetDateTime>,
}

impl AlertInstance {
    /// A new instance: `Ok`, never evaluated, not silenced.
    pub fn new(key: AlertKey) -> AlertInstance {
        AlertInstance { key, state: AlertState::Ok, verdict: None, silenced_until: None }
    }

    /// Whether notifications are withheld at `now` (the silence ends at
    /// `silenced_until`, exclusive).
    pub fn is_silenced(&self, now: OffsetDateTime) -> bool {
        self.silenced_until.is_some_and(|until| now < until)
    }

    /// One evaluation: runs [`step`], keeps the new state and verdict, and
    /// returns the notification to send, if any and not silenced.
    ///
    /// A notification withheld by a silence is dropped, not sent when the
    /// silence ends; the state and the `repeat_interval` schedule move on as if
    /// it had been sent, so a still-firing alert is next heard of at its next
    /// repeat, and one that resolved while silenced stays quiet.
    pub fn observe(&mut self, observation: Observation, now: OffsetDateTime, rule: &Rule) -> Option<Notification> {
        let transition = step(self.state, observation, now, rule);
        self.state = transition.state;
        self.verdict = Some(transition.verdict);
        transition.notification.filter(|_| !self.is_silenced(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ResolveReason;
    use time::macros::datetime;
    use time::Duration;

    fn fnv(bytes: &[u8]) -> u64 {
        let mut h = Fnv1a64::new();
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv(b""), 0xcbf29ce484222325);
        assert_eq!(fnv(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn fnv1a64_over_pieces_equals_fnv1a64_over_the_whole() {
        let mut h = Fnv1a64::new();
        h.write(b"foo");
        h.write(b"bar");
        assert_eq!(h.finish(), fnv(b"foobar"));
    }

    #[test]
    fn fingerprints_are_sixteen_lowercase_hex_digits() {
        let f = AlertKey::segment("sync-success-rate", Dimension::Os, "Android").fingerprint();
        assert_eq!(f.len(), 16);
        assert!(f.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{f}");
    }

    #[test]
    fn fingerprints_are_pinned_across_releases() {
        // Stored state and deduplication depend on these never changing.
        assert_eq!(
            AlertKey::total("sync-success-rate").fingerprint(),
            format!("{:016x}", fnv(b"sync-success-rate\xFF"))
        );
        assert_eq!(
            AlertKey::segment("sync-success-rate", Dimension::AppVersion, "3.2.0").fingerprint(),
            format!("{:016x}", fnv(b"sync-success-rate\xFFapp_version\xFF3.2.0"))
        );
        assert_eq!(AlertKey::total("sync-success-rate").fingerprint(), PINNED_TOTAL);
        assert_eq!(
            AlertKey::segment("sync-success-rate", Dimension::AppVersion, "3.2.0").fingerprint(),
            PINNED_SEGMENT
        );
    }

    const PINNED_TOTAL: &str = "eba776054d5ce866";
    const PINNED_SEGMENT: &str = "c7f4b477020b48ea";

    #[test]
    fn fingerprints_tell_apart_rules_dimensions_values_and_the_total() {
        let keys = [
            AlertKey::total("a"),
            AlertKey::total("b"),
            AlertKey::segment("a", Dimension::Os, ""),
            AlertKey::segment("a", Dimension::Os, "ios"),
            AlertKey::segment("a", Dimension::Network, "ios"),
            AlertKey::segment("a", Dimension::AppVersion, "ios"),
            AlertKey::segment("a", Dimension::Os, "Ios"),
            AlertKey::segment("ao", Dimension::Os, "ios"),
        ];
        let mut fingerprints: Vec<String> = keys.iter().map(AlertKey::fingerprint).collect();
        fingerprints.sort();
        fingerprints.dedup();
        assert_eq!(fingerprints.len(), keys.len());
    }

    #[test]
    fn equal_keys_have_equal_fingerprints() {
        let a = AlertKey::segment(String::from("r"), Dimension::Network, String::from("wifi"));
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        assert_eq!(a.fingerprint(), AlertKey::segment("r", Dimension::Network, "wifi").fingerprint());
    }

    #[test]
    fn keys_display_as_rule_and_segment() {
        assert_eq!(AlertKey::total("p99").to_string(), "p99");
        assert_eq!(AlertKey::segment("p99", Dimension::Os, "android").to_string(), "p99{os=\"android\"}");
    }

    fn rule() -> Rule {
        Rule { pending_for: Duration::ZERO, repeat_interval: Some(Duration::minutes(30)), ..Rule::defaults().remove(0) }
    }

    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);
    const BAD: Observation = Observation { value: Some(0.5), events: 500 };
    const GOOD: Observation = Observation { value: Some(0.99), events: 500 };
    const FEW: Observation = Observation { value: Some(0.5), events: 5 };

    #[test]
    fn a_new_instance_is_ok_unevaluated_and_not_silenced() {
        let i = AlertInstance::new(AlertKey::total("r"));
        assert_eq!((i.state, i.verdict, i.is_silenced(T0)), (AlertState::Ok, None, false));
    }

    #[test]
    fn observing_keeps_the_state_and_verdict_and_returns_the_notification() {
        let rule = rule();
        let mut i = AlertInstance::new(AlertKey::total(&rule.name));
        assert_eq!(i.observe(FEW, T0, &rule), None);
        assert_eq!((i.state, i.verdict), (AlertState::Ok, Some(Verdict::InsufficientData)));
        assert_eq!(i.observe(BAD, T0, &rule), Some(Notification::Firing));
        assert!(i.state.is_firing());
        assert_eq!(i.verdict, Some(Verdict::Holds));
    }

    #[test]
    fn a_silenced_instance_changes_state_but_sends_nothing() {
        let rule = rule();
        let mut i = AlertInstance::new(AlertKey::total(&rule.name));
        i.silenced_until = Some(T0 + Duration::hours(1));
        assert!(i.is_silenced(T0));
        assert_eq!(i.observe(BAD, T0, &rule), None);
        assert!(i.state.is_firing(), "silence is beside the state, not a state");
        assert_eq!(i.observe(BAD, T0 + Duration::minutes(30), &rule), None, "repeat withheld too");
    }

    #[test]
    fn after_a_silence_a_firing_alert_is_heard_of_at_its_next_repeat() {
        let rule = rule();
        let mut i = AlertInstance::new(AlertKey::total(&rule.name));
        i.silenced_until = Some(T0 + Duration::minutes(10));
        assert_eq!(i.observe(BAD, T0, &rule), None);
        assert!(!i.is_silenced(T0 + Duration::minutes(10)), "the silence ends at silenced_until");
        assert_eq!(i.observe(BAD, T0 + Duration::minutes(10), &rule), None);
        assert_eq!(i.observe(BAD, T0 + Duration::minutes(30), &rule), Some(Notification::Repeat));
    }

    #[test]
    fn a_resolve_during_a_silence_is_not_sent_afterwards() {
        let rule = Rule { keep_firing_for: Duration::ZERO, ..rule() };
        let mut i = AlertInstance::new(AlertKey::total(&rule.name));
        assert_eq!(i.observe(BAD, T0, &rule), Some(Notification::Firing));
        i.silenced_until = Some(T0 + Duration::minutes(5));
        assert_eq!(i.observe(GOOD, T0 + Duration::minutes(1), &rule), None);
        assert_eq!(i.observe(GOOD, T0 + Duration::minutes(6), &rule), None);
        assert_eq!(i.state, AlertState::Ok);
        // Unsilenced, the next resolve goes out.
        assert_eq!(i.observe(BAD, T0 + Duration::minutes(7), &rule), Some(Notification::Firing));
        assert_eq!(
            i.observe(GOOD, T0 + Duration::minutes(8), &rule),
            Some(Notification::Resolved { reason: ResolveReason::Recovered })
        );
    }

    #[test]
    fn instances_survive_a_json_round_trip() {
        let rule = rule();
        let mut i = AlertInstance::new(AlertKey::segment(&rule.name, Dimension::Os, "ios"));
        i.silenced_until = Some(T0 + Duration::hours(2));
        i.observe(BAD, T0, &rule);
        let json = serde_json::to_string(&i).unwrap();
        assert!(json.contains("\"silenced_until\":\"2025-03-01T14:00:00Z\""), "{json}");
        assert!(json.contains("\"segment\":[\"os\",\"ios\"]"), "{json}");
        assert_eq!(serde_json::from_str::<AlertInstance>(&json).unwrap(), i);
    }
}
