//! Extreme but valid events (the heaviest weight the contract allows, 30-day
//! durations, `u32::MAX` queue depths, ten-year staleness, one-event windows)
//! must give finite metrics that match brute force on both stores: the
//! values in events come from devices, and no event may blank or flip a
//! project's numbers (NaN, infinity, null).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use synchealth_schema::MIN_SAMPLE_RATE;
use synchealth_store::{Grouping, SharedStore, Summary};
use uuid::Uuid;

use crate::helpers::{assert_answer_matches, fixture_base_ms, insert_all, project, query, rfc3339, stamp, HOUR_MS};

on_both_stores!(extreme_valid_events_give_finite_metrics_that_match_brute_force);

const MAX_DURATION_MS: u64 = 30 * 24 * 3600 * 1000;

fn assert_finite(summary: &Summary, context: &str) {
    let values = [
        Some(summary.attempts),
        summary.success_rate,
        summary.conflict_rate,
        summary.late_share,
        summary.duration_ms.p50,
        summary.duration_ms.p90,
        summary.duration_ms.p99,
        summary.staleness_ms.p50,
        summary.staleness_ms.p99,
    ];
    for v in values.into_iter().flatten() {
        assert!(v.is_finite(), "{context}: a metric is {v}: {summary:?}");
    }
    assert!(summary.success_rate.is_some(), "{context}: a window with events has a success rate");
}

async fn extreme_valid_events_give_finite_metrics_that_match_brute_force(store: SharedStore) {
    let p = project("extremes");
    let base = fixture_base_ms();
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let events: Vec<_> = (0..60)
            .map(|i| {
                let occurred = base + seed as i64 * 6 * HOUR_MS + rng.gen_range(0..HOUR_MS);
                let sample_rate = [MIN_SAMPLE_RATE, 1.0, 0.5, MIN_SAMPLE_RATE * 1.5][rng.gen_range(0..4)];
                let duration = [0, 1, MAX_DURATION_MS, MAX_DURATION_MS - 1][rng.gen_range(0..4)];
                let queue = [0, 1, u32::MAX, u32::MAX - 1][rng.gen_range(0..4)];
                let last = [occurred - 10 * 365 * 24 * HOUR_MS, occurred, occurred - 1][rng.gen_range(0..3)];
                let conflicts = [0, u32::MAX][rng.gen_range(0..2)];
                let json = json!({
                    "event_id": Uuid::new_v4().to_string(),
                    "device_id": format!("dev-{}", i % 7),
                    "occurred_at": rfc3339(occurred),
                    "last_success_at": rfc3339(last),
                    "success": rng.gen_bool(0.5),
                    "duration_ms": duration,
                    "queue_depth": queue,
                    "conflicts": conflicts,
                    "app_version": "9.9.9",
                    "os": "android",
                    "sample_rate": sample_rate,
                });
                stamp(&p, json, occurred + 500, occurred + 600)
            })
            .collect();
        insert_all(store.as_ref(), &events).await;
        // The seed's hour, and one-event windows around single events.
        let hour = (base + seed as i64 * 6 * HOUR_MS, base + seed as i64 * 6 * HOUR_MS + HOUR_MS);
        let mut windows = vec![hour];
        for e in events.iter().take(3) {
            windows.push((e.event_time_ms, e.event_time_ms + 1));
        }
        for window in windows {
            let q = query(&p, window);
            let answer = store.aggregate(&q, Grouping::Total).await.expect("aggregate");
            assert_answer_matches(&answer, &events, &q, Grouping::Total, &format!("seed {seed}, window {window:?}"));
            let Some((_, aggregate)) = answer.first() else { panic!("seed {seed}: no group for {window:?}") };
            assert_finite(&Summary::from_aggregate(aggregate), &format!("seed {seed}, window {window:?}"));
        }
    }
}
