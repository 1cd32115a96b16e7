//! `synchealth bench alerts`: end-to-end alert latency, from the ingest
//! acknowledgement of a failure spike to the webhook's arrival at a local
//! receiver, through the real collector, store, evaluator and delivery.

use std::time::Duration;

use anyhow::Context;
use synchealth_alerts::Rule;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::settings::ChannelSettings;
use crate::Settings;

/// `synchealth bench alerts` options.
#[derive(Debug, Clone, clap::Args)]
pub struct AlertsBenchArgs {
    /// Failure spikes measured (each in a new release, so each fires anew).
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
    /// The evaluation interval, in seconds.
    #[arg(long, default_value_t = 1)]
    pub interval_seconds: u64,
}

/// `synchealth bench alerts`: end-to-end alert latency, from the ingest
/// acknowledgement of a failure spike to the webhook's arrival at a local
/// receiver, through the real collector, store, evaluator and delivery. Runs
/// on the embedded store, or on ClickHouse with `--clickhouse-url` (in a
/// fresh database).
pub async fn run(settings: &Settings, args: &AlertsBenchArgs) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};

    anyhow::ensure!(args.rounds > 0 && args.interval_seconds > 0, "--rounds and --interval-seconds must be positive");
    let dir = std::env::temp_dir().join(format!("synchealth-bench-alerts-{}", std::process::id()));
    let arrivals: Arc<Mutex<Vec<(String, std::time::Instant)>>> = Arc::default();
    let receiver = {
        let arrivals = Arc::clone(&arrivals);
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let arrivals = Arc::clone(&arrivals);
                async move {
                    let at = std::time::Instant::now();
                    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let release = value["segment"]["value"].as_str().unwrap_or_default().to_string();
                    if let Ok(mut a) = arrivals.lock() {
                        a.push((release, at));
                    }
                    "ok"
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the webhook receiver")?;
    let hook_url = format!("http://{}/hook", listener.local_addr().context("receiver address")?);
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let key = format!("shk_bench_{}", uuid::Uuid::new_v4().simple());
    let mut s = settings.clone();
    s.listen = "127.0.0.1:0".parse().context("loopback address")?;
    s.data_dir = dir.clone();
    s.ingest_key = Some(crate::Secret::from(key.clone()));
    if s.clickhouse.url.is_some() {
        s.clickhouse.database = format!("bench_alerts_{}", std::process::id());
    }
    s.alerts.evaluation_interval = format!("{}s", args.interval_seconds);
    s.alerts.channels = [(
        "hook".to_string(),
        ChannelSettings::Webhook(crate::settings::WebhookChannelSettings {
            url: crate::Secret::from(hook_url),
            secret: None,
            send_resolved: false,
            timeout: "5s".into(),
        }),
    )]
    .into_iter()
    .collect();
    s.alerts.rules = vec![Rule {
        name: "bench-release-success-rate".into(),
        description: None,
        metric: synchealth_store::metrics::Metric::SuccessRate,
        comparison: synchealth_alerts::Comparison::Below,
        threshold: 0.95,
        window: time::Duration::minutes(10),
        pending_for: time::Duration::ZERO,
        min_events: 50,
        group_by: Some(synchealth_store::Dimension::AppVersion),
        severity: synchealth_alerts::Severity::Page,
        channels: vec!["hook".into()],
        keep_firing_for: time::Duration::ZERO,
        repeat_interval: None,
        evaluation_delay: time::Duration::ZERO,
        queue_threshold: None,
        filters: synchealth_store::Filters::default(),
    }];
    let roles = crate::Roles { collector: true, dashboard: false, alerts: true };
    let app = crate::Application::build(s, roles).await?;
    let ingest_url = format!("http://127.0.0.1:{}/v1/events", app.port());
    let store_kind = app.store().kind();
    tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    let mut latencies = Vec::new();
    for round in 0..args.rounds {
        let release = format!("9.{round}.0");
        let at = OffsetDateTime::now_utc() - time::Duration::seconds(20);
        let events: Vec<serde_json::Value> = (0..100)
            .map(|i| {
                serde_json::json!({
                    "event_id": uuid::Uuid::new_v4().to_string(),
                    "device_id": format!("bench-{round}-{i}"),
                    "occurred_at": at.format(&Rfc3339).unwrap_or_default(),
                    "success": i % 2 == 0,
                    "duration_ms": 800,
                    "conflicts": 0,
                    "queue_depth": 0,
                    "app_version": release,
                    "os": "android",
                    "network": "wifi",
                })
            })
            .collect();
        let body = serde_json::json!({"sent_at": OffsetDateTime::now_utc().format(&Rfc3339)?, "events": events});
        let response =
            client.post(&ingest_url).bearer_auth(&key).json(&body).send().await.context("posting the spike")?;
        anyhow::ensure!(response.status().is_success(), "ingest answered {}", response.status());
        let acked = std::time::Instant::now();
        let deadline = acked + Duration::from_secs(10 * args.interval_seconds + 10);
        let arrived = loop {
            let found = arrivals.lock().ok().and_then(|a| a.iter().find(|(r, _)| *r == release).map(|(_, at)| *at));
            if let Some(at) = found {
                break at;
            }
            anyhow::ensure!(std::time::Instant::now() < deadline, "round {round}: no notification within the deadline");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let latency = arrived.saturating_duration_since(acked);
        eprintln!("bench: round {round}: {} ms", latency.as_millis());
        latencies.push(latency);
        // Start the next spike at a random phase of the evaluation cycle.
        tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % (args.interval_seconds * 1000))).await;
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len() as f64;
    let max = latencies.last().copied().unwrap_or_default();
    let interval = Duration::from_secs(args.interval_seconds);
    println!(
        "alert latency (ingest ack -> webhook received), store {store_kind}, interval {}s, {} rounds: \
         min {:.0} ms, median {:.0} ms, mean {mean:.0} ms, max {:.0} ms = {:.2} intervals (target <= 2)",
        args.interval_seconds,
        latencies.len(),
        ms(latencies[0]),
        ms(latencies[latencies.len() / 2]),
        ms(max),
        max.as_secs_f64() / interval.as_secs_f64(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
