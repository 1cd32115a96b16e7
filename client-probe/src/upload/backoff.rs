//! Retry timing after a failed upload: exponential backoff with full jitter
//! (a uniformly random wait between zero and the exponential cap), so a
//! fleet that failed together (a reconnect storm, a collector restart) does
//! not retry together; and never sooner than the collector's `Retry-After`.
//!
//! Hand-rolled rather than taken from `backoff`/`backon`: their retry loops
//! own the sleeping, while the worker must stay wakeable (flush, shutdown,
//! new events) during the wait, and must take `Retry-After` as a floor that
//! the server sets per response. What is left is the formula below.

use std::time::Duration;

/// The longest `Retry-After` honoured: a misconfigured server must not
/// silence a probe for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Consecutive-failure state of the uploader.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max: max.max(min), failures: 0 }
    }

    /// The wait before the next try, after one more failure:
    /// `uniform(0, min(max, min * 2^failures))`, raised to `retry_after`.
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let cap = self.min.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let jitter = cap.mul_f64(fastrand::f64());
        match retry_after {
            Some(floor) => jitter.max(floor.min(MAX_RETRY_AFTER)),
            None => jitter,
        }
    }

    /// A success: the next failure starts from the bottom again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

/// A `Retry-After` header in delta-seconds (the form the collector sends);
/// HTTP dates are not worth a date parser in the probe and count as absent.
pub(crate) fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_a_cap_that_doubles_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let caps = [100, 200, 400, 800, 1000, 1000, 1000];
        for cap in caps {
            let mut max_seen = Duration::ZERO;
            for _ in 0..200 {
                let mut b = backoff.clone();
                let d = b.next_delay(None);
                assert!(d <= Duration::from_millis(cap), "{d:?} over {cap} ms");
                max_seen = max_seen.max(d);
            }
            // Full jitter spreads over the whole range, not just near the cap.
            assert!(max_seen > Duration::from_millis(cap / 2));
            backoff.next_delay(None);
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(None) <= Duration::from_millis(100));
    }

    #[test]
    fn retry_after_is_a_floor_and_is_parsed_from_seconds() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(10));
        for _ in 0..50 {
            assert!(backoff.next_delay(Some(Duration::from_secs(2))) >= Duration::from_secs(2));
        }
        assert_eq!(backoff.next_delay(Some(Duration::from_secs(86_400))), MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }
}
