//! The ingest API, end to end over HTTP, on both stores.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::{json, Value};

use time::OffsetDateTime;

use crate::helpers::{batch, event, rfc3339, spawn_app, Backend};
use crate::on_both_stores;

on_both_stores!(
    posted_events_are_read_back_in_the_summary,
    posting_the_same_batch_twice_changes_nothing,
    a_malformed_event_is_rejected_precisely_while_its_neighbours_are_stored,
    a_gzip_batch_is_accepted,
);

async fn posted_events_are_read_back_in_the_summary(backend: Backend) {
    let Some(app) = spawn_app(backend, "read_back").await else { return };
    let events = vec![
        event("d1", 10, true, 1000),
        event("d1", 5, true, 3000),
        event("d2", 4, false, 60_000),
        event("d3", 3, true, 2000),
    ];
    let response = app.post_batch(&batch(events)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"accepted": 4, "duplicates": 0, "rejected": []}));

    let summary = app.summary("").await;
    assert_eq!(summary["events"], 4);
    assert_eq!(summary["devices"], 3);
    assert_eq!(summary["success_rate"], 0.75);
    assert_eq!(summary["conflict_rate"], 0.25);
    assert_eq!(summary["queue_depth"]["max"], 1500);
    assert_eq!(summary["queue_depth"]["over_threshold_share"], 1.0 / 3.0);
    let p99 = summary["duration_ms"]["p99"].as_f64().unwrap();
    assert!((p99 - 60_000.0).abs() / 60_000.0 < 0.02, "p99 {p99}");
    let p50 = summary["staleness_ms"]["p50"].as_f64().unwrap();
    assert!((p50 - 300_000.0).abs() / 300_000.0 < 0.02, "staleness p50 {p50}");
    assert_eq!(summary["never_synced_devices"], 0);

    let cellular_ios = app.summary("os=ios").await;
    assert_eq!(cellular_ios["events"], 0);
    assert_eq!(cellular_ios["success_rate"], Value::Null);
}

async fn posting_the_same_batch_twice_changes_nothing(backend: Backend) {
    let Some(app) = spawn_app(backend, "twice").await else { return };
    let body = batch((0..50).map(|i| event(&format!("d{}", i % 7), i % 30, i % 5 != 0, 100 + i as u64)).collect());
    let first: Value = app.post_batch(&body).await.json().await.unwrap();
    assert_eq!(first["accepted"], 50);
    // A fixed window, so the two reads cover the same span.
    let window = format!(
        "from={}&to={}",
        rfc3339(OffsetDateTime::now_utc() - time::Duration::hours(1)),
        rfc3339(OffsetDateTime::now_utc() + time::Duration::minutes(1))
    )
    .replace('+', "%2B");
    let before = app.summary(&window).await;
    let second: Value = app.post_batch(&body).await.json().await.unwrap();
    assert_eq!(second, json!({"accepted": 0, "duplicates": 50, "rejected": []}));
    let after = app.summary(&window).await;
    assert_eq!(before, after);
    assert_eq!(after["events"], 50);
}

async fn a_malformed_event_is_rejected_precisely_while_its_neighbours_are_stored(backend: Backend) {
    let Some(app) = spawn_app(backend, "malformed").await else { return };
    let mut bad = event("d9", 1, true, 10);
    bad["duration_ms"] = json!(-5);
    let body = batch(vec![event("d1", 1, true, 10), bad, event("d2", 1, false, 20)]);
    let response = app.post_batch(&body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer,
        json!({"accepted": 2, "duplicates": 0, "rejected": [
            {"index": 1, "field": "duration_ms", "reason": "expected a non-negative integer, got -5"}
        ]})
    );
    assert_eq!(app.summary("").await["devices"], 2);
}

async fn a_gzip_batch_is_accepted(backend: Backend) {
    let Some(app) = spawn_app(backend, "gzip").await else { return };
    let body = serde_json::to_vec(&batch(vec![event("d1", 1, true, 10)])).unwrap();
    let response =
        app.post_raw(&[("content-type", "application/json"), ("content-encoding", "gzip")], gzip(&body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["accepted"], 1);
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_body_that_is_not_a_batch_is_a_400_with_a_json_error() {
    let app = spawn_app(Backend::Sqlite, "not_a_batch").await.unwrap();
    let response = app.post_raw(&[("content-type", "application/json")], "{\"events\": \"nope\"").await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid batch");
    assert!(body["detail"].as_str().unwrap().contains("invalid JSON"), "{body}");
}

#[tokio::test]
async fn a_missing_or_wrong_ingest_key_is_a_401() {
    let app = spawn_app(Backend::Sqlite, "wrong_key").await.unwrap();
    let url = format!("{}/v1/events", app.address);
    let body = batch(vec![event("d1", 1, true, 10)]);
    let none = app.client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = app.client.post(&url).bearer_auth("shk_nope").json(&body).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        wrong.json::<Value>().await.unwrap(),
        json!({"error": "unauthorized", "detail": "unknown or revoked ingest key"})
    );
    assert_eq!(app.summary("").await["events"], 0);
}

#[tokio::test]
async fn a_gzip_bomb_is_stopped_at_the_limit_with_a_413() {
    let app = spawn_app(Backend::Sqlite, "gzip_bomb").await.unwrap();
    // 64 MiB of spaces compress to about 64 KiB: small on the wire, huge inside.
    let bomb = gzip(&vec![b' '; 64 * 1024 * 1024]);
    assert!(bomb.len() < 200 * 1024);
    let response = app.post_raw(&[("content-encoding", "gzip"), ("content-type", "application/json")], bomb).await;
    assert_eq!(response.status(), 413);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "payload too large");
}

#[tokio::test]
async fn a_non_json_content_type_is_a_415() {
    let app = spawn_app(Backend::Sqlite, "content_type").await.unwrap();
    let response = app.post_raw(&[("content-type", "text/plain")], "hello").await;
    assert_eq!(response.status(), 415);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "unsupported media type");
}

#[tokio::test]
async fn spooled_acknowledgements_on_clickhouse_store_every_event_once_shortly_after_the_answer() {
    use synchealth::settings::AcknowledgeSetting;
    let configure = |s: &mut synchealth::Settings| {
        s.ingest.acknowledge = AcknowledgeSetting::Auto;
        s.ingest.insert_max_delay_ms = 200;
    };
    let Some((app, store)) = crate::helpers::spawn_app_with(Backend::ClickHouse, "spooled_ack", configure).await else {
        return;
    };
    let first = batch((0..40).map(|i| event(&format!("d{i}"), 1, i % 4 != 0, 100 + i)).collect());
    let body: Value = app.post_batch(&first).await.json().await.unwrap();
    assert_eq!(body, json!({"accepted": 40, "duplicates": 0, "rejected": []}));
    // Posted again before or after its insert: the store keeps one copy.
    let again: Value = app.post_batch(&first).await.json().await.unwrap();
    assert_eq!(again["rejected"], json!([]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let summary = app.summary("").await;
        if summary["events"] == 40 {
            assert_eq!(summary["success_rate"], 0.75);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not stored within 10 s: {summary}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.summary("").await["events"], 40, "the second copy was not stored");
    assert_eq!(store.kind(), "clickhouse");
}
