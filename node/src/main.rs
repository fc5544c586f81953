//! `rollup`: the rollup's command-line program.

mod auth;
mod bench;
mod cli;
mod client;
mod config;
mod devnet;
mod keyfile;
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = config::expand(std::env::args().collect())?;
    cli::Cli::parse_from(args).run()
}
