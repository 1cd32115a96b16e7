//! [`crate::LossReports`] in ClickHouse: rows in a `ReplacingMergeTree`
//! keyed by `(project, device_id, reason)` whose version is the cumulative
//! count itself, so merges keep the largest (see [`crate::TelemetryLoss`]).
//! Reads take `max()` per key, so rows not yet merged count once.

use std::collections::BTreeMap;

use clickhouse::Row;
use serde::{Deserialize, Serialize};
use synchealth_schema::ProjectName;

use async_trait::async_trait;

use super::ClickHouseStore;
use crate::{Result, TelemetryLoss};

#[derive(Row, Serialize, Deserialize)]
struct TelemetryLossRow {
    project: String,
    device_id: String,
    reason: String,
    dropped: u64,
    reported_at_ms: i64,
    version: u64,
}

#[derive(Row, Deserialize)]
struct LossRead {
    device_id: String,
    reason: String,
    dropped: u64,
}

#[async_trait]
impl crate::LossReports for ClickHouseStore {
    async fn record_telemetry_loss(
        &self,
        project: &ProjectName,
        device_id: &str,
        dropped: &BTreeMap<String, u64>,
        reported_at_ms: i64,
    ) -> Result<()> {
        if dropped.values().all(|n| *n == 0) {
            return Ok(());
        }
        let mut insert = self.client.insert::<TelemetryLossRow>("telemetry_loss").await?;
        for (reason, count) in dropped.iter().filter(|(_, n)| **n > 0) {
            insert
                .write(&TelemetryLossRow {
                    project: project.as_str().to_string(),
                    device_id: device_id.to_string(),
                    reason: reason.clone(),
                    dropped: *count,
                    reported_at_ms,
                    version: *count,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    async fn telemetry_loss(&self, project: &ProjectName, from_ms: i64, to_ms: i64) -> Result<TelemetryLoss> {
        let rows = self
            .client
            .query(
                "SELECT device_id, reason, toUInt64(max(dropped)) AS dropped FROM telemetry_loss \
                 WHERE project = ? GROUP BY device_id, reason \
                 HAVING max(reported_at_ms) >= ? AND max(reported_at_ms) < ?",
            )
            .bind(project.as_str())
            .bind(from_ms)
            .bind(to_ms)
            .fetch_all::<LossRead>()
            .await?;
        let mut loss = TelemetryLoss::default();
        let mut devices = std::collections::BTreeSet::new();
        for row in rows.into_iter().filter(|r| r.dropped > 0) {
            devices.insert(row.device_id);
            let total = loss.dropped_by_reason.entry(row.reason).or_default();
            *total = total.saturating_add(row.dropped);
        }
        loss.devices_reporting_loss = devices.len() as u64;
        Ok(loss)
    }
}
