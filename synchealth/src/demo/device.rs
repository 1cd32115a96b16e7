//! One simulated device: its profile (network, app version, OS, cohort), and
//! what each of its sync attempts looks like at a given moment of the demo's
//! script.
//!
//! Durations are log-normal per network (wifi fast and tight, cellular
//! slower, Lie-Fi slow with a long tail and frequent timeouts). The script
//! (times since the demo started; the cycle repeats every [`CYCLE`]):
//! - from [`BAD_RELEASE_AT`], app version 2.3.0 fails about half its attempts
//!   on cellular (server errors): the bad release;
//! - during minutes 3 to 8 of each cycle, Android devices meet conflicts on
//!   a third of their attempts: the conflict surge;
//! - a stuck-queue cohort (1 device in 20) keeps failing to push, and its
//!   queue depth climbs past 1000;
//! - any device may go offline for a minute or two (attempts fail fast,
//!   events pile up in its probe's buffer, and go when it is back); a
//!   long-outage cohort (1 in 25) is offline 5 minutes of every cycle with
//!   a small buffer, so thinning and drops show on the telemetry-loss panel.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use synchealth_probe::{ErrorKind, Network, SyncEvent, Trigger};
use time::OffsetDateTime;
use uuid::Uuid;

/// The script repeats with this period.
pub(crate) const CYCLE: Duration = Duration::from_secs(600);
/// When the bad release starts failing on cellular.
pub(crate) const BAD_RELEASE_AT: Duration = Duration::from_secs(60);
/// The bad release.
pub(crate) const BAD_VERSION: &str = "2.3.0";

/// How a device connects when it is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    Wifi,
    Cellular,
    /// Shows as wifi, behaves like a bad cellular link, drops out often.
    LieFi,
}

/// A simulated device's fixed traits.
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub(crate) device_id: String,
    pub(crate) app_version: &'static str,
    pub(crate) os: &'static str,
    pub(crate) os_version: &'static str,
    pub(crate) model: &'static str,
    pub(crate) link: Link,
    pub(crate) stuck_queue: bool,
    pub(crate) long_outages: bool,
}

impl Profile {
    /// The `index`-th device of the fleet; cohorts are spread evenly so that a
    /// small fleet still has one of each.
    pub(crate) fn new(index: usize, rng: &mut StdRng) -> Profile {
        let android = rng.gen_bool(0.6);
        let (os, os_version, model) = if android {
            (
                "android",
                ["13", "14", "15"][rng.gen_range(0..3)],
                ["Pixel 8", "Galaxy S23", "Moto G"][rng.gen_range(0..3)],
            )
        } else {
            ("ios", ["17.5", "18.1"][rng.gen_range(0..2)], ["iPhone 13", "iPhone 15"][rng.gen_range(0..2)])
        };
        let app_version = match rng.gen_range(0..100) {
            0..=34 => BAD_VERSION,
            35..=74 => "2.2.1",
            _ => "2.1.0",
        };
        let link = match index % 20 {
            0..=9 => Link::Wifi,
            10..=16 => Link::Cellular,
            _ => Link::LieFi,
        };
        Profile {
            device_id: format!("demo-{index:04}"),
            app_version,
            os,
            os_version,
            model,
            link,
            stuck_queue: index % 20 == 3,
            long_outages: index % 25 == 7,
        }
    }
}

/// A device's changing state.
#[derive(Debug)]
pub(crate) struct DeviceState {
    pub(crate) profile: Profile,
    queue_depth: u32,
    /// Offline until this script time.
    offline_until: Duration,
    was_offline: bool,
}

/// One attempt as the simulation decided it.
#[derive(Debug)]
pub(crate) struct Simulated {
    pub(crate) event: SyncEvent,
    pub(crate) network: Network,
    pub(crate) queue_depth: u32,
}

impl DeviceState {
    pub(crate) fn new(profile: Profile) -> Self {
        DeviceState { profile, queue_depth: 0, offline_until: Duration::ZERO, was_offline: false }
    }

    /// The device's network right now (the probe's upload policy reads it).
    pub(crate) fn network(&self, t: Duration) -> Network {
        if self.offline(t) {
            Network::Offline
        } else {
            match self.profile.link {
                Link::Wifi | Link::LieFi => Network::Wifi,
                Link::Cellular => Network::Cellular,
            }
        }
    }

    fn offline(&self, t: Duration) -> bool {
        if t < self.offline_until {
            return true;
        }
        // The long-outage cohort: offline in minutes 1 to 6 of every cycle.
        let in_cycle = t.as_secs() % CYCLE.as_secs();
        self.profile.long_outages && (60..360).contains(&in_cycle)
    }

    /// Simulates one attempt at script time `t`, ending now.
    pub(crate) fn attempt(&mut self, t: Duration, rng: &mut StdRng) -> Simulated {
        // Going offline: rarely for most, often (briefly) on Lie-Fi.
        if !self.offline(t) {
            let (chance, secs) = match self.profile.link {
                Link::LieFi => (0.08, rng.gen_range(5..25)),
                _ => (0.01, rng.gen_range(30..150)),
            };
            if rng.gen_bool(chance) {
                self.offline_until = t + Duration::from_secs(secs);
            }
        }
        let network = self.network(t);
        let in_cycle = t.as_secs() % CYCLE.as_secs();
        let conflict_surge = self.profile.os == "android" && (180..480).contains(&in_cycle);

        let mut trigger =
            [Trigger::Scheduled, Trigger::LocalWrite, Trigger::AppOpen, Trigger::Resume][rng.gen_range(0..4)];
        let sync_type = ["push", "pull", "full"][rng.gen_range(0..3)];
        let mut failure: Option<(ErrorKind, &'static str)> = None;
        let duration_ms;
        if network == Network::Offline {
            self.was_offline = true;
            failure = Some((ErrorKind::Network, "no route to host"));
            duration_ms = rng.gen_range(20..300);
            self.queue_depth = self.queue_depth.saturating_add(rng.gen_range(1..4));
        } else {
            if std::mem::take(&mut self.was_offline) {
                trigger = Trigger::Reconnect;
            }
            let (median_ms, sigma, base_failure) = match self.profile.link {
                Link::Wifi => (350.0, 0.6, 0.01),
                Link::Cellular => (1_400.0, 0.7, 0.03),
                Link::LieFi => (6_000.0, 1.1, 0.18),
            };
            let mut ms = log_normal(rng, median_ms, sigma);
            let bad_release =
                self.profile.app_version == BAD_VERSION && network == Network::Cellular && t >= BAD_RELEASE_AT;
            if bad_release && rng.gen_bool(0.5) {
                failure = Some((ErrorKind::Server, "HTTP 500 from /sync/push: unknown column \"labels\""));
                ms *= 1.5;
            } else if self.profile.stuck_queue && rng.gen_bool(0.8) {
                failure = Some((ErrorKind::Validation, "push rejected: record too large"));
            } else if rng.gen_bool(base_failure) {
                failure = Some(if self.profile.link == Link::LieFi && rng.gen_bool(0.6) {
                    ms = 30_000.0;
                    (ErrorKind::Timeout, "sync timed out after 30 s")
                } else {
                    (ErrorKind::Network, "connection reset by peer")
                });
            }
            duration_ms = ms.min(600_000.0) as u64;
            self.queue_depth = if self.profile.stuck_queue {
                // The push path is broken: local writes pile up.
                (self.queue_depth + rng.gen_range(30..90)).min(5_000)
            } else if failure.is_none() {
                rng.gen_range(0..3)
            } else {
                self.queue_depth.saturating_add(rng.gen_range(0..3))
            };
        }
        let conflicts = if failure.is_none() && conflict_surge && rng.gen_bool(0.35) {
            rng.gen_range(1..7)
        } else if failure.is_none() && rng.gen_bool(0.02) {
            1
        } else {
            0
        };
        let records_up = if sync_type == "pull" { 0 } else { rng.gen_range(0..40) };
        let records_down = if sync_type == "push" { 0 } else { rng.gen_range(0..200) };
        let started = OffsetDateTime::now_utc() - time::Duration::milliseconds(duration_ms as i64);
        let event = SyncEvent {
            event_id: Uuid::now_v7(),
            // Filled in by the probe: device id, app version, OS, last success.
            device_id: String::new(),
            occurred_at: started,
            success: failure.is_none(),
            duration_ms,
            conflicts,
            queue_depth: self.queue_depth,
            last_success_at: None,
            app_version: String::new(),
            os: String::new(),
            os_version: Some(self.profile.os_version.to_string()),
            network,
            device_model: Some(self.profile.model.to_string()),
            sync_type: Some(sync_type.to_string()),
            trigger: Some(trigger),
            error_kind: failure.map(|(kind, _)| kind),
            error_message: failure.map(|(_, message)| message.to_string()),
            retries: if failure.is_some() { rng.gen_range(0..4) } else { 0 },
            records_up,
            records_down,
            bytes_up: records_up * rng.gen_range(200..2_000),
            bytes_down: records_down * rng.gen_range(200..2_000),
            sample_rate: 1.0,
            conflict_details: Vec::new(),
            queue_oldest_at: None,
            dimensions: Default::default(),
        };
        Simulated { event, network, queue_depth: self.queue_depth }
    }
}

/// A log-normal sample with the given median: `median * e^(sigma * N(0,1))`
/// (Box-Muller for the normal).
fn log_normal(rng: &mut StdRng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    median * (sigma * normal).exp()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn median(mut values: Vec<u64>) -> u64 {
        values.sort_unstable();
        values[values.len() / 2]
    }

    fn sample(link: Link, version: &'static str, t: Duration, n: usize) -> Vec<Simulated> {
        let mut rng = StdRng::seed_from_u64(7);
        let mut profile = Profile::new(1, &mut rng);
        profile.link = link;
        profile.app_version = version;
        profile.stuck_queue = false;
        profile.long_outages = false;
        (0..n)
            .map(|_| {
                let mut device = DeviceState::new(profile.clone());
                device.attempt(t, &mut rng)
            })
            .collect()
    }

    fn online(s: &[Simulated]) -> Vec<&Simulated> {
        s.iter().filter(|s| s.network != Network::Offline).collect()
    }

    #[test]
    fn wifi_is_faster_than_cellular_which_is_faster_than_lie_fi() {
        let t = Duration::from_secs(10);
        let m = |link| median(online(&sample(link, "2.2.1", t, 2000)).iter().map(|s| s.event.duration_ms).collect());
        let (wifi, cellular, liefi) = (m(Link::Wifi), m(Link::Cellular), m(Link::LieFi));
        assert!((250..500).contains(&wifi), "wifi median {wifi}");
        assert!((1_000..2_000).contains(&cellular), "cellular median {cellular}");
        assert!(liefi > 4_000, "lie-fi median {liefi}");
    }

    #[test]
    fn the_bad_release_fails_on_cellular_only_after_it_starts() {
        let failure_rate = |link, version, t| {
            let s = sample(link, version, t, 2000);
            let online = online(&s);
            online.iter().filter(|s| !s.event.success).count() as f64 / online.len() as f64
        };
        let after = BAD_RELEASE_AT + Duration::from_secs(5);
        assert!(failure_rate(Link::Cellular, BAD_VERSION, after) > 0.4);
        assert!(failure_rate(Link::Cellular, BAD_VERSION, Duration::from_secs(5)) < 0.1);
        assert!(failure_rate(Link::Cellular, "2.2.1", after) < 0.1);
        assert!(failure_rate(Link::Wifi, BAD_VERSION, after) < 0.1);
    }

    #[test]
    fn the_stuck_cohorts_queue_climbs_past_a_thousand() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut profile = Profile::new(3, &mut rng);
        assert!(profile.stuck_queue);
        profile.long_outages = false;
        let mut device = DeviceState::new(profile);
        let depths: Vec<u32> =
            (0..40).map(|i| device.attempt(Duration::from_secs(i * 3), &mut rng).queue_depth).collect();
        assert!(*depths.last().unwrap() > 1000, "{depths:?}");
    }
}
