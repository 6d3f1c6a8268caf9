//! What every handler shares.

use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::{Config, Resilience};
use crate::experts::ExpertError;
use crate::routing::Snapshot;
use crate::telemetry::Telemetry;

pub struct AppState {
    /// The live experts and virtual models; swapped whole on reload.
    pub snapshot: ArcSwap<Snapshot>,
    pub resilience: Resilience,
    pub max_body_bytes: usize,
    /// Spans and metrics; `Telemetry::local()` (metrics for `/metrics` only) unless
    /// `main` set it up from the `OTEL_*` variables.
    pub telemetry: Telemetry,
    /// Set on SIGTERM: `/ready` turns 503 so load balancers stop sending traffic.
    draining: AtomicBool,
}

impl AppState {
    pub fn new(config: &Config) -> Result<Self, ExpertError> {
        Self::with_telemetry(config, Telemetry::local())
    }

    pub fn with_telemetry(config: &Config, telemetry: Telemetry) -> Result<Self, ExpertError> {
        Ok(Self {
            telemetry,
            snapshot: ArcSwap::from_pointee(Snapshot::build(config)?),
            resilience: config.resilience.clone(),
            max_body_bytes: config.server.max_body_bytes,
            draining: AtomicBool::new(false),
        })
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
