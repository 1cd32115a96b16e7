//! Per-ingest-key rate limit: a token bucket per key (GCRA, `governor`),
//! counted in events, so one noisy app release cannot starve the others.
//! Refused batches are answered 429 with `Retry-After`; nothing of them is
//! stored, so the client retries the same batch later.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};
use synchealth_schema::ProjectName;

use crate::auth::Authenticated;
use crate::AppError;

/// Events per second and burst allowed to one ingest key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained events per second per key.
    pub events_per_second: NonZeroU32,
    /// Events a key may send at once (the bucket size), at least 1.
    pub burst: NonZeroU32,
}

impl RateLimit {
    /// A limit from plain numbers: `events_per_second = 0` means unlimited
    /// (`None`); `burst = 0` means one second's worth of events.
    pub fn from_settings(events_per_second: u32, burst: u32) -> Option<RateLimit> {
        let events_per_second = NonZeroU32::new(events_per_second)?;
        let burst = NonZeroU32::new(burst).unwrap_or(events_per_second);
        Some(RateLimit { events_per_second, burst })
    }
}

/// The keyed limiter, or nothing when ingest is unlimited.
#[derive(Debug)]
pub struct IngestRateLimiter {
    limit: Option<(RateLimit, DefaultKeyedRateLimiter<String>)>,
}

impl IngestRateLimiter {
    /// A limiter enforcing `limit` per key (`None`: lets everything through).
    pub fn new(limit: Option<RateLimit>) -> Self {
        let limit = limit
            .map(|l| (l, DefaultKeyedRateLimiter::keyed(Quota::per_second(l.events_per_second).allow_burst(l.burst))));
        IngestRateLimiter { limit }
    }

    /// Takes `events` from the key's bucket, or refuses the whole batch with
    /// how long to wait. A batch larger than the burst can never fit, so it
    /// takes the whole bucket instead (it is accepted when the bucket is full).
    pub fn check(&self, who: &Authenticated, events: usize) -> Result<(), AppError> {
        let (Some((limit, limiter)), Some(n)) =
            (&self.limit, NonZeroU32::new(u32::try_from(events).unwrap_or(u32::MAX)))
        else {
            return Ok(());
        };
        let n = n.min(limit.burst);
        match limiter.check_key_n(&who.key_hash, n) {
            Ok(Ok(())) => {
                // Keys never seen again would otherwise stay in the map forever.
                if limiter.len() > 10_000 {
                    limiter.retain_recent();
                }
                Ok(())
            }
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                Err(refused(&who.project, events, *limit, wait))
            }
            // Unreachable with `n <= burst`; refuse rather than panic.
            Err(_) => Err(refused(&who.project, events, *limit, Duration::from_secs(1))),
        }
    }
}

fn refused(project: &ProjectName, events: usize, limit: RateLimit, wait: Duration) -> AppError {
    metrics::counter!("synchealth_rate_limited_total", crate::metric_labels::project(project)).increment(events as u64);
    let retry_after_seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let retry_after_seconds = retry_after_seconds.max(1);
    tracing::info!(%project, events, retry_after_seconds, "Rate limited a batch.");
    AppError::RateLimited {
        detail: format!(
            "this ingest key may send {} events per second (bursts of {}); the batch of {events} events was not stored, retry in {retry_after_seconds} s",
            limit.events_per_second, limit.burst
        ),
        retry_after_seconds,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn who(key: &str) -> Authenticated {
        Authenticated {
            project: ProjectName::parse("p").unwrap(),
            key_hash: key.into(),
            allowed_origins: Default::default(),
        }
    }

    #[test]
    fn zero_events_per_second_is_unlimited() {
        assert_eq!(RateLimit::from_settings(0, 100), None);
        let limiter = IngestRateLimiter::new(None);
        for _ in 0..100 {
            limiter.check(&who("a"), 1_000_000).unwrap();
        }
    }

    #[test]
    fn a_key_past_its_burst_is_refused_with_a_wait_and_other_keys_are_not() {
        let limiter = IngestRateLimiter::new(RateLimit::from_settings(1, 10));
        limiter.check(&who("a"), 6).unwrap();
        limiter.check(&who("a"), 4).unwrap();
        match limiter.check(&who("a"), 5) {
            Err(AppError::RateLimited { retry_after_seconds, detail }) => {
                assert!((4..=6).contains(&retry_after_seconds), "{retry_after_seconds}");
                assert!(detail.contains("1 events per second"), "{detail}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        limiter.check(&who("b"), 10).unwrap();
    }

    #[test]
    fn a_batch_larger_than_the_burst_takes_the_whole_bucket() {
        let limiter = IngestRateLimiter::new(RateLimit::from_settings(1, 10));
        limiter.check(&who("a"), 50).unwrap();
        assert!(matches!(limiter.check(&who("a"), 1), Err(AppError::RateLimited { .. })));
    }

    #[test]
    fn burst_zero_means_one_second_of_events() {
        let limit = RateLimit::from_settings(7, 0).unwrap();
        assert_eq!(limit.burst.get(), 7);
    }
}
