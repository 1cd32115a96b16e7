//! What the collector spends parsing and validating one request body: a
//! 1,000-event batch as `client-probe` sends it (BENCHMARKS.md, "Parsing a
//! batch"). JSON parsing is the largest part of the collector's CPU per event.
//!
//! `cargo bench -p synchealth-schema --bench parse`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use synchealth_schema::parse_batch;

/// A realistic batch: every field a probe fills in, ids and times varying.
fn body(events: usize) -> Vec<u8> {
    let events: Vec<_> = (0..events)
        .map(|i| {
            json!({
                "event_id": format!("0190f3a2-7b1c-7d4e-8f00-{i:012x}"),
                "device_id": format!("device-{:06}", i * 7919 % 50_000),
                "occurred_at": format!("2026-11-29T10:{:02}:{:02}.{:03}Z", i / 60 % 60, i % 60, i % 1000),
                "last_success_at": "2026-11-29T09:58:00Z",
                "success": i % 20 != 0,
                "duration_ms": 200 + i * 37 % 5000,
                "conflicts": i % 7 / 6,
                "queue_depth": i % 40,
                "app_version": "2.3.1",
                "os": "android",
                "os_version": "14",
                "network": "wifi",
                "device_model": "Pixel 8",
                "sync_type": "delta",
                "trigger": "scheduled",
                "retries": 0,
                "records_up": 12,
                "records_down": 40,
                "bytes_up": 4096,
                "bytes_down": 16384,
            })
        })
        .collect();
    serde_json::to_vec(&json!({"sent_at": "2026-11-29T10:59:59.500Z", "events": events})).expect("a JSON value")
}

fn parse(c: &mut Criterion) {
    let body = body(1000);
    let mut group = c.benchmark_group("parse_batch");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000 valid events", |b| {
        b.iter(|| {
            let parsed = parse_batch(std::hint::black_box(&body)).expect("a valid batch");
            assert_eq!(parsed.events.len(), 1000);
            parsed
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
