//! `coupon-server`: serve, or mint a token for local use.

use clap::Parser;
use coupon_server::config::{Cli, Command};
use coupon_server::{Auth, Backends, Claims, Server};
use tokio::net::TcpListener;

// A faster allocator than glibc's for many small, short-lived allocations across threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Token(args)) = &cli.command {
        let auth = Auth::new(&cli.serve.secret()?);
        println!(
            "{}",
            auth.mint(&Claims::new(&args.sub, args.role.clone(), args.ttl_secs))
        );
        return Ok(());
    }
    coupon_server::config::init_tracing();
    let config = cli.serve;
    config.secret()?;
    if config.jwt_secret.is_none() {
        tracing::warn!("--dev: tokens are signed with the published development secret; never expose this server");
    }
    let backends = Backends::connect(&config).await?;
    tracing::info!(?backends, "backends connected");
    let server = Server::build(&config, backends).await?;
    let listener = TcpListener::bind(config.listen).await?;
    tracing::info!(listen = %listener.local_addr()?, "coupon-server listening");
    server.run(listener, coupon_server::config::shutdown_signal()).await
}
