//! The command line: one subcommand per role, plus `migrate`.

use clap::{Parser, Subcommand};

use crate::settings::CommonArgs;

/// synchealth: sync-health telemetry for offline-first apps.
#[derive(Debug, Parser)]
#[command(name = "synchealth", version, about)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub common: CommonArgs,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Collector, dashboard and alerts in one process (embedded store unless --clickhouse-url).
    Up,
    /// The ingest API only.
    Collector,
    /// The dashboard and JSON API only.
    Dashboard,
    /// The alert evaluator only.
    Alerts,
    /// Apply the storage schema and exit.
    Migrate,
    /// Measure the product (needs --clickhouse-url for the ClickHouse phases).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage ingest keys: create (and the project), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and ack latency of the collector against its ceilings.
    Ingest(crate::bench::IngestBenchArgs),
}

/// Ingest key administration (`synchealth keys ...`), on the configured store.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an ingest key for a project (creating the project if needed) and print it once.
    Create {
        /// The project the key writes to.
        #[arg(long)]
        project: String,
        /// A note to recognize the key by, e.g. "ios app 2.x".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List a project's keys: hash prefix, status, creation time and label (never the keys).
    List {
        /// The project.
        #[arg(long)]
        project: String,
    },
    /// Revoke a key: it authenticates nothing from then on (within 2 s for running collectors).
    Revoke {
        /// The project the key belongs to.
        #[arg(long)]
        project: String,
        /// The key itself, or a prefix of its hash as `keys list` shows it.
        key: String,
    },
}
