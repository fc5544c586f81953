//! `rollup`: the rollup's command-line program.

mod cli;
mod keyfile;

use anyhow::Result;
use clap::Parser;

fn main() -> Result<()> {
    let cli = cli::Cli::parse();
    cli.run()
}
