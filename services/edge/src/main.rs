//! `keysilo-edge`: loads settings and runs the edge validator.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;
use keysilo_config::{ConfigError, EdgeSettings, LogFormat, Problem};
use keysilo_edge::startup::Application;

/// Keysilo edge validator.
#[derive(Debug, clap::Parser)]
#[command(name = "keysilo-edge", version, about)]
struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, short, env = "KEYSILO_CONFIG", global = true)]
    config: Option<PathBuf>,

    /// What to do; serve when omitted.
    #[command(subcommand)]
    command: Option<Command>,
}

/// What the binary can do, as `keysilo-identity` spells it.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the edge validator (the default).
    Serve,
    /// Configuration tools.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config …` subcommands.
#[derive(Debug, clap::Subcommand)]
enum ConfigCommand {
    /// Load the configuration, resolve every secret, report every problem
    /// in one pass, and exit non-zero if there is any.
    Validate,
}

/// Loads settings and adds the checks only the binary can make (the log
/// filter), as `keysilo-identity` does.
fn load(cli: &Cli) -> Result<EdgeSettings, ConfigError> {
    let settings = EdgeSettings::load(cli.config.as_deref())?;
    match keysilo_telemetry::check_filter(&settings.telemetry.log_level) {
        Ok(()) => Ok(settings),
        Err(err) => Err(ConfigError(vec![Problem::new(
            "telemetry.log_level",
            err.to_string(),
        )])),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match load(&cli) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("keysilo-edge: {err}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        command: ConfigCommand::Validate,
    }) = cli.command
    {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let options = keysilo_telemetry::Options {
        filter: settings.telemetry.log_level.clone(),
        json: settings.telemetry.log_format == LogFormat::Json,
        otlp_endpoint: settings.telemetry.otlp_endpoint.clone(),
        service_name: settings
            .telemetry
            .service_name
            .clone()
            .unwrap_or_else(|| "keysilo-edge".into()),
    };
    let _guard = match keysilo_telemetry::init(&options, std::io::stdout) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("keysilo-edge: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = actix_web::rt::System::new().block_on(async move {
        let application = Application::build(settings).await?;
        tracing::info!(port = application.port(), "edge validator listening");
        application.run_until_stopped().await?;
        Ok::<_, anyhow::Error>(())
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("keysilo-edge: {err:#}");
            ExitCode::FAILURE
        }
    }
}
