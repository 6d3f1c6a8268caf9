//! Routing: turns a request's `model` into an ordered list of experts plus the reasons.
//!
//! A [`Snapshot`] holds the experts, virtual models and routers of one config version.
//! It is immutable; a reload builds a new one (reusing unchanged experts and routers)
//! and swaps it in atomically, and a request keeps the snapshot it started with.

pub mod classifiers;
pub mod decide;
pub mod explain;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;

use crate::config::{Config, ExpertConfig, ExpertKind, Resilience, RouterRef, VirtualModelConfig};
use crate::experts::{Backend, Expert, ExpertError};
use crate::tiers::TierManager;
use decide::{map, Probabilities};

pub use crate::classifier::prompt_text;

/// A router as routing sees it: labels, and an async classification that never runs on
/// the caller's thread.
pub trait Classify: Send + Sync {
    fn labels(&self) -> &[String];
    /// Category probabilities aligned with `labels()`, or why there are none (for
    /// example a full queue: the request then goes to the fallback, and is counted).
    fn classify(&self, text: String) -> BoxFuture<'_, Result<Classified, String>>;
}

#[derive(Debug, Clone)]
pub struct Classified {
    pub probs: Vec<f32>,
    /// Which stage of the cascade decided (for explanations and metrics).
    pub stage: &'static str,
    pub elapsed: Duration,
}

/// Builds the router a policy names. Supplied by the caller so routing does not know
/// how classifiers are loaded.
pub type RouterFactory<'a> = &'a (dyn Fn(&RouterRef) -> Result<Arc<dyn Classify>, String> + Sync);

/// The routing decision for one request, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The name the client asked for.
    pub model: String,
    /// Experts to try, in order.
    pub experts: Vec<String>,
    /// Set when a classifier chose the category.
    pub category: Option<String>,
    pub confidence: Option<f32>,
    /// The most probable categories, best first.
    pub top_categories: Vec<(String, f32)>,
    /// Human-readable reasons, in the order they applied.
    pub reasons: Vec<String>,
    /// The uncertainty rule (or an unavailable classifier) chose the fallback.
    pub fallback: bool,
    pub classifier_stage: Option<&'static str>,
    pub classify_micros: Option<u64>,
    pub policy_version: String,
}

/// How many categories a decision reports with their probabilities.
const TOP_CATEGORIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Expert(#[from] ExpertError),
    #[error("model {model:?}: cannot load its router: {detail}")]
    Router { model: String, detail: String },
    #[error(transparent)]
    Ledger(crate::ledger::LedgerError),
    #[error(transparent)]
    Keys(crate::auth::KeyError),
}

pub struct Snapshot {
    pub config: Config,
    experts: Vec<Arc<Expert>>,
    by_name: HashMap<String, usize>,
    routers: HashMap<String, Arc<dyn Classify>>,
    /// The tier manager of the local experts, with `[tiers]`.
    tiers: Option<TierManager>,
}

impl Snapshot {
    /// Builds the experts (HTTP clients, local workers) and routers of a validated
    /// config. Experts and routers whose config did not change are taken over from
    /// `previous`, with their state (breakers, loaded weights).
    pub fn build(config: Config, previous: Option<&Snapshot>, routers: RouterFactory<'_>) -> Result<Self, BuildError> {
        // The same budgets keep the same manager (and what it has loaded); new budgets start
        // a new one, and its local experts are built anew.
        let tiers = match (&config.tiers, previous.and_then(|p| p.tiers.as_ref())) {
            (Some(cfg), Some(old)) if old.config() == cfg => Some(old.clone()),
            (Some(cfg), _) => Some(TierManager::new(cfg.clone())),
            (None, _) => None,
        };
        let same_tiers = match (previous.and_then(|p| p.tiers.as_ref()), &tiers) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same(b),
            _ => false,
        };
        // Routers first: they are what most often fails to load (a folder not there yet), and
        // registering a changed tiered local expert (below) replaces its slot, which a
        // rejected reload could not undo.
        let mut built: HashMap<String, Arc<dyn Classify>> = HashMap::new();
        for m in &config.models {
            let Some(r) = &m.router else { continue };
            let reused = previous.and_then(|p| {
                let old = p.config.models.iter().find(|o| o.name == m.name)?;
                (old.router.as_ref() == Some(r)).then(|| p.routers.get(&m.name).cloned()).flatten()
            });
            let router = match reused {
                Some(r) => r,
                None => routers(r).map_err(|detail| BuildError::Router { model: m.name.clone(), detail })?,
            };
            built.insert(m.name.clone(), router);
        }
        // Then every expert whose building has no lasting effect, and the tiered local
        // experts last, for the same reason.
        let tiered = |e: &ExpertConfig| tiers.is_some() && matches!(e.kind, ExpertKind::Local(_));
        let mut slots: Vec<Option<Arc<Expert>>> = vec![None; config.experts.len()];
        for last in [false, true] {
            for (slot, e) in slots.iter_mut().zip(&config.experts).filter(|(_, e)| tiered(e) == last) {
                let reused = previous
                    .and_then(|p| p.expert(&e.name))
                    .filter(|old| old.config == *e && (same_tiers || matches!(old.backend, Backend::Remote(_))));
                *slot = Some(match reused {
                    Some(old) => old.clone(),
                    None => Arc::new(Expert::new(e.clone(), &config.resilience, tiers.as_ref())?),
                });
            }
        }
        let experts: Vec<Arc<Expert>> = slots.into_iter().flatten().collect();
        let by_name = config.experts.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        if let Some(t) = &tiers {
            let names: Vec<&str> = config.experts.iter().map(|e| e.name.as_str()).collect();
            t.retain(&names);
        }
        // Nothing can fail past this point: a taken-over expert's breaker gets the new
        // `[resilience]` settings (a rejected reload leaves the old ones).
        let r = &config.resilience;
        for e in &experts {
            e.breaker.configure(r.breaker_failures, r.breaker_cooldown);
        }
        Ok(Self { config, experts, by_name, routers: built, tiers })
    }

    /// A snapshot that can route but not serve: its routers are loaded, its experts are
    /// only names (no HTTP clients, no local model loaded). For `triage route`, which
    /// explains a decision offline.
    pub fn routing_only(config: Config, routers: RouterFactory<'_>) -> Result<Self, BuildError> {
        let by_name = config.experts.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
        let mut built: HashMap<String, Arc<dyn Classify>> = HashMap::new();
        for m in &config.models {
            if let Some(r) = &m.router {
                let router = routers(r).map_err(|detail| BuildError::Router { model: m.name.clone(), detail })?;
                built.insert(m.name.clone(), router);
            }
        }
        Ok(Self { config, experts: Vec::new(), by_name, routers: built, tiers: None })
    }

    pub fn tiers(&self) -> Option<&TierManager> {
        self.tiers.as_ref()
    }

    pub fn expert(&self, name: &str) -> Option<&Arc<Expert>> {
        self.by_name.get(name).and_then(|&i| self.experts.get(i))
    }

    pub fn experts(&self) -> &[Arc<Expert>] {
        &self.experts
    }

    pub fn virtual_models(&self) -> &[VirtualModelConfig] {
        &self.config.models
    }

    pub fn virtual_model(&self, name: &str) -> Option<&VirtualModelConfig> {
        self.config.models.iter().find(|m| m.name == name)
    }

    pub fn resilience(&self) -> &Resilience {
        &self.config.resilience
    }

    pub fn version(&self) -> &str {
        &self.config.version
    }

    /// The experts a fallback name stands for: itself if it is an expert, else the
    /// named virtual model's own fallback chain or static list.
    fn fallback_experts(&self, name: &str) -> Vec<String> {
        if self.by_name.contains_key(name) {
            return vec![name.to_string()];
        }
        match self.config.models.iter().find(|m| m.name == name) {
            // Validation rejected cycles, so this terminates.
            Some(vm) => match &vm.fallback {
                Some(f) => {
                    let mut out = self.fallback_experts(f);
                    out.extend(vm.experts.iter().filter(|e| !out.contains(e)).cloned().collect::<Vec<_>>());
                    out
                }
                None => vm.experts.clone(),
            },
            None => Vec::new(),
        }
    }

    /// Decides which experts serve a chat request for `model`.
    ///
    /// An expert's own name goes straight to it; a virtual model's name is routed. The
    /// decision depends only on the request and this snapshot, never on other requests.
    pub async fn route(
        &self,
        model: &str,
        prompt: impl FnOnce() -> String,
        request_hash: u64,
    ) -> Result<Decision, RouteError> {
        let mut decision = Decision {
            model: model.to_string(),
            experts: Vec::new(),
            category: None,
            confidence: None,
            top_categories: Vec::new(),
            reasons: Vec::new(),
            fallback: false,
            classifier_stage: None,
            classify_micros: None,
            policy_version: self.config.version.clone(),
        };
        if self.by_name.contains_key(model) {
            decision.experts = vec![model.to_string()];
            decision.reasons.push(format!("model names expert {model:?} directly"));
            return Ok(decision);
        }
        let vm = self
            .config
            .models
            .iter()
            .find(|m| m.name == model)
            .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        let Some(router) = self.routers.get(&vm.name) else {
            decision.experts = vm.experts.clone();
            decision.reasons.push(format!("virtual model {model:?} has no router: its static expert list applies"));
            return Ok(decision);
        };
        let classified = router.classify(prompt()).await;
        let fallback = |f: &str| self.fallback_experts(f);
        let mapped = match &classified {
            Ok(c) => {
                decision.classifier_stage = Some(c.stage);
                decision.classify_micros = Some(c.elapsed.as_micros() as u64);
                let probs = Probabilities { labels: router.labels(), probs: &c.probs };
                let mut ranked: Vec<(String, f32)> =
                    router.labels().iter().cloned().zip(c.probs.iter().copied()).collect();
                ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
                ranked.truncate(TOP_CATEGORIES);
                decision.top_categories = ranked;
                map(vm, Ok(&probs), request_hash, &fallback)
            }
            Err(why) => {
                tracing::warn!(model = %model, reason = %why, "No classification; using the fallback.");
                map(vm, Err(why.as_str()), request_hash, &fallback)
            }
        };
        decision.experts = mapped.experts;
        decision.category = mapped.category;
        decision.confidence = mapped.confidence;
        decision.reasons = mapped.reasons;
        decision.fallback = mapped.fallback;
        Ok(decision)
    }
}

/// Router factory for configs without routers (and a clear error if one appears).
pub fn no_routers(r: &RouterRef) -> Result<Arc<dyn Classify>, String> {
    Err(format!("router {r:?} cannot be loaded: this gateway was started without classifier support"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_gives_a_taken_over_breaker_the_new_settings() {
        let text = |failures: u32| {
            format!(
                "[resilience]\nbreaker_failures = {failures}\n[[experts]]\nname = \"a\"\nkind = \"openai\"\n\
                 base_url = \"http://127.0.0.1:9/v1\"\n[[models]]\nname = \"m\"\nexperts = [\"a\"]\n"
            )
        };
        let load = |failures| crate::config::load_str(&text(failures), "t.toml").unwrap();
        let old = Snapshot::build(load(5), None, &no_routers).unwrap();
        let new = Snapshot::build(load(1), Some(&old), &no_routers).unwrap();
        let a = new.expert("a").unwrap();
        assert!(Arc::ptr_eq(a, old.expert("a").unwrap()), "the expert is taken over, with its state");
        a.breaker.record_failure();
        assert!(a.breaker.is_open(), "one failure opens it under the reloaded `breaker_failures = 1`");
    }
}
