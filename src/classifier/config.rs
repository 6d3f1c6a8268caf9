//! `router.toml`: the definition of a trained router. Parsed strictly (unknown keys are
//! errors) into a raw form, then validated.

use std::path::{Path, PathBuf};

/// The file that defines a router inside its folder.
pub const ROUTER_FILE: &str = "router.toml";
/// Trained encoder layers and head, stored as f16 to keep the repository small.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The stage-1 n-gram model.
pub const FAST_FILE: &str = "fast.safetensors";
/// Training data lives here, one JSONL file per category or any other split.
pub const DATA_DIR: &str = "data";
/// all-MiniLM was trained with 512 positions; more cannot be encoded.
const MAX_POSITIONS: usize = 512;
/// [CLS] and [SEP] plus at least a few tokens of text.
const MIN_TOKENS: usize = 8;
/// BERT-family backbones this size have hidden sizes up to 1024; PCA cannot keep more.
const MAX_STATIC_DIMS: usize = 1024;

/// Errors loading or validating a router definition.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("cannot serialize router config: {0}")]
    Serialize(#[from] toml::ser::Error),
    #[error("{path}: `{key}` must be {limit}, got {value}")]
    Invalid { path: PathBuf, key: &'static str, limit: String, value: String },
}

/// Pooling of the encoder's token states into one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Masked mean over tokens, as all-MiniLM was trained.
    Mean,
    /// The [CLS] token's state.
    Cls,
}

/// `router.toml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterConfig {
    /// Router name, e.g. "default".
    pub name: String,
    /// Bumped whenever the artifacts change; decisions depend only on text + version.
    pub version: String,
    /// Folder name of the backbone under the models directory.
    pub backbone: String,
    pub pooling: Pooling,
    /// Token budget of the encoder, [CLS]/[SEP] included; longer inputs keep head+tail.
    pub max_tokens: usize,
    /// Category labels; the order is the order of `Classification::probs`.
    pub labels: Vec<String>,
    /// Temperature of the encoder head's softmax, fitted on held-out data by `train`.
    pub temperature: f32,
    /// The encoder stage's decision mixes in stage 1's evidence (which is free by then):
    /// logits = (1-w)*log p_encoder + w*log p_fast, then softmax at
    /// `ensemble_temperature`. Both are fitted on held-out data by `train`.
    #[serde(default)]
    pub fast_weight: f32,
    #[serde(default = "one")]
    pub ensemble_temperature: f32,
    /// How many of the backbone's top layers were fine-tuned (0 = frozen encoder).
    pub trainable_layers: usize,
    pub fast: FastConfig,
    pub thresholds: Thresholds,
    pub train: TrainConfig,
}

/// Stage-1 settings.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastConfig {
    /// Whether stage 1 may decide at all (false = every input goes to the encoder).
    pub enabled: bool,
    /// log2 of the number of hash buckets for n-gram features.
    pub hash_bits: u32,
    /// Temperature of stage 1's softmax, fitted on held-out data.
    pub temperature: f32,
    /// Stage 1 decides when its calibrated top probability is at least this; fitted
    /// on held-out data so accepted decisions are as accurate as the encoder's.
    pub accept_threshold: f32,
    /// Principal components kept of the static token embeddings distilled from the
    /// backbone (`distill.rs`) that stage 1 adds to its n-grams; 0 = n-grams only.
    #[serde(default)]
    pub static_dims: usize,
    /// Length of the static-embedding features relative to the n-gram ones.
    #[serde(default = "one")]
    pub static_scale: f32,
}

/// Thresholds the gateway may use on calibrated outputs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Below this top probability a decision counts as uncertain (policy fallback).
    pub min_confidence: f32,
}

/// Training hyper-parameters, kept with the router so a run is reproducible.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    pub epochs: usize,
    /// Early stopping: epochs without validation improvement before stopping.
    pub patience: usize,
    pub batch_size: usize,
    pub lr_encoder: f64,
    pub lr_head: f64,
    pub weight_decay: f64,
    /// Dropout on the pooled embedding during training.
    pub dropout: f32,
    /// Share of each category held out for validation (early stopping, calibration).
    pub val_fraction: f64,
    /// Share of each category held out as a test set never used for any choice.
    pub test_fraction: f64,
    /// Stage-1 training epochs.
    pub fast_epochs: usize,
    /// Cap on examples per category (0 = all); used by quick tests.
    #[serde(default)]
    pub max_per_class: usize,
    /// Distil only the first this many vocabulary tokens (0 = all); used by quick tests.
    #[serde(default)]
    pub distill_vocab_limit: usize,
}

fn one() -> f32 {
    1.0
}

impl RouterConfig {
    /// Reads and validates `dir/router.toml`.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join(ROUTER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
        let cfg: RouterConfig = toml::from_str(&text)
            .map_err(|source| ConfigError::Parse { path: path.clone(), source: Box::new(source) })?;
        cfg.validate(&path)?;
        Ok(cfg)
    }

    /// Writes `dir/router.toml` (used by `train` to record calibration).
    pub fn save(&self, dir: &Path) -> Result<(), ConfigError> {
        let path = dir.join(ROUTER_FILE);
        let body = toml::to_string_pretty(self)?;
        let text = format!(
            "# Router definition. `temperature`, `fast.temperature` and `fast.accept_threshold`\n\
             # are written by `triage router train`; see README.md for provenance.\n{body}"
        );
        std::fs::write(&path, text).map_err(|source| ConfigError::Write { path, source })
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, limit: &str, value: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            limit: limit.to_owned(),
            value,
        };
        if !(MIN_TOKENS..=MAX_POSITIONS).contains(&self.max_tokens) {
            return Err(invalid(
                "max_tokens",
                &format!("in {MIN_TOKENS}..={MAX_POSITIONS}"),
                self.max_tokens.to_string(),
            ));
        }
        if self.labels.len() < 2 {
            return Err(invalid("labels", "at least 2 labels", format!("{:?}", self.labels)));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.labels.iter().find(|l| !seen.insert(l.as_str())) {
            return Err(invalid("labels", "unique", format!("duplicate {dup:?}")));
        }
        if !(self.temperature > 0.0 && self.fast.temperature > 0.0 && self.ensemble_temperature > 0.0) {
            return Err(invalid("temperature", "> 0", format!("{} / {}", self.temperature, self.fast.temperature)));
        }
        if !(0.0..=1.0).contains(&self.fast_weight) {
            return Err(invalid("fast_weight", "in 0..=1", self.fast_weight.to_string()));
        }
        if self.fast.static_dims > MAX_STATIC_DIMS {
            return Err(invalid(
                "fast.static_dims",
                &format!("at most {MAX_STATIC_DIMS}"),
                self.fast.static_dims.to_string(),
            ));
        }
        if self.fast.static_scale.is_nan() || self.fast.static_scale <= 0.0 {
            return Err(invalid("fast.static_scale", "> 0", self.fast.static_scale.to_string()));
        }
        if !(8..=24).contains(&self.fast.hash_bits) {
            return Err(invalid("fast.hash_bits", "in 8..=24", self.fast.hash_bits.to_string()));
        }
        if self.train.val_fraction + self.train.test_fraction >= 0.9 {
            return Err(invalid(
                "train.val_fraction + train.test_fraction",
                "< 0.9",
                format!("{}", self.train.val_fraction + self.train.test_fraction),
            ));
        }
        Ok(())
    }
}
