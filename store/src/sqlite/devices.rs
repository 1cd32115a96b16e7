//! The device lists ([`crate::DeviceList`]) in SQLite: one statement per
//! list over the window, with window functions giving each device's events in
//! "latest first" order (`event_time_ms DESC, event_id DESC`, the text of the
//! id as on every store).

use rusqlite::types::Value;
use rusqlite::Connection;

use super::sql::bound_query;
use super::SqliteStore;
use crate::devices::{DeviceList, DeviceSummary, MAX_DEVICE_LIST, STUCK_ATTEMPTS};
use crate::metrics::Query;
use crate::Result;

impl SqliteStore {
    /// [`crate::Store::devices`] for SQLite.
    #[tracing::instrument(skip_all, fields(store = "sqlite", project = %query.project, list = list.name(), limit))]
    pub(super) async fn devices_impl(&self, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
        if query.from_ms >= query.to_ms || limit == 0 {
            return Ok(Vec::new());
        }
        let query = query.clone();
        self.read(move |conn| devices_query(conn, &query, list, limit)).await
    }
}

/// The condition and order of each list; constants only, the values are
/// bound parameters.
fn list_sql(list: DeviceList) -> (&'static str, &'static str) {
    match list {
        DeviceList::QueueDepth => ("r.queue_depth > 0", "r.queue_depth DESC"),
        DeviceList::Staleness => ("r.staleness_ms IS NOT NULL", "r.staleness_ms DESC"),
        DeviceList::ConsecutiveFailures => ("d.failures > 0", "d.failures DESC"),
        DeviceList::Stuck => ("d.n >= :stuck AND d.shrinks = 0 AND r.queue_depth > 0", "r.queue_depth DESC"),
        DeviceList::Quiet { .. } => ("r.event_time_ms < :quiet_before", "r.event_time_ms ASC"),
    }
}

fn devices_query(conn: &Connection, query: &Query, list: DeviceList, limit: u32) -> Result<Vec<DeviceSummary>> {
    let text = |s: &Option<String>| s.clone().map_or(Value::Null, Value::Text);
    let silent_for_ms = match list {
        DeviceList::Quiet { silent_for_ms } => silent_for_ms.max(0),
        _ => 0,
    };
    let params: Vec<(&str, Value)> = vec![
        (":project", Value::Text(query.project.as_str().to_string())),
        (":from_ms", Value::Integer(query.from_ms)),
        (":to_ms", Value::Integer(query.to_ms)),
        (":app_version", text(&query.filters.app_version)),
        (":os", text(&query.filters.os)),
        (":network", query.filters.network.map_or(Value::Null, |n| Value::Text(n.as_str().to_string()))),
        (":stuck", Value::Integer(i64::from(STUCK_ATTEMPTS))),
        (":quiet_before", Value::Integer(query.to_ms.saturating_sub(silent_for_ms))),
        (":limit", Value::Integer(i64::from(limit.min(MAX_DEVICE_LIST)))),
    ];
    let (condition, order) = list_sql(list);
    // `older_queue` is the queue depth of the attempt before each one; an
    // attempt among the last STUCK_ATTEMPTS whose queue is below the one
    // before it "shrank". Failures in a row are the attempts newer than the
    // newest success (all of them without one).
    let sql = format!(
        "WITH f AS (
            SELECT device_id, event_id, event_time_ms, success, queue_depth, staleness_ms,
                   app_version, os, network, error_kind, error_message
            FROM events
            WHERE project = :project
              AND event_time_ms >= :from_ms AND event_time_ms < :to_ms
              AND (:app_version IS NULL OR app_version = :app_version)
              AND (:os IS NULL OR os = :os)
              AND (:network IS NULL OR network = :network)
        ),
        r AS (
            SELECT *, ROW_NUMBER() OVER w AS rn, LEAD(queue_depth) OVER w AS older_queue
            FROM f
            WINDOW w AS (PARTITION BY device_id ORDER BY event_time_ms DESC, event_id DESC)
        ),
        d AS (
            SELECT device_id, COUNT(*) AS n,
                   COALESCE(MIN(CASE WHEN success <> 0 THEN rn END) - 1, COUNT(*)) AS failures,
                   SUM(CASE WHEN rn < :stuck AND queue_depth < older_queue THEN 1 ELSE 0 END) AS shrinks
            FROM r GROUP BY device_id
        )
        SELECT r.device_id, r.event_time_ms, r.app_version, r.os, r.network, r.queue_depth,
               r.staleness_ms, d.failures, r.success, r.error_kind, r.error_message, d.n
        FROM r JOIN d ON d.device_id = r.device_id
        WHERE r.rn = 1 AND {condition}
        ORDER BY {order}, r.device_id
        LIMIT :limit"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = bound_query(&mut stmt, &params)?;
    let mut devices = Vec::new();
    while let Some(row) = rows.next()? {
        let last_seen_ms: i64 = row.get(1)?;
        let error_kind: String = row.get(9)?;
        let error_message: String = row.get(10)?;
        devices.push(DeviceSummary {
            device_id: row.get(0)?,
            last_seen_ms,
            app_version: row.get(2)?,
            os: row.get(3)?,
            network: row.get(4)?,
            queue_depth: row.get(5)?,
            staleness_ms: row.get(6)?,
            consecutive_failures: u32::try_from(row.get::<_, i64>(7)?).unwrap_or(u32::MAX),
            last_success: row.get(8)?,
            last_error_kind: (!error_kind.is_empty()).then_some(error_kind),
            last_error_message: (!error_message.is_empty()).then_some(error_message),
            attempts_in_window: u64::try_from(row.get::<_, i64>(11)?).unwrap_or(0),
            silent_for_ms: matches!(list, DeviceList::Quiet { .. }).then(|| query.to_ms - last_seen_ms),
        });
    }
    Ok(devices)
}
