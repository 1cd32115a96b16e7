use clap::Parser;
use synchealth::cli::{BenchCommand, Cli, Command};
use synchealth::{open_store, telemetry, Application, Roles, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Admin commands print their answers; their logs stay quiet unless RUST_LOG asks.
    let quiet = matches!(cli.command, Command::Keys(_));
    // Dropped when main returns, early or not: flushes exported traces.
    let _telemetry = telemetry::init(if quiet { "warn" } else { "info" })?;
    let settings = Settings::load(&cli.common)?;
    let roles = match cli.command {
        Command::Migrate => {
            open_store(&settings).await?;
            println!("synchealth: storage schema is up to date");
            return Ok(());
        }
        Command::Bench(BenchCommand::Ingest(args)) => return synchealth::bench::run_ingest(&settings, &args).await,
        Command::Keys(command) => return synchealth::commands::keys::run(&settings, command).await,
        Command::Up => Roles::ALL,
        Command::Collector => Roles { collector: true, dashboard: false, alerts: false },
        Command::Dashboard => Roles { collector: false, dashboard: true, alerts: false },
        Command::Alerts => Roles { collector: false, dashboard: false, alerts: true },
    };
    let app = Application::build(settings, roles).await?;
    app.generated().announce();
    println!("synchealth: listening on http://127.0.0.1:{}", app.port());
    app.run_until_stopped().await
}
