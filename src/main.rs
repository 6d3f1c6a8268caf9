use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use triage::cli::{Cli, Command};
use triage::telemetry::{self, Telemetry, TelemetryConfig};
use triage::{config, server, state::AppState};

/// `RUST_LOG` overrides; the default shows the gateway's own decisions, not every crate's.
const DEFAULT_LOG_FILTER: &str = "info,triage=info";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve { config, listen } => serve(config, listen),
        Command::CheckConfig { file } => {
            let c = config::load_file(&file)?;
            println!("{}: ok ({} experts, {} virtual models)", file.display(), c.experts.len(), c.models.len());
            Ok(())
        }
        Command::Router { cmd } => triage::classifier::cli::run(cmd),
    }
}

fn serve(path: Option<std::path::PathBuf>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    let mut config = match &path {
        Some(p) => config::load_file(p)?,
        None => config::embedded_default()?,
    };
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Before the state: the components it builds record into these metrics.
    let telemetry = TelemetryConfig::from_env().and_then(|c| Telemetry::start(&c)).context("telemetry")?;
    telemetry::set_global(&telemetry);
    let served = runtime.block_on(async {
        let state = Arc::new(AppState::with_telemetry(&config, telemetry.clone())?);
        let listener = tokio::net::TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        tracing::info!(
            listen = %config.server.listen,
            config = %config.origin,
            experts = config.experts.len(),
            models = config.models.len(),
            "Triage is serving."
        );
        server::run(listener, state, server::shutdown_signal(), config.server.shutdown_grace).await?;
        Ok::<_, anyhow::Error>(())
    });
    // Exports what the last requests recorded; bounded by the export timeout.
    telemetry.shutdown();
    served
}
