//! Routing: turns a request's `model` into an ordered list of experts plus the reasons.
//!
//! A [`Snapshot`] holds the experts and virtual models of one config version. It is
//! immutable; a reload builds a new one and swaps it in atomically, and a request keeps
//! the snapshot it started with.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use crate::config::Config;
use crate::experts::{Expert, ExpertError};

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
    /// Human-readable reasons, in the order they applied.
    pub reasons: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
}

/// A routed virtual model.
#[derive(Debug, Clone)]
pub struct VirtualModel {
    pub name: String,
    pub experts: Vec<String>,
}

pub struct Snapshot {
    experts: Vec<Arc<Expert>>,
    by_name: HashMap<String, usize>,
    models: Vec<VirtualModel>,
}

impl Snapshot {
    /// Builds the experts (HTTP clients, local workers) of a validated config.
    pub fn build(config: &Config) -> Result<Self, ExpertError> {
        let resilience = &config.resilience;
        let mut experts = Vec::with_capacity(config.experts.len());
        let mut by_name = HashMap::with_capacity(config.experts.len());
        for (i, e) in config.experts.iter().enumerate() {
            experts.push(Arc::new(Expert::new(e.clone(), resilience)?));
            by_name.insert(e.name.clone(), i);
        }
        let models =
            config.models.iter().map(|m| VirtualModel { name: m.name.clone(), experts: m.experts.clone() }).collect();
        Ok(Self { experts, by_name, models })
    }

    pub fn expert(&self, name: &str) -> Option<&Arc<Expert>> {
        self.by_name.get(name).map(|&i| &self.experts[i])
    }

    pub fn experts(&self) -> &[Arc<Expert>] {
        &self.experts
    }

    pub fn virtual_models(&self) -> &[VirtualModel] {
        &self.models
    }

    /// Decides which experts serve a chat request for `model`.
    ///
    /// An expert's own name goes straight to it; a virtual model's name is routed. The
    /// decision depends only on the request and this snapshot, never on other requests.
    pub fn route(&self, model: &str) -> Result<Decision, RouteError> {
        if self.by_name.contains_key(model) {
            return Ok(Decision {
                model: model.to_string(),
                experts: vec![model.to_string()],
                category: None,
                confidence: None,
                reasons: vec![format!("model names expert {model:?} directly")],
            });
        }
        let vm =
            self.models.iter().find(|m| m.name == model).ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
        Ok(Decision {
            model: model.to_string(),
            experts: vm.experts.clone(),
            category: None,
            confidence: None,
            reasons: vec![format!("virtual model {model:?} has no router: its static expert list applies")],
        })
    }
}
