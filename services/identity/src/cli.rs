//! The command line: the server and the operator commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Keysilo identity service.
#[derive(Debug, Parser)]
#[command(name = "keysilo-identity", version, about)]
pub struct Cli {
    /// TOML configuration file; environment variables override it.
    #[arg(long, short, env = "KEYSILO_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Operator commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration tools.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `config …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration, resolve every secret, report every problem
    /// in one pass, and exit non-zero if there is any.
    Validate,
}
