//! [`crate::Database`] for ClickHouse: the migrations, with the version gates
//! that fill their placeholders (see [`ServerVersion`]), and the reachability
//! check.

use std::collections::HashSet;

use async_trait::async_trait;
use synchealth_schema::migrations::{self, Migration};

use super::sql::quote_identifier;
use super::ClickHouseStore;
use crate::{Error, Result};

/// The first ClickHouse release (major, minor) where a feature is stable, for
/// the gates below. Conservative on purpose: 20.1 is well past the releases
/// where `LowCardinality` stopped being experimental (19.x) and `TTL` appeared
/// (19.6).
const STABLE_SINCE: ServerVersion = ServerVersion { major: 20, minor: 1 };

/// A ClickHouse server version, as far as the gates care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct ServerVersion {
    major: u32,
    minor: u32,
}

impl ServerVersion {
    /// Assumed when the version string is not understood: enable nothing new.
    pub(super) const OLDEST: ServerVersion = ServerVersion { major: 18, minor: 16 };

    /// Parses `version()` output: `18.16.1`, `24.8.4.13`, `25.3.1.2703-testing`.
    pub(super) fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor_text = parts.next()?;
        let digits = minor_text.find(|c: char| !c.is_ascii_digit()).unwrap_or(minor_text.len());
        let minor = minor_text[..digits].parse().ok()?;
        Some(ServerVersion { major, minor })
    }

    /// `LowCardinality(String)` without the experimental setting 18.16 wants.
    fn has_low_cardinality(self) -> bool {
        self >= STABLE_SINCE
    }

    /// The `async_insert` setting (21.11; on by default from 26.2). Older
    /// servers refuse a setting they do not know.
    pub(super) fn has_async_insert(self) -> bool {
        self >= ServerVersion { major: 21, minor: 11 }
    }
}

/// The migration ledger of the database `quoted_db` (already quoted), as
/// one node creates it; cluster mode rewrites the same statement
/// (`cluster.rs`), so both have one definition.
pub(super) fn ledger_sql(quoted_db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {quoted_db}.schema_migrations \
         (version UInt32, name String, applied_at DateTime) ENGINE = MergeTree ORDER BY version"
    )
}

/// `{label}`: the type of short, repetitive text columns.
fn label_type(version: ServerVersion) -> &'static str {
    if version.has_low_cardinality() {
        "LowCardinality(String)"
    } else {
        "String"
    }
}

/// `{ttl}`: empty on every version, on purpose. Servers from 19.6 (gated
/// here at 20.1) have `TTL`, but retention is a runtime setting
/// ([`crate::Events::apply_retention`]) done by dropping day partitions, which every
/// version can do; a TTL baked in at migration time would be a second,
/// conflicting retention rule that a config change could not move. The
/// placeholder stays so a version-gated table option has one place to go.
fn ttl_clause(_version: ServerVersion) -> &'static str {
    ""
}

/// Fills a migration statement's placeholders for this database and server.
pub(super) fn render(statement: &str, quoted_db: &str, version: ServerVersion) -> String {
    statement.replace("{db}", quoted_db).replace("{label}", label_type(version)).replace("{ttl}", ttl_clause(version))
}

impl ClickHouseStore {
    async fn apply_migration(&self, migration: &Migration) -> Result<()> {
        let failed = |reason: String| Error::Migration { version: migration.version, name: migration.name, reason };
        let db = quote_identifier(&self.config.database);
        let statements = if self.cluster.is_some() { Vec::new() } else { migration.statements() };
        if let Some(cluster) = &self.cluster {
            self.apply_cluster_migration(cluster, migration).await?;
        }
        for statement in statements {
            let sql = render(&statement, &db, self.version);
            // query_raw: DDL text is sent verbatim, a `?` in it is no bind.
            match self.server.query_raw(&sql).execute().await {
                Ok(()) => {}
                // 18.16 has no `ADD COLUMN IF NOT EXISTS`: a migration that
                // stopped after adding its column finds it there when rerun.
                Err(e) if statement.contains(" ADD COLUMN ") && e.to_string().contains("already exists") => {}
                Err(e) => return Err(failed(e.to_string())),
            }
        }
        // Through the database's client: the table name needs no database
        // prefix, so nothing but the binds goes through `?` parsing.
        self.client
            .query("INSERT INTO schema_migrations (version, name, applied_at) SELECT ?, ?, now()")
            .bind(migration.version)
            .bind(migration.name)
            .execute()
            .await
            .map_err(|e| failed(format!("recording it: {e}")))?;
        tracing::info!(version = migration.version, name = migration.name, "Applied migration.");
        Ok(())
    }
}

#[async_trait]
impl crate::Database for ClickHouseStore {
    fn kind(&self) -> &'static str {
        "clickhouse"
    }

    #[tracing::instrument(skip_all, fields(database = %self.config.database))]
    async fn migrate(&self) -> Result<()> {
        let db = quote_identifier(&self.config.database);
        if let Some(cluster) = &self.cluster {
            // Before any DDL: a missing cluster or macro is a clear error
            // here, not a distributed DDL that waits minutes for no one.
            self.check_cluster(cluster).await?;
            self.create_cluster_ledger(cluster).await?;
        } else {
            self.server.query_raw(&format!("CREATE DATABASE IF NOT EXISTS {db}")).execute().await?;
            self.server.query_raw(&ledger_sql(&db)).execute().await?;
        }
        // A process migrating concurrently may record a version twice: harmless,
        // every statement is `IF NOT EXISTS`, and versions are read distinct.
        let applied: HashSet<u32> = self
            .client
            .query("SELECT DISTINCT version FROM schema_migrations")
            .fetch_all::<u32>()
            .await?
            .into_iter()
            .collect();
        for migration in migrations::CLICKHOUSE.iter().filter(|m| !applied.contains(&m.version)) {
            self.apply_migration(migration).await?;
        }
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn ping(&self) -> Result<()> {
        self.server.query("SELECT 1").fetch_one::<u8>().await?;
        if let Some(cluster) = &self.cluster {
            self.check_cluster_health(cluster).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_with_and_without_build_suffixes() {
        assert_eq!(ServerVersion::parse("18.16.1"), Some(ServerVersion { major: 18, minor: 16 }));
        assert_eq!(ServerVersion::parse("24.8.4.13\n"), Some(ServerVersion { major: 24, minor: 8 }));
        assert_eq!(ServerVersion::parse("25.3.1.2703-testing"), Some(ServerVersion { major: 25, minor: 3 }));
        assert_eq!(ServerVersion::parse("19"), None);
        assert_eq!(ServerVersion::parse("garbage"), None);
    }

    #[test]
    fn low_cardinality_is_gated_at_twenty_one() {
        let v = |major, minor| ServerVersion { major, minor };
        assert_eq!(label_type(v(18, 16)), "String");
        assert_eq!(label_type(v(19, 17)), "String");
        assert_eq!(label_type(v(20, 1)), "LowCardinality(String)");
        assert_eq!(label_type(v(24, 8)), "LowCardinality(String)");
        assert_eq!(ttl_clause(v(18, 16)), "");
        assert_eq!(ttl_clause(v(24, 8)), "");
    }

    #[test]
    fn async_insert_is_turned_off_only_where_the_server_knows_the_setting() {
        let v = |major, minor| ServerVersion { major, minor };
        assert!(!v(18, 16).has_async_insert());
        assert!(!v(21, 10).has_async_insert());
        assert!(v(21, 11).has_async_insert());
        assert!(v(26, 9).has_async_insert());
    }

    #[test]
    fn every_placeholder_of_every_migration_is_filled() {
        for version in [ServerVersion::OLDEST, ServerVersion { major: 24, minor: 8 }] {
            for migration in migrations::CLICKHOUSE {
                for statement in migration.statements() {
                    let sql = render(&statement, "`db`", version);
                    assert!(!sql.contains('{') && !sql.contains('}'), "{sql}");
                    assert!(!sql.contains('?'), "a `?` would be taken for a bind: {sql}");
                }
            }
        }
        let events = render(&migrations::CLICKHOUSE[0].statements()[0], "`x`", ServerVersion::OLDEST);
        assert!(events.starts_with("CREATE TABLE IF NOT EXISTS `x`.events"));
        assert!(events.contains("app_version String,"));
        assert!(events.trim_end().ends_with("ORDER BY (project, event_time, event_id)"));
    }
}
