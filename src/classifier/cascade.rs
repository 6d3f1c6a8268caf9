//! A trained router: the stage-1 n-gram model in front of the fine-tuned encoder + head.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use super::config::{RouterConfig, FAST_FILE, WEIGHTS_FILE};
use super::encoder::{backbone_layers, Encoder, EncoderError};
use super::fast::{wordpiece_window, FastError, FastModel, Features};
use super::head::{Head, HEAD_PREFIX, TOP_PREFIX};
use super::{softmax_t, Classification, ClassifyError, ConfigError, Stage};

/// Errors loading a router.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Encoder(#[from] EncoderError),
    #[error(transparent)]
    Fast(#[from] FastError),
    #[error("router weights {path}: {source}; run `triage router train` for this router")]
    Weights { path: String, source: candle_core::Error },
}

/// A loaded, trained router (stage 1 + encoder + head).
pub struct Classifier {
    config: RouterConfig,
    encoder: Encoder,
    head: Head,
    fast: FastModel,
}

impl Classifier {
    /// Loads `router_dir` (router.toml + weights) on top of the backbone in `models_dir`.
    pub fn load(router_dir: &Path, models_dir: &Path) -> Result<Self, LoadError> {
        let config = RouterConfig::load(router_dir)?;
        let weights_path = router_dir.join(WEIGHTS_FILE);
        let tensors = candle_core::safetensors::load(&weights_path, &Device::Cpu)
            .map_err(|source| LoadError::Weights { path: weights_path.display().to_string(), source })?;
        let fast = FastModel::load(&router_dir.join(FAST_FILE), config.labels.len())?;
        Self::from_parts(config, models_dir, tensors, fast)
    }

    /// Builds a classifier from in-memory weights (used by training for evaluation).
    pub fn from_parts(
        config: RouterConfig,
        models_dir: &Path,
        tensors: HashMap<String, candle_core::Tensor>,
        fast: FastModel,
    ) -> Result<Self, LoadError> {
        let layers = backbone_layers(models_dir, &config.backbone)?;
        let k = config.trainable_layers.min(layers);
        let mut encoder =
            Encoder::load(models_dir, &config.backbone, Some(layers - k), config.max_tokens, config.pooling)?;
        let top_prefix = format!("{TOP_PREFIX}.");
        let head_prefix = format!("{HEAD_PREFIX}.");
        let mut top = HashMap::new();
        let mut head = HashMap::new();
        for (name, t) in tensors {
            let t = t.to_dtype(DType::F32).map_err(EncoderError::from)?;
            if let Some(rest) = name.strip_prefix(&top_prefix) {
                top.insert(rest.to_owned(), t);
            } else if name.starts_with(&head_prefix) {
                head.insert(name, t);
            }
        }
        if k > 0 {
            encoder.push_top(&top, k)?;
        }
        let head = Head::load(
            VarBuilder::from_tensors(head, DType::F32, &Device::Cpu),
            encoder.hidden_size(),
            config.labels.len(),
        )?;
        Ok(Self { config, encoder, head, fast })
    }

    pub fn labels(&self) -> &[String] {
        &self.config.labels
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Stage 1's features of `text` (n-grams, and the static embedding when the router
    /// has one).
    pub fn fast_features(&self, text: &str) -> Features {
        let ids = match self.fast.statics() {
            // A tokenizer error (it has none on valid UTF-8) leaves the dense part zero:
            // the decision still depends on the text alone.
            Some(_) => self.encoder.wordpiece_ids(&wordpiece_window(text)).unwrap_or_default(),
            None => Vec::new(),
        };
        self.fast.features(text, &ids)
    }

    /// Stage 1's calibrated probabilities (always computed, whatever the threshold).
    pub fn fast_probs(&self, text: &str) -> Vec<f32> {
        softmax_t(&self.fast.logits_of(&self.fast_features(text)), self.config.fast.temperature)
    }

    /// Stage 1 alone: `Some` when it is confident enough to decide.
    pub fn classify_fast(&self, text: &str) -> Option<Classification> {
        if !self.config.fast.enabled {
            return None;
        }
        let start = Instant::now();
        let probs = self.fast_probs(text);
        let c = Classification { probs, stage: Stage::Fast, elapsed: start.elapsed() };
        (c.confidence() >= self.config.fast.accept_threshold).then_some(c)
    }

    /// Encoder + head raw logits for a batch (one packed pass: no padding) on `threads`
    /// cores (`None`: by the pass's size).
    pub fn encoder_logits(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Vec<f32>>, EncoderError> {
        let seqs = texts.iter().map(|t| self.encoder.token_ids(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(self.head.forward(&self.encoder.embed_ids(&seqs, threads)?)?.to_vec2::<f32>()?)
    }

    /// Encoder-stage calibrated probabilities for a batch: the encoder's evidence mixed
    /// with stage 1's (see `RouterConfig::fast_weight`). Sequences are packed, each
    /// attending only to itself, so each row equals what the text alone would get.
    pub fn encoder_probs(&self, texts: &[&str], threads: Option<usize>) -> Result<Vec<Vec<f32>>, EncoderError> {
        let logits = self.encoder_logits(texts, threads)?;
        Ok(texts
            .iter()
            .zip(logits)
            .map(|(t, l)| {
                let c = &self.config;
                mix(&softmax_t(&l, c.temperature), &self.fast_probs(t), c.fast_weight, c.ensemble_temperature)
            })
            .collect())
    }

    /// The encoder stage for a batch.
    pub fn classify_encoder(&self, texts: &[&str]) -> Result<Vec<Classification>, EncoderError> {
        self.classify_encoder_on(texts, None)
    }

    /// [`Classifier::classify_encoder`] on `threads` cores (`None`: by the pass's size).
    pub fn classify_encoder_on(
        &self,
        texts: &[&str],
        threads: Option<usize>,
    ) -> Result<Vec<Classification>, EncoderError> {
        let start = Instant::now();
        let probs = self.encoder_probs(texts, threads)?;
        let elapsed = start.elapsed();
        Ok(probs.into_iter().map(|probs| Classification { probs, stage: Stage::Encoder, elapsed }).collect())
    }

    /// The full cascade for a batch: stage 1 decides what it can, the rest is encoded
    /// together.
    pub fn classify_batch(&self, texts: &[&str]) -> Result<Vec<Classification>, ClassifyError> {
        let mut out: Vec<Option<Classification>> = texts.iter().map(|t| self.classify_fast(t)).collect();
        let pending: Vec<usize> = (0..texts.len()).filter(|&i| out[i].is_none()).collect();
        let enc = self.classify_encoder(&pending.iter().map(|&i| texts[i]).collect::<Vec<_>>())?;
        for (i, c) in pending.into_iter().zip(enc) {
            out[i] = Some(c);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// The full cascade for one text.
    pub fn classify(&self, text: &str) -> Result<Classification, ClassifyError> {
        self.classify_batch(&[text])?.pop().ok_or(ClassifyError::ShutDown)
    }
}

/// `softmax(((1-w) log p_enc + w log p_fast) / t)`: a weighted product of experts.
pub fn mix(enc: &[f32], fast: &[f32], w: f32, t: f32) -> Vec<f32> {
    // Floor keeps log finite; far below any probability that matters for a decision.
    const FLOOR: f32 = 1e-12;
    let z: Vec<f32> =
        enc.iter().zip(fast).map(|(e, f)| (1.0 - w) * e.max(FLOOR).ln() + w * f.max(FLOOR).ln()).collect();
    softmax_t(&z, t)
}
