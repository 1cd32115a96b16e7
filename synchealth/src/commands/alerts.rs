//! `synchealth alerts silence|silences|unsilence|test`: alert administration
//! on the configured store. Without a subcommand `synchealth alerts` runs the
//! role, which `roles/alerts.rs` builds.

use anyhow::{bail, Context};
use synchealth_alerts::delivery::{AlertGroup, AlertMessage, MessageKind, TEST_RULE};
use synchealth_alerts::{AlertKey, Rule, Severity};
use synchealth_schema::{unix_ms, ProjectName};
use synchealth_store::{SharedStore, Silence};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::cli::AlertsCommand;
use crate::roles::alerts::{dispatcher, positive};
use crate::settings::AlertSettings;
use crate::{open_store, Settings};

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
