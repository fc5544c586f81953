//! `rollup`: the rollup's command-line program.

mod acceptance;
mod auth;
mod bench;
mod cli;
mod client;
mod compact;
mod config;
mod devnet;
mod jobs;
mod keyfile;
mod memory;
mod network;
mod prover;
mod sequencer;
mod server;
mod services;
mod settlement;
mod status;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    let args = config::expand(std::env::args().collect())?;
    // The devnet's progress bars are its interface: its services log warnings only, unless
    // RUST_LOG says otherwise.
    let default = if args.iter().any(|a| a == "devnet") { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log redirected to a file (a service under systemd, a
        // test's log) gets plain text, not escape codes. NO_COLOR turns them off anywhere.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none())
        .init();
    cli::Cli::parse_from(args).run()
}
