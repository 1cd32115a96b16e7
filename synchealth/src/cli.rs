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
    Up(UpArgs),
    /// Simulate a fleet of devices, each a real client probe, uploading to a collector.
    Demo(crate::demo::DemoArgs),
    /// The ingest API only.
    Collector,
    /// The dashboard and JSON API only.
    Dashboard,
    /// The alert evaluator only; with a subcommand, manage silences or test a channel.
    Alerts(AlertsArgs),
    /// Apply the storage schema and exit.
    Migrate,
    /// Measure the product (needs --clickhouse-url for the ClickHouse phases).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Manage ingest keys: create (and the project), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage dashboard users: add, remove, passwd, list.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage projects: the custom dimensions each keeps.
    #[command(subcommand)]
    Projects(ProjectsCommand),
}

/// Project administration (`synchealth projects ...`), on the configured store.
#[derive(Debug, Subcommand)]
pub enum ProjectsCommand {
    /// Show the custom dimensions a project keeps, or set them (replacing the list); events'
    /// other dimensions are not stored. Running collectors apply a change within 5 s.
    Dimensions {
        /// The project.
        name: String,
        /// The keys to keep, comma-separated (`engine,plan,region`): at most 8, each
        /// `[a-z][a-z0-9_]*` of at most 32 characters; `""` keeps none. Without it, shows the list.
        keys: Option<String>,
    },
}

/// Dashboard user administration (`synchealth users ...`), on the configured store.
#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user with access to every project (--admin) or to some (--projects a,b).
    Add {
        /// Login name.
        username: String,
        /// Sees every project.
        #[arg(long)]
        admin: bool,
        /// Projects the user may read, comma-separated.
        #[arg(long, value_delimiter = ',')]
        projects: Vec<String>,
        /// Where the password comes from.
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Change a user's password (their open sessions end).
    Passwd {
        /// Login name.
        username: String,
        /// Where the password comes from.
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Remove a user (their open sessions end).
    Remove {
        /// Login name.
        username: String,
    },
    /// List users and what they may read (never their passwords).
    List,
}

/// A password given without a prompt, so scripts can set it.
#[derive(Debug, clap::Args)]
pub struct PasswordArgs {
    /// The password (visible in the process list: prefer the environment or stdin).
    #[arg(long, env = "SYNCHEALTH_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `synchealth up [--demo]`.
#[derive(Debug, Default, clap::Args)]
pub struct UpArgs {
    /// Also run the demo fleet against this instance (probe buffers in <data-dir>/demo).
    #[arg(long)]
    pub demo: bool,
    /// Devices in the demo fleet.
    #[arg(long, default_value_t = 40, requires = "demo")]
    pub demo_devices: usize,
}

/// `synchealth alerts [SUBCOMMAND]`.
#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    /// Without one, run the alert evaluator role.
    #[command(subcommand)]
    pub command: Option<AlertsCommand>,
}

/// Alert administration, on the configured store.
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Mute a rule's notifications (optionally one segment) for a while; states still change and show. Prints the id.
    Silence {
        /// The rule's name.
        #[arg(long)]
        rule: String,
        /// Only this segment, as dimension=value (app_version=2.3.0, os=android, network=cellular).
        #[arg(long)]
        segment: Option<String>,
        /// How long, e.g. 2h, 30m, 1d.
        #[arg(long = "for")]
        duration: String,
        /// Why (shown in `alerts silences` and on the dashboard).
        #[arg(long, default_value = "")]
        comment: String,
        /// The project.
        #[arg(long, default_value = "default")]
        project: String,
    },
    /// List active and future silences.
    Silences,
    /// Remove a silence by id.
    Unsilence {
        /// The silence's id, as `alerts silence` printed it.
        id: String,
    },
    /// Send a test notification to a channel and wait for its delivery.
    Test {
        /// The channel's name (`[alerts.channels.NAME]`).
        #[arg(long)]
        channel: String,
    },
}

/// What to measure.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and ack latency of the collector against its ceilings.
    Ingest(crate::bench::ingest::IngestBenchArgs),
    /// Overview page server time over a day of events (ClickHouse and the embedded store).
    Dashboard(crate::bench::dashboard::DashboardBenchArgs),
    /// End-to-end alert latency: ingest of a failure spike to the webhook received.
    Alerts(crate::bench::alerts::AlertsBenchArgs),
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
        /// A browser origin the key may be used from (CORS), e.g.
        /// `https://app.example.com`; repeatable; `*` allows any origin.
        /// Without one, browsers are refused (native apps are not affected).
        #[arg(long = "allowed-origin")]
        allowed_origins: Vec<String>,
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
