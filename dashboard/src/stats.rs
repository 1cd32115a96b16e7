//! Release comparison: two app versions side by side, every metric with its
//! difference, and for the rates (success, conflicts) a confidence interval
//! that says whether the difference is more than noise.
//!
//! The statistics, chosen to behave at the sample sizes a rollout starts
//! with (tens of events) and at rates near 0 or 1, where the textbook
//! normal ("Wald") interval is badly wrong:
//! - each rate: the **Wilson score interval** (95%);
//! - the difference `b - a`: **Newcombe's hybrid score interval** (method 10
//!   of Newcombe 1998, built from the two Wilson intervals);
//! - **significant** when that interval excludes zero; a **regression** when
//!   it is significant in the bad direction (success down, conflicts up) and
//!   both versions have at least [`MIN_EVENTS`] events;
//! - the **minimum sample size** per version to detect a change of
//!   [`DETECTABLE_CHANGE`] (absolute) from version `a`'s rate, with a
//!   two-sided 5% test at 80% power, so the page can say "not enough data yet"
//!   instead of "no change".
//!
//! Rates are sample-weighted (an event sampled at 1/4 stands for 4
//! attempts), but the sample size `n` of the intervals is the number of
//! stored events: the weights estimate volume, they add no information.

use std::cmp::Ordering;

use serde::Serialize;
use synchealth_store::metrics::Metric;
use synchealth_store::Summary;

/// z for a two-sided 95% interval.
pub const Z_95: f64 = 1.959_963_984_540_054;
/// z for 80% power (one-sided 0.8 quantile of the normal).
const Z_POWER_80: f64 = 0.841_621_233_572_914_3;
/// Fewest events per version before a difference may be called a regression.
pub const MIN_EVENTS: u64 = 30;
/// The absolute change in a rate the minimum sample size is computed for
/// (two percentage points).
pub const DETECTABLE_CHANGE: f64 = 0.02;

/// A closed interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Wilson score interval of a proportion `p` observed over `n` trials, at
/// normal quantile `z`; `None` without trials.
pub fn wilson(p: f64, n: f64, z: f64) -> Option<Interval> {
    if n <= 0.0 || !p.is_finite() {
        return None;
    }
    let p = p.clamp(0.0, 1.0);
    let z2 = z * z;
    let denominator = 1.0 + z2 / n;
    let center = (p + z2 / (2.0 * n)) / denominator;
    let half = z / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval { low: (center - half).max(0.0), high: (center + half).min(1.0) })
}

/// Newcombe's hybrid score interval for `p_b - p_a` (method 10).
pub fn newcombe(p_a: f64, n_a: f64, p_b: f64, n_b: f64, z: f64) -> Option<Interval> {
    let a = wilson(p_a, n_a, z)?;
    let b = wilson(p_b, n_b, z)?;
    let d = p_b - p_a;
    Some(Interval {
        low: d - ((p_b - b.low).powi(2) + (a.high - p_a).powi(2)).sqrt(),
        high: d + ((b.high - p_b).powi(2) + (p_a - a.low).powi(2)).sqrt(),
    })
}

/// Events per version needed to detect a change of `delta` from rate `p`
/// (two-sided 5%, power 80%): `(z_a + z_b)^2 (p1 q1 + p2 q2) / delta^2`.
pub fn min_sample_size(p: f64, delta: f64) -> u64 {
    let p1 = p.clamp(0.0, 1.0);
    // The change towards 0.5 has the larger variance: the conservative side.
    let p2 = if p1 > 0.5 { p1 - delta } else { p1 + delta }.clamp(0.0, 1.0);
    let variance = p1 * (1.0 - p1) + p2 * (1.0 - p2);
    let n = (Z_95 + Z_POWER_80).powi(2) * variance / (delta * delta);
    n.ceil().max(1.0) as u64
}

/// Orders app versions "newest last": semantic-version aware
/// (`2.10.0` after `2.9.1`, `2.0.0-rc.1` before `2.0.0`, an optional leading
/// `v`), and lexical when either side is not a version.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    match (parse_version(a), parse_version(b)) {
        (Some(x), Some(y)) => {
            x.0.cmp(&y.0)
                .then_with(|| match (&x.1, &y.1) {
                    (None, None) => Ordering::Equal,
                    (None, Some(_)) => Ordering::Greater,
                    (Some(_), None) => Ordering::Less,
                    (Some(p), Some(q)) => p.cmp(q),
                })
                .then_with(|| a.cmp(b))
        }
        _ => a.cmp(b),
    }
}

/// `(numeric components, pre-release)`; build metadata (`+...`) is ignored.
fn parse_version(text: &str) -> Option<(Vec<u64>, Option<String>)> {
    let text = text.trim().strip_prefix('v').unwrap_or(text.trim());
    let text = text.split('+').next().unwrap_or(text);
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre.to_string())),
        None => (text, None),
    };
    let numbers: Option<Vec<u64>> = core.split('.').map(|part| part.parse::<u64>().ok()).collect();
    numbers.filter(|n| !n.is_empty()).map(|n| (n, pre))
}

/// One rate of both versions, with the intervals.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateComparison {
    /// 95% Wilson interval of version `a`'s rate.
    pub a_interval: Option<Interval>,
    /// 95% Wilson interval of version `b`'s rate.
    pub b_interval: Option<Interval>,
    /// 95% Newcombe interval of `b - a`.
    pub difference_interval: Option<Interval>,
    /// The difference interval excludes zero.
    pub significant: bool,
    /// Significant, in the bad direction, with enough events on both sides.
    pub regression: bool,
    /// Events per version needed to detect a change of
    /// [`DETECTABLE_CHANGE`] from `a`'s rate.
    pub min_sample_size: Option<u64>,
}

/// One metric of both versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricComparison {
    /// Which metric.
    pub metric: Metric,
    /// Version `a`'s value.
    pub a: Option<f64>,
    /// Version `b`'s value.
    pub b: Option<f64>,
    /// `b - a`.
    pub difference: Option<f64>,
    /// `(b - a) / a`, when `a` is not zero.
    pub relative_difference: Option<f64>,
    /// Whether a higher value is worse (durations, queues, conflicts), so the
    /// page colours the difference; `None` for volumes (events, devices).
    pub higher_is_worse: Option<bool>,
    /// Only for the success and conflict rates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateComparison>,
}

/// Two versions compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The baseline version.
    pub a: String,
    /// The version compared against it (by default the newest).
    pub b: String,
    /// Stored events of `a` and `b`.
    pub a_events: u64,
    /// Stored events of `b`.
    pub b_events: u64,
    /// [`MIN_EVENTS`].
    pub min_events: u64,
    /// Every metric side by side.
    pub metrics: Vec<MetricComparison>,
    /// Any metric flagged as a regression.
    pub regression: bool,
}

/// Whether higher is worse, per metric.
fn higher_is_worse(metric: Metric) -> Option<bool> {
    match metric {
        Metric::Events | Metric::Attempts | Metric::Devices => None,
        Metric::SuccessRate => Some(false),
        _ => Some(true),
    }
}

/// Every metric of `b` against `a`.
pub fn compare(a_name: &str, a: &Summary, b_name: &str, b: &Summary) -> Comparison {
    const METRICS: [Metric; 16] = [
        Metric::Events,
        Metric::Attempts,
        Metric::Devices,
        Metric::SuccessRate,
        Metric::ConflictRate,
        Metric::DurationP50,
        Metric::DurationP90,
        Metric::DurationP99,
        Metric::QueueDepthAvg,
        Metric::QueueDepthP95,
        Metric::QueueDepthMax,
        Metric::QueueDepthOverThresholdShare,
        Metric::StalenessP50,
        Metric::StalenessP90,
        Metric::StalenessP99,
        Metric::NeverSyncedDevices,
    ];
    let enough = a.events >= MIN_EVENTS && b.events >= MIN_EVENTS;
    let metrics: Vec<MetricComparison> = METRICS
        .into_iter()
        .map(|metric| {
            let (va, vb) = (a.value(metric), b.value(metric));
            let difference = va.zip(vb).map(|(x, y)| y - x);
            let rate = matches!(metric, Metric::SuccessRate | Metric::ConflictRate).then(|| {
                let worse_is_lower = metric == Metric::SuccessRate;
                rate_comparison(va, a.events, vb, b.events, worse_is_lower, enough)
            });
            MetricComparison {
                metric,
                a: va,
                b: vb,
                difference,
                relative_difference: va.zip(difference).filter(|(x, _)| *x != 0.0).map(|(x, d)| d / x),
                higher_is_worse: higher_is_worse(metric),
                rate,
            }
        })
        .collect();
    let regression = metrics.iter().any(|m| m.rate.as_ref().is_some_and(|r| r.regression));
    Comparison {
        a: a_name.to_string(),
        b: b_name.to_string(),
        a_events: a.events,
        b_events: b.events,
        min_events: MIN_EVENTS,
        metrics,
        regression,
    }
}

fn rate_comparison(
    pa: Option<f64>,
    na: u64,
    pb: Option<f64>,
    nb: u64,
    worse_is_lower: bool,
    enough: bool,
) -> RateComparison {
    let (na, nb) = (na as f64, nb as f64);
    let difference_interval = pa.zip(pb).and_then(|(x, y)| newcombe(x, na, y, nb, Z_95));
    let significant = difference_interval.is_some_and(|i| i.low > 0.0 || i.high < 0.0);
    let bad_direction = difference_interval.is_some_and(|i| if worse_is_lower { i.high < 0.0 } else { i.low > 0.0 });
    RateComparison {
        a_interval: pa.and_then(|p| wilson(p, na, Z_95)),
        b_interval: pb.and_then(|p| wilson(p, nb, Z_95)),
        difference_interval,
        significant,
        regression: significant && bad_direction && enough,
        min_sample_size: pa.map(|p| min_sample_size(p, DETECTABLE_CHANGE)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn wilson_matches_newcombes_published_values() {
        // Newcombe (1998), Table II: 81/263 gives 0.2553 to 0.3662, 15/148
        // gives 0.0624 to 0.1605, 0/20 gives 0 to 0.1611.
        let i = wilson(81.0 / 263.0, 263.0, Z_95).unwrap();
        assert!(close(i.low, 0.2553, 5e-5) && close(i.high, 0.3662, 5e-5), "{i:?}");
        let i = wilson(15.0 / 148.0, 148.0, Z_95).unwrap();
        assert!(close(i.low, 0.0624, 5e-5) && close(i.high, 0.1605, 5e-5), "{i:?}");
        let i = wilson(0.0, 20.0, Z_95).unwrap();
        assert!(close(i.low, 0.0, 1e-12) && close(i.high, 0.1611, 5e-5), "{i:?}");
        assert_eq!(wilson(0.5, 0.0, Z_95), None);
    }

    #[test]
    fn newcombe_matches_the_papers_worked_examples() {
        // Newcombe (1998), Table II, method 10: 56/70 - 48/80 is 0.0524 to
        // 0.3339, and 9/10 - 3/10 is 0.1705 to 0.8090.
        let i = newcombe(48.0 / 80.0, 80.0, 56.0 / 70.0, 70.0, Z_95).unwrap();
        assert!(close(i.low, 0.0524, 5e-5) && close(i.high, 0.3339, 5e-5), "{i:?}");
        let i = newcombe(3.0 / 10.0, 10.0, 9.0 / 10.0, 10.0, Z_95).unwrap();
        assert!(close(i.low, 0.1705, 5e-5) && close(i.high, 0.8090, 5e-5), "{i:?}");
    }

    #[test]
    fn the_minimum_sample_size_follows_the_two_proportion_formula() {
        // p1 = 0.95, p2 = 0.93: (1.96 + 0.8416)^2 * (0.0475 + 0.0651) / 0.0004
        // = 7.8489 * 0.1126 / 0.0004 = 2209.5 -> 2210.
        assert_eq!(min_sample_size(0.95, 0.02), 2210);
        // Symmetric around 0.5: 0.05 -> 0.07 needs as many as 0.95 -> 0.93.
        assert_eq!(min_sample_size(0.05, 0.02), 2210);
    }

    #[test]
    fn versions_order_numerically_with_pre_releases_first() {
        let mut versions = vec!["2.10.0", "2.9.1", "v2.9.0", "2.10.0-rc.1", "1.0", "beta"];
        versions.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(versions, vec!["1.0", "v2.9.0", "2.9.1", "2.10.0-rc.1", "2.10.0", "beta"]);
    }

    fn summary(events: u64, success_rate: f64, conflict_rate: f64) -> Summary {
        Summary {
            events,
            attempts: events as f64,
            success_rate: Some(success_rate),
            conflict_rate: Some(conflict_rate),
            ..Summary::default()
        }
    }

    #[test]
    fn a_significant_drop_in_success_is_a_regression_and_noise_is_not() {
        let old = summary(2000, 0.95, 0.02);
        let bad = compare("1.0.0", &old, "1.1.0", &summary(2000, 0.90, 0.02));
        let success = bad.metrics.iter().find(|m| m.metric == Metric::SuccessRate).unwrap();
        assert!(close(success.difference.unwrap(), -0.05, 1e-12));
        let rate = success.rate.as_ref().unwrap();
        assert!(rate.significant && rate.regression, "{rate:?}");
        assert!(bad.regression);
        // The same drop over 20 events each: not significant, no flag.
        let small = compare("1.0.0", &summary(20, 0.95, 0.02), "1.1.0", &summary(20, 0.90, 0.02));
        assert!(!small.regression);
        // Better success is significant but no regression.
        let better = compare("1.0.0", &summary(2000, 0.90, 0.02), "1.1.0", &old);
        let rate = better.metrics.iter().find(|m| m.metric == Metric::SuccessRate).unwrap().rate.clone().unwrap();
        assert!(rate.significant && !rate.regression);
        assert!(!better.regression);
    }

    #[test]
    fn more_conflicts_are_a_regression_only_with_enough_events() {
        let worse = compare("a", &summary(5000, 0.95, 0.02), "b", &summary(5000, 0.95, 0.04));
        let conflicts = worse.metrics.iter().find(|m| m.metric == Metric::ConflictRate).unwrap();
        assert!(conflicts.rate.as_ref().unwrap().regression);
        assert_eq!(conflicts.higher_is_worse, Some(true));
        // Significant at 29 events a side cannot happen to be flagged.
        let few = compare("a", &summary(29, 1.0, 0.0), "b", &summary(29, 1.0, 0.9));
        let rate = few.metrics.iter().find(|m| m.metric == Metric::ConflictRate).unwrap().rate.clone().unwrap();
        assert!(rate.significant && !rate.regression);
    }
}
