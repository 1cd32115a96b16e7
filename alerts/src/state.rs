//! The life of one alert instance, as a pure function of its previous state,
//! one observation of its metric, the time, and its rule.
//!
//! ```text
//!        holds                    held for `for`
//!   Ok ──────────────► Pending ───────────────────► Firing ─┐ holds: stays, with a
//!   ▲ ▲                   │       [Firing notice]     │  ▲   │ [Repeat] every
//!   │ └───────────────────┘                           │  └───┘ repeat_interval
//!   │   not holding, silently                         │
//!   │                                                 │ not holding for `keep_firing_for`
//!   │        next evaluation                          ▼ [Resolved notice]
//!   └───────────────────────────────────────────── Resolved ──► Pending if it holds again
//! ```
//!
//! Each evaluation first reads the observation as a [`Verdict`]:
//! - fewer events than the rule's `min_events`, no value at all (nothing to
//!   measure: `None`) or a NaN value is **insufficient data**;
//! - otherwise the rule's condition either **holds** or is **clear**.
//!
//! Then:
//! - `Ok` or `Resolved`: holds → `Pending` since now (or `Firing` at once when
//!   `for` is 0s); otherwise → `Ok`. So `Resolved` marks one evaluation
//!   ("just resolved") and then becomes `Ok`.
//! - `Pending`: holds and has held for `for` → `Firing`, with a
//!   [`Notification::Firing`]; holds for less → stays `Pending`; clear or
//!   insufficient data → `Ok`, silently: the condition must hold without a
//!   break, and an alert nobody was told about needs no all-clear.
//! - `Firing`: holds → stays `Firing` (forgetting any recovery in progress),
//!   with a [`Notification::Repeat`] when `repeat_interval` has passed since
//!   the last notice; clear or insufficient data → keeps firing until the
//!   condition has not held for `keep_firing_for`, then `Resolved` with a
//!   [`Notification::Resolved`] saying whether it recovered or the data ran
//!   out. No repeats go out while recovering.
//!
//! Insufficient data never starts an alert, so a p99 over a handful of syncs
//! pages nobody. But it does not hold one either: an alert whose segment went
//! quiet (an app version nobody runs any more) must resolve some day. It
//! resolves after `keep_firing_for`, like a recovery, and says that it was for
//! lack of data, since no data is not good news: a fleet that stopped
//! reporting altogether is caught by a rule on `events` instead.
//!
//! Silencing is not a state: a silenced instance goes through the same states
//! and its notifications are withheld (see [`crate::instance::AlertInstance`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use synchealth_store::metrics::Metric;
use synchealth_store::Summary;
use time::OffsetDateTime;

use crate::rule::Rule;

/// What one evaluation saw of one alert instance's metric.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The metric's value over the window; `None` when there was nothing to
    /// measure (no attempts, no devices...).
    pub value: Option<f64>,
    /// Stored events in the window: the sample size that `min_events` is
    /// compared with (stored rows, not the sample-weighted attempt estimate:
    /// ten events sampled at 1% are still ten data points).
    pub events: u64,
}

impl Observation {
    /// The observation of `metric` in a summary of the window.
    pub fn of(summary: &Summary, metric: Metric) -> Observation {
        Observation { value: summary.value(metric), events: summary.events }
    }
}

/// How one observation reads against a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The bad condition holds.
    Holds,
    /// Enough data, and the condition does not hold.
    Clear,
    /// Fewer events than `min_events`, or no value: nothing can be said.
    InsufficientData,
}

impl Verdict {
    /// Reads an observation against a rule's `min_events` and condition.
    pub fn of(observation: Observation, rule: &Rule) -> Verdict {
        if observation.events < rule.min_events {
            return Verdict::InsufficientData;
        }
        match observation.value {
            Some(v) if v.is_nan() => Verdict::InsufficientData,
            Some(v) if rule.condition().holds(v) => Verdict::Holds,
            Some(_) => Verdict::Clear,
            None => Verdict::InsufficientData,
        }
    }
}

/// Where one alert instance stands. Timestamps are evaluation times (`now`
/// of the [`step`] that set them), serialized as RFC 3339.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AlertState {
    /// Nothing wrong, or nothing known.
    Ok,
    /// The condition holds, not yet for the rule's `for`.
    Pending {
        /// The first evaluation at which it held.
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
    },
    /// The condition has held for `for`; people have been told.
    Firing {
        /// The first evaluation at which the condition held (the start of
        /// pending, so "since when?" has an honest answer).
        #[serde(with = "time::serde::rfc3339")]
        since: OffsetDateTime,
        /// When the last Firing or Repeat notification was due.
        #[serde(with = "time::serde::rfc3339")]
        last_notified: OffsetDateTime,
        /// While recovering: the first evaluation since which the condition
        /// has not held; the alert resolves `keep_firing_for` after it.
        #[serde(default, with = "time::serde::rfc3339::option", skip_serializing_if = "Option::is_none")]
        clear_since: Option<OffsetDateTime>,
    },
    /// Resolved at the last evaluation; `Ok` from the next one on, unless the
    /// condition holds again.
    Resolved {
        /// The evaluation at which it resolved.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
}

impl AlertState {
    /// `"ok"`, `"pending"`, `"firing"` or `"resolved"`.
    pub fn name(&self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Pending { .. } => "pending",
            AlertState::Firing { .. } => "firing",
            AlertState::Resolved { .. } => "resolved",
        }
    }

    /// Whether people have been told and not yet told it is over.
    pub fn is_firing(&self) -> bool {
        matches!(self, AlertState::Firing { .. })
    }
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What to tell the rule's channels after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notification {
    /// The alert started firing.
    Firing,
    /// The alert is still firing, `repeat_interval` after the last notice.
    Repeat,
    /// The alert stopped firing.
    Resolved {
        /// Why.
        reason: ResolveReason,
    },
}

/// Why a firing alert resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveReason {
    /// The condition stopped holding, on sufficient data.
    Recovered,
    /// There stopped being enough data to tell (see the module doc).
    InsufficientData,
}

/// The result of one [`step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The new state.
    pub state: AlertState,
    /// What to send, if anything.
    pub notification: Option<Notification>,
    /// How the observation read; `InsufficientData` is what the dashboard
    /// shows beside an `Ok` state that cannot say more.
    pub verdict: Verdict,
}

/// One evaluation of one alert instance: from its `previous` state, given
/// what was observed over the rule's window, at `now`. Pure; the rules are in
/// the module doc.
pub fn step(previous: AlertState, observation: Observation, now: OffsetDateTime, rule: &Rule) -> Transition {
    let verdict = Verdict::of(observation, rule);
    let (state, notification) = match (previous, verdict) {
        (AlertState::Ok | AlertState::Resolved { .. }, Verdict::Holds) => pending_or_firing(now, now, rule),
        (AlertState::Ok | AlertState::Resolved { .. }, _) => (AlertState::Ok, None),
        (AlertState::Pending { since }, Verdict::Holds) => pending_or_firing(since, now, rule),
        (AlertState::Pending { .. }, _) => (AlertState::Ok, None),
        (AlertState::Firing { since, last_notified, .. }, Verdict::Holds) => {
            if rule.repeat_interval.is_some_and(|every| now - last_notified >= every) {
                (AlertState::Firing { since, last_notified: now, clear_since: None }, Some(Notification::Repeat))
            } else {
                (AlertState::Firing { since, last_notified, clear_since: None }, None)
            }
        }
        (AlertState::Firing { since, last_notified, clear_since }, Verdict::Clear | Verdict::InsufficientData) => {
            let clear_since = clear_since.unwrap_or(now);
            if now - clear_since >= rule.keep_firing_for {
                let reason =
                    if verdict == Verdict::Clear { ResolveReason::Recovered } else { ResolveReason::InsufficientData };
                (AlertState::Resolved { at: now }, Some(Notification::Resolved { reason }))
            } else {
                (AlertState::Firing { since, last_notified, clear_since: Some(clear_since) }, None)
            }
        }
    };
    Transition { state, notification, verdict }
}

/// The condition has held since `since`: pending, or firing once it has held
/// for the rule's `for`.
fn pending_or_firing(since: OffsetDateTime, now: OffsetDateTime, rule: &Rule) -> (AlertState, Option<Notification>) {
    if now - since >= rule.pending_for {
        (AlertState::Firing { since, last_notified: now, clear_since: None }, Some(Notification::Firing))
    } else {
        (AlertState::Pending { since }, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::{Comparison, Severity};
    use synchealth_store::{Aggregate, Filters};
    use time::macros::datetime;
    use time::Duration;

    const T0: OffsetDateTime = datetime!(2025-03-01 12:00 UTC);

    /// `success_rate < 0.95`, window 10m, for 5m, min_events 50, no
    /// keep_firing_for, no repeats.
    fn rule() -> Rule {
        Rule {
            name: "sync-success-rate".into(),
            description: None,
            metric: Metric::SuccessRate,
            comparison: Comparison::Below,
            threshold: 0.95,
            window: Duration::minutes(10),
            pending_for: Duration::minutes(5),
            min_events: 50,
            group_by: None,
            severity: Severity::Page,
            channels: vec!["email".into()],
            keep_firing_for: Duration::ZERO,
            repeat_interval: None,
            evaluation_delay: Duration::minutes(1),
            queue_threshold: None,
            filters: Filters::default(),
        }
    }

    /// Minutes after T0.
    fn at(minutes: i64) -> OffsetDateTime {
        T0 + Duration::minutes(minutes)
    }

    fn bad() -> Observation {
        Observation { value: Some(0.80), events: 500 }
    }

    fn good() -> Observation {
        Observation { value: Some(0.99), events: 500 }
    }

    fn firing(since: i64, last_notified: i64) -> AlertState {
        AlertState::Firing { since: at(since), last_notified: at(last_notified), clear_since: None }
    }

    /// Feeds one observation per minute from `start`, returning the final
    /// state and every notification with the minute it came at.
    fn run(
        rule: &Rule,
        mut state: AlertState,
        start: i64,
        observations: &[Observation],
    ) -> (AlertState, Vec<(i64, Notification)>) {
        let mut sent = Vec::new();
        for (i, observation) in observations.iter().enumerate() {
            let minute = start + i as i64;
            let t = step(state, *observation, at(minute), rule);
            if let Some(n) = t.notification {
                sent.push((minute, n));
            }
            state = t.state;
        }
        (state, sent)
    }

    #[test]
    fn an_ok_alert_stays_ok_while_the_condition_does_not_hold() {
        let t = step(AlertState::Ok, good(), T0, &rule());
        assert_eq!(t, Transition { state: AlertState::Ok, notification: None, verdict: Verdict::Clear });
    }

    #[test]
    fn the_condition_holding_makes_an_ok_alert_pending_without_notifying() {
        let t = step(AlertState::Ok, bad(), T0, &rule());
        assert_eq!(
            t,
            Transition { state: AlertState::Pending { since: T0 }, notification: None, verdict: Verdict::Holds }
        );
    }

    #[test]
    fn a_pending_alert_stays_pending_until_the_condition_has_held_for_the_for_duration() {
        let pending = AlertState::Pending { since: T0 };
        let t = step(pending, bad(), at(5) - Duration::seconds(1), &rule());
        assert_eq!((t.state, t.notification), (pending, None));
    }

    #[test]
    fn a_pending_alert_fires_once_the_condition_has_held_for_the_for_duration() {
        let t = step(AlertState::Pending { since: T0 }, bad(), at(5), &rule());
        assert_eq!(t.state, firing(0, 5));
        assert_eq!(t.notification, Some(Notification::Firing));
    }

    #[test]
    fn pending_then_firing_takes_for_minutes_of_evaluations() {
        let (state, sent) = run(&rule(), AlertState::Ok, 0, &[bad(); 7]);
        assert_eq!(sent, [(5, Notification::Firing)]);
        assert_eq!(state, firing(0, 5));
    }

    #[test]
    fn with_for_zero_the_first_bad_evaluation_fires_at_once() {
        let rule = Rule { pending_for: Duration::ZERO, ..rule() };
        let t = step(AlertState::Ok, bad(), T0, &rule);
        assert_eq!(t.state, firing(0, 0));
        assert_eq!(t.notification, Some(Notification::Firing));
    }

    #[test]
    fn recovering_while_pending_goes_back_to_ok_without_notifying() {
        let t = step(AlertState::Pending { since: T0 }, good(), at(3), &rule());
        assert_eq!(t, Transition { state: AlertState::Ok, notification: None, verdict: Verdict::Clear });
    }

    #[test]
    fn a_break_in_the_condition_restarts_the_for_clock() {
        let mut observations = vec![bad(); 4];
        observations.push(good());
        observations.extend([bad(); 6]);
        let (state, sent) = run(&rule(), AlertState::Ok, 0, &observations);
        // Bad from minute 5 again: fires at 10, not at 5.
        assert_eq!(sent, [(10, Notification::Firing)]);
        assert_eq!(state, firing(5, 10));
    }

    #[test]
    fn a_firing_alert_stays_quiet_while_the_condition_keeps_holding() {
        let (state, sent) = run(&rule(), firing(0, 5), 6, &[bad(); 120]);
        assert_eq!(sent, []);
        assert_eq!(state, firing(0, 5));
    }

    #[test]
    fn a_firing_alert_resolves_with_exactly_one_notification() {
        let (state, sent) = run(&rule(), firing(0, 5), 6, &[good(); 5]);
        assert_eq!(sent, [(6, Notification::Resolved { reason: ResolveReason::Recovered })]);
        assert_eq!(state, AlertState::Ok);
    }

    #[test]
    fn resolved_lasts_one_evaluation_then_becomes_ok() {
        let t = step(firing(0, 5), good(), at(6), &rule());
        assert_eq!(t.state, AlertState::Resolved { at: at(6) });
        let t = step(t.state, good(), at(7), &rule());
        assert_eq!((t.state, t.notification), (AlertState::Ok, None));
    }

    #[test]
    fn a_resolved_alert_whose_condition_holds_again_goes_through_pending_again() {
        let resolved = AlertState::Resolved { at: T0 };
        let t = step(resolved, bad(), at(1), &rule());
        assert_eq!((t.state, t.notification), (AlertState::Pending { since: at(1) }, None));
        let (_, sent) = run(&rule(), resolved, 1, &[bad(); 6]);
        assert_eq!(sent, [(6, Notification::Firing)]);
    }

    #[test]
    fn keep_firing_for_holds_a_firing_alert_through_a_brief_recovery() {
        let rule = Rule { keep_firing_for: Duration::minutes(10), ..rule() };
        let t = step(firing(0, 5), good(), at(6), &rule);
        assert_eq!(t.state, AlertState::Firing { since: at(0), last_notified: at(5), clear_since: Some(at(6)) });
        assert_eq!(t.notification, None);
        let t = step(t.state, good(), at(15), &rule);
        assert_eq!((t.state.name(), t.notification), ("firing", None));
        let t = step(t.state, bad(), at(16), &rule);
        assert_eq!((t.state, t.notification), (firing(0, 5), None), "holding again forgets the recovery");
    }

    #[test]
    fn keep_firing_for_suppresses_flapping() {
        let rule = Rule { keep_firing_for: Duration::minutes(10), ..rule() };
        // Hovering around the line: bad, good, good, bad, good, ... for an hour.
        let flapping: Vec<Observation> = (0..60).map(|i| if i % 3 == 0 { bad() } else { good() }).collect();
        let (state, sent) = run(&rule, firing(0, 5), 6, &flapping);
        assert_eq!(sent, [], "no resolve-and-refire while flapping");
        assert!(state.is_firing());
        // Without keep_firing_for, the same hour resolves and refires.
        let rule = Rule { keep_firing_for: Duration::ZERO, pending_for: Duration::ZERO, ..rule };
        let (_, sent) = run(&rule, firing(0, 5), 6, &flapping);
        assert_eq!(sent.len(), 39, "{sent:?}");
    }

    #[test]
    fn keep_firing_for_resolves_once_the_condition_has_not_held_for_that_long() {
        let rule = Rule { keep_firing_for: Duration::minutes(10), ..rule() };
        let (state, sent) = run(&rule, firing(0, 5), 6, &[good(); 12]);
        assert_eq!(sent, [(16, Notification::Resolved { reason: ResolveReason::Recovered })]);
        assert_eq!(state, AlertState::Ok);
    }

    #[test]
    fn repeat_interval_notifies_again_while_the_alert_keeps_firing() {
        let rule = Rule { repeat_interval: Some(Duration::minutes(30)), ..rule() };
        let (state, sent) = run(&rule, AlertState::Ok, 0, &[bad(); 70]);
        assert_eq!(sent, [(5, Notification::Firing), (35, Notification::Repeat), (65, Notification::Repeat)]);
        assert_eq!(state, firing(0, 65));
    }

    #[test]
    fn repeat_interval_counts_from_the_last_notice_even_after_a_missed_evaluation() {
        let rule = Rule { repeat_interval: Some(Duration::minutes(30)), ..rule() };
        let t = step(firing(0, 5), bad(), at(50), &rule);
        assert_eq!((t.state, t.notification), (firing(0, 50), Some(Notification::Repeat)));
    }

    #[test]
    fn no_repeat_goes_out_while_a_firing_alert_is_recovering() {
        let rule = Rule { repeat_interval: Some(Duration::minutes(30)), keep_firing_for: Duration::hours(1), ..rule() };
        let (state, sent) = run(&rule, firing(0, 5), 6, &[good(); 50]);
        assert_eq!(sent, []);
        assert!(state.is_firing());
    }

    #[test]
    fn fewer_events_than_min_events_never_starts_an_alert() {
        let few = Observation { value: Some(0.10), events: 49 };
        let (state, sent) = run(&rule(), AlertState::Ok, 0, &[few; 60]);
        assert_eq!((state, sent), (AlertState::Ok, vec![]));
        assert_eq!(step(AlertState::Ok, few, T0, &rule()).verdict, Verdict::InsufficientData);
    }

    #[test]
    fn min_events_is_inclusive() {
        let just_enough = Observation { value: Some(0.10), events: 50 };
        assert_eq!(Verdict::of(just_enough, &rule()), Verdict::Holds);
    }

    #[test]
    fn insufficient_data_while_pending_goes_back_to_ok_silently() {
        let few = Observation { value: Some(0.10), events: 3 };
        let t = step(AlertState::Pending { since: T0 }, few, at(4), &rule());
        assert_eq!(t, Transition { state: AlertState::Ok, notification: None, verdict: Verdict::InsufficientData });
    }

    #[test]
    fn a_firing_alert_with_insufficient_data_keeps_firing_for_keep_firing_for_then_resolves_saying_so() {
        let rule = Rule { keep_firing_for: Duration::minutes(10), ..rule() };
        let few = Observation { value: Some(0.10), events: 3 };
        let (state, sent) = run(&rule, firing(0, 5), 6, &[few; 12]);
        assert_eq!(sent, [(16, Notification::Resolved { reason: ResolveReason::InsufficientData })]);
        assert_eq!(state, AlertState::Ok);
    }

    #[test]
    fn with_no_keep_firing_for_a_firing_alert_resolves_as_soon_as_data_runs_out() {
        let none = Observation { value: None, events: 0 };
        let t = step(firing(0, 5), none, at(6), &rule());
        assert_eq!(t.notification, Some(Notification::Resolved { reason: ResolveReason::InsufficientData }));
    }

    #[test]
    fn no_value_is_insufficient_data_even_without_min_events() {
        let rule = Rule { min_events: 0, pending_for: Duration::ZERO, ..rule() };
        let none = Observation { value: None, events: 0 };
        let t = step(AlertState::Ok, none, T0, &rule);
        assert_eq!(t, Transition { state: AlertState::Ok, notification: None, verdict: Verdict::InsufficientData });
        let nan = Observation { value: Some(f64::NAN), events: 500 };
        assert_eq!(Verdict::of(nan, &rule), Verdict::InsufficientData);
    }

    #[test]
    fn no_value_while_pending_goes_back_to_ok() {
        let none = Observation { value: None, events: 500 };
        let t = step(AlertState::Pending { since: T0 }, none, at(1), &rule());
        assert_eq!((t.state, t.notification), (AlertState::Ok, None));
    }

    #[test]
    fn the_resolve_reason_is_the_verdict_at_resolution_time() {
        let rule = Rule { keep_firing_for: Duration::minutes(2), ..rule() };
        let few = Observation { value: Some(0.10), events: 3 };
        let (_, sent) = run(&rule, firing(0, 5), 6, &[few, few, good()]);
        assert_eq!(sent, [(8, Notification::Resolved { reason: ResolveReason::Recovered })]);
    }

    #[test]
    fn an_evaluation_time_before_the_pending_start_does_not_fire() {
        let t = step(AlertState::Pending { since: T0 }, bad(), at(-10), &rule());
        assert_eq!((t.state, t.notification), (AlertState::Pending { since: T0 }, None));
    }

    #[test]
    fn observations_read_the_metric_and_the_event_count_from_a_summary() {
        let summary = Summary::from_aggregate(&Aggregate {
            events: 120,
            attempts: 240.0,
            successes: 216.0,
            devices: 10,
            ..Default::default()
        });
        assert_eq!(Observation::of(&summary, Metric::SuccessRate), Observation { value: Some(0.9), events: 120 });
        assert_eq!(Observation::of(&summary, Metric::DurationP99), Observation { value: None, events: 120 });
    }

    #[test]
    fn states_serialize_tagged_with_rfc3339_times() {
        let json = serde_json::to_value(firing(0, 5)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "state": "firing",
                "since": "2025-03-01T12:00:00Z",
                "last_notified": "2025-03-01T12:05:00Z"
            })
        );
        assert_eq!(serde_json::from_value::<AlertState>(json).unwrap(), firing(0, 5));
        let recovering = AlertState::Firing { since: T0, last_notified: T0, clear_since: Some(at(1)) };
        let json = serde_json::to_string(&recovering).unwrap();
        assert_eq!(serde_json::from_str::<AlertState>(&json).unwrap(), recovering);
        assert_eq!(serde_json::to_value(AlertState::Ok).unwrap(), serde_json::json!({ "state": "ok" }));
        assert_eq!(
            serde_json::to_value(Notification::Resolved { reason: ResolveReason::InsufficientData }).unwrap(),
            serde_json::json!({ "kind": "resolved", "reason": "insufficient_data" })
        );
    }

    #[test]
    fn a_whole_incident_reads_as_expected() {
        let rule =
            Rule { keep_firing_for: Duration::minutes(5), repeat_interval: Some(Duration::minutes(20)), ..rule() };
        let quiet = Observation { value: Some(0.5), events: 10 };
        let mut script = vec![good(); 3]; // 0..3 fine
        script.extend([quiet; 3]); // 3..6 night: too few events to judge
        script.extend([bad(); 30]); // 6..36 broken: pending at 6, firing at 11, repeat at 31
        script.extend([good(), bad()]); // 36, 37 flap
        script.extend([good(); 10]); // 38.. recovered: resolves at 43
        let (state, sent) = run(&rule, AlertState::Ok, 0, &script);
        assert_eq!(
            sent,
            [
                (11, Notification::Firing),
                (31, Notification::Repeat),
                (43, Notification::Resolved { reason: ResolveReason::Recovered }),
            ]
        );
        assert_eq!(state, AlertState::Ok);
    }
}
