use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

use triage::cli::{Cli, Command, PolicyCommand};
use triage::reload::{self, ReloadSource, SharedRouterFactory};
use triage::telemetry::{self, Telemetry, TelemetryConfig};
use triage::{config, server, state::AppState};

/// glibc's allocator spent about a fifth of the proxy path's instructions (callgrind:
/// `_int_malloc`, `_int_free`, consolidation, arena locks). Built without transparent huge
/// pages, which had doubled idle RSS. bench/README.md "Ninth session" has the numbers.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `RUST_LOG` overrides; the default shows the gateway's own decisions, not every crate's.
const DEFAULT_LOG_FILTER: &str = "info";

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER)))
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; a log file or a container's log gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match Cli::parse().command {
        Command::Serve { config, listen, no_watch } => serve(config, listen, !no_watch),
        Command::CheckConfig { files } | Command::Policy { cmd: PolicyCommand::Check { files } } => check(&files),
        Command::Router { cmd } => triage::classifier::cli::run(cmd),
        Command::Route { prompt, config, model, system, json } => {
            route(&config, &model, system.as_deref(), &prompt, json)
        }
        Command::Keys(args) => triage::auth::cli::run(args),
        Command::Experts { gateway, json } => Ok(triage::tiers::cli::experts(&gateway, json)?),
        Command::Ledger { cmd } => Ok(triage::ledger::cli::ledger(cmd)?),
        Command::Report(args) => Ok(triage::ledger::cli::report(args)?),
        Command::Policy { cmd: PolicyCommand::Fit(cmd) } => Ok(triage::ledger::cli::policy(cmd)?),
        Command::Eval { cmd } => Ok(triage::ledger::cli::eval(cmd)?),
    }
}

fn check(files: &[PathBuf]) -> anyhow::Result<()> {
    let c = config::load_paths(files)?;
    println!(
        "ok: {} (version {}, {} experts, {} virtual models)",
        c.origin,
        c.version,
        c.experts.len(),
        c.models.len()
    );
    Ok(())
}

fn route(paths: &[PathBuf], model: &str, system: Option<&str>, prompt: &str, json: bool) -> anyhow::Result<()> {
    let config = if paths.is_empty() { config::embedded_default()? } else { config::load_paths(paths)? };
    let routers = triage::routing::classifiers::factory(config::models_dir());
    let d = triage::routing::explain::explain(config, &*routers, model, system, prompt)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&d)?);
    } else {
        print!("{}", triage::routing::explain::render(&d));
    }
    Ok(())
}

fn serve(paths: Vec<PathBuf>, listen: Option<SocketAddr>, watch: bool) -> anyhow::Result<()> {
    let mut config = if paths.is_empty() { config::embedded_default()? } else { config::load_paths(&paths)? };
    if let Some(addr) = listen {
        config.server.listen = addr;
    }
    let server_cfg = config.server.clone();
    let origin = config.origin.clone();
    let routers: SharedRouterFactory = triage::routing::classifiers::factory(config::models_dir());
    let source = (!paths.is_empty()).then(|| ReloadSource { paths: paths.clone(), routers: routers.clone() });
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Before the state: the components it builds record into these metrics.
    let telemetry = TelemetryConfig::from_env().and_then(|c| Telemetry::start(&c)).context("telemetry")?;
    telemetry::set_global(&telemetry);
    let limits = config.limits.clone();
    let served = runtime.block_on(async {
        // Bound before anything loads: a taken port fails in milliseconds, not after seconds
        // of model loading.
        let listener =
            tokio::net::TcpListener::bind(server_cfg.listen).await.with_context(|| format!("binding {}", server_cfg.listen))?;
        // Before loading, which takes seconds to minutes: until a handler is installed,
        // SIGHUP's default action ends the process. One that arrives while loading
        // reloads once the state exists (the files may have changed meanwhile).
        let hup = listen_for_sighup();
        // SIGTERM and Ctrl-C likewise, from here to the end: one handler for the loading
        // and the serving (a signal between the two is not lost).
        let mut stop = Box::pin(server::shutdown_signal());
        tracing::info!(listen = %server_cfg.listen, "Listening; loading experts and routers before serving.");
        // Loading local models and routers takes seconds of CPU: keep it off the async workers.
        let factory = routers.clone();
        let tel = telemetry.clone();
        let loading = tokio::task::spawn_blocking(move || AppState::with_telemetry(config, &*factory, source, tel));
        // Meanwhile `/health` answers, `/ready` and the API say 503 `loading`, and SIGTERM
        // or Ctrl-C ends the process at once (there is nothing in flight to drain).
        let state = tokio::select! {
            loaded = server::serve_loading(&listener, &limits, loading) => Arc::new(loaded??),
            () = &mut stop => {
                tracing::info!("Shutting down before loading finished.");
                return Ok(Served::NotStarted);
            }
        };
        let _watcher = if watch { reload::watch(state.clone()).context("watching the config files")? } else { None };
        if watch {
            // The watcher starts now: an edit saved while experts loaded is read once here
            // (a no-op when the files are what was loaded).
            let state = state.clone();
            tokio::spawn(async move { reload::reload(&state, "edit during start-up").await });
        }
        spawn_sighup_reload(state.clone(), hup);
        tracing::info!(listen = %server_cfg.listen, config = %origin, version = %state.snapshot.load().version(), "Triage is serving.");
        server::run(listener, state.clone(), stop, server_cfg.shutdown_grace).await?;
        if let Some(ledger) = &state.ledger {
            // Every record of a finished request is written before the process exits.
            ledger.close().await.context("flushing the ledger")?;
            tracing::info!("Ledger flushed.");
        }
        Ok::<_, anyhow::Error>(Served::Drained)
    });
    // Exports what the last requests recorded; bounded by the export timeout.
    telemetry.shutdown();
    if let Ok(Served::NotStarted) = served {
        // The load still runs on a blocking thread; dropping the runtime would wait for it.
        runtime.shutdown_background();
    }
    served.map(|_| ())
}

/// How `serve` ended without an error.
enum Served {
    /// Stopped by a signal while experts and routers were still loading.
    NotStarted,
    /// Served, then drained in-flight requests on a signal.
    Drained,
}

#[cfg(unix)]
type Hangup = tokio::signal::unix::Signal;
#[cfg(not(unix))]
type Hangup = std::convert::Infallible;

/// The SIGHUP stream; installing it replaces SIGHUP's default action (ending the process).
#[cfg(unix)]
fn listen_for_sighup() -> Option<Hangup> {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGHUP; reload with POST /admin/reload instead.");
            None
        }
    }
}

#[cfg(not(unix))]
fn listen_for_sighup() -> Option<Hangup> {
    None
}

/// SIGHUP reloads the config, as operators expect of a daemon.
fn spawn_sighup_reload(state: Arc<AppState>, hup: Option<Hangup>) {
    #[cfg(unix)]
    if let Some(mut hup) = hup {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let _ = reload::reload(&state, "SIGHUP").await;
            }
        });
    }
    #[cfg(not(unix))]
    let _ = (state, hup);
}
