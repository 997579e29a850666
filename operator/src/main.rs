//! `fleetlet`: the operator binary. Everything lives in the library modules; main only dispatches.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = fleetlet::cli::Cli::parse();
    fleetlet::cli::dispatch(cli).await
}
