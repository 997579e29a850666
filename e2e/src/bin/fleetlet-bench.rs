//! `fleetlet-bench SCENARIO`: see `fleetlet_e2e::bench` and docs/benchmarks.md. Progress goes to stderr;
//! the last line on stdout is the scenario's JSON object.

use clap::Parser as _;
use fleetlet_e2e::bench::{self, cli::Cli};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let out = bench::run(&cli).await?;
    println!("{out}");
    Ok(())
}
