//! The embedded candle classifier: router artifacts, training, evaluation and the
//! batching classification service.
//!
//! A request is classified by a two-stage cascade (see `cascade.rs`):
//! 1. a hashed word/char n-gram linear model (`fast.rs`) that costs microseconds and
//!    decides the inputs it is confident about, with a threshold calibrated on held-out
//!    data so that its accepted decisions are as accurate as the encoder's;
//! 2. a MiniLM sentence encoder whose top layers are fine-tuned per router
//!    (`encoder.rs`) plus a linear head (`head.rs`), run in micro-batches by
//!    `service.rs` for the uncertain remainder.
//!
//! Invariant: a decision depends only on the request text and the router version,
//! never on other requests in flight (an encoder batch packs its sequences, and each
//! attends only to itself).

pub mod bert;
pub mod cascade;
pub mod centroid;
pub mod cli;
pub mod config;
pub mod data;
pub mod distill;
pub mod encoder;
pub mod eval;
pub mod fast;
pub mod finetune;
pub mod head;
pub mod service;
pub mod text;
pub mod train;
pub mod wordpiece;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use cascade::Classifier;
pub use centroid::CentroidRouter;
pub use config::{ConfigError, RouterConfig};
pub use encoder::{Encoder, EncoderError};
pub use service::{ClassifierService, ServiceConfig, ServiceStats};
pub use text::prompt_text;

/// Which stage of the cascade produced a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The n-gram linear model was confident enough on its own.
    Fast,
    /// The transformer encoder decided.
    Encoder,
}

/// One classification result.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Classification {
    /// Calibrated probabilities, aligned with the router's `labels()`.
    pub probs: Vec<f32>,
    /// The stage that decided.
    pub stage: Stage,
    /// Wall time from submission to decision (includes queueing in the service).
    pub elapsed: Duration,
}

impl Classification {
    /// Index of the most probable label (the first one on ties).
    pub fn top_index(&self) -> usize {
        argmax(&self.probs)
    }

    /// Probability of the most probable label.
    pub fn confidence(&self) -> f32 {
        self.probs.get(self.top_index()).copied().unwrap_or(0.0)
    }

    /// The most probable label, looked up in `labels` (the router's label list).
    pub fn top_label<'a>(&self, labels: &'a [String]) -> Option<&'a str> {
        labels.get(self.top_index()).map(String::as_str)
    }

    /// Shannon entropy of `probs` divided by ln(#labels): 0 = certain, 1 = uniform.
    pub fn normalized_entropy(&self) -> f32 {
        normalized_entropy(&self.probs)
    }
}

/// Why a classification could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The bounded queue in front of the classifier is full; the gateway sends the
    /// request to the policy's fallback expert and counts it.
    #[error("classifier queue is full")]
    QueueFull,
    /// The classifier threads have stopped (shutdown or a crash).
    #[error("classifier service has shut down")]
    ShutDown,
    /// The model failed on this input.
    #[error("encoder failed: {0}")]
    Encoder(#[from] EncoderError),
}

/// Index of the largest value; the first one on ties, 0 for an empty slice.
pub(crate) fn argmax(xs: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best
}

/// Softmax of `logits / temperature`, computed stably in f64.
pub(crate) fn softmax_t(logits: &[f32], temperature: f32) -> Vec<f32> {
    let t = f64::from(temperature.max(f32::MIN_POSITIVE));
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| ((f64::from(l) - f64::from(max)) / t).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

pub(crate) fn normalized_entropy(probs: &[f32]) -> f32 {
    if probs.len() < 2 {
        return 0.0;
    }
    let h: f64 = probs.iter().filter(|&&p| p > 0.0).map(|&p| -f64::from(p) * f64::from(p).ln()).sum();
    (h / (probs.len() as f64).ln()) as f32
}
