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
//!   a third of their attempts: the conflict surge, mostly on one entity,
//!   `todo`, settled by last-write-wins (edits silently overwritten: the
//!   Conflicts page's overwrite share climbs); other conflicts, rarer, are
//!   merged (`crdt_merge`) or left to the server;
//! - on cellular, the bad release also leaves a change pending even when an
//!   attempt succeeds, so its devices' queue lag (the age of the oldest
//!   pending change) grows for minutes;
//! - error messages carry ids and numbers that vary (a request id, a record
//!   id, a byte count), so the Errors page groups them by fingerprint;
//! - a stuck-queue cohort (1 device in 20) keeps failing to push, and its
//!   queue depth climbs past 1000;
//! - any device may go offline for a minute or two (attempts fail fast,
//!   events pile up in its probe's buffer, and go when it is back); a
//!   long-outage cohort (1 in 25) is offline 5 minutes of every cycle with
//!   a small buffer, so thinning and drops show on the telemetry-loss panel.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use synchealth_probe::{ConflictDetail, ConflictKind, ConflictResolution, ErrorKind, Network, SyncEvent, Trigger};
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
    /// When the oldest change still pending was made (`None`: queue empty).
    pending_since: Option<OffsetDateTime>,
}

/// One attempt as the simulation decided it.
#[derive(Debug)]
pub(crate) struct Simulated {
    pub(crate) event: SyncEvent,
    pub(crate) network: Network,
    pub(crate) queue_depth: u32,
    /// When the oldest pending change was made, for the probe's queue age.
    pub(crate) queue_oldest_at: Option<std::time::SystemTime>,
}

impl DeviceState {
    pub(crate) fn new(profile: Profile) -> Self {
        DeviceState { profile, queue_depth: 0, offline_until: Duration::ZERO, was_offline: false, pending_since: None }
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
        let mut failure: Option<(ErrorKind, String)> = None;
        let mut leaves_pending = false;
        let duration_ms;
        if network == Network::Offline {
            self.was_offline = true;
            failure = Some((ErrorKind::Network, "no route to host".into()));
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
            leaves_pending = bad_release;
            if bad_release && rng.gen_bool(0.5) {
                let request = Uuid::new_v4();
                failure = Some((
                    ErrorKind::Server,
                    format!("HTTP 500 from /sync/push: unknown column \"labels\" (request {request})"),
                ));
                ms *= 1.5;
            } else if self.profile.stuck_queue && rng.gen_bool(0.8) {
                let (record, bytes) = (rng.gen_range(10_000..99_999), rng.gen_range(1_100_000..4_000_000));
                failure = Some((
                    ErrorKind::Validation,
                    format!("push rejected: record todo/{record} too large ({bytes} bytes)"),
                ));
            } else if rng.gen_bool(base_failure) {
                failure = Some(if self.profile.link == Link::LieFi && rng.gen_bool(0.6) {
                    ms = 30_000.0;
                    (ErrorKind::Timeout, "sync timed out after 30 s".into())
                } else {
                    (
                        ErrorKind::Network,
                        format!(
                            "connection reset by peer (10.0.{}.{}:443)",
                            rng.gen_range(0..8),
                            rng.gen_range(1..255)
                        ),
                    )
                });
            }
            duration_ms = ms.min(600_000.0) as u64;
            self.queue_depth = if self.profile.stuck_queue {
                // The push path is broken: local writes pile up.
                (self.queue_depth + rng.gen_range(30..90)).min(5_000)
            } else if failure.is_none() {
                rng.gen_range(0..3) + u32::from(leaves_pending)
            } else {
                self.queue_depth.saturating_add(rng.gen_range(0..3))
            };
        }
        let now = OffsetDateTime::now_utc();
        // A success drains the queue but for changes made since (or, on the
        // bad release's cellular path, the one it leaves behind).
        self.pending_since = match (self.queue_depth, failure.is_none() && !leaves_pending) {
            (0, _) => None,
            (_, true) => Some(now - time::Duration::seconds(rng.gen_range(0..20))),
            (_, false) => self.pending_since.or(Some(now - time::Duration::seconds(rng.gen_range(0..20)))),
        };
        let conflict_details = if failure.is_none() && conflict_surge && rng.gen_bool(0.35) {
            let mut details = vec![ConflictDetail {
                entity: "todo".into(),
                kind: ConflictKind::UpdateUpdate,
                resolution: ConflictResolution::LastWriteWins,
                count: rng.gen_range(1..6),
            }];
            if rng.gen_bool(0.3) {
                details.push(ConflictDetail {
                    entity: "list".into(),
                    kind: ConflictKind::UpdateDelete,
                    resolution: ConflictResolution::ServerWins,
                    count: 1,
                });
            }
            details
        } else if failure.is_none() && rng.gen_bool(0.02) {
            let entity = ["comment", "attachment", "list"][rng.gen_range(0..3)];
            let (kind, resolution) = [
                (ConflictKind::UpdateUpdate, ConflictResolution::CrdtMerge),
                (ConflictKind::InsertInsert, ConflictResolution::CrdtMerge),
                (ConflictKind::DeleteUpdate, ConflictResolution::Manual),
            ][rng.gen_range(0..3)];
            vec![ConflictDetail { entity: entity.into(), kind, resolution, count: 1 }]
        } else {
            Vec::new()
        };
        let conflicts = conflict_details.iter().map(|d| d.count).sum();
        let records_up = if sync_type == "pull" { 0 } else { rng.gen_range(0..40) };
        let records_down = if sync_type == "push" { 0 } else { rng.gen_range(0..200) };
        let started = now - time::Duration::milliseconds(duration_ms as i64);
        let retries = if failure.is_some() { rng.gen_range(0..4) } else { 0 };
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
            error_kind: failure.as_ref().map(|(kind, _)| *kind),
            error_message: failure.map(|(_, message)| message),
            retries,
            records_up,
            records_down,
            bytes_up: records_up * rng.gen_range(200..2_000),
            bytes_down: records_down * rng.gen_range(200..2_000),
            sample_rate: 1.0,
            conflict_details,
            // `Probe::record` sends the event's own (bounded by the probe);
            // `Probe::set_queue` feeds only attempts made through the probe.
            queue_oldest_at: self.pending_since,
            dimensions: Default::default(),
        };
        let queue_oldest_at = self.pending_since.map(std::time::SystemTime::from);
        Simulated { event, network, queue_depth: self.queue_depth, queue_oldest_at }
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

    #[test]
    fn the_conflict_surge_overwrites_todos_and_other_conflicts_merge() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut profile = Profile::new(2, &mut rng);
        (profile.os, profile.stuck_queue, profile.long_outages, profile.link) = ("android", false, false, Link::Wifi);
        let details = |t: u64, rng: &mut StdRng| {
            let mut device = DeviceState::new(profile.clone());
            (0..3000)
                .flat_map(|_| device.attempt(Duration::from_secs(t), rng).event.conflict_details)
                .collect::<Vec<_>>()
        };
        let surge = details(200, &mut rng);
        let todo_lww: u32 = surge
            .iter()
            .filter(|d| d.entity == "todo" && d.resolution == ConflictResolution::LastWriteWins)
            .map(|d| d.count)
            .sum();
        let all: u32 = surge.iter().map(|d| d.count).sum();
        assert!(f64::from(todo_lww) > 0.8 * f64::from(all), "{todo_lww} of {all}");
        let calm = details(30, &mut rng);
        assert!(!calm.is_empty() && calm.iter().all(|d| !d.resolution.overwrites()), "{calm:?}");
    }

    #[test]
    fn the_bad_release_on_cellular_leaves_a_change_pending_for_minutes() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut profile = Profile::new(4, &mut rng);
        (profile.app_version, profile.link, profile.stuck_queue, profile.long_outages) =
            (BAD_VERSION, Link::Cellular, false, false);
        let mut device = DeviceState::new(profile.clone());
        let oldest: Vec<_> =
            (0..30).map(|i| device.attempt(BAD_RELEASE_AT + Duration::from_secs(i * 10), &mut rng)).collect();
        let first = oldest[0].queue_oldest_at;
        assert!(first.is_some() && oldest.iter().all(|s| s.queue_oldest_at == first || s.network == Network::Offline));
        profile.app_version = "2.2.1";
        let mut healthy = DeviceState::new(profile);
        let drained = (0..30)
            .filter(|i| {
                healthy.attempt(BAD_RELEASE_AT + Duration::from_secs(i * 10), &mut rng).queue_oldest_at.is_none()
            })
            .count();
        assert!(drained > 5, "a healthy device's queue empties now and then: {drained} of 30");
    }

    #[test]
    fn error_messages_vary_in_their_ids_but_share_a_fingerprint() {
        let s = sample(Link::Cellular, BAD_VERSION, BAD_RELEASE_AT + Duration::from_secs(5), 400);
        let messages: std::collections::BTreeSet<String> = s
            .iter()
            .filter(|s| s.event.error_kind == Some(ErrorKind::Server))
            .filter_map(|s| s.event.error_message.clone())
            .collect();
        assert!(messages.len() > 50, "{} distinct messages", messages.len());
        let fingerprints: std::collections::BTreeSet<String> =
            messages.iter().map(|m| synchealth_schema::error_fingerprint(m)).collect();
        assert_eq!(fingerprints.len(), 1, "{fingerprints:?}");
    }
}
