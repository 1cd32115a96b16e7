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
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and ack latency of the collector against its ceilings.
    Ingest(crate::bench::IngestBenchArgs),
}
