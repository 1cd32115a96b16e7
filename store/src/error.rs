use thiserror::Error;

/// Everything a store can fail with.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// ClickHouse refused or could not be reached.
    #[error("clickhouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// A request to ClickHouse that the `clickhouse` crate does not make
    /// (the event id look-ups) failed or was refused.
    #[error("clickhouse: {0}")]
    ClickHouseRequest(String),
    /// SQLite failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The embedded store's files could not be opened.
    #[error("cannot open the embedded store at {path}: {source}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// What went wrong.
        source: rusqlite::Error,
    },
    /// A background task died (a bug, or the runtime shutting down).
    #[error("store task failed: {0}")]
    Task(String),
    /// Stored data that does not parse back (a bug, or a hand-edited table).
    #[error("corrupt stored row: {0}")]
    Corrupt(String),
    /// Cluster mode names a cluster the server's `remote_servers` lacks.
    #[error("cluster {cluster} is not in system.clusters of the server (its remote_servers)")]
    ClusterNotFound {
        /// The configured cluster name.
        cluster: String,
    },
    /// Cluster mode needs a macro the server does not define.
    #[error("cluster {cluster}: the server has no `{name}` macro in system.macros (its <macros> section)")]
    MacroMissing {
        /// The configured cluster name.
        cluster: String,
        /// The missing macro: `shard` or `replica`.
        name: &'static str,
    },
    /// Shards of the cluster without any replica answering.
    #[error("cluster {cluster}: no live replica in shard(s) {shards:?}")]
    ShardsDown {
        /// The configured cluster name.
        cluster: String,
        /// The shard numbers (`system.clusters.shard_num`).
        shards: Vec<u32>,
    },
    /// A project's declared dimension key breaks the contract's key rule.
    #[error(
        "dimension key {key:?} is not a lowercase identifier ([a-z][a-z0-9_]*) of at most {max} characters",
        max = synchealth_schema::MAX_DIMENSION_KEY_CHARS
    )]
    InvalidDimensionKey {
        /// The key as given.
        key: String,
    },
    /// More declared dimensions than an event may carry.
    #[error("a project declares at most {max} dimensions, got {count}", max = synchealth_schema::MAX_DIMENSIONS)]
    TooManyDimensions {
        /// How many distinct keys were given.
        count: usize,
    },
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {reason}")]
    Migration {
        /// Migration version.
        version: u32,
        /// Migration name.
        name: &'static str,
        /// What the server said.
        reason: String,
    },
}

/// Result with the store's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
