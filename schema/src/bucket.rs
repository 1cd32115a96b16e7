//! Log-scale buckets for durations, queue depths and staleness.
//!
//! Percentiles must agree between ClickHouse and SQLite and cost little memory
//! at ten million rows. Both stores keep, per event, the bucket of each
//! measured value (computed here, in Rust, once at ingest), and group by it;
//! the percentile is then read from the weighted histogram by
//! [`weighted_quantile`], in one place for both stores. Values below 128 are
//! exact; above, each bucket spans 2%, and its midpoint is within 1% of any
//! value in it, inside the 2% error the contract allows.

/// Values below this are their own bucket.
const EXACT_BELOW: u64 = 128;
/// Ratio between the upper and lower bound of a log bucket.
const GROWTH: f64 = 1.02;
/// The largest bucket number any `u64` maps to.
pub const MAX_BUCKET: u16 = 2100;

/// The bucket a non-negative value falls in.
pub fn bucket_of(value: u64) -> u16 {
    if value < EXACT_BELOW {
        return value as u16;
    }
    let steps = ((value as f64) / EXACT_BELOW as f64).ln() / GROWTH.ln();
    // Guard the float against landing a hair below an exact power.
    let steps = (steps + 1e-9).floor() as u64;
    (EXACT_BELOW + steps).min(MAX_BUCKET as u64) as u16
}

/// The value a bucket stands for: exact below 128, else the bucket midpoint.
pub fn bucket_value(bucket: u16) -> f64 {
    let b = u64::from(bucket);
    if b < EXACT_BELOW {
        return b as f64;
    }
    let lower = EXACT_BELOW as f64 * GROWTH.powi((b - EXACT_BELOW) as i32);
    lower * (1.0 + GROWTH) / 2.0
}

/// The weighted `q`-quantile (0..=1) of a histogram of `(bucket, weight)`:
/// the value of the first bucket whose cumulative weight reaches `q` of the
/// total (nearest rank). `None` when the histogram holds no weight.
pub fn weighted_quantile(histogram: &[(u16, f64)], q: f64) -> Option<f64> {
    let mut sorted: Vec<(u16, f64)> = histogram.iter().copied().filter(|(_, w)| *w > 0.0).collect();
    sorted.sort_unstable_by_key(|(b, _)| *b);
    let total: f64 = sorted.iter().map(|(_, w)| w).sum();
    if total <= 0.0 {
        return None;
    }
    let target = q.clamp(0.0, 1.0) * total;
    let mut cumulative = 0.0;
    for (bucket, weight) in &sorted {
        cumulative += weight;
        // A relative epsilon keeps float sums from skipping the exact rank.
        if cumulative >= target - total * 1e-12 {
            return Some(bucket_value(*bucket));
        }
    }
    sorted.last().map(|(b, _)| bucket_value(*b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_exact() {
        for v in 0..128 {
            assert_eq!(bucket_value(bucket_of(v)), v as f64);
        }
    }

    #[test]
    fn every_value_is_within_one_percent_of_its_bucket_value() {
        let mut v = 128u64;
        while v < 10_000_000_000_000 {
            let approx = bucket_value(bucket_of(v));
            let err = (approx - v as f64).abs() / v as f64;
            assert!(err <= 0.0101, "value {v} maps to {approx} ({err})");
            v = v + v / 97 + 1;
        }
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(37) {
            let b = bucket_of(v);
            assert!(b >= last);
            last = b;
        }
        assert!(bucket_of(u64::MAX) <= MAX_BUCKET);
    }

    #[test]
    fn quantile_uses_nearest_rank_with_weights() {
        let hist = [(bucket_of(10), 1.0), (bucket_of(20), 1.0), (bucket_of(30), 2.0)];
        assert_eq!(weighted_quantile(&hist, 0.25), Some(10.0));
        assert_eq!(weighted_quantile(&hist, 0.5), Some(20.0));
        assert_eq!(weighted_quantile(&hist, 0.51), Some(30.0));
        assert_eq!(weighted_quantile(&hist, 1.0), Some(30.0));
        assert_eq!(weighted_quantile(&[], 0.5), None);
    }
}
