//! `lighttech-local`: the whole API on one port, on whichever store `DATABASE_URL` names.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use lighttech::{App, Config, StartOptions};
use tokio::net::TcpListener;

/// Serve the LightTech API locally.
#[derive(Debug, Parser)]
#[command(name = "lighttech-local", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Prepare the store (create tables / run migrations), then serve.
    #[arg(long)]
    init: bool,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(message) = run(args).await {
        eprintln!("lighttech-local: {message}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let config = Config::from_env().map_err(|e| format!("configuration error: {e}"))?;
    lighttech::telemetry::init(config.debug);
    let app = App::start_with(
        config,
        StartOptions {
            init: args.init,
            generate_key: true,
            check_store: true,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    lighttech_local::serve(listener, Arc::new(app), shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
