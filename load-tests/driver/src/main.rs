//! `keysilo-load`: the load drivers `wrk` cannot be: scenarios whose next
//! request depends on the last answer (refresh-token chains), an open-loop
//! constant rate (latency at a fixed fraction of the maximum), secure
//! mode's token exchange (each auth token redeemable once), the first
//! request of many cold tenants, 10,000 WebSocket sessions closed by one
//! revocation, and the argon2id limit with the service's own parameters.
//!
//! Every subcommand prints one JSON object on standard output;
//! `load-tests/run` reads it. See `load-tests/README.md`.

mod argon;
mod http;
mod report;
mod ws;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "keysilo-load", about = "Keysilo load drivers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// argon2id verifications per second on this thread, with the
    /// password parameters of an identity configuration file.
    Argon2 {
        /// The identity service's configuration.
        #[arg(long)]
        config: PathBuf,
        /// How long to measure.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
    },
    /// Chains of refresh-token grants: each connection logs in once with
    /// the password grant, then spends each new refresh token at once.
    Refresh(http::RefreshArgs),
    /// `client_credentials` at a constant rate (open loop): latency is
    /// counted from when a request was due, so a stall is not hidden.
    Rate(http::RateArgs),
    /// Secure mode: mints auth tokens, then redeems them with the RFC 8693
    /// token exchange as a public client (each redemption signs one token
    /// and spends one database row).
    Exchange(http::ExchangeArgs),
    /// The first token of every tenant in a file (cold: the tenant's key is
    /// loaded and unwrapped) against a second one (warm).
    Cold(http::ColdArgs),
    /// Opens WebSocket sessions on an edge, revokes the tenant's active key
    /// and measures how long after the admin call returned each closed.
    Ws(ws::WsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: the driver is pinned to its own core and must not
    // compete with the service under test for a second one.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = match cli.command {
        Command::Argon2 { config, seconds } => argon::measure(&config, seconds)?,
        Command::Refresh(args) => runtime.block_on(http::refresh(args))?,
        Command::Rate(args) => runtime.block_on(http::rate(args))?,
        Command::Cold(args) => runtime.block_on(http::cold(args))?,
        Command::Exchange(args) => runtime.block_on(http::exchange(args))?,
        Command::Ws(args) => runtime.block_on(ws::revocation(args))?,
    };
    println!("{report}");
    Ok(())
}
