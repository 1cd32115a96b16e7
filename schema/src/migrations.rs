//! Versioned, idempotent storage migrations for both stores.
//!
//! Each migration is applied once, in order, and recorded in the store's
//! `schema_migrations` table; every statement is also written to be harmless
//! if run again (`IF NOT EXISTS`), so a crash between applying and recording
//! leaves nothing to repair. ClickHouse statements carry placeholders that the
//! store fills from the server version it talks to (`{label}` is
//! `LowCardinality(String)` where the server has it, `{ttl}` a TTL clause where
//! it has TTL), so one text serves ClickHouse 18.16 and current releases.

/// One migration: a version, a name and its statements.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; never reused.
    pub version: u32,
    /// Short description, recorded beside the version.
    pub name: &'static str,
    /// The SQL text, one or more statements separated by `;` at line ends.
    pub sql: &'static str,
}

impl Migration {
    /// The statements of the migration, comments dropped, in order.
    pub fn statements(&self) -> Vec<String> {
        let without_comments: String = self
            .sql
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .map(|l| match l.find(" -- ") {
                Some(at) => &l[..at],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        without_comments
            .split(";\n")
            .map(|s| s.trim().trim_end_matches(';').trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// ClickHouse migrations, in order.
pub const CLICKHOUSE: &[Migration] = &[
    Migration { version: 1, name: "events", sql: include_str!("../migrations/clickhouse/0001_events.sql") },
    Migration {
        version: 2,
        name: "control plane",
        sql: include_str!("../migrations/clickhouse/0002_control_plane.sql"),
    },
    Migration { version: 3, name: "alerting", sql: include_str!("../migrations/clickhouse/0003_alerting.sql") },
    Migration { version: 4, name: "sessions", sql: include_str!("../migrations/clickhouse/0004_sessions.sql") },
    Migration {
        version: 5,
        name: "telemetry loss",
        sql: include_str!("../migrations/clickhouse/0005_telemetry_loss.sql"),
    },
    Migration {
        version: 6,
        name: "dashboard rollups",
        sql: include_str!("../migrations/clickhouse/0006_dashboard_rollups.sql"),
    },
    Migration { version: 7, name: "device state", sql: include_str!("../migrations/clickhouse/0007_device_state.sql") },
    Migration { version: 8, name: "exactly once", sql: include_str!("../migrations/clickhouse/0008_exactly_once.sql") },
    Migration { version: 9, name: "key origins", sql: include_str!("../migrations/clickhouse/0009_key_origins.sql") },
    Migration {
        version: 10,
        name: "device segment hour",
        sql: include_str!("../migrations/clickhouse/0010_device_segment_hour.sql"),
    },
    Migration {
        version: 11,
        name: "alert tickets",
        sql: include_str!("../migrations/clickhouse/0011_alert_tickets.sql"),
    },
    Migration {
        version: 12,
        name: "conflicts, queue lag and dimensions",
        sql: include_str!("../migrations/clickhouse/0012_conflicts_queue_lag_dimensions.sql"),
    },
    Migration {
        version: 13,
        name: "error fingerprint",
        sql: include_str!("../migrations/clickhouse/0013_error_fingerprint.sql"),
    },
    Migration {
        version: 14,
        name: "project dimensions",
        sql: include_str!("../migrations/clickhouse/0014_project_dimensions.sql"),
    },
];

/// SQLite migrations, in order.
pub const SQLITE: &[Migration] = &[
    Migration { version: 1, name: "events", sql: include_str!("../migrations/sqlite/0001_events.sql") },
    Migration { version: 2, name: "control plane", sql: include_str!("../migrations/sqlite/0002_control_plane.sql") },
    Migration { version: 3, name: "alerting", sql: include_str!("../migrations/sqlite/0003_alerting.sql") },
    Migration { version: 4, name: "sessions", sql: include_str!("../migrations/sqlite/0004_sessions.sql") },
    Migration { version: 5, name: "telemetry loss", sql: include_str!("../migrations/sqlite/0005_telemetry_loss.sql") },
    Migration {
        version: 6,
        name: "dashboard rollups",
        sql: include_str!("../migrations/sqlite/0006_dashboard_rollups.sql"),
    },
    Migration { version: 7, name: "rollups", sql: include_str!("../migrations/sqlite/0007_rollups.sql") },
    Migration { version: 8, name: "device lookup", sql: include_str!("../migrations/sqlite/0008_device_lookup.sql") },
    Migration { version: 9, name: "key origins", sql: include_str!("../migrations/sqlite/0009_key_origins.sql") },
    Migration {
        version: 10,
        name: "device segment hour",
        sql: include_str!("../migrations/sqlite/0010_device_segment_hour.sql"),
    },
    Migration { version: 11, name: "alert tickets", sql: include_str!("../migrations/sqlite/0011_alert_tickets.sql") },
    Migration {
        version: 12,
        name: "conflicts, queue lag and dimensions",
        sql: include_str!("../migrations/sqlite/0012_conflicts_queue_lag_dimensions.sql"),
    },
    Migration {
        version: 13,
        name: "error fingerprint",
        sql: include_str!("../migrations/sqlite/0013_error_fingerprint.sql"),
    },
    Migration {
        version: 14,
        name: "project dimensions",
        sql: include_str!("../migrations/sqlite/0014_project_dimensions.sql"),
    },
    Migration {
        version: 15,
        name: "signal indexes",
        sql: include_str!("../migrations/sqlite/0015_signal_indexes.sql"),
    },
];

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_statements_split() {
        for list in [CLICKHOUSE, SQLITE] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
        }
        assert_eq!(CLICKHOUSE[1].statements().len(), 3);
        assert_eq!(SQLITE[0].statements().len(), 3);
        assert!(SQLITE[1].statements()[2].contains("projects TEXT NOT NULL"));
        assert!(!SQLITE[1].statements()[2].contains("JSON array"));
    }

    #[test]
    fn migration_12_adds_one_column_per_statement_to_events_on_both_stores() {
        let clickhouse = CLICKHOUSE.iter().find(|m| m.version == 12).unwrap().statements();
        let sqlite = SQLITE.iter().find(|m| m.version == 12).unwrap().statements();
        assert_eq!(clickhouse.len(), 8, "{clickhouse:?}");
        assert_eq!(sqlite.len(), 4, "{sqlite:?}");
        assert!(clickhouse.iter().all(|s| s.starts_with("ALTER TABLE {db}.events ADD COLUMN ") && !s.contains(',')));
        assert!(sqlite.iter().all(|s| s.starts_with("ALTER TABLE events ADD COLUMN ")));
        for column in ["queue_oldest_at_ms", "queue_lag_ms"] {
            assert!(clickhouse.iter().any(|s| s.contains(column)) && sqlite.iter().any(|s| s.contains(column)));
        }
    }
}
