//! What the tier manager reports: `GET /admin/experts`, `triage experts`, and the counters
//! telemetry reads ([`TierStats`] from `TierManager::snapshot`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Tier;
use crate::config::MinTier;

pub(super) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Durations of one kind of load (e.g. `warm->hot`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadStats {
    pub count: u64,
    pub total_ms: f64,
    pub last_ms: f64,
    pub max_ms: f64,
}

impl LoadStats {
    pub(super) fn record(&mut self, d: Duration) {
        let m = ms(d);
        self.count += 1;
        self.total_ms += m;
        self.last_ms = m;
        self.max_ms = self.max_ms.max(m);
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SwapCount {
    pub from: Tier,
    pub to: Tier,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExpertTierStats {
    pub name: String,
    pub tier: Tier,
    /// A promotion is running.
    pub loading: bool,
    pub pinned: bool,
    pub min_tier: MinTier,
    /// Bytes the loaded weights take (predicted from the GGUF header until first loaded).
    pub hot_bytes: u64,
    /// Bytes a warm copy is accounted at: weights in their compute format plus tokenizer,
    /// template and header (predicted from the GGUF header until one is held).
    pub warm_bytes: u64,
    /// A hot expert may also keep its warm copy, so a demotion lands in warm.
    pub holds_warm_copy: bool,
    /// Requests using the loaded model now.
    pub leases: usize,
    pub queue_depth: usize,
    pub last_use_unix_ms: Option<u64>,
    pub idle_ms: Option<u64>,
    /// Decayed request rate the policy sends here (what eviction weighs).
    pub demand_per_min: f64,
    /// Duration of the last load of each kind.
    pub warm_to_hot_ms: Option<f64>,
    pub cold_to_warm_ms: Option<f64>,
    pub cold_to_hot_ms: Option<f64>,
    /// Time spent in each tier since start.
    pub residency_ms: BTreeMap<String, u64>,
    /// Why the expert is unavailable (the last failed load), if it is.
    pub error: Option<String>,
}

/// A point-in-time view of the tier manager.
#[derive(Debug, Clone, Serialize)]
pub struct TierStats {
    pub hot_budget: u64,
    pub warm_budget: u64,
    pub hot_used: u64,
    pub warm_used: u64,
    /// Highest accounted usage since start (never above the budget).
    pub peak_hot: u64,
    pub peak_warm: u64,
    pub min_residency_ms: u64,
    pub experts: Vec<ExpertTierStats>,
    pub swaps: Vec<SwapCount>,
    /// Keyed `from->to`.
    pub loads: BTreeMap<String, LoadStats>,
    pub load_failures: u64,
}
