//! SQL helpers more than one SQLite file shares: binding named parameters,
//! reading a device's latest values and text bytes back from a row, the two
//! per-segment rollup tables ([`Unit`]) and the blob format of their duration
//! histograms ([`encode`], [`decode`], [`merge`]), which `events.rs` writes
//! and `aggregate.rs` reads.
//! Nothing here runs a query of its own, so every other file may use it and
//! it uses none of them.

use std::collections::BTreeMap;

use rusqlite::types::{Value, ValueRef};
use rusqlite::{Row, Statement};

use crate::{Error, Result};

/// Binds those of `params` that the statement uses (not every statement
/// uses every parameter) and runs it.
pub(super) fn bound_query<'s>(stmt: &'s mut Statement<'_>, params: &[(&str, Value)]) -> Result<rusqlite::Rows<'s>> {
    for (name, value) in params {
        if let Some(index) = stmt.parameter_index(name)? {
            stmt.raw_bind_parameter(index, value)?;
        }
    }
    Ok(stmt.raw_query())
}

/// The values the device metrics take from a device's latest event.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct DeviceValues {
    pub(super) queue_depth: i64,
    pub(super) queue_bucket: u16,
    pub(super) staleness_bucket: u16,
    pub(super) never_synced: bool,
}

impl DeviceValues {
    /// From the columns queue depth, queue bucket, staleness bucket and
    /// never-synced flag of `row`, starting at `first`.
    pub(super) fn from_row(row: &Row<'_>, first: usize) -> Result<Self> {
        Ok(DeviceValues {
            queue_depth: row.get(first)?,
            queue_bucket: row.get(first + 1)?,
            staleness_bucket: row.get(first + 2)?,
            never_synced: row.get(first + 3)?,
        })
    }
}

/// A text column's bytes, borrowed from the row: for comparing, with no
/// UTF-8 check.
pub(super) fn bytes<'r>(row: &'r Row<'_>, index: usize) -> Result<&'r [u8]> {
    match row.get_ref(index)? {
        ValueRef::Text(bytes) => Ok(bytes),
        other => Err(Error::Corrupt(format!("column {index} is {:?}, not text", other.data_type()))),
    }
}

/// The two per-segment rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unit {
    Minute,
    Hour,
}

impl Unit {
    pub(super) fn table(self) -> &'static str {
        match self {
            Unit::Minute => "rollup_minute",
            Unit::Hour => "rollup_hour",
        }
    }

    /// The time column, Unix seconds.
    pub(super) fn column(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
        }
    }

    pub(super) fn select_durations(self) -> String {
        format!(
            "SELECT durations FROM {} WHERE project = ?1 AND {} = ?2 AND app_version = ?3 AND os = ?4 AND network = ?5",
            self.table(),
            self.column()
        )
    }

    pub(super) fn upsert(self) -> String {
        format!(
            "INSERT INTO {table} (project, {unit}, app_version, os, network, events, attempts, successes,
                conflicted, late, durations)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (project, {unit}, app_version, os, network) DO UPDATE SET
                events = events + excluded.events, attempts = attempts + excluded.attempts,
                successes = successes + excluded.successes, conflicted = conflicted + excluded.conflicted,
                late = late + excluded.late, durations = excluded.durations",
            table = self.table(),
            unit = self.column()
        )
    }
}

/// Bytes of one histogram entry: a `u16` bucket and an `f64` weight.
const ENTRY: usize = 10;

/// A histogram as stored: `(bucket u16, weight f64)` little-endian pairs in
/// increasing bucket order.
pub(super) fn encode(histogram: &BTreeMap<u16, f64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(histogram.len() * ENTRY);
    for (bucket, weight) in histogram {
        out.extend_from_slice(&bucket.to_le_bytes());
        out.extend_from_slice(&weight.to_le_bytes());
    }
    out
}

/// The entries of a stored histogram, in its order.
pub(super) fn decode(blob: &[u8]) -> Result<impl Iterator<Item = (u16, f64)> + '_> {
    if !blob.len().is_multiple_of(ENTRY) {
        return Err(Error::Corrupt(format!("a duration histogram of {} bytes", blob.len())));
    }
    Ok(blob.chunks_exact(ENTRY).map(|entry| {
        let mut bucket = [0u8; 2];
        let mut weight = [0u8; 8];
        bucket.copy_from_slice(&entry[..2]);
        weight.copy_from_slice(&entry[2..]);
        (u16::from_le_bytes(bucket), f64::from_le_bytes(weight))
    }))
}

/// A stored histogram plus `delta`, encoded: one pass over both, as both
/// are in bucket order.
pub(super) fn merge(stored: &[u8], delta: &BTreeMap<u16, f64>) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(stored.len() + delta.len() * ENTRY);
    let mut push = |bucket: u16, weight: f64| {
        out.extend_from_slice(&bucket.to_le_bytes());
        out.extend_from_slice(&weight.to_le_bytes());
    };
    let mut stored = decode(stored)?.peekable();
    let mut delta = delta.iter().map(|(b, w)| (*b, *w)).peekable();
    loop {
        match (stored.peek().copied(), delta.peek().copied()) {
            (Some((a, wa)), Some((b, wb))) if a == b => {
                push(a, wa + wb);
                stored.next();
                delta.next();
            }
            (Some((a, wa)), Some((b, _))) if a < b => {
                push(a, wa);
                stored.next();
            }
            (_, Some((b, wb))) => {
                push(b, wb);
                delta.next();
            }
            (Some((a, wa)), None) => {
                push(a, wa);
                stored.next();
            }
            (None, None) => break,
        }
    }
    Ok(out)
}

/// A `SyncEvent` for unit tests, every field at its plainest (a success of
/// 10 ms on wifi, app 1.0.0 on iOS, nothing optional); tests set what they
/// vary with struct-update syntax.
#[cfg(test)]
pub(super) fn test_event() -> synchealth_schema::SyncEvent {
    synchealth_schema::SyncEvent {
        event_id: uuid::Uuid::nil(),
        device_id: String::new(),
        occurred_at: time::OffsetDateTime::UNIX_EPOCH,
        success: true,
        duration_ms: 10,
        conflicts: 0,
        queue_depth: 0,
        last_success_at: None,
        app_version: "1.0.0".into(),
        os: "ios".into(),
        os_version: None,
        network: synchealth_schema::Network::Wifi,
        device_model: None,
        sync_type: None,
        trigger: None,
        error_kind: None,
        error_message: None,
        retries: 0,
        records_up: 0,
        records_down: 0,
        bytes_up: 0,
        bytes_down: 0,
        sample_rate: 1.0,
        conflict_details: Vec::new(),
        queue_oldest_at: None,
        dimensions: Default::default(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_round_trips_and_merges_bucket_by_bucket() {
        let stored: BTreeMap<u16, f64> = [(3, 1.0), (200, 2.5), (2100, 4.0)].into();
        let blob = encode(&stored);
        assert_eq!(blob.len(), 3 * ENTRY);
        assert_eq!(decode(&blob).unwrap().collect::<Vec<_>>(), vec![(3, 1.0), (200, 2.5), (2100, 4.0)]);
        let delta: BTreeMap<u16, f64> = [(0, 1.0), (200, 0.5), (300, 2.0), (2100, 1.0)].into();
        let merged = merge(&blob, &delta).unwrap();
        assert_eq!(
            decode(&merged).unwrap().collect::<Vec<_>>(),
            vec![(0, 1.0), (3, 1.0), (200, 3.0), (300, 2.0), (2100, 5.0)]
        );
        assert_eq!(merge(&[], &delta).unwrap(), encode(&delta));
        assert!(decode(&[1, 2, 3]).is_err());
    }
}
