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
    /// Create a demo tenant with a machine client, a dashboard client and a
    /// tenant admin, and write their credentials to a file (mode 0600);
    /// when the file exists already, print what it holds.
    Bootstrap {
        /// The tenant to create.
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// Where the credentials go.
        #[arg(long, default_value = ".local/demo.json")]
        output: PathBuf,
    },
    /// Master key operations.
    MasterKey {
        /// What to do.
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// Configuration tools.
    Config {
        /// What to do with the configuration.
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `master-key …` subcommands.
#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Re-wrap every tenant key under the current master key version.
    Rewrap,
    /// Show the current version and how many keys each version wraps.
    Status,
}

/// `config …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration, resolve every secret, report every problem
    /// in one pass, and exit non-zero if there is any.
    Validate,
}
