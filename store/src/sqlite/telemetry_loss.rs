//! Telemetry-loss reports in SQLite: one row per `(project, device, reason)`,
//! upserted to the larger cumulative count (see [`crate::TelemetryLoss`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use rusqlite::params;
use synchealth_schema::ProjectName;

use super::{bits_u64, u64_bits, SqliteStore};
use crate::{Result, TelemetryLoss};

#[async_trait]
impl crate::LossReports for SqliteStore {
    async fn record_telemetry_loss(
        &self,
        project: &ProjectName,
        device_id: &str,
        dropped: &BTreeMap<String, u64>,
        reported_at_ms: i64,
    ) -> Result<()> {
        // A zero count says nothing was lost: no row needed.
        let rows: Vec<(String, u64)> = dropped.iter().filter(|(_, n)| **n > 0).map(|(r, n)| (r.clone(), *n)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let project = project.as_str().to_string();
        let device_id = device_id.to_string();
        self.write(move |conn| {
            let tx = conn.transaction()?;
            {
                // Counts are compared as stored; u64_bits keeps them positive
                // for anything below 2^63, which no device reaches.
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO telemetry_loss (project, device_id, reason, dropped, reported_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (project, device_id, reason) DO UPDATE SET
                        dropped = max(dropped, excluded.dropped),
                        reported_at_ms = max(reported_at_ms, excluded.reported_at_ms)",
                )?;
                for (reason, count) in &rows {
                    stmt.execute(params![project, device_id, reason, u64_bits(*count), reported_at_ms])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn telemetry_loss(&self, project: &ProjectName, from_ms: i64, to_ms: i64) -> Result<TelemetryLoss> {
        let project = project.as_str().to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT device_id, reason, dropped FROM telemetry_loss
                 WHERE project = ?1 AND reported_at_ms >= ?2 AND reported_at_ms < ?3",
            )?;
            let mut rows = stmt.query(params![project, from_ms, to_ms])?;
            let mut loss = TelemetryLoss::default();
            let mut devices = std::collections::BTreeSet::new();
            while let Some(row) = rows.next()? {
                let device: String = row.get(0)?;
                let reason: String = row.get(1)?;
                let dropped = bits_u64(row.get(2)?);
                if dropped > 0 {
                    devices.insert(device);
                    let total = loss.dropped_by_reason.entry(reason).or_default();
                    *total = total.saturating_add(dropped);
                }
            }
            loss.devices_reporting_loss = devices.len() as u64;
            Ok(loss)
        })
        .await
    }
}
