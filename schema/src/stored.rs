//! What the collector stores for one accepted event: the event as sent, the
//! collector's own clock readings, and the values every query needs
//! precomputed (skew-corrected time, weight, histogram buckets).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::bucket::bucket_of;
use crate::{Error, Result, SyncEvent};

/// Below this, a difference between `sent_at` and `received_at` is network
/// latency and ordinary drift, not a wrong clock: the device time is kept as
/// is. Above, the correction is rounded to whole minutes. Both keep the
/// corrected time of an event identical when a probe resends it (its latency
/// differs by milliseconds between tries), which is what lets ClickHouse
/// collapse the duplicate rows of a retried batch on its sorting key.
pub const CLOCK_SKEW_TOLERANCE_MS: i64 = 60_000;

/// The earliest time an event may be stored at, after skew correction
/// (2000-01-01T00:00:00Z): nothing a sync engine did happened before it,
/// and a device clock or `sent_at` that says so is broken or hostile.
pub const EARLIEST_EVENT_TIME_MS: i64 = 946_684_800_000;

/// How far past the collector's clock a corrected time may be (one day).
pub const MAX_FUTURE_MS: i64 = 24 * 3600 * 1000;

/// A project (tenant) name: 1..=64 of `a-z`, `0-9`, `-`, `_`.
///
/// Shared, not owned: every stored event carries its project, and a clone
/// per event of a 1,000-event batch is then a reference count, not an
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProjectName(Arc<str>);

impl ProjectName {
    /// Checks the naming rule.
    pub fn parse(name: &str) -> Result<ProjectName> {
        let invalid = |reason| Error::InvalidProjectName { name: name.to_string(), reason };
        if name.is_empty() || name.len() > 64 {
            return Err(invalid("must be 1 to 64 characters"));
        }
        if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err(invalid("only a-z, 0-9, '-' and '_' are allowed"));
        }
        Ok(ProjectName(Arc::from(name)))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProjectName {
    type Error = Error;
    fn try_from(value: String) -> Result<Self> {
        ProjectName::parse(&value)
    }
}

impl From<ProjectName> for String {
    fn from(value: ProjectName) -> Self {
        value.0.to_string()
    }
}

impl std::fmt::Display for ProjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One stored sync attempt. All times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The project the ingest key belongs to.
    pub project: ProjectName,
    /// The event as the device sent it.
    pub event: SyncEvent,
    /// When the device sent the batch, device clock.
    pub sent_at_ms: i64,
    /// When the collector received the batch, collector clock.
    pub received_at_ms: i64,
    /// `received_at - sent_at`: how far the device clock is behind.
    pub clock_skew_ms: i64,
    /// `occurred_at` corrected for clock skew: the time every query buckets by.
    pub event_time_ms: i64,
    /// `occurred_at - last_success_at` on the device clock (never negative);
    /// `None` when the device has never synced.
    pub staleness_ms: Option<u64>,
    /// `occurred_at - queue_oldest_at` on the device clock (never negative):
    /// how long the oldest pending change has waited; `None` when the queue
    /// is empty.
    pub queue_lag_ms: Option<u64>,
    /// How many attempts this event stands for: `1 / sample_rate`.
    pub weight: f64,
    /// Histogram bucket of `duration_ms`.
    pub duration_bucket: u16,
    /// Histogram bucket of `queue_depth`.
    pub queue_bucket: u16,
    /// Histogram bucket of `staleness_ms` (0 when never synced).
    pub staleness_bucket: u16,
}

impl StoredEvent {
    /// Stamps an accepted event with the collector's view of it.
    pub fn new(project: ProjectName, event: SyncEvent, sent_at: OffsetDateTime, received_at: OffsetDateTime) -> Self {
        let sent_at_ms = unix_ms(sent_at);
        let received_at_ms = unix_ms(received_at);
        let clock_skew_ms = received_at_ms - sent_at_ms;
        let occurred_at_ms = unix_ms(event.occurred_at);
        let event_time_ms = occurred_at_ms + correction_ms(clock_skew_ms);
        let staleness_ms = event.last_success_at.map(|last| u64::try_from(occurred_at_ms - unix_ms(last)).unwrap_or(0));
        let queue_lag_ms =
            event.queue_oldest_at.map(|oldest| u64::try_from(occurred_at_ms - unix_ms(oldest)).unwrap_or(0));
        StoredEvent {
            weight: 1.0 / event.sample_rate,
            duration_bucket: bucket_of(event.duration_ms),
            queue_bucket: bucket_of(u64::from(event.queue_depth)),
            staleness_bucket: staleness_ms.map(bucket_of).unwrap_or(0),
            project,
            event,
            sent_at_ms,
            received_at_ms,
            clock_skew_ms,
            event_time_ms,
            staleness_ms,
            queue_lag_ms,
        }
    }

    /// Why this event's times cannot be stored, as (field, reason), or
    /// `None`: `occurred_at`, `last_success_at` and `queue_oldest_at`, corrected by the batch's
    /// clock skew, must fall in [2000-01-01, receive time + 1 day], so a
    /// broken clock or a hostile `sent_at` cannot put an event in year
    /// -5947 or 9999, where no view would ever show it (or every view would).
    pub fn time_out_of_range(&self) -> Option<(&'static str, String)> {
        let latest = self.received_at_ms.saturating_add(MAX_FUTURE_MS);
        let correction = self.event_time_ms - self.occurred_at_ms();
        let times = [
            ("occurred_at", Some(self.occurred_at_ms())),
            ("last_success_at", self.last_success_at_ms()),
            ("queue_oldest_at", self.event.queue_oldest_at.map(unix_ms)),
        ];
        times.into_iter().find_map(|(field, device_ms)| {
            let corrected = device_ms?.saturating_add(correction);
            if (EARLIEST_EVENT_TIME_MS..=latest).contains(&corrected) {
                return None;
            }
            let skew = if correction == 0 {
                String::new()
            } else {
                format!(
                    " after correcting the device clock by {} s (sent_at against the collector's clock)",
                    correction / 1000
                )
            };
            Some((
                field,
                format!(
                    "falls at {}{skew}, outside 2000-01-01T00:00:00Z to one day after receipt ({})",
                    rfc3339_ms(corrected),
                    rfc3339_ms(latest)
                ),
            ))
        })
    }

    /// `occurred_at` in Unix milliseconds (device clock).
    pub fn occurred_at_ms(&self) -> i64 {
        unix_ms(self.event.occurred_at)
    }

    /// `last_success_at` in Unix milliseconds (device clock).
    pub fn last_success_at_ms(&self) -> Option<i64> {
        self.event.last_success_at.map(unix_ms)
    }
}

/// A Unix millisecond time as RFC 3339, or the number when it has none
/// (beyond year 9999 or before year -9999).
fn rfc3339_ms(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms since 1970"))
}

/// The correction applied to device times for a measured skew.
fn correction_ms(skew_ms: i64) -> i64 {
    if skew_ms.abs() < CLOCK_SKEW_TOLERANCE_MS {
        0
    } else {
        let minute = 60_000;
        (skew_ms + skew_ms.signum() * minute / 2) / minute * minute
    }
}

/// Unix milliseconds of a timestamp.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn event() -> SyncEvent {
        SyncEvent::from_json(serde_json::json!({
            "event_id": "6f1c1a7e-2f7b-4c1e-9a53-3f0e8c1d2b4a",
            "device_id": "dev-1",
            "occurred_at": "2026-11-21T10:00:00Z",
            "last_success_at": "2026-11-21T09:00:00Z",
            "success": true,
            "duration_ms": 1200,
            "app_version": "2.3.0",
            "os": "android",
            "sample_rate": 0.25,
        }))
        .unwrap()
    }

    #[test]
    fn a_clock_three_hours_behind_is_corrected_and_staleness_is_read_on_the_device_clock() {
        let project = ProjectName::parse("default").unwrap();
        let sent = datetime!(2026-11-21 10:00:05 UTC);
        let received = datetime!(2026-11-21 13:00:05.300 UTC);
        let stored = StoredEvent::new(project, event(), sent, received);
        assert_eq!(stored.clock_skew_ms, 3 * 3600 * 1000 + 300);
        assert_eq!(stored.event_time_ms, unix_ms(datetime!(2026-11-21 13:00:00 UTC)));
        assert_eq!(stored.staleness_ms, Some(3600 * 1000));
        assert_eq!(stored.weight, 4.0);
    }

    #[test]
    fn a_resent_event_gets_the_same_corrected_time_despite_different_latency() {
        let project = ProjectName::parse("default").unwrap();
        let first = StoredEvent::new(
            project.clone(),
            event(),
            datetime!(2026-11-21 10:00:05 UTC),
            datetime!(2026-11-21 10:00:05.040 UTC),
        );
        let retry = StoredEvent::new(
            project,
            event(),
            datetime!(2026-11-21 10:05:00 UTC),
            datetime!(2026-11-21 10:05:02.900 UTC),
        );
        assert_eq!(first.event_time_ms, retry.event_time_ms);
        assert_eq!(first.event_time_ms, first.occurred_at_ms());
    }

    #[test]
    fn project_names_follow_the_rule() {
        assert!(ProjectName::parse("mobile-prod_2").is_ok());
        assert!(ProjectName::parse("").is_err());
        assert!(ProjectName::parse("Prod").is_err());
        assert!(ProjectName::parse("a b").is_err());
    }

    fn stored(occurred: &str, last: Option<&str>, sent: OffsetDateTime, received: OffsetDateTime) -> StoredEvent {
        let mut e = event();
        e.occurred_at = OffsetDateTime::parse(occurred, &time::format_description::well_known::Rfc3339).unwrap();
        e.last_success_at =
            last.map(|l| OffsetDateTime::parse(l, &time::format_description::well_known::Rfc3339).unwrap());
        StoredEvent::new(ProjectName::parse("default").unwrap(), e, sent, received)
    }

    /// Expectations written out by hand: the correction is the skew rounded
    /// to whole minutes (half a minute rounds away from zero), none under
    /// one minute.
    #[test]
    fn skew_corrections_round_to_whole_minutes_ahead_behind_and_at_the_boundaries() {
        let received = datetime!(2026-11-21 12:00:00 UTC);
        let cases = [
            // device clock behind by 3 h 0 min 29.999 s: +3 h
            (datetime!(2026-11-21 08:59:30.001 UTC), 3 * 3600),
            // behind by 2 min 30 s exactly: away from zero, +3 min
            (datetime!(2026-11-21 11:57:30 UTC), 180),
            // behind by 59.999 s: under the tolerance, no correction
            (datetime!(2026-11-21 11:59:00.001 UTC), 0),
            // behind by exactly one minute: corrected
            (datetime!(2026-11-21 11:59:00 UTC), 60),
            // ahead by 10 min 31 s: -11 min
            (datetime!(2026-11-21 12:10:31 UTC), -660),
            // ahead by 90 s exactly: -2 min
            (datetime!(2026-11-21 12:01:30 UTC), -120),
        ];
        for (sent, correction_s) in cases {
            let s = stored("2026-11-21T10:00:00Z", None, sent, received);
            let device = unix_ms(datetime!(2026-11-21 10:00:00 UTC));
            assert_eq!(s.event_time_ms - device, correction_s * 1000, "sent at {sent}");
        }
    }

    #[test]
    fn times_outside_2000_to_a_day_after_receipt_are_refused_after_skew_correction() {
        let received = datetime!(2026-11-21 12:00:00 UTC);
        // A hostile sent_at in year 9999 moves a plausible occurred_at to about year -5947.
        let s = stored("2026-11-21T10:00:00Z", None, datetime!(9999-12-31 23:59:59 UTC), received);
        let (field, reason) = s.time_out_of_range().expect("refused");
        assert_eq!(field, "occurred_at");
        assert!(reason.contains("after correcting the device clock"), "{reason}");
        // No skew: 1999 is refused, 2000-01-01 is kept.
        assert_eq!(
            stored("1999-12-31T23:59:59Z", None, received, received).time_out_of_range().map(|r| r.0),
            Some("occurred_at")
        );
        assert_eq!(stored("2000-01-01T00:00:00Z", None, received, received).time_out_of_range(), None);
        // Up to a day after receipt is kept, later is refused.
        assert_eq!(stored("2026-11-22T12:00:00Z", None, received, received).time_out_of_range(), None);
        assert_eq!(
            stored("2026-11-22T12:00:01Z", None, received, received).time_out_of_range().map(|r| r.0),
            Some("occurred_at")
        );
        // A device clock 30 days ahead, corrected, is kept.
        let ahead = stored("2026-12-21T10:00:00Z", None, datetime!(2026-12-21 12:00:00 UTC), received);
        assert_eq!(ahead.time_out_of_range(), None);
        // The last success is held to the same range.
        let old = stored("2026-11-21T10:00:00Z", Some("1990-01-01T00:00:00Z"), received, received);
        assert_eq!(old.time_out_of_range().map(|r| r.0), Some("last_success_at"));
    }
}
