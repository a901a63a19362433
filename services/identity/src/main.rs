//! `keysilo-identity`: parses the command line and hands over to the library.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use keysilo_config::{ConfigError, LogFormat, Problem, Settings};
use keysilo_identity::cli::{Cli, Command, ConfigCommand, MasterKeyCommand};
use keysilo_identity::startup::Application;
use keysilo_store::Store;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // Certificate tools work without a configuration.
    if let Some(Command::Certs { command }) =
        cli.command.take_if(|c| matches!(c, Command::Certs { .. }))
    {
        return match keysilo_identity::certs::run(command) {
            Ok(outcome) => {
                print!("{}", outcome.output);
                if outcome.passed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(err) => {
                eprintln!("keysilo-identity: {err:#}");
                ExitCode::from(2)
            }
        };
    }
    let settings = match load(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("keysilo-identity: {err}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cli.command.unwrap_or(Command::Serve) {
        Command::Config {
            command: ConfigCommand::Validate,
        } => {
            println!("configuration is valid");
            Ok(())
        }
        Command::Migrate => runtime().and_then(|rt| rt.block_on(migrate(&settings))),
        Command::Bootstrap { tenant, output } => runtime().and_then(|rt| {
            let saved = rt
                .block_on(keysilo_identity::bootstrap::bootstrap(
                    settings, &tenant, &output,
                ))
                .context("Failed to bootstrap")?;
            println!("{saved:#}");
            Ok(())
        }),
        Command::MasterKey { command } => {
            runtime().and_then(|rt| rt.block_on(master_key(settings, command)))
        }
        Command::Serve => serve(settings),
        // Handled before the configuration is loaded.
        Command::Certs { .. } => Ok(()),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keysilo-identity: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads settings and adds the checks only the service can make.
fn load(cli: &Cli) -> Result<Settings, ConfigError> {
    let settings = Settings::load(cli.config.as_deref());
    let filter = settings
        .as_ref()
        .ok()
        .map(|s| s.telemetry.log_level.clone());
    let filter_problem = filter.and_then(|f| {
        keysilo_telemetry::check_filter(&f)
            .err()
            .map(|err| Problem::new("telemetry.log_level", err.to_string()))
    });
    match (settings, filter_problem) {
        (Ok(_), Some(problem)) => Err(ConfigError(vec![problem])),
        (result, _) => result,
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Failed to start the async runtime")
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let store = Store::new(&settings.database).context("Failed to set up PostgreSQL")?;
    let report = store.migrate().await.context("Failed to migrate")?;
    if report.applied.is_empty() {
        println!("database is up to date");
    } else {
        for name in report.applied {
            println!("applied {name}");
        }
    }
    Ok(())
}

async fn master_key(settings: Settings, command: MasterKeyCommand) -> anyhow::Result<()> {
    let store = Store::new(&settings.database).context("Failed to set up PostgreSQL")?;
    let coord = keysilo_coord::Coord::new(&settings.redis).context("Failed to set up Redis")?;
    let metrics = keysilo_identity::metrics::Metrics::new().context("Failed to set up metrics")?;
    let keys = keysilo_identity::state::Services::build(&settings.into(), &store, &coord, &metrics)
        .context("Failed to load the master keys")?
        .keys;
    let document = match command {
        MasterKeyCommand::Rewrap => {
            let report = keys
                .rewrap_all("cli")
                .await
                .context("Failed to re-wrap keys")?;
            serde_json::json!({ "version": report.version, "rewrapped": report.rewrapped })
        }
        MasterKeyCommand::Status => {
            let counts = store
                .keys_per_master_version()
                .await
                .context("Failed to count keys")?;
            keysilo_identity::routes::master_key_status(keys.ring(), &counts)
        }
    };
    println!("{document:#}");
    Ok(())
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let options = keysilo_telemetry::Options {
        filter: settings.telemetry.log_level.clone(),
        json: settings.telemetry.log_format == LogFormat::Json,
        otlp_endpoint: settings.telemetry.otlp_endpoint.clone(),
        service_name: settings
            .telemetry
            .service_name
            .clone()
            .unwrap_or_else(|| "keysilo-identity".into()),
    };
    let _guard =
        keysilo_telemetry::init(&options, std::io::stdout).context("Failed to start telemetry")?;
    actix_web::rt::System::new().block_on(async move {
        let application = Application::build(settings)
            .await
            .context("Failed to start the identity service")?;
        tracing::info!(port = application.port(), "identity service listening");
        application
            .run_until_stopped()
            .await
            .context("The HTTP server failed")?;
        tracing::info!("identity service stopped");
        Ok(())
    })
}
