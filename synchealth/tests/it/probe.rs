//! The real client probe against the real collector: offline then online,
//! a kill mid-upload, 503/429 with Retry-After, a full buffer, rejected
//! events, many recording threads; and a short run of the demo fleet.
//!
//! Probe calls block (flush waits for uploads), so every test runs on a
//! multi-threaded runtime and calls the probe from `spawn_blocking`, leaving
//! the runtime free to serve the collector.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use synchealth_probe::{BufferLimits, Details, ErrorKind, Network, Probe, SyncEvent, Trigger};
use synchealth_schema::ProjectName;
use synchealth_store::SharedStore;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::helpers::{spawn_app_with, Backend, TestApp, INGEST_KEY};

/// Writes one multi-threaded test per backend from `async fn name(backend: Backend)`.
macro_rules! probe_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::Sqlite).await })+
        }
        mod clickhouse {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::ClickHouse).await })+
        }
    };
}

probe_tests!(
    a_device_offline_for_a_while_delivers_every_event_exactly_once_when_back,
    an_app_killed_mid_upload_and_restarted_loses_nothing_and_duplicates_nothing,
    a_collector_answering_503_then_429_is_retried_no_sooner_than_retry_after,
    a_full_buffer_thins_successes_before_failures_and_reports_what_it_dropped,
    events_the_collector_rejects_are_dropped_and_never_retried,
    many_threads_recording_at_once_lose_nothing,
    a_short_demo_uploads_what_it_recorded_and_its_numbers_add_up,
    the_otlp_export_delivers_the_same_events_to_the_collectors_logs_endpoint,
    a_batch_carrying_a_loss_report_stores_it_and_a_malformed_report_is_refused,
    up_with_demo_feeds_the_instance_with_the_key_it_generated,
    up_with_demo_serves_the_web_example_with_a_key_allowed_from_its_own_origin_only,
);

fn project() -> ProjectName {
    ProjectName::parse("default").unwrap()
}

/// A probe for `device` uploading to `endpoint`, storing in `dir`.
fn probe(endpoint: &str, device: &str, dir: &Path) -> synchealth_probe::ProbeBuilder {
    Probe::builder(endpoint, INGEST_KEY)
        .device_id(device)
        .app_version("2.3.0")
        .os("android")
        .storage_dir(dir)
        .upload_interval(Duration::from_secs(3600))
        .backoff(Duration::from_millis(50), Duration::from_secs(2))
}

/// An event the app timed itself, with an id the test knows.
fn own_event(success: bool) -> SyncEvent {
    SyncEvent {
        event_id: Uuid::new_v4(),
        device_id: String::new(),
        occurred_at: OffsetDateTime::now_utc() - time::Duration::seconds(2),
        success,
        duration_ms: 1200,
        conflicts: 0,
        queue_depth: 0,
        last_success_at: None,
        app_version: String::new(),
        os: String::new(),
        os_version: None,
        network: Network::Wifi,
        device_model: None,
        sync_type: Some("pull".into()),
        trigger: Some(Trigger::Scheduled),
        error_kind: (!success).then_some(ErrorKind::Timeout),
        error_message: None,
        retries: 0,
        records_up: 0,
        records_down: 4,
        bytes_up: 0,
        bytes_down: 900,
        sample_rate: 1.0,
        conflict_details: Vec::new(),
        queue_oldest_at: None,
        dimensions: Default::default(),
    }
}

/// Every stored event of a device.
async fn stored(store: &SharedStore, device: &str) -> Vec<synchealth_schema::StoredEvent> {
    store.device_events(&project(), device, 100_000).await.unwrap()
}

async fn stored_ids(store: &SharedStore, device: &str) -> Vec<Uuid> {
    stored(store, device).await.into_iter().map(|e| e.event.event_id).collect()
}

/// Runs blocking probe code off the runtime's threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn app(backend: Backend, name: &str) -> Option<(TestApp, SharedStore)> {
    spawn_app_with(backend, name, |_| {}).await
}

async fn a_device_offline_for_a_while_delivers_every_event_exactly_once_when_back(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_offline").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let probe = probe(&app.address, "offline-1", dir.path()).network(Network::Offline).build();

    let (own_ids, report) = blocking({
        let probe = probe.clone();
        move || {
            let mut own = Vec::new();
            for i in 0..60 {
                if i % 3 == 0 {
                    let event = own_event(i % 2 == 0);
                    own.push(event.event_id);
                    probe.record(event);
                } else if i % 3 == 1 {
                    probe.start("push", "local_write").succeed(Details { records_up: 3, ..Details::default() });
                } else {
                    probe.start("pull", "scheduled").fail(ErrorKind::Network, "no route", Details::default());
                }
            }
            (own, probe.flush(Duration::from_secs(2)))
        }
    })
    .await;
    assert_eq!(report.pending, 60, "offline: everything waits in the buffer");
    assert!(stored(&store, "offline-1").await.is_empty(), "nothing was sent while offline");

    probe.set_network(Network::Wifi);
    let report = blocking({
        let probe = probe.clone();
        move || probe.flush(Duration::from_secs(20))
    })
    .await;
    assert_eq!(report.pending, 0);
    let ids = stored_ids(&store, "offline-1").await;
    assert_eq!(ids.len(), 60);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 60, "each event once");
    assert!(own_ids.iter().all(|id| ids.contains(id)), "the app's own event ids are kept");
    let stats = probe.stats();
    assert_eq!((stats.recorded, stats.uploaded, stats.duplicates, stats.buffered), (60, 60, 0, 0));
    // last_success_at was kept by the probe: the latest failure names a success before it.
    let events = stored(&store, "offline-1").await;
    let last_failure = events.iter().find(|e| !e.event.success).unwrap();
    assert!(last_failure.event.last_success_at.is_some());
}

/// A proxy that forwards each request to `target` and then hangs up
/// without answering: the collector stores the batch, the probe never
/// hears so. Returns its address and a count of forwarded requests.
async fn answer_losing_proxy(target: String) -> (SocketAddr, Arc<Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let forwarded = Arc::new(Mutex::new(0));
    let count = Arc::clone(&forwarded);
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut raw = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_end, length) = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                raw.extend_from_slice(&chunk[..n]);
                if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()))
                        .unwrap_or(0);
                    break (at + 4, length);
                }
            };
            if head_end == 0 {
                continue;
            }
            while raw.len() < head_end + length {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
            let mut request = client.post(format!("{target}/v1/events")).body(raw[head_end..].to_vec());
            for line in head.lines().skip(1) {
                if let Some((name, value)) = line.split_once(':') {
                    let name = name.trim().to_ascii_lowercase();
                    if ["authorization", "content-encoding", "content-type"].contains(&name.as_str()) {
                        request = request.header(name, value.trim());
                    }
                }
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            *count.lock().unwrap() += 1;
            // Hang up: the answer is lost.
            let _ = socket.shutdown().await;
        }
    });
    (address, forwarded)
}

async fn an_app_killed_mid_upload_and_restarted_loses_nothing_and_duplicates_nothing(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_killed").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (proxy, forwarded) = answer_losing_proxy(app.address.clone()).await;

    let path = dir.path().to_path_buf();
    let first_ids = blocking(move || {
        // A long backoff: after the lost answer, a retry before the "kill" is
        // unlikely (full jitter may still pick a short wait; that retry
        // loses its answer too, which changes nothing below).
        let probe = probe(&format!("http://{proxy}"), "killed-1", &path)
            .backoff(Duration::from_secs(600), Duration::from_secs(600))
            .build();
        let ids: Vec<Uuid> = (0..30)
            .map(|i| {
                let event = own_event(i % 4 != 0);
                let id = event.event_id;
                probe.record(event);
                id
            })
            .collect();
        let report = probe.flush(Duration::from_secs(3));
        assert_eq!(report.pending, 30, "the answer was lost, so nothing left the buffer");
        assert!(probe.stats().upload_failures >= 1);
        // The process dies here: the worker stops, the buffer stays on disk.
        probe.shutdown();
        ids
    })
    .await;
    assert!(*forwarded.lock().unwrap() >= 1);
    assert_eq!(stored(&store, "killed-1").await.len(), 30, "the collector stored the batch it never answered");

    // The kill also tore a record being appended: half a record at the end.
    let log = dir.path().join("events.log");
    let mut torn = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    std::io::Write::write_all(&mut torn, &[40, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]).unwrap();
    drop(torn);

    let address = app.address.clone();
    let path = dir.path().to_path_buf();
    let (stats, later_ids) = blocking(move || {
        let probe = probe(&address, "killed-1", &path).build();
        let later: Vec<Uuid> = (0..5)
            .map(|_| {
                let event = own_event(true);
                let id = event.event_id;
                probe.record(event);
                id
            })
            .collect();
        assert_eq!(probe.flush(Duration::from_secs(20)).pending, 0);
        let stats = probe.stats();
        probe.shutdown();
        (stats, later)
    })
    .await;
    assert_eq!(stats.restored, 30, "every event written before the kill was found again");
    assert_eq!(stats.uploaded, 35);
    assert_eq!(stats.duplicates, 30, "the resent batch was recognized, not stored again");
    let ids = stored_ids(&store, "killed-1").await;
    let expected: BTreeSet<Uuid> = first_ids.into_iter().chain(later_ids).collect();
    assert_eq!(ids.len(), 35, "no duplicate stored");
    assert_eq!(ids.into_iter().collect::<BTreeSet<_>>(), expected, "no event lost");
}

/// Answers 503 (Retry-After: 2), then 429 (Retry-After: 1), then passes
/// requests on to the collector. Returns its address and the arrival times.
async fn overloaded_then_forwarding(target: String) -> (SocketAddr, Arc<Mutex<Vec<Instant>>>) {
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let seen = Arc::clone(&arrivals);
    let client = reqwest::Client::new();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let seen = Arc::clone(&seen);
        let client = client.clone();
        let target = target.clone();
        async move {
            let n = {
                let mut seen = seen.lock().unwrap();
                seen.push(Instant::now());
                seen.len()
            };
            match n {
                1 => (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "2")], "{\"error\":\"unavailable\"}")
                    .into_response(),
                2 => (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")], "{\"error\":\"rate limited\"}")
                    .into_response(),
                _ => {
                    let mut request = client.post(format!("{target}/v1/events")).body(body);
                    for name in ["authorization", "content-encoding", "content-type"] {
                        if let Some(value) = headers.get(name) {
                            request = request.header(name, value.clone());
                        }
                    }
                    let answer = request.send().await.unwrap();
                    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
                    let text = answer.text().await.unwrap();
                    Response::builder().status(status).body(axum::body::Body::from(text)).unwrap()
                }
            }
        }
    };
    let router = axum::Router::new().route("/v1/events", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (address, arrivals)
}

async fn a_collector_answering_503_then_429_is_retried_no_sooner_than_retry_after(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_retry_after").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let (server, arrivals) = overloaded_then_forwarding(app.address.clone()).await;
    let path = dir.path().to_path_buf();
    let stats = blocking(move || {
        // Backoff alone would retry within 20 ms: any longer wait is Retry-After's.
        let probe = probe(&format!("http://{server}"), "retry-1", &path)
            .backoff(Duration::from_millis(1), Duration::from_millis(20))
            .build();
        for _ in 0..10 {
            probe.start("full", "app_open").succeed(Details::default());
        }
        let report = probe.flush(Duration::from_secs(15));
        assert_eq!(report.pending, 0);
        probe.stats()
    })
    .await;
    let times = arrivals.lock().unwrap().clone();
    assert_eq!(times.len(), 3, "one 503, one 429, one success");
    let first_wait = times[1] - times[0];
    let second_wait = times[2] - times[1];
    assert!(first_wait >= Duration::from_secs(2), "503 Retry-After: 2 honoured, waited {first_wait:?}");
    assert!(second_wait >= Duration::from_secs(1), "429 Retry-After: 1 honoured, waited {second_wait:?}");
    assert!(first_wait < Duration::from_secs(6) && second_wait < Duration::from_secs(5), "and not much longer");
    assert_eq!((stats.upload_failures, stats.uploaded), (2, 10));
    assert_eq!(stored(&store, "retry-1").await.len(), 10);
}

async fn a_full_buffer_thins_successes_before_failures_and_reports_what_it_dropped(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_full").await else { return };
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let limits = BufferLimits { max_events: 50, ..BufferLimits::default() };
    let address = app.address.clone();
    let (paths, started) = ((dirs.0.path().to_path_buf(), dirs.1.path().to_path_buf()), OffsetDateTime::now_utc());
    let (thinning, dropping) = blocking(move || {
        // Device A: 100 successes and 20 failures while offline; thinning the
        // successes makes enough room, so no failure is lost.
        let a = probe(&address, "full-a", &paths.0).buffer_limits(limits).network(Network::Offline).build();
        for i in 0..120 {
            let event = own_event(i % 6 != 5);
            a.record(event);
        }
        // Device B: 80 failures while offline: nothing to thin, the oldest go.
        let b = probe(&address, "full-b", &paths.1).buffer_limits(limits).network(Network::Offline).build();
        for _ in 0..80 {
            b.record(own_event(false));
        }
        for p in [&a, &b] {
            p.flush(Duration::from_secs(1));
            p.set_network(Network::Wifi);
            assert_eq!(p.flush(Duration::from_secs(20)).pending, 0);
        }
        (a.stats(), b.stats())
    })
    .await;

    let a = stored(&store, "full-a").await;
    let failures = a.iter().filter(|e| !e.event.success).count();
    let successes: Vec<f64> = a.iter().filter(|e| e.event.success).map(|e| e.event.sample_rate).collect();
    assert_eq!(failures, 20, "every failure kept");
    assert!(successes.len() <= 30 && successes.len() >= 5, "successes thinned: {}", successes.len());
    assert!(successes.iter().all(|r| *r < 1.0), "kept successes carry a raised weight");
    let weight: f64 = successes.iter().map(|r| 1.0 / r).sum();
    // Each thinning pass keeps one success of every two; an odd one out is
    // kept or dropped by the pass's phase, so a few passes can miss by a few
    // events' weight. Unthinned, the kept successes would stand for ~20.
    assert!((weight - 100.0).abs() <= 16.0, "the kept successes stand for the 100 recorded: {weight}");
    assert_eq!(thinning.thinned, 100 - successes.len() as u64);
    assert!(thinning.dropped.is_empty(), "{:?}", thinning.dropped);

    let b = stored(&store, "full-b").await;
    let dropped = dropping.dropped.get("buffer_full").copied().unwrap_or(0);
    assert!(dropped >= 30, "at most 50 fit: dropped {dropped}");
    assert_eq!(b.len() as u64 + dropped, 80, "what was not dropped arrived");
    // The oldest were dropped: what arrived is the newest.
    let oldest_kept = b.iter().map(|e| e.event.occurred_at).min().unwrap();
    assert!(oldest_kept >= started - time::Duration::seconds(3));

    // The loss report reached the store, for device B only.
    let now_ms = synchealth_schema::unix_ms(OffsetDateTime::now_utc());
    let loss = store.telemetry_loss(&project(), now_ms - 600_000, now_ms + 1000).await.unwrap();
    assert_eq!(loss.devices_reporting_loss, 1);
    assert_eq!(loss.dropped_by_reason, BTreeMap::from([("buffer_full".to_string(), dropped)]));
}

async fn events_the_collector_rejects_are_dropped_and_never_retried(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_rejected").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let address = app.address.clone();
    let path = dir.path().to_path_buf();
    let (first, second) = blocking(move || {
        let probe = probe(&address, "rejects-1", &path).build();
        for i in 0..10 {
            let mut event = own_event(true);
            if i % 3 == 0 {
                // Longer than 30 days: the collector refuses it.
                event.duration_ms = 40 * 24 * 3600 * 1000;
            }
            probe.record(event);
        }
        let first = probe.flush(Duration::from_secs(20));
        let after_first = probe.stats();
        // Nothing is left to retry: a second flush sends nothing more.
        let second = probe.flush(Duration::from_secs(5));
        assert_eq!(probe.stats().uploaded, after_first.uploaded);
        ((first, after_first), second)
    })
    .await;
    let ((report, stats), second) = (first, second);
    assert_eq!(report.pending, 0);
    assert_eq!(second.pending, 0);
    assert_eq!(stats.dropped.get("rejected"), Some(&4));
    assert_eq!(stats.uploaded, 6);
    assert_eq!(stats.upload_failures, 0);
    assert_eq!(stored(&store, "rejects-1").await.len(), 6);
    // The rejection is reported as telemetry loss (with the next upload,
    // which the second flush sent as a report alone).
    let now_ms = synchealth_schema::unix_ms(OffsetDateTime::now_utc());
    let loss = store.telemetry_loss(&project(), now_ms - 600_000, now_ms + 1000).await.unwrap();
    assert_eq!(loss.dropped_by_reason.get("rejected"), Some(&4));
}

async fn many_threads_recording_at_once_lose_nothing(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_threads").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let probe = probe(&app.address, "threads-1", dir.path()).build();
    let stats = blocking({
        let probe = probe.clone();
        move || {
            std::thread::scope(|scope| {
                for t in 0..8 {
                    let probe = probe.clone();
                    scope.spawn(move || {
                        for i in 0..250 {
                            let attempt = probe.start("push", "local_write");
                            match (t + i) % 5 {
                                0 => attempt.fail(ErrorKind::Server, "500", Details::default()),
                                1 => drop(attempt),
                                _ => attempt.succeed(Details { conflicts: 1, ..Details::default() }),
                            }
                        }
                    });
                }
            });
            assert_eq!(probe.flush(Duration::from_secs(30)).pending, 0);
            probe.stats()
        }
    })
    .await;
    assert_eq!((stats.recorded, stats.uploaded, stats.dropped_total()), (2000, 2000, 0));
    let events = stored(&store, "threads-1").await;
    assert_eq!(events.len(), 2000);
    let cancelled = events.iter().filter(|e| e.event.error_kind == Some(ErrorKind::Cancelled)).count();
    assert_eq!(cancelled, 400, "dropped attempts are recorded as cancelled");
}

async fn a_short_demo_uploads_what_it_recorded_and_its_numbers_add_up(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_demo").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut config = synchealth::demo::DemoConfig::new(&app.address, INGEST_KEY, 4, dir.path().to_path_buf());
    config.duration = Some(Duration::from_secs(4));
    config.interval = Duration::from_millis(100);
    config.upload_interval = Duration::from_secs(1);
    let summary = blocking(move || {
        let stop = std::sync::atomic::AtomicBool::new(false);
        synchealth::demo::run(&config, &stop).unwrap()
    })
    .await;
    assert!(summary.adds_up(), "{summary}");
    assert_eq!(summary.devices, 4);
    assert!(summary.recorded >= 60, "4 devices, every ~100 ms, 4 s: {}", summary.recorded);
    assert!(summary.uploaded > 0);
    let mut landed = 0;
    for i in 0..4 {
        landed += stored(&store, &format!("demo-{i:04}")).await.len() as u64;
    }
    assert_eq!(landed, summary.uploaded - summary.duplicates, "{summary}");
}

async fn the_otlp_export_delivers_the_same_events_to_the_collectors_logs_endpoint(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_otlp").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let address = app.address.clone();
    let path = dir.path().to_path_buf();
    let stats = blocking(move || {
        // Uploads held back until the OTLP export has happened (at recording).
        let probe = probe(&address, "otlp-1", &path).otlp_endpoint(&address).network(Network::Offline).build();
        for i in 0..6 {
            probe.start("pull", "scheduled").succeed(Details { records_down: i, ..Details::default() });
        }
        probe.flush(Duration::from_secs(2));
        probe.set_network(Network::Wifi);
        assert_eq!(probe.flush(Duration::from_secs(20)).pending, 0);
        probe.stats()
    })
    .await;
    // The records reached /v1/logs first: the batch upload found every event stored.
    assert_eq!((stats.uploaded, stats.duplicates), (6, 6));
    let events = stored(&store, "otlp-1").await;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e.clock_skew_ms == 0), "stored from OTLP, which has no sent_at");
}

async fn a_batch_carrying_a_loss_report_stores_it_and_a_malformed_report_is_refused(backend: Backend) {
    let Some((app, store)) = app(backend, "probe_loss_report").await else { return };
    let mut body = crate::helpers::batch(vec![crate::helpers::event("loss-1", 1, true, 900)]);
    body["telemetry_loss"] = serde_json::json!({"device_id": "loss-1", "dropped": {"buffer_full": 12, "expired": 3}});
    let response = app.post_batch(&body).await;
    assert_eq!(response.status(), 200);
    // Resent with smaller (stale) counts: the store keeps the largest.
    body["telemetry_loss"]["dropped"] = serde_json::json!({"buffer_full": 5});
    assert_eq!(app.post_batch(&body).await.status(), 200);
    let now_ms = synchealth_schema::unix_ms(OffsetDateTime::now_utc());
    let loss = store.telemetry_loss(&project(), now_ms - 60_000, now_ms + 1000).await.unwrap();
    assert_eq!(loss.devices_reporting_loss, 1);
    assert_eq!(loss.dropped_by_reason, BTreeMap::from([("buffer_full".to_string(), 12), ("expired".to_string(), 3)]));

    body["telemetry_loss"] = serde_json::json!({"device_id": "loss-1", "dropped": {"Buffer Full": 1}});
    let response = app.post_batch(&body).await;
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer.to_string().contains("telemetry_loss"), "{answer}");
}

async fn up_with_demo_feeds_the_instance_with_the_key_it_generated(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut settings) = crate::helpers::test_settings(backend, "probe_up_demo", dir.path()) else { return };
    // No configured key: the first start generates one, and the demo uses it.
    settings.ingest_key = None;
    let app = synchealth::Application::build(settings.clone(), synchealth::Roles::ALL).await.unwrap();
    assert!(app.generated().ingest_key.is_some());
    let store = app.store();
    let demo = synchealth::demo::start_beside(&app, &settings, 3).await.unwrap();
    let _served = crate::helpers::serve(app, dir);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let summary = demo.stop().await.unwrap();
    assert!(summary.adds_up(), "{summary}");
    assert!(summary.recorded >= 3, "{summary}");
    let mut landed = 0;
    for i in 0..3 {
        landed += stored(&store, &format!("demo-{i:04}")).await.len() as u64;
    }
    assert!(landed > 0);
    assert_eq!(landed, summary.uploaded - summary.duplicates, "{summary}");
    assert!(
        settings.data_dir.join("demo").join("demo-0000").join("events.log").exists(),
        "buffers under <data-dir>/demo"
    );
}

async fn up_with_demo_serves_the_web_example_with_a_key_allowed_from_its_own_origin_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(settings) = crate::helpers::test_settings(backend, "probe_demo_web", dir.path()) else { return };
    let app = synchealth::Application::build(settings.clone(), synchealth::Roles::ALL).await.unwrap();
    let port = app.port();
    let key = synchealth::demo::web::key(&app, &settings).await.unwrap();
    assert_eq!(synchealth::demo::web::key(&app, &settings).await.unwrap(), key, "one key, kept across starts");
    let app = synchealth::demo::web::beside(app, &settings).await.unwrap();
    let served = crate::helpers::serve(app, dir);
    let base = &served.address;
    let client = reqwest::Client::new();

    let page = client.get(format!("{base}/demo/web/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("<meta name=\"synchealth-ingest-key\" content=\"{key}\">")), "{html}");
    assert!(html.contains("src=\"app.js\""), "{html}");
    for script in ["app.js", "probe.min.js"] {
        let answer = client.get(format!("{base}/demo/web/{script}")).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{script}");
        assert!(answer.headers()["content-type"].to_str().unwrap().starts_with("text/javascript"), "{script}");
        assert!(answer.text().await.unwrap().contains("export") || script == "app.js", "{script} is the bundle");
    }
    assert_eq!(client.get(format!("{base}/demo/web")).send().await.unwrap().url().path(), "/demo/web/");

    // A browser on the page names its origin; so does one on another site.
    let post = |origin: String| {
        let body = crate::helpers::batch(vec![crate::helpers::event(&format!("web-{}", origin.len()), 1, true, 100)]);
        client.post(format!("{base}/v1/events")).bearer_auth(&key).header("origin", origin).json(&body).send()
    };
    for origin in [format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")] {
        assert_eq!(post(origin.clone()).await.unwrap().status(), 200, "{origin}");
    }
    assert_eq!(post("https://elsewhere.example".into()).await.unwrap().status(), 403);
}
