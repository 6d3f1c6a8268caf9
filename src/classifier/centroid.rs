//! The `centroid` router kind: each category is a handful of example prompts (from the
//! policy); a text goes to the category whose mean example embedding is most
//! cosine-similar. Adding a category is embedding its examples: no retraining.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::config::Pooling;
use super::encoder::{Encoder, EncoderError};
use super::service::Router;
use super::{softmax_t, Classification, Stage};

/// Softmax temperature over cosine similarities. all-MiniLM similarities of related
/// prompts differ by ~0.05-0.2 from unrelated ones, so 0.05 turns a 0.1 gap into a
/// ~7x odds ratio: decisive for clear inputs, flat for ones between categories.
pub const DEFAULT_TEMPERATURE: f32 = 0.05;
/// all-MiniLM-L6-v2 was trained on 128-token inputs; example prompts are short.
pub const CENTROID_MAX_TOKENS: usize = 128;
/// The backbone shared with the trained routers.
pub const DEFAULT_BACKBONE: &str = "all-minilm-l6-v2";

/// A nearest-centroid router over the plain (not fine-tuned) backbone.
pub struct CentroidRouter {
    encoder: Arc<Encoder>,
    labels: Vec<String>,
    centroids: Vec<Vec<f32>>,
    temperature: f32,
}

impl CentroidRouter {
    /// Loads the full backbone as a sentence encoder for centroid routing.
    pub fn load_encoder(models_dir: &Path) -> Result<Arc<Encoder>, EncoderError> {
        Ok(Arc::new(Encoder::load(models_dir, DEFAULT_BACKBONE, None, CENTROID_MAX_TOKENS, Pooling::Mean)?))
    }

    /// Builds a router from `(label, example prompts)` pairs.
    pub fn new(encoder: Arc<Encoder>, categories: Vec<(String, Vec<String>)>) -> Result<Self, EncoderError> {
        let mut r = Self { encoder, labels: Vec::new(), centroids: Vec::new(), temperature: DEFAULT_TEMPERATURE };
        for (label, examples) in categories {
            r.add_category(label, &examples)?;
        }
        Ok(r)
    }

    /// Adds (or replaces) a category from its example prompts.
    pub fn add_category(&mut self, label: String, examples: &[String]) -> Result<(), EncoderError> {
        if examples.is_empty() {
            return Err(EncoderError::Mismatch(format!("category {label:?} has no example prompts")));
        }
        let embs = self.embed_normalized(&examples.iter().map(String::as_str).collect::<Vec<_>>(), None)?;
        let dim = embs.first().map_or(0, Vec::len);
        let mut c = vec![0f32; dim];
        for e in &embs {
            c.iter_mut().zip(e).for_each(|(a, b)| *a += b);
        }
        normalize(&mut c);
        match self.labels.iter().position(|l| *l == label) {
            Some(i) => self.centroids[i] = c,
            None => {
                self.labels.push(label);
                self.centroids.push(c);
            }
        }
        Ok(())
    }

    fn embed_normalized(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Vec<f32>>, EncoderError> {
        let seqs = texts.iter().map(|t| self.encoder.token_ids(t)).collect::<Result<Vec<_>, _>>()?;
        let mut out = self.encoder.embed_ids(&seqs, threads)?.to_vec2::<f32>()?;
        out.iter_mut().for_each(|v| normalize(v));
        Ok(out)
    }
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= n);
}

impl Router for CentroidRouter {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Centroid routing has no stage 1: its categories change without training.
    fn classify_fast(&self, _text: &str) -> Option<Classification> {
        None
    }

    fn classify_encoder(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Classification>, EncoderError> {
        let start = Instant::now();
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let embs = self.embed_normalized(texts, threads)?;
        let elapsed = start.elapsed();
        Ok(embs
            .iter()
            .map(|e| {
                let sims: Vec<f32> = self.centroids.iter().map(|c| c.iter().zip(e).map(|(a, b)| a * b).sum()).collect();
                Classification { probs: softmax_t(&sims, self.temperature), stage: Stage::Encoder, elapsed }
            })
            .collect())
    }
}
