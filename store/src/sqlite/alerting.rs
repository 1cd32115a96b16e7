//! Alerting records on SQLite: plain tables with primary keys, upserts, and
//! the evaluator lease as one row per lease, claimed or renewed inside an
//! `IMMEDIATE` transaction, so two processes on the same file never both win
//! (the second waits for the first's write lock, then sees its claim).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use synchealth_schema::ProjectName;

use super::{project_of, SqliteStore};
use crate::alerting::{AlertInstanceRecord, NotificationRecord, Silence, TicketRecord};
use crate::Result;

const INSTANCE_COLUMNS: &str = "project, fingerprint, rule, segment, state, value, threshold, since_ms, \
    last_evaluated_ms, last_notified_ms, clear_since_ms, verdict, events, severity, silenced_until_ms";

const NOTIFICATION_COLUMNS: &str = "id, fingerprint, rule, project, channel, kind, status, attempts, \
    last_error, created_at_ms, updated_at_ms, summary";

const SILENCE_COLUMNS: &str = "id, rule, project, segment, starts_at_ms, ends_at_ms, created_by, comment";

fn instance_from_row(row: &Row<'_>) -> Result<AlertInstanceRecord> {
    let project: String = row.get(0)?;
    Ok(AlertInstanceRecord {
        project: project_of(&project)?,
        fingerprint: row.get(1)?,
        rule: row.get(2)?,
        segment: row.get(3)?,
        state: row.get(4)?,
        value: row.get(5)?,
        threshold: row.get(6)?,
        since_ms: row.get(7)?,
        last_evaluated_ms: row.get(8)?,
        last_notified_ms: row.get(9)?,
        clear_since_ms: row.get(10)?,
        verdict: row.get(11)?,
        events: row.get::<_, i64>(12)?.max(0) as u64,
        severity: row.get(13)?,
        silenced_until_ms: row.get(14)?,
    })
}

fn notification_from_row(row: &Row<'_>) -> Result<NotificationRecord> {
    let project: String = row.get(3)?;
    Ok(NotificationRecord {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        rule: row.get(2)?,
        project: project_of(&project)?,
        channel: row.get(4)?,
        kind: row.get(5)?,
        status: row.get(6)?,
        attempts: row.get(7)?,
        last_error: row.get(8)?,
        created_at_ms: row.get(9)?,
        updated_at_ms: row.get(10)?,
        summary: row.get(11)?,
    })
}

fn silence_from_row(row: &Row<'_>) -> Result<Silence> {
    let project: String = row.get(2)?;
    Ok(Silence {
        id: row.get(0)?,
        rule: row.get(1)?,
        project: project_of(&project)?,
        segment: row.get(3)?,
        starts_at_ms: row.get(4)?,
        ends_at_ms: row.get(5)?,
        created_by: row.get(6)?,
        comment: row.get(7)?,
    })
}

fn collect<T>(mut rows: rusqlite::Rows<'_>, from_row: fn(&Row<'_>) -> Result<T>) -> Result<Vec<T>> {
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(from_row(row)?);
    }
    Ok(out)
}

/// Claim-or-renew in one write transaction: the lease row is read and
/// replaced under the writer lock, so no other claimant interleaves.
fn lease(conn: &mut Connection, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: Option<(String, i64)> = tx
        .prepare_cached("SELECT holder, expires_ms FROM leases WHERE name = ?1")?
        .query_row([name], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let free = match &current {
        None => true,
        Some((current_holder, expires_ms)) => current_holder == holder || *expires_ms <= now_ms,
    };
    if free {
        tx.prepare_cached(
            "INSERT INTO leases (name, holder, expires_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_ms = excluded.expires_ms",
        )?
        .execute(params![name, holder, now_ms.saturating_add(ttl_ms)])?;
    }
    tx.commit()?;
    Ok(free)
}

#[async_trait]
impl crate::Alerting for SqliteStore {
    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn alert_instances(&self) -> Result<Vec<AlertInstanceRecord>> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INSTANCE_COLUMNS} FROM alert_instances ORDER BY project, rule, segment"
            ))?;
            let rows = collect(stmt.query([])?, instance_from_row);
            rows
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", fingerprint = %instance.fingerprint))]
    async fn put_alert_instance(&self, instance: &AlertInstanceRecord) -> Result<()> {
        let i = instance.clone();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO alert_instances ({INSTANCE_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ))?
            .execute(params![
                i.project.as_str(),
                i.fingerprint,
                i.rule,
                i.segment,
                i.state,
                i.value,
                i.threshold,
                i.since_ms,
                i.last_evaluated_ms,
                i.last_notified_ms,
                i.clear_since_ms,
                i.verdict,
                i64::try_from(i.events).unwrap_or(i64::MAX),
                i.severity,
                i.silenced_until_ms,
            ])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", limit))]
    async fn notifications(&self, project: Option<&ProjectName>, limit: u32) -> Result<Vec<NotificationRecord>> {
        let project = project.map(|p| p.as_str().to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE (?1 IS NULL OR project = ?1)
                 ORDER BY created_at_ms DESC, id DESC LIMIT ?2"
            ))?;
            let rows = collect(stmt.query(params![project, limit])?, notification_from_row);
            rows
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", id = %notification.id))]
    async fn put_notification(&self, notification: &NotificationRecord) -> Result<()> {
        let n = notification.clone();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO notifications ({NOTIFICATION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
            ))?
            .execute(params![
                n.id,
                n.fingerprint,
                n.rule,
                n.project.as_str(),
                n.channel,
                n.kind,
                n.status,
                n.attempts,
                n.last_error,
                n.created_at_ms,
                n.updated_at_ms,
                n.summary,
            ])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn silences(&self, now_ms: i64) -> Result<Vec<Silence>> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends_at_ms > ?1 ORDER BY starts_at_ms, id"
            ))?;
            let rows = collect(stmt.query([now_ms])?, silence_from_row);
            rows
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", id = %silence.id))]
    async fn put_silence(&self, silence: &Silence) -> Result<()> {
        let s = silence.clone();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT OR REPLACE INTO silences ({SILENCE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                s.id,
                s.rule,
                s.project.as_str(),
                s.segment,
                s.starts_at_ms,
                s.ends_at_ms,
                s.created_by,
                s.comment
            ])?;
            Ok(())
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", id))]
    async fn remove_silence(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.write(move |conn| Ok(conn.prepare_cached("DELETE FROM silences WHERE id = ?1")?.execute([id])? > 0)).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", name, holder))]
    async fn try_lease(&self, name: &str, holder: &str, now_ms: i64, ttl_ms: i64) -> Result<bool> {
        let (name, holder) = (name.to_string(), holder.to_string());
        self.write(move |conn| lease(conn, &name, &holder, now_ms, ttl_ms)).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", fingerprint, channel))]
    async fn ticket(
        &self,
        project: &ProjectName,
        fingerprint: &str,
        channel: &str,
        episode_ms: i64,
    ) -> Result<Option<TicketRecord>> {
        let (project, fingerprint, channel) = (project.clone(), fingerprint.to_string(), channel.to_string());
        self.read(move |conn| {
            let found = conn
                .prepare_cached(
                    "SELECT ticket_key, created_at_ms FROM alert_tickets
                     WHERE project = ?1 AND fingerprint = ?2 AND channel = ?3 AND episode_ms = ?4",
                )?
                .query_row(params![project.as_str(), fingerprint, channel, episode_ms], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()?;
            Ok(found.map(|(ticket_key, created_at_ms)| TicketRecord {
                project,
                fingerprint,
                channel,
                episode_ms,
                ticket_key,
                created_at_ms,
            }))
        })
        .await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite", ticket = %ticket.ticket_key))]
    async fn put_ticket(&self, ticket: &TicketRecord) -> Result<()> {
        let t = ticket.clone();
        self.write(move |conn| {
            // The first key of an episode stays: a second is a duplicate.
            conn.prepare_cached(
                "INSERT OR IGNORE INTO alert_tickets (project, fingerprint, channel, episode_ms, ticket_key, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![t.project.as_str(), t.fingerprint, t.channel, t.episode_ms, t.ticket_key, t.created_at_ms])?;
            Ok(())
        })
        .await
    }
}
