//! `synchealth alerts silence|silences|unsilence|test`, and the evaluator's
//! construction from the settings (channels, retries, lease) for the alerts
//! role. Without a subcommand `synchealth alerts` runs the role.

use std::time::Duration;

use anyhow::{bail, Context};
use synchealth_alerts::delivery::{
    AlertGroup, AlertMessage, Channel, ChannelKind, Dispatcher, EmailConfig, MessageKind, RetryPolicy, WebhookConfig,
    WebhookFormat, TEST_RULE,
};
use synchealth_alerts::{duration, AlertKey, Evaluator, Rule, Severity};
use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{SharedStore, Silence};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::AlertsCommand;
use crate::settings::{AlertSettings, ChannelSettings};
use crate::{open_store, Settings};

/// A positive duration setting (`"10s"`) as a std duration.
fn positive(text: &str, key: &str) -> anyhow::Result<Duration> {
    let d = duration::parse(text).with_context(|| key.to_string())?;
    anyhow::ensure!(d.is_positive(), "{key} must be positive");
    Ok(d.unsigned_abs())
}

/// The configured channels, ready for the dispatcher.
pub fn channels(settings: &AlertSettings) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::new();
    for (name, config) in &settings.channels {
        let key = |field: &str| format!("alerts.channels.{name}.{field}");
        let channel = match config {
            ChannelSettings::Email(e) => Channel {
                name: name.clone(),
                send_resolved: e.send_resolved,
                kind: ChannelKind::Email(EmailConfig {
                    host: e.smtp_host.clone(),
                    port: e.smtp_port,
                    security: e.security,
                    username: e.username.clone(),
                    password: e.password.as_ref().map(|p| p.expose().to_string()),
                    from: e.from.clone(),
                    to: e.to.clone(),
                    timeout: positive(&e.timeout, &key("timeout"))?,
                    ca_file: e.tls_ca_file.clone(),
                }),
            },
            ChannelSettings::Slack(w) | ChannelSettings::Alertmanager(w) | ChannelSettings::Webhook(w) => {
                let format = match config {
                    ChannelSettings::Slack(_) => WebhookFormat::Slack,
                    ChannelSettings::Alertmanager(_) => WebhookFormat::Alertmanager,
                    _ => WebhookFormat::Generic,
                };
                Channel {
                    name: name.clone(),
                    send_resolved: w.send_resolved,
                    kind: ChannelKind::Webhook(
                        format,
                        WebhookConfig {
                            url: w.url.expose().to_string(),
                            secret: w.secret.as_ref().map(|s| s.expose().to_string()),
                            timeout: positive(&w.timeout, &key("timeout"))?,
                        },
                    ),
                }
            }
        };
        channels.push(channel);
    }
    Ok(channels)
}

/// The retry policy of `[alerts.retry]`.
pub fn retry_policy(settings: &AlertSettings) -> anyhow::Result<RetryPolicy> {
    let r = &settings.retry;
    anyhow::ensure!(r.max_attempts >= 1, "alerts.retry.max_attempts must be at least 1");
    anyhow::ensure!(r.initial_delay_ms >= 1, "alerts.retry.initial_delay_ms must be at least 1");
    anyhow::ensure!(
        r.max_delay_ms >= r.initial_delay_ms,
        "alerts.retry.max_delay_ms must be at least initial_delay_ms"
    );
    Ok(RetryPolicy {
        initial: Duration::from_millis(r.initial_delay_ms),
        max_delay: Duration::from_millis(r.max_delay_ms),
        max_attempts: r.max_attempts,
    })
}

/// The dispatcher for the configured channels.
pub fn dispatcher(store: SharedStore, settings: &AlertSettings) -> anyhow::Result<Dispatcher> {
    Dispatcher::new(store, channels(settings)?, retry_policy(settings)?, &settings.public_url)
        .context("configuring the alert channels")
}

/// The alerts role's evaluator: rules, channels, and a lease held under a
/// name unique to this process.
pub fn evaluator(store: SharedStore, settings: &AlertSettings) -> anyhow::Result<Evaluator> {
    let dispatcher = dispatcher(store.clone(), settings)?;
    let missing: Vec<String> = settings
        .rules
        .iter()
        .flat_map(|rule| {
            rule.channels.iter().filter(|c| !dispatcher.has_channel(c)).map(move |c| format!("{} → {c}", rule.name))
        })
        .collect();
    if !missing.is_empty() {
        // Once, at start: the shipped rules name `email` and `chat`, which a
        // fresh install has not configured yet.
        tracing::warn!(
            missing = %missing.join(", "),
            "Rules name channels that are not configured; their notices are recorded as \"no channel configured\" and not sent."
        );
    }
    let interval = settings.interval()?;
    let ttl = match &settings.lease_ttl {
        Some(text) => positive(text, "alerts.lease_ttl")?,
        None => interval * 3,
    };
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into());
    let holder = format!("{host}-{}-{}", std::process::id(), &uuid::Uuid::new_v4().to_string()[..8]);
    Ok(Evaluator::new(store, settings.rules.clone()).with_dispatcher(dispatcher).with_lease(holder, ttl))
}

/// Runs one `alerts` subcommand and prints its answer.
pub async fn run(settings: &Settings, command: AlertsCommand) -> anyhow::Result<()> {
    let store = open_store(settings).await?;
    match command {
        AlertsCommand::Silence { rule, segment, duration: for_, comment, project } => {
            let project = ProjectName::parse(&project).map_err(|e| anyhow::anyhow!("--project: {e}"))?;
            let silence = silence(&store, &settings.alerts.rules, &project, &rule, segment, &for_, comment).await?;
            eprintln!("synchealth: silenced rule {rule} until {}", rfc3339(silence.ends_at_ms));
            println!("{}", silence.id);
        }
        AlertsCommand::Silences => {
            let now = unix_ms(OffsetDateTime::now_utc());
            let silences = store.silences(now).await.context("reading the silences")?;
            if silences.is_empty() {
                eprintln!("synchealth: no active or future silences");
            }
            println!(
                "{:<36} {:<24} {:<12} {:<24} {:<21} {:<21} COMMENT",
                "ID", "RULE", "PROJECT", "SEGMENT", "STARTS (UTC)", "ENDS (UTC)"
            );
            for s in silences {
                println!(
                    "{:<36} {:<24} {:<12} {:<24} {:<21} {:<21} {}",
                    s.id,
                    s.rule,
                    s.project.as_str(),
                    s.segment.as_deref().unwrap_or("*"),
                    rfc3339(s.starts_at_ms),
                    rfc3339(s.ends_at_ms),
                    s.comment
                );
            }
        }
        AlertsCommand::Unsilence { id } => {
            if !store.remove_silence(&id).await.context("removing the silence")? {
                bail!("no silence with id {id}");
            }
            println!("synchealth: removed silence {id}");
        }
        AlertsCommand::Test { channel } => {
            // No server here: a default link points at the configured `listen`.
            let mut alerts = settings.alerts.clone();
            alerts.public_url = settings.public_url_for(settings.listen);
            let record = test(store, &alerts, &channel).await?;
            if record.status != "delivered" {
                bail!(
                    "test notification to channel {channel} failed after {} attempt(s): {}",
                    record.attempts,
                    record.last_error.unwrap_or_default()
                );
            }
            println!("synchealth: test notification delivered to channel {channel} ({} attempt(s))", record.attempts);
        }
    }
    Ok(())
}

/// Stores a silence of `rule` (optionally one `dimension=value` segment)
/// for `for_` from now.
pub async fn silence(
    store: &SharedStore,
    rules: &[Rule],
    project: &ProjectName,
    rule: &str,
    segment: Option<String>,
    for_: &str,
    comment: String,
) -> anyhow::Result<Silence> {
    if !rules.iter().any(|r| r.name == rule) {
        bail!(
            "no rule named {rule:?} (rules: {})",
            rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(segment) = &segment {
        let valid = segment
            .split_once('=')
            .is_some_and(|(d, v)| synchealth_store::Dimension::parse(d).is_some() && !v.is_empty());
        anyhow::ensure!(
            valid,
            "--segment must be dimension=value with app_version, os or network, e.g. app_version=2.3.0"
        );
    }
    let length = positive(for_, "--for")?;
    let now = unix_ms(OffsetDateTime::now_utc());
    let silence = Silence {
        id: uuid::Uuid::new_v4().to_string(),
        rule: rule.to_string(),
        project: project.clone(),
        segment,
        starts_at_ms: now,
        ends_at_ms: now.saturating_add(i64::try_from(length.as_millis()).unwrap_or(i64::MAX)),
        created_by: "cli".into(),
        comment,
    };
    store.put_silence(&silence).await.context("storing the silence")?;
    Ok(silence)
}

/// Sends a test notification to one channel and waits for its outcome
/// (retries included). It is unmistakably a test: rule `synchealth-test`
/// with its own real fingerprint, severity `test` and state `test` (sent
/// `resolved` to Alertmanager, whose statuses are firing and resolved), so
/// it cannot page anyone.
pub async fn test(
    store: SharedStore,
    settings: &AlertSettings,
    channel: &str,
) -> anyhow::Result<synchealth_store::NotificationRecord> {
    let dispatcher = dispatcher(store, settings)?;
    if !dispatcher.has_channel(channel) {
        bail!(
            "no channel named {channel:?} (configured: {})",
            settings.channels.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    }
    let rule = settings.rules.first().cloned().unwrap_or_else(|| Rule::defaults().remove(0));
    let project = ProjectName::parse(synchealth_dashboard::DEFAULT_PROJECT).context("default project name")?;
    let now = OffsetDateTime::now_utc();
    let message = AlertMessage::new(
        MessageKind::Test,
        &project,
        &Rule {
            name: TEST_RULE.into(),
            description: Some("A test notification from `synchealth alerts test`: nothing is wrong.".into()),
            severity: Severity::Info,
            ..rule
        },
        None,
        None,
        0,
        now,
        now,
        now,
        AlertKey::total(TEST_RULE).fingerprint(),
        dispatcher.public_url(),
    );
    let deliveries = dispatcher.dispatch(&AlertGroup::single(message), &[channel.to_string()]).await?;
    let mut last = None;
    for delivery in deliveries {
        last = delivery.handle.await.context("the delivery task")?.pop();
    }
    last.context("the channel was skipped")
}

fn rfc3339(ms: i64) -> String {
    // Whole seconds: the table's columns line up.
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

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
pub async fn bench(settings: &Settings, args: &AlertsBenchArgs) -> anyhow::Result<()> {
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
