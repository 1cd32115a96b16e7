//! Brute-force protection: failed logins counted per user name and per
//! client address, on the login form and HTTP Basic alike.
//!
//! Policy: `max_failures` failures of one key (a user name, or an address)
//! within `window` lock that key for `lockout`; each further lockout of the
//! same key, before a success or a quiet `window`, doubles it up to
//! `max_lockout`. While locked, an attempt is answered 429 with
//! `Retry-After` without looking at the password: the right password does
//! not get through either, so guessing cannot go on at argon2's pace. A
//! success clears both keys.
//!
//! Why not `governor` (which the collector uses for its rate limit): it
//! counts admissions, each `check` consuming a cell, while this counts only
//! failures, must be consulted before the password is known to be wrong,
//! forgets a key on success, and grows its lockout; none of the four is a
//! `governor` operation, and together they are a page of code.
//!
//! The counts live in the process: replicas that share a store do not share
//! them, so N replicas behind a load balancer allow up to N times the
//! failures. Memory is bounded: at most [`MAX_KEYS`] keys are tracked; when
//! full, expired ones are dropped, and past that new keys go uncounted
//! rather than growing the map.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most (user names and addresses together).
pub const MAX_KEYS: usize = 100_000;

/// How many failures lock a key, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures within `window` that lock the key; 0 disables the throttle.
    pub max_failures: u32,
    /// The span failures are counted over.
    pub window: Duration,
    /// The first lockout...
    pub lockout: Duration,
    /// ...doubling with each further one up to this.
    pub max_lockout: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        ThrottlePolicy {
            max_failures: 10,
            window: Duration::from_secs(600),
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

#[derive(Debug, Default)]
struct Entry {
    failures: VecDeque<Instant>,
    last_failure: Option<Instant>,
    blocked_until: Option<Instant>,
    lockouts: u32,
}

impl Entry {
    fn forgettable(&self, now: Instant, window: Duration) -> bool {
        self.blocked_until.is_none_or(|until| until <= now)
            && self.last_failure.is_none_or(|last| now.duration_since(last) >= window)
    }
}

/// Failed-login counts (see the module documentation).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    policy: ThrottlePolicy,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl LoginThrottle {
    /// A throttle with `policy`.
    pub fn new(policy: ThrottlePolicy) -> Self {
        LoginThrottle { policy, entries: Mutex::new(HashMap::new()) }
    }

    fn keys(username: &str, address: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::User(username.to_string())).chain(address.map(Key::Address))
    }

    /// `Err(wait)` while the user or the address is locked out.
    pub fn check(&self, username: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        if self.policy.max_failures == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let Ok(entries) = self.entries.lock() else { return Ok(()) };
        let wait = Self::keys(username, address)
            .filter_map(|key| entries.get(&key)?.blocked_until)
            .filter_map(|until| until.checked_duration_since(now))
            .max();
        match wait {
            Some(wait) if !wait.is_zero() => Err(wait),
            _ => Ok(()),
        }
    }

    /// Counts a wrong password (or an unknown user) against both keys.
    pub fn failed(&self, username: &str, address: Option<IpAddr>) {
        if self.policy.max_failures == 0 {
            return;
        }
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else { return };
        if entries.len() >= MAX_KEYS {
            let window = self.policy.window;
            entries.retain(|_, entry| !entry.forgettable(now, window));
        }
        for key in Self::keys(username, address) {
            if !entries.contains_key(&key) && entries.len() >= MAX_KEYS {
                continue;
            }
            let entry = entries.entry(key).or_default();
            if entry.forgettable(now, self.policy.window) {
                // Quiet for a whole window: the lockout no longer grows.
                entry.lockouts = 0;
            }
            while entry.failures.front().is_some_and(|at| now.duration_since(*at) >= self.policy.window) {
                entry.failures.pop_front();
            }
            entry.failures.push_back(now);
            entry.last_failure = Some(now);
            if entry.failures.len() >= self.policy.max_failures as usize {
                let doubled = self.policy.lockout.saturating_mul(1u32 << entry.lockouts.min(20));
                entry.blocked_until = Some(now + doubled.min(self.policy.max_lockout));
                entry.lockouts = entry.lockouts.saturating_add(1);
                entry.failures.clear();
            }
        }
    }

    /// A successful login: both keys start again from nothing.
    pub fn succeeded(&self, username: &str, address: Option<IpAddr>) {
        let Ok(mut entries) = self.entries.lock() else { return };
        for key in Self::keys(username, address) {
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(lockout_ms: u64) -> ThrottlePolicy {
        ThrottlePolicy {
            max_failures: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_millis(lockout_ms),
            max_lockout: Duration::from_millis(lockout_ms * 3),
        }
    }

    #[test]
    fn the_failure_that_reaches_the_limit_locks_the_user_from_any_address() {
        let throttle = LoginThrottle::new(policy(60_000));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            assert!(throttle.check("ana", Some(a)).is_ok());
            throttle.failed("ana", Some(a));
        }
        assert!(throttle.check("ana", Some(b)).is_ok(), "two failures lock nothing");
        throttle.failed("ana", Some(a));
        let wait = throttle.check("ana", Some(b)).unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(throttle.check("bo", Some(a)).is_err(), "the address is locked too");
        assert!(throttle.check("bo", Some(b)).is_ok(), "another user from another address is not");
    }

    #[test]
    fn a_success_resets_both_keys() {
        let throttle = LoginThrottle::new(policy(60_000));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        throttle.failed("ana", Some(a));
        throttle.failed("ana", Some(a));
        throttle.succeeded("ana", Some(a));
        throttle.failed("ana", Some(a));
        throttle.failed("ana", Some(a));
        assert!(throttle.check("ana", Some(a)).is_ok(), "only two failures since the success");
    }

    #[test]
    fn each_further_lockout_doubles_up_to_the_maximum() {
        let throttle = LoginThrottle::new(policy(50));
        let mut waits = Vec::new();
        for _ in 0..4 {
            for _ in 0..3 {
                throttle.failed("ana", None);
            }
            let wait = throttle.check("ana", None).unwrap_err();
            waits.push(wait);
            std::thread::sleep(wait + Duration::from_millis(5));
            assert!(throttle.check("ana", None).is_ok(), "the lockout ends");
        }
        assert!(waits[0] <= Duration::from_millis(50), "{waits:?}");
        assert!(waits[1] > Duration::from_millis(50) && waits[1] <= Duration::from_millis(100), "{waits:?}");
        assert!(waits[2] > Duration::from_millis(100) && waits[2] <= Duration::from_millis(150), "capped: {waits:?}");
        assert!(waits[3] > Duration::from_millis(100) && waits[3] <= Duration::from_millis(150), "capped: {waits:?}");
    }

    #[test]
    fn a_zero_limit_disables_the_throttle() {
        let throttle = LoginThrottle::new(ThrottlePolicy { max_failures: 0, ..ThrottlePolicy::default() });
        for _ in 0..100 {
            throttle.failed("ana", None);
        }
        assert!(throttle.check("ana", None).is_ok());
    }
}
