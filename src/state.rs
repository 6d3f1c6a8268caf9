//! What every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::{AuthMode, Config};
use crate::reload::{PolicyStatus, ReloadSource};
use crate::routing::{BuildError, RouterFactory, Snapshot};
use crate::telemetry::Telemetry;

pub struct AppState {
    /// The live experts and virtual models; swapped whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    /// Fixed at start: the body-limit layer is built once.
    pub max_body_bytes: usize,
    /// The request ledger, when `[ledger]` is configured.
    pub ledger: Option<crate::ledger::Ledger>,
    /// Records carry the prompt text only when the operator asked for it.
    pub store_prompts: bool,
    /// Spans and metrics; `Telemetry::local()` (metrics for `/metrics` only) unless
    /// `main` set it up from the `OTEL_*` variables.
    pub telemetry: Telemetry,
    /// Virtual API keys; None when authentication is off (by explicit config only).
    pub auth: Option<std::sync::Arc<crate::auth::Auth>>,
    /// Fixed at start, like the body limit.
    pub limits: crate::config::Limits,
    /// The start-only sections as this process runs with them (a reload names the ones
    /// its files change).
    pub start_only: crate::config::StartOnly,
    /// Set on SIGTERM: `/ready` turns 503 so load balancers stop sending traffic.
    draining: AtomicBool,
    pub reload_source: Option<ReloadSource>,
    pub reload_lock: tokio::sync::Mutex<()>,
    pub policy_status: std::sync::Mutex<PolicyStatus>,
    /// Open connections and requests in flight (`server` and the `api` guard count them).
    pub load: crate::server::Load,
}

impl AppState {
    /// `source`: where to re-read the config on reload (None: it cannot change).
    pub fn new(config: Config, routers: RouterFactory<'_>, source: Option<ReloadSource>) -> Result<Self, BuildError> {
        Self::with_telemetry(config, routers, source, Telemetry::local())
    }

    pub fn with_telemetry(
        config: Config,
        routers: RouterFactory<'_>,
        source: Option<ReloadSource>,
        telemetry: Telemetry,
    ) -> Result<Self, BuildError> {
        let max_body_bytes = config.server.max_body_bytes;
        let ledger = match &config.ledger {
            Some(cfg) => Some(crate::ledger::Ledger::open(cfg.clone()).map_err(BuildError::Ledger)?),
            None => None,
        };
        let store_prompts = config.ledger.as_ref().is_some_and(|l| l.store_prompts);
        let auth = match &config.auth {
            AuthMode::Off { reason } => {
                tracing::warn!(
                    reason,
                    "authentication is OFF: every client may call every model and admin route. Add an [auth] section to require API keys."
                );
                None
            }
            AuthMode::On(settings) => {
                let auth = crate::auth::Auth::open(settings, ledger.as_ref()).map_err(BuildError::Keys)?;
                if settings.admin_key.is_none() {
                    tracing::warn!("No [auth] admin_key_env: /admin/* routes refuse every request.");
                }
                tracing::info!(keys_db = %settings.keys_db.display(), "Authentication is on: every route but /health and /ready needs an API key.");
                Some(std::sync::Arc::new(auth))
            }
        };
        let limits = config.limits.clone();
        let start_only = crate::config::StartOnly::of(&config);
        let snapshot = Snapshot::build(config, None, routers)?;
        Ok(Self {
            telemetry,
            policy_status: std::sync::Mutex::new(PolicyStatus::of(&snapshot)),
            snapshot: ArcSwap::from_pointee(snapshot),
            max_body_bytes,
            ledger,
            store_prompts,
            auth,
            limits,
            start_only,
            draining: AtomicBool::new(false),
            reload_source: source,
            reload_lock: tokio::sync::Mutex::new(()),
            load: crate::server::Load::default(),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
