//! What the SQLite store is ([`crate::Database`]): its kind, its schema and
//! whether it answers. Migrations come from `schema/migrations/sqlite/`
//! ([`migrations::SQLITE`]), each applied once, in an `IMMEDIATE`
//! transaction with its `schema_migrations` record; the one that creates the
//! dashboard rollups also fills them from the events already stored
//! (`events.rs`'s [`backfill`]).

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use synchealth_schema::migrations;

use super::events::backfill;
use super::{now_ms, SqliteStore};
use crate::{Error, Result};

/// The migration that creates the rollups; the store backfills them right
/// after its statements ([`backfill`]).
pub(super) const MIGRATION: u32 = 7;

pub(super) fn migrate_all(conn: &mut Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )?;
    for migration in migrations::SQLITE {
        let failed = |e: rusqlite::Error| Error::Migration {
            version: migration.version,
            name: migration.name,
            reason: e.to_string(),
        };
        // IMMEDIATE makes check-apply-record atomic against another process
        // migrating the same file at the same time: the second one waits on
        // the lock, then finds the version recorded and skips it.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(failed)?;
        let applied = tx
            .query_row("SELECT 1 FROM schema_migrations WHERE version = ?1", [migration.version], |_| Ok(()))
            .optional()
            .map_err(failed)?
            .is_some();
        if applied {
            continue;
        }
        for statement in migration.statements() {
            match tx.execute_batch(&statement) {
                Ok(()) => {}
                // SQLite has no `ADD COLUMN IF NOT EXISTS`: a column already
                // there (a file whose ledger was rolled back, as the upgrade
                // tests do) is done, so a rerun stays harmless as for ClickHouse.
                Err(e) if statement.contains(" ADD COLUMN ") && e.to_string().contains("duplicate column name") => {}
                Err(e) => return Err(failed(e)),
            }
        }
        if migration.version == MIGRATION {
            backfill(&tx).map_err(|e| Error::Migration {
                version: migration.version,
                name: migration.name,
                reason: e.to_string(),
            })?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            params![migration.version, migration.name, now_ms()],
        )
        .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(version = migration.version, name = migration.name, "applied migration");
    }
    Ok(())
}

#[async_trait]
impl crate::Database for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn migrate(&self) -> Result<()> {
        self.write(migrate_all).await
    }

    #[tracing::instrument(skip_all, fields(store = "sqlite"))]
    async fn ping(&self) -> Result<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }
}
