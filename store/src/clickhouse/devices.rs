//! The device lists ([`crate::DeviceList`]) in ClickHouse. 18.16 has no
//! window functions, so each device's attempts are gathered per device as an
//! array sorted latest first (`(event_time_ms, event_id as text)` descending,
//! the same order as SQLite's), and the failures in a row and the
//! never-shrinking queue are read off that array with array functions.

use clickhouse::Row;
use serde::Deserialize;

use super::dedup::NOT_COMPENSATED_SQL;
use super::{window_filter, ClickHouseStore};
use crate::devices::{DeviceList, DeviceSummary, MAX_DEVICE_LIST, STUCK_ATTEMPTS};
use crate::metrics::Query;
use crate::Result;

/// One listed device, in the query's column order.
#[derive(Row, Deserialize)]
struct DeviceRow {
    device_id: String,
    last_seen_ms: i64,
    app_version: String,
    os: String,
    network: String,
    queue_depth: u32,
    /// -1 when the latest event said "never synced" (no Nullable in tuples).
    staleness_ms: i64,
    failures: u64,
    last_success: u8,
    error_kind: String,
    error_message: String,
    n: u64,
}

/// The condition and order of each list; constants only, values are binds.
fn list_sql(list: DeviceList) -> (&'static str, &'static str) {
    match list {
        DeviceList::QueueDepth => ("queue_depth > 0", "queue_depth DESC"),
        DeviceList::Staleness => ("staleness_ms >= 0", "staleness_ms DESC"),
        DeviceList::ConsecutiveFailures => ("failures > 0", "failures DESC"),
        DeviceList::Stuck => ("stuck = 1 AND queue_depth > 0", "queue_depth DESC"),
        DeviceList::Quiet { .. } => ("last_seen_ms < ?", "last_seen_ms ASC"),
    }
}

impl ClickHouseStore {
    /// [`crate::Store::devices`] for ClickHouse.
    #[tracing::instrument(skip_all, fields(project = %query.project, list = list.name(), limit))]
    pub(super) async fn devices_impl(
        &self,
        query: &Query,
        list: DeviceList,
        limit: u32,
    ) -> Result<Vec<DeviceSummary>> {
        if query.from_ms >= query.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let (filter, args) = window_filter(query);
        let (condition, order) = list_sql(list);
        // `hist` holds (time, id text, success, queue depth) latest first.
        // Failures in a row: the attempts before the first success in it.
        // Stuck: the last STUCK_ATTEMPTS queue depths pairwise never smaller
        // than the one before them (the slices are cut to the same length for
        // devices with fewer attempts, which `arrayAll` requires even when
        // `n` already rules them out). Both numbers are formatted constants.
        let pairs = STUCK_ATTEMPTS.saturating_sub(1).max(1);
        let sql = format!(
            "SELECT device_id, tupleElement(latest, 1) AS last_seen_ms, tupleElement(latest, 2) AS app_version, \
             tupleElement(latest, 3) AS os, tupleElement(latest, 4) AS network, \
             tupleElement(latest, 5) AS queue_depth, tupleElement(latest, 6) AS staleness_ms, failures, \
             tupleElement(latest, 7) AS last_success, tupleElement(latest, 8) AS error_kind, \
             tupleElement(latest, 9) AS error_message, n \
             FROM (SELECT device_id, n, latest, \
                   if(first_ok = 0, toUInt64(length(hist)), toUInt64(first_ok - 1)) AS failures, \
                   toUInt8(n >= {STUCK_ATTEMPTS} AND arrayAll((newer, older) -> newer.4 >= older.4, \
                       arraySlice(hist, 1, least(length(hist) - 1, {pairs})), \
                       arraySlice(hist, 2, least(length(hist) - 1, {pairs})))) AS stuck \
                   FROM (SELECT device_id, toUInt64(count()) AS n, \
                         argMax((event_time_ms, CAST(app_version AS String), CAST(os AS String), \
                                 CAST(network AS String), queue_depth, \
                                 if(isNull(staleness_ms), toInt64(-1), toInt64(assumeNotNull(staleness_ms))), \
                                 success, CAST(error_kind AS String), error_message), \
                                (event_time_ms, toString(event_id))) AS latest, \
                         arrayReverseSort(groupArray((event_time_ms, toString(event_id), success, queue_depth))) AS hist, \
                         arrayFirstIndex(x -> x.3 = 1, hist) AS first_ok \
                         FROM events FINAL WHERE {filter} AND {NOT_COMPENSATED_SQL} GROUP BY device_id)) \
             WHERE {condition} ORDER BY {order}, device_id LIMIT ?"
        );
        let mut q = args.iter().fold(self.reader.query(&sql), |q, a| q.bind(a)).bind(query.project.as_str());
        let silent_for_ms = match list {
            DeviceList::Quiet { silent_for_ms } => Some(silent_for_ms.max(0)),
            _ => None,
        };
        if let Some(silent) = silent_for_ms {
            q = q.bind(query.to_ms.saturating_sub(silent));
        }
        let rows = q
            .bind(limit.min(MAX_DEVICE_LIST))
            .fetch_all::<DeviceRow>()
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| DeviceSummary {
                silent_for_ms: silent_for_ms.map(|_| query.to_ms - r.last_seen_ms),
                device_id: r.device_id,
                last_seen_ms: r.last_seen_ms,
                app_version: r.app_version,
                os: r.os,
                network: r.network,
                queue_depth: r.queue_depth,
                staleness_ms: (r.staleness_ms >= 0).then_some(r.staleness_ms),
                consecutive_failures: u32::try_from(r.failures).unwrap_or(u32::MAX),
                last_success: r.last_success != 0,
                last_error_kind: (!r.error_kind.is_empty()).then_some(r.error_kind),
                last_error_message: (!r.error_message.is_empty()).then_some(r.error_message),
                attempts_in_window: r.n,
            })
            .collect())
    }
}
