//! [`crate::Alerting`] on ClickHouse: alerting records, and a lease without transactions.
//!
//! Instances, notifications and silences are `ReplacingMergeTree(version)`
//! like the rest of the control plane: a write is a new row with a larger
//! version, a silence removal a tombstone, reads use `FINAL`, and filters on
//! columns outside the sorting key run here in Rust, after `FINAL` picked the
//! newest row (a `WHERE` on such a column could see an older version).
//!
//! **The lease.** ClickHouse has no transactions and no compare-and-set, so
//! the lease is decided by a rule every replica applies to the same rows:
//! `lease_claims` holds one row per (lease, term, claimant). The holder of a
//! lease is the *earliest* claim (by `claimed_at_ms`, then holder name) of the
//! *latest* term, until its `expires_ms`. To claim an expired or absent lease a
//! replica inserts a claim for term `latest + 1`, so rival claimants of the
//! same takeover land in the same term; it then waits [`CLAIM_SETTLE`] and reads
//! the term back: every claimant reads the same rows and agrees on the one
//! winner. The holder renews by rewriting its own claim row (same term and
//! claim time, later expiry), which no other claimant competes for.
//!
//! Limits, stated plainly: the rule is safe when every rival claim is visible
//! within [`CLAIM_SETTLE`] of the others' (a replica paused longer than that
//! between reading the expired lease and its insert landing could see itself
//! win after another already acted), and when replica clocks agree to well
//! within the lease TTL (claim times and expiries are compared across
//! machines). A lost race costs at most one duplicated evaluation; the
//! notifications it produced carry the same fingerprint, so receivers that
//! deduplicate (Alertmanager does) absorb it. Run replicas with NTP.

use std::time::Duration;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use synchealth_schema::ProjectName;

use async_trait::async_trait;

use super::sql::parse_project;
use super::ClickHouseStore;
use crate::alerting::{AlertInstanceRecord, NotificationRecord, Silence, TicketRecord};
use crate::Result;

/// How long a claimant waits after inserting its claim before reading the
/// term back: the window within which rival claims must land to be seen.
const CLAIM_SETTLE: Duration = Duration::from_millis(500);

#[derive(Row, Serialize, Deserialize)]
struct InstanceRow {
    project: String,
    fingerprint: String,
    rule: String,
    segment: String,
    state: String,
    value: Option<f64>,
    threshold: f64,
    since_ms: i64,
    last_evaluated_ms: i64,
    last_notified_ms: Option<i64>,
    clear_since_ms: Option<i64>,
    verdict: String,
    events: u64,
    severity: String,
    silenced_until_ms: Option<i64>,
    version: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct NotificationRow {
    id: String,
    fingerprint: String,
    rule: String,
    project: String,
    channel: String,
    kind: String,
    status: String,
    attempts: u32,
    last_error: String,
    created_at_ms: i64,
    updated_at_ms: i64,
    summary: String,
    version: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct SilenceRow {
    id: String,
    rule: String,
    project: String,
    segment: String,
    starts_at_ms: i64,
    ends_at_ms: i64,
    created_by: String,
    comment: String,
    deleted: u8,
    version: u64,
}

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct ClaimRow {
    name: String,
    term: u64,
    holder: String,
    claimed_at_ms: i64,
    expires_ms: i64,
    version: u64,
}

#[derive(Row, Serialize, Deserialize)]
struct TicketRow {
    project: String,
    fingerprint: String,
    channel: String,
    episode_ms: i64,
    ticket_key: String,
    created_at_ms: i64,
}

fn optional(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// The holder of a term: its earliest claim, ties broken by holder name.
fn winner(claims: &[ClaimRow]) -> Option<&ClaimRow> {
    claims.iter().min_by(|a, b| (a.claimed_at_ms, &a.holder).cmp(&(b.claimed_at_ms, &b.holder)))
}

impl SilenceRow {
    fn into_silence(self) -> Result<Silence> {
        Ok(Silence {
            id: self.id,
            rule: self.rule,
            project: parse_project(&self.project)?,
            segment: optional(self.segment),
            starts_at_ms: self.starts_at_ms,
            ends_at_ms: self.ends_at_ms,
            created_by: self.created_by,
            comment: self.comment,
        })
    }
}

impl ClickHouseStore {
    async fn silence_rows(&self) -> Result<Vec<SilenceRow>> {
        Ok(self.client.query("SELECT ?fields FROM silences FINAL ORDER BY id").fetch_all::<SilenceRow>().await?)
    }

    fn silence_row(&self, s: &Silence, deleted: bool) -> SilenceRow {
        SilenceRow {
            id: s.id.clone(),
            rule: s.rule.clone(),
            project: s.project.as_str().to_string(),
            segment: s.segment.clone().unwrap_or_default(),
            starts_at_ms: s.starts_at_ms,
            ends_at_ms: s.ends_at_ms,
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
            deleted: u8::from(deleted),
            version: self.next_row_version(),
        }
    }

    /// The claims of the latest term of lease `name` (none if never claimed).
    async fn latest_claims(&self, name: &str) -> Result<Vec<ClaimRow>> {
        Ok(self
            .client
            .query(
                "SELECT ?fields FROM lease_claims FINAL \
                 WHERE name = ? AND term = (SELECT max(term) FROM lease_claims WHERE name = ?)",
            )
            .bind(name)
            .bind(name)
            .fetch_all::<ClaimRow>()
            .await?)
    }
}

#[async_trait]
impl crate::Alerting for ClickHouseStore {
    #[tracing::instrument(skip_all)]
    async fn alert_instances(&self) -> Result<Vec<AlertInstanceRecord>> {
        let rows = self
            .client
            .query("SELECT ?fields FROM alert_instances FINAL ORDER BY project, rule, segment")
            .fetch_all::<InstanceRow>()
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(AlertInstanceRecord {
                    fingerprint: r.fingerprint,
                    rule: r.rule,
                    project: parse_project(&r.project)?,
                    segment: optional(r.segment),
                    state: r.state,
                    value: r.value,
                    threshold: r.threshold,
                    since_ms: r.since_ms,
                    last_evaluated_ms: r.last_evaluated_ms,
                    last_notified_ms: r.last_notified_ms,
                    clear_since_ms: r.clear_since_ms,
                    verdict: r.verdict,
                    events: r.events,
                    severity: r.severity,
                    silenced_until_ms: r.silenced_until_ms,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(fingerprint = %i.fingerprint))]
    async fn put_alert_instance(&self, i: &AlertInstanceRecord) -> Result<()> {
        let row = InstanceRow {
            project: i.project.as_str().to_string(),
            fingerprint: i.fingerprint.clone(),
            rule: i.rule.clone(),
            segment: i.segment.clone().unwrap_or_default(),
            state: i.state.clone(),
            value: i.value,
            threshold: i.threshold,
            since_ms: i.since_ms,
            last_evaluated_ms: i.last_evaluated_ms,
            last_notified_ms: i.last_notified_ms,
            clear_since_ms: i.clear_since_ms,
            verdict: i.verdict.clone(),
            events: i.events,
            severity: i.severity.clone(),
            silenced_until_ms: i.silenced_until_ms,
            version: self.next_row_version(),
        };
        self.insert_control("alert_instances", &row).await
    }

    #[tracing::instrument(skip_all, fields(limit))]
    async fn notifications(&self, project: Option<&ProjectName>, limit: u32) -> Result<Vec<NotificationRecord>> {
        // Filtering on `project` and ordering on `created_at_ms` in SQL is
        // safe although they are outside the sorting key: every version of a
        // notification row carries the same project and creation time.
        let rows = self
            .client
            .query(
                "SELECT ?fields FROM notifications FINAL WHERE (? = '' OR project = ?) \
                 ORDER BY created_at_ms DESC, id DESC LIMIT ?",
            )
            .bind(project.map_or("", |p| p.as_str()))
            .bind(project.map_or("", |p| p.as_str()))
            .bind(limit)
            .fetch_all::<NotificationRow>()
            .await?;
        rows.into_iter()
            .map(|r| {
                Ok(NotificationRecord {
                    id: r.id,
                    fingerprint: r.fingerprint,
                    rule: r.rule,
                    project: parse_project(&r.project)?,
                    channel: r.channel,
                    kind: r.kind,
                    status: r.status,
                    attempts: r.attempts,
                    last_error: optional(r.last_error),
                    created_at_ms: r.created_at_ms,
                    updated_at_ms: r.updated_at_ms,
                    summary: r.summary,
                })
            })
            .collect()
    }

    #[tracing::instrument(skip_all, fields(id = %n.id))]
    async fn put_notification(&self, n: &NotificationRecord) -> Result<()> {
        let row = NotificationRow {
            id: n.id.clone(),
            fingerprint: n.fingerprint.clone(),
            rule: n.rule.clone(),
            project: n.project.as_str().to_string(),
            channel: n.channel.clone(),
            kind: n.kind.clone(),
            status: n.status.clone(),
            attempts: n.attempts,
            last_error: n.last_error.clone().unwrap_or_default(),
            created_at_ms: n.created_at_ms,
            updated_at_ms: n.updated_at_ms,
            summary: n.summary.clone(),
            version: self.next_row_version(),
        };
        self.insert_control("notifications", &row).await
    }

    #[tracing::instrument(skip_all)]
    async fn silences(&self, now_ms: i64) -> Result<Vec<Silence>> {
        let mut silences = self
            .silence_rows()
            .await?
            .into_iter()
            .filter(|r| r.deleted == 0 && r.ends_at_ms > now_ms)
            .map(SilenceRow::into_silence)
            .collect::<Result<Vec<_>>>()?;
        silences.sort_by(|a, b| (a.starts_at_ms, &a.id).cmp(&(b.starts_at_ms, &b.id)));
        Ok(silences)
    }

    #[tracing::instrument(skip_all, fields(id = %s.id))]
    async fn put_silence(&self, s: &Silence) -> Result<()> {
        let row = self.silence_row(s, false);
        self.insert_control("silences", &row).await
    }

    #[tracing::instrument(skip_all, fields(id))]
    async fn remove_silence(&self, id: &str) -> Result<bool> {
        let rows = self.silence_rows().await?;
        let Some(existing) = rows.into_iter().find(|r| r.id == id && r.deleted == 0) else {
            return Ok(false);
        };
        let mut tombstone = self.silence_row(&existing.into_silence()?, true);
        tombstone.comment.clear();
        self.insert_control("silences", &tombstone).await?;
        Ok(true)
    }

    /// The lease rule of the module doc.
    #[tracing::instrument(skip_all, fields(name, holder))]
    async fn try_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let claims = self.latest_claims(name).await?;
        let term = claims.first().map_or(0, |c| c.term);
        if let Some(current) = winner(&claims).cloned() {
            if current.expires_ms > now_ms {
                if current.holder != holder {
                    return Ok(false);
                }
                // Renewal: only the holder writes this row, nobody races it.
                let renewed =
                    ClaimRow { expires_ms: now_ms.saturating_add(ttl_ms), version: self.next_row_version(), ..current };
                self.insert_control("lease_claims", &renewed).await?;
                return Ok(true);
            }
        }
        let claim = ClaimRow {
            name: name.to_string(),
            term: term + 1,
            holder: holder.to_string(),
            claimed_at_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl_ms),
            version: self.next_row_version(),
        };
        self.insert_control("lease_claims", &claim).await?;
        tokio::time::sleep(CLAIM_SETTLE).await;
        let claims = self.latest_claims(name).await?;
        let won = winner(&claims).is_some_and(|w| w.term == term + 1 && w.holder == holder);
        tracing::info!(name, holder, term = term + 1, won, "Claimed a lease.");
        Ok(won)
    }

    #[tracing::instrument(skip_all, fields(%fingerprint, %channel))]
    async fn ticket(
        &self,
        project: &ProjectName,
        fingerprint: &str,
        channel: &str,
        episode_ms: i64,
    ) -> Result<Option<TicketRecord>> {
        // A plain MergeTree: a ticket written twice (a retried insert, two
        // replicas) is two rows, and the oldest is the ticket.
        let row = self
            .client
            .query(
                "SELECT ?fields FROM alert_tickets \
                 WHERE project = ? AND fingerprint = ? AND channel = ? AND episode_ms = ? \
                 ORDER BY created_at_ms, ticket_key LIMIT 1",
            )
            .bind(project.as_str())
            .bind(fingerprint)
            .bind(channel)
            .bind(episode_ms)
            .fetch_optional::<TicketRow>()
            .await?;
        row.map(|r| {
            Ok(TicketRecord {
                project: parse_project(&r.project)?,
                fingerprint: r.fingerprint,
                channel: r.channel,
                episode_ms: r.episode_ms,
                ticket_key: r.ticket_key,
                created_at_ms: r.created_at_ms,
            })
        })
        .transpose()
    }

    #[tracing::instrument(skip_all, fields(ticket = %t.ticket_key))]
    async fn put_ticket(&self, t: &TicketRecord) -> Result<()> {
        let row = TicketRow {
            project: t.project.as_str().to_string(),
            fingerprint: t.fingerprint.clone(),
            channel: t.channel.clone(),
            episode_ms: t.episode_ms,
            ticket_key: t.ticket_key.clone(),
            created_at_ms: t.created_at_ms,
        };
        self.insert_control("alert_tickets", &row).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(holder: &str, claimed_at_ms: i64) -> ClaimRow {
        ClaimRow { name: "l".into(), term: 1, holder: holder.into(), claimed_at_ms, expires_ms: 0, version: 0 }
    }

    #[test]
    fn the_earliest_claim_wins_and_equal_times_go_to_the_smaller_holder_name() {
        let claims = [claim("b", 10), claim("a", 20), claim("c", 10)];
        assert_eq!(winner(&claims).map(|c| c.holder.as_str()), Some("b"));
        assert!(winner(&[]).is_none());
    }
}
