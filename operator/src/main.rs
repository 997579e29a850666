//! `fleetlet`: the operator binary. Everything lives in the library modules; main only dispatches.

use clap::Parser;

/// jemalloc returns the memory a bring-up burst freed (CSR issuance, TLS handshakes, first lists);
/// glibc's malloc keeps most of it resident (docs/benchmarks.md has both figures).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = fleetlet::cli::Cli::parse();
    fleetlet::cli::dispatch(cli).await
}
