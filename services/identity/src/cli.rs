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
    /// Development certificates, and describing and checking certificate
    /// files; needs no configuration.
    Certs {
        /// What to do.
        #[command(subcommand)]
        command: CertsCommand,
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

/// `certs …` subcommands.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a development CA (`ca.crt`, `ca.key`; kept when present), a
    /// server certificate (`server.crt`, `server.key`) and client
    /// certificates (`client-<name>.crt`, `.key`) into a directory.
    Generate {
        /// Where the files go (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// Host names and IP addresses of the server certificate.
        #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1"])]
        server_names: Vec<String>,
        /// A client certificate with this common name (repeatable).
        #[arg(long = "client")]
        clients: Vec<String>,
        /// Validity of the server and client certificates, in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Subject, SANs, expiry and days remaining of each certificate in a
    /// PEM file.
    Info {
        /// The PEM file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a certificate: its chain, that the key is its key, and its
    /// validity dates; exits with 1 when a check fails.
    Validate {
        /// The certificate (PEM, leaf first, then its chain).
        #[arg(long)]
        cert: PathBuf,
        /// Its private key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// CA bundle the chain must end in; the system roots when omitted.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `config …` subcommands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration, resolve every secret, report every problem
    /// in one pass, and exit non-zero if there is any.
    Validate,
}
