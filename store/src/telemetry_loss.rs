//! Telemetry loss: what client probes report they had to drop (buffer full,
//! expired, rejected by the collector...), so the dashboard can show that the
//! data it draws on is incomplete, and for which devices.
//!
//! Probes send cumulative counts since their storage was created, so a store
//! keeps the largest value seen per `(project, device, reason)`: re-sending a
//! report changes nothing, and a lost report is repaired by the next one.

use std::collections::BTreeMap;

/// Telemetry loss reported by devices over a window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryLoss {
    /// Devices whose loss report was updated within the window and that
    /// report at least one dropped event.
    pub devices_reporting_loss: u64,
    /// Events dropped by reason (`buffer_full`, `expired`, `rejected`, ...),
    /// summed over those devices, each at its latest cumulative value.
    pub dropped_by_reason: BTreeMap<String, u64>,
}

impl TelemetryLoss {
    /// Every event dropped, whatever the reason.
    pub fn total_dropped(&self) -> u64 {
        self.dropped_by_reason.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}
