use clap::Parser;
use synchealth::cli::{BenchCommand, Cli, Command};
use synchealth::{open_store, Application, Roles, Settings};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .init();
    let settings = Settings::load(&cli.common)?;
    let roles = match cli.command {
        Command::Migrate => {
            open_store(&settings).await?;
            println!("synchealth: storage schema is up to date");
            return Ok(());
        }
        Command::Bench(BenchCommand::Ingest(args)) => return synchealth::bench::run_ingest(&settings, &args).await,
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
