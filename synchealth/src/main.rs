use clap::Parser;
use synchealth::cli::{BenchCommand, Cli, Command};
use synchealth::{open_store, telemetry, Application, Roles, Settings};

// Many small allocations per event (strings of every SyncEvent): jemalloc
// takes them at a fraction of glibc malloc's cost and, with the background
// purge set in .cargo/config.toml, keeps the collector's peak RSS under load
// about a third below mimalloc's (BENCHMARKS.md, "Allocator").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Admin commands print their answers; their logs stay quiet unless RUST_LOG asks.
    let quiet = matches!(cli.command, Command::Keys(_) | Command::Users(_) | Command::Projects(_))
        || matches!(&cli.command, Command::Alerts(a) if a.command.is_some());
    // Dropped when main returns, early or not: flushes exported traces.
    let _telemetry = telemetry::init(if quiet { "warn" } else { "info" })?;
    let settings = Settings::load(&cli.common)?;
    let mut demo_devices = None;
    let roles = match cli.command {
        Command::Migrate => {
            open_store(&settings).await?;
            println!("synchealth: storage schema is up to date");
            return Ok(());
        }
        Command::Bench(BenchCommand::Ingest(args)) => return synchealth::bench::ingest::run(&settings, &args).await,
        Command::Bench(BenchCommand::Alerts(args)) => return synchealth::bench::alerts::run(&settings, &args).await,
        Command::Bench(BenchCommand::Dashboard(args)) => {
            return synchealth::bench::dashboard::run(&settings, &args).await
        }
        Command::Keys(command) => return synchealth::commands::keys::run(&settings, command).await,
        Command::Users(command) => return synchealth::commands::users::run(&settings, command).await,
        Command::Projects(command) => return synchealth::commands::projects::run(&settings, command).await,
        Command::Up(up) => {
            demo_devices = up.demo.then_some(up.demo_devices);
            Roles::ALL
        }
        Command::Demo(args) => return synchealth::demo::run_command(&settings, args).await,
        Command::Collector => Roles { collector: true, dashboard: false, alerts: false },
        Command::Dashboard => Roles { collector: false, dashboard: true, alerts: false },
        Command::Alerts(args) => match args.command {
            Some(command) => return synchealth::commands::alerts::run(&settings, command).await,
            None => Roles { collector: false, dashboard: false, alerts: true },
        },
    };
    let app = Application::build(settings.clone(), roles).await?;
    app.generated().announce();
    println!("synchealth: listening on http://127.0.0.1:{}", app.port());
    let (app, demo) = match demo_devices {
        Some(devices) => {
            let demo = synchealth::demo::start_beside(&app, &settings, devices).await?;
            (synchealth::demo::web::beside(app, &settings).await?, Some(demo))
        }
        None => (app, None),
    };
    let served = app.run_until_stopped().await;
    if let Some(demo) = demo {
        demo.stop().await?;
    }
    served
}
