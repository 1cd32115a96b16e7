//! The metric definitions, in one place for the dashboard and the alerts.
//!
//! Over a window `[from, to)` of corrected event time, and optional filters,
//! all sample-weighted (an event with `sample_rate = r` counts `1/r`):
//! - success rate = successful attempts / attempts
//! - conflict rate = attempts with `conflicts > 0` / attempts
//! - duration p50/p90/p99 over attempts
//! - queue depth: per device, its latest `queue_depth` in the window; avg,
//!   p95 and max over devices, and the share of devices above a threshold
//! - staleness: per device, the staleness of its latest event in the window;
//!   p50/p90/p99 over devices that have synced, and the count of never-synced
//! - `events` (stored rows), `attempts` (weighted estimate), `devices`.
//!
//! "Latest" means the greatest `(event_time_ms, event_id as text)`, so ties
//! break the same way on both stores. Percentiles come from log-bucket
//! histograms ([`synchealth_schema::weighted_quantile`]), within 1% of exact.

use serde::{Deserialize, Serialize};
use synchealth_schema::{weighted_quantile, Network, ProjectName};

/// Default queue depth above which a device counts as backed up.
pub const DEFAULT_QUEUE_THRESHOLD: u32 = 1000;

/// An event received more than this long after its (corrected) event time
/// arrived late: `received_at_ms - event_time_ms > LATE_ARRIVAL_MS`. Five
/// minutes is longer than any healthy client batches for, so late events are
/// offline devices catching up or a probe holding back its queue, and the
/// most recent buckets are still missing their share of them.
pub const LATE_ARRIVAL_MS: i64 = 5 * 60 * 1000;

/// Segment filters; each given one must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    /// Only this app version.
    pub app_version: Option<String>,
    /// Only this OS.
    pub os: Option<String>,
    /// Only this network type.
    pub network: Option<Network>,
}

impl Filters {
    /// These filters narrowed to one segment of `dimension`, a value a
    /// store answered with (so a network value always parses; one that did
    /// not would leave the network filter as it was).
    pub fn with_segment(&self, dimension: Dimension, value: &str) -> Filters {
        let mut filters = self.clone();
        match dimension {
            Dimension::AppVersion => filters.app_version = Some(value.to_string()),
            Dimension::Os => filters.os = Some(value.to_string()),
            Dimension::Network => filters.network = Network::parse(value).or(filters.network),
        }
        filters
    }
}

/// What to aggregate: a project, a window and filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The tenant.
    pub project: ProjectName,
    /// Window start, Unix ms, inclusive (corrected event time).
    pub from_ms: i64,
    /// Window end, Unix ms, exclusive.
    pub to_ms: i64,
    /// Segment filters.
    pub filters: Filters,
    /// Queue depth above which a device counts as backed up.
    pub queue_threshold: u32,
}

/// A segment dimension. The column names are a whitelist: the only way a
/// dimension reaches SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// By app version.
    AppVersion,
    /// By OS.
    Os,
    /// By network type.
    Network,
}

impl Dimension {
    /// Every dimension.
    pub const ALL: [Dimension; 3] = [Dimension::AppVersion, Dimension::Os, Dimension::Network];

    /// The column (and query parameter) name.
    pub fn column(self) -> &'static str {
        match self {
            Dimension::AppVersion => "app_version",
            Dimension::Os => "os",
            Dimension::Network => "network",
        }
    }

    /// Parses a column name.
    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.column() == name)
    }
}

/// How to split the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// The whole window as one group.
    Total,
    /// Buckets of `step_seconds`, aligned to multiples of the step since the
    /// Unix epoch.
    Time {
        /// Bucket width in seconds (at least 1).
        step_seconds: u32,
    },
    /// One group per value of a dimension.
    By(Dimension),
}

/// The key of one group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GroupKey {
    /// [`Grouping::Total`].
    Total,
    /// Start of a time bucket, Unix seconds.
    Time(i64),
    /// A segment value.
    Segment(String),
}

/// Raw aggregates over one group: what a store computes; every metric is
/// derived from it by [`Summary::from_aggregate`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Aggregate {
    /// Stored events.
    pub events: u64,
    /// Sum of weights.
    pub attempts: f64,
    /// Sum of weights of successful events.
    pub successes: f64,
    /// Sum of weights of events with `conflicts > 0`.
    pub conflicted: f64,
    /// Distinct devices.
    pub devices: u64,
    /// `(duration_bucket, sum of weights)`, any order.
    pub duration_histogram: Vec<(u16, f64)>,
    /// Sum over devices of their latest queue depth.
    pub queue_sum: u64,
    /// Largest latest queue depth of any device.
    pub queue_max: u64,
    /// Devices whose latest queue depth is above the query's threshold.
    pub queue_over_threshold: u64,
    /// `(queue_bucket of the latest event, devices)`, any order.
    pub queue_histogram: Vec<(u16, u64)>,
    /// `(staleness_bucket of the latest event, devices)` for devices whose
    /// latest event has a `last_success_at`, any order.
    pub staleness_histogram: Vec<(u16, u64)>,
    /// Devices whose latest event says they never synced.
    pub never_synced_devices: u64,
    /// Stored events that arrived late (see [`LATE_ARRIVAL_MS`]).
    pub late_events: u64,
}

impl Aggregate {
    /// Sorts the histograms so that two aggregates compare equal when they
    /// hold the same data.
    pub fn normalized(mut self) -> Self {
        self.duration_histogram.sort_by_key(|(b, _)| *b);
        self.queue_histogram.sort_by_key(|(b, _)| *b);
        self.staleness_histogram.sort_by_key(|(b, _)| *b);
        self
    }
}

impl Aggregate {
    /// Sets the per-device fields from `from`, which counted each device's
    /// latest event; the per-event sums of `self` are left alone, because
    /// device counts are not additive across the pieces of a window.
    pub(crate) fn set_devices_from(&mut self, from: Aggregate) {
        self.devices = from.devices;
        self.queue_sum = from.queue_sum;
        self.queue_max = from.queue_max;
        self.queue_over_threshold = from.queue_over_threshold;
        self.never_synced_devices = from.never_synced_devices;
        self.queue_histogram = from.queue_histogram;
        self.staleness_histogram = from.staleness_histogram;
    }
}

/// The per-device half of an [`Aggregate`], counted device by device from
/// each device's latest event in the group: one definition for every path
/// of both stores that counts devices in Rust.
#[derive(Debug, Default)]
pub(crate) struct DeviceTally {
    devices: u64,
    queue_sum: u64,
    queue_max: u64,
    queue_over_threshold: u64,
    never_synced: u64,
    /// Devices by bucket, indexed by bucket.
    queue: Vec<u64>,
    staleness: Vec<u64>,
}

impl DeviceTally {
    /// Counts one device; `staleness_bucket` is `None` when its latest event
    /// says it never synced.
    pub(crate) fn add(&mut self, queue_depth: u64, queue_bucket: u16, staleness_bucket: Option<u16>, threshold: u64) {
        self.devices += 1;
        self.queue_sum += queue_depth;
        self.queue_max = self.queue_max.max(queue_depth);
        self.queue_over_threshold += u64::from(queue_depth > threshold);
        bump(&mut self.queue, queue_bucket, 1);
        match staleness_bucket {
            Some(bucket) => bump(&mut self.staleness, bucket, 1),
            None => self.never_synced += 1,
        }
    }

    /// Sets the per-device fields of `a`.
    pub(crate) fn write_into(self, a: &mut Aggregate) {
        a.set_devices_from(Aggregate {
            devices: self.devices,
            queue_sum: self.queue_sum,
            queue_max: self.queue_max,
            queue_over_threshold: self.queue_over_threshold,
            never_synced_devices: self.never_synced,
            queue_histogram: entries(self.queue),
            staleness_histogram: entries(self.staleness),
            ..Aggregate::default()
        });
    }
}

/// Adds `by` to a histogram kept as a vector indexed by bucket, grown on
/// demand: cheaper per row than a map, and buckets stop at
/// [`synchealth_schema::MAX_BUCKET`] anyway.
pub(crate) fn bump<T: Copy + Default + std::ops::AddAssign>(histogram: &mut Vec<T>, bucket: u16, by: T) {
    let i = usize::from(bucket);
    if i >= histogram.len() {
        histogram.resize(i + 1, T::default());
    }
    histogram[i] += by;
}

/// The non-empty buckets of a histogram vector.
pub(crate) fn entries<T: Copy + Default + PartialOrd>(histogram: Vec<T>) -> Vec<(u16, T)> {
    histogram
        .into_iter()
        .enumerate()
        .filter(|(_, n)| *n > T::default())
        .filter_map(|(b, n)| Some((u16::try_from(b).ok()?, n)))
        .collect()
}

/// Three percentiles of one distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    fn of(histogram: &[(u16, f64)]) -> Self {
        Percentiles {
            p50: weighted_quantile(histogram, 0.50),
            p90: weighted_quantile(histogram, 0.90),
            p99: weighted_quantile(histogram, 0.99),
        }
    }
}

/// Queue depth over devices (latest value per device).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Mean over devices.
    pub avg: Option<f64>,
    /// 95th percentile over devices.
    pub p95: Option<f64>,
    /// Largest.
    pub max: Option<u64>,
    /// Share of devices above the threshold (0..=1).
    pub over_threshold_share: Option<f64>,
}

/// Every metric over one group. `None` (JSON `null`) where there is no data
/// to say anything: no data is not good news, and is never shown as 0% or 100%.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Stored events.
    pub events: u64,
    /// Sample-weighted attempts.
    pub attempts: f64,
    /// Distinct devices.
    pub devices: u64,
    /// Successful attempts / attempts.
    pub success_rate: Option<f64>,
    /// Attempts with conflicts / attempts.
    pub conflict_rate: Option<f64>,
    /// Sync duration percentiles, milliseconds.
    pub duration_ms: Percentiles,
    /// Upload queue depth over devices.
    pub queue_depth: QueueDepth,
    /// Staleness percentiles over devices that have synced, milliseconds.
    pub staleness_ms: Percentiles,
    /// Devices whose latest event says they never synced.
    pub never_synced_devices: u64,
    /// Stored events received more than [`LATE_ARRIVAL_MS`] after their
    /// event time (telemetry health: data that was missing until then).
    pub late_events: u64,
    /// `late_events / events`; `None` without events.
    pub late_share: Option<f64>,
}

impl Summary {
    /// Derives every metric from a store's aggregates.
    pub fn from_aggregate(a: &Aggregate) -> Summary {
        let rate = |part: f64| (a.attempts > 0.0).then(|| part / a.attempts);
        let queue_hist: Vec<(u16, f64)> = a.queue_histogram.iter().map(|(b, n)| (*b, *n as f64)).collect();
        let stale_hist: Vec<(u16, f64)> = a.staleness_histogram.iter().map(|(b, n)| (*b, *n as f64)).collect();
        let has_devices = a.devices > 0;
        Summary {
            events: a.events,
            attempts: a.attempts,
            devices: a.devices,
            success_rate: rate(a.successes),
            conflict_rate: rate(a.conflicted),
            duration_ms: Percentiles::of(&a.duration_histogram),
            queue_depth: QueueDepth {
                avg: has_devices.then(|| a.queue_sum as f64 / a.devices as f64),
                p95: weighted_quantile(&queue_hist, 0.95),
                max: has_devices.then_some(a.queue_max),
                over_threshold_share: has_devices.then(|| a.queue_over_threshold as f64 / a.devices as f64),
            },
            staleness_ms: Percentiles::of(&stale_hist),
            never_synced_devices: a.never_synced_devices,
            late_events: a.late_events,
            late_share: (a.events > 0).then(|| a.late_events as f64 / a.events as f64),
        }
    }

    /// The value of one metric, for alert rules and charts.
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Events => Some(self.events as f64),
            Metric::Attempts => Some(self.attempts),
            Metric::Devices => Some(self.devices as f64),
            Metric::SuccessRate => self.success_rate,
            Metric::ConflictRate => self.conflict_rate,
            Metric::DurationP50 => self.duration_ms.p50,
            Metric::DurationP90 => self.duration_ms.p90,
            Metric::DurationP99 => self.duration_ms.p99,
            Metric::QueueDepthAvg => self.queue_depth.avg,
            Metric::QueueDepthP95 => self.queue_depth.p95,
            Metric::QueueDepthMax => self.queue_depth.max.map(|m| m as f64),
            Metric::QueueDepthOverThresholdShare => self.queue_depth.over_threshold_share,
            Metric::StalenessP50 => self.staleness_ms.p50,
            Metric::StalenessP90 => self.staleness_ms.p90,
            Metric::StalenessP99 => self.staleness_ms.p99,
            Metric::NeverSyncedDevices => Some(self.never_synced_devices as f64),
            // Not in an aggregate: read through `Signals::queue_lags`.
            Metric::QueueLagP90 | Metric::QueueLagOverThresholdShare => None,
        }
    }
}

/// Every single-number metric, by the name alert rules and the time-series
/// API use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Stored events.
    Events,
    /// Sample-weighted attempts.
    Attempts,
    /// Distinct devices.
    Devices,
    /// Successful attempts / attempts (0..=1).
    SuccessRate,
    /// Attempts with conflicts / attempts (0..=1).
    ConflictRate,
    /// Median sync duration, ms.
    DurationP50,
    /// 90th percentile sync duration, ms.
    DurationP90,
    /// 99th percentile sync duration, ms.
    DurationP99,
    /// Mean latest queue depth over devices.
    QueueDepthAvg,
    /// 95th percentile latest queue depth over devices.
    QueueDepthP95,
    /// Largest latest queue depth.
    QueueDepthMax,
    /// Share of devices whose latest queue depth is above the threshold (0..=1).
    QueueDepthOverThresholdShare,
    /// Median staleness over devices, ms.
    StalenessP50,
    /// 90th percentile staleness over devices, ms.
    StalenessP90,
    /// 99th percentile staleness over devices, ms.
    StalenessP99,
    /// Devices that never synced.
    NeverSyncedDevices,
    /// 90th percentile over devices of their latest queue lag, ms
    /// ([`crate::signals`]; not in a [`Summary`]).
    QueueLagP90,
    /// Share of devices whose latest queue lag is above 5 minutes (0..=1;
    /// not in a [`Summary`]).
    QueueLagOverThresholdShare,
}

impl Metric {
    /// Whether the metric is read from each device's latest queue lag
    /// ([`crate::Signals::queue_lags`]) rather than from an [`Aggregate`].
    pub fn is_queue_lag(self) -> bool {
        matches!(self, Metric::QueueLagP90 | Metric::QueueLagOverThresholdShare)
    }

    /// The metric's value from the queue-lag figures (`None` for the others).
    pub fn of_queue_lag(self, lag: &crate::signals::QueueLagSummary) -> Option<f64> {
        match self {
            Metric::QueueLagP90 => lag.p90,
            Metric::QueueLagOverThresholdShare => lag.over_threshold_share,
            _ => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use synchealth_schema::bucket_of;

    #[test]
    fn rates_are_weighted_and_absent_without_attempts() {
        let a =
            Aggregate { events: 3, attempts: 6.0, successes: 4.5, conflicted: 1.5, devices: 2, ..Default::default() };
        let s = Summary::from_aggregate(&a);
        assert_eq!(s.success_rate, Some(0.75));
        assert_eq!(s.conflict_rate, Some(0.25));
        let empty = Summary::from_aggregate(&Aggregate::default());
        assert_eq!(empty.success_rate, None);
        assert_eq!(empty.queue_depth.avg, None);
        assert_eq!(empty.duration_ms.p99, None);
    }

    #[test]
    fn queue_metrics_are_per_device() {
        let a = Aggregate {
            devices: 4,
            queue_sum: 2006,
            queue_max: 2000,
            queue_over_threshold: 1,
            queue_histogram: vec![(bucket_of(2), 3), (bucket_of(2000), 1)],
            ..Default::default()
        };
        let s = Summary::from_aggregate(&a);
        assert_eq!(s.queue_depth.avg, Some(501.5));
        assert_eq!(s.queue_depth.over_threshold_share, Some(0.25));
        assert_eq!(s.queue_depth.max, Some(2000));
        let p95 = s.queue_depth.p95.unwrap();
        assert!((p95 - 2000.0).abs() / 2000.0 < 0.01, "{p95}");
        assert_eq!(s.value(Metric::QueueDepthOverThresholdShare), Some(0.25));
    }
}
