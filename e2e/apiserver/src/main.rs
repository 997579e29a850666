//! Runs the test apiserver for manual use: prints its URL and writes a kubeconfig to argv[1].

use fleetlet_test_apiserver::TestApiServer;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let server = TestApiServer::start().await;
    println!("{}", server.url());
    if let Some(path) = std::env::args().nth(1) {
        server.write_kubeconfig(std::path::Path::new(&path))?;
        println!("kubeconfig written to {path}");
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
