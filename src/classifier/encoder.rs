//! The transformer stage: a BERT-family sentence encoder (all-MiniLM-L6-v2), split in two
//! so that a router can fine-tune only its top layers: the bottom (embeddings + frozen
//! layers, from the shared backbone) and the top (the router's own layers, from its
//! `model.safetensors`).
//!
//! Inference (`embed_ids`) runs the packed forward of `bert.rs`. Training's
//! frozen bottom layers and the static-embedding distillation run
//! `candle_transformers::models::bert` (the numbers the shipped router was trained with),
//! loaded only when first used; the layers being fine-tuned run `finetune.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use tokenizers::Tokenizer;

use super::bert::InferBert;
use super::config::Pooling;
use super::finetune::TrainTop;
use super::text::head_tail_bytes;
use super::wordpiece::FastWordPiece;

/// Long inputs are cut to head+tail *bytes* before tokenizing so that tokenization cost
/// is bounded too; 12 bytes per token budget is ~2.5x the average WordPiece length of
/// English and code, so the later token-level head+tail cut still has enough material.
const BYTES_PER_TOKEN_BUDGET: usize = 12;

/// Errors of the transformer stage.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("model file {path} is missing; run scripts/setup.sh to fetch the models")]
    MissingModel { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: invalid BERT config: {source}")]
    BadConfig { path: PathBuf, source: serde_json::Error },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("tensor op: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("router weights do not fit the backbone: {0}")]
    Mismatch(String),
}

/// Paths of a backbone's files.
pub struct BackbonePaths {
    pub weights: PathBuf,
    pub tokenizer: PathBuf,
    pub config: PathBuf,
}

impl BackbonePaths {
    /// Locates `models_dir/<backbone>/` and fails, naming scripts/setup.sh, when a file
    /// is missing.
    pub fn locate(models_dir: &Path, backbone: &str) -> Result<Self, EncoderError> {
        let dir = models_dir.join(backbone);
        let paths = Self {
            weights: dir.join("model.safetensors"),
            tokenizer: dir.join("tokenizer.json"),
            config: dir.join("config.json"),
        };
        for p in [&paths.weights, &paths.tokenizer, &paths.config] {
            if !p.is_file() {
                return Err(EncoderError::MissingModel { path: p.clone() });
            }
        }
        Ok(paths)
    }
}

/// Number of transformer layers of a backbone, from its config.json.
pub fn backbone_layers(models_dir: &Path, backbone: &str) -> Result<usize, EncoderError> {
    let paths = BackbonePaths::locate(models_dir, backbone)?;
    let text = std::fs::read_to_string(&paths.config)
        .map_err(|source| EncoderError::Read { path: paths.config.clone(), source })?;
    let cfg: BertConfig =
        serde_json::from_str(&text).map_err(|source| EncoderError::BadConfig { path: paths.config.clone(), source })?;
    Ok(cfg.num_hidden_layers)
}

/// A tokenized batch padded to its longest member, with a 0/1 mask.
pub struct Batch {
    pub ids: Tensor,
    pub mask: Tensor,
}

/// Tokenizer + split BERT encoder + pooling.
pub struct Encoder {
    tokenizer: Tokenizer,
    /// BERT-uncased WordPiece without `tokenizers` for ASCII text (same ids), if it applies.
    fast_wordpiece: Option<FastWordPiece>,
    /// The bottom layers for inference; the router's top layers are appended to it.
    infer: InferBert,
    /// candle's model of the bottom layers, for training; built on first use.
    bottom: OnceLock<BertModel>,
    weights: PathBuf,
    split: usize,
    bert_config: BertConfig,
    device: Device,
    max_tokens: usize,
    pooling: Pooling,
    cls: u32,
    sep: u32,
}

impl Encoder {
    /// Loads the tokenizer and the bottom `split` layers of the backbone (all layers when
    /// `split` is None). Attach the router's top layers with [`Encoder::push_top`].
    pub fn load(
        models_dir: &Path,
        backbone: &str,
        split: Option<usize>,
        max_tokens: usize,
        pooling: Pooling,
    ) -> Result<Self, EncoderError> {
        let paths = BackbonePaths::locate(models_dir, backbone)?;
        let device = Device::Cpu;
        let config_text = std::fs::read_to_string(&paths.config)
            .map_err(|source| EncoderError::Read { path: paths.config.clone(), source })?;
        let bert_config: BertConfig = serde_json::from_str(&config_text)
            .map_err(|source| EncoderError::BadConfig { path: paths.config.clone(), source })?;
        let split = split.unwrap_or(bert_config.num_hidden_layers);
        if split > bert_config.num_hidden_layers {
            return Err(EncoderError::Mismatch(format!(
                "split at layer {split} but the backbone has {}",
                bert_config.num_hidden_layers
            )));
        }
        let tensors = candle_core::safetensors::load(&paths.weights, &device)?;
        let infer = InferBert::from_backbone(&tensors, &bert_config, split)?;

        let mut tokenizer =
            Tokenizer::from_file(&paths.tokenizer).map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        // The shipped tokenizer.json pads and truncates everything to 128 tokens; we pad
        // per batch (cheaper) and truncate head+tail ourselves (keeps the question's end).
        tokenizer.with_padding(None);
        tokenizer.with_truncation(None).map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        let special =
            |t: &str| tokenizer.token_to_id(t).ok_or_else(|| EncoderError::Tokenizer(format!("no {t} token")));
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let fast_wordpiece = FastWordPiece::for_tokenizer(&tokenizer);
        Ok(Self {
            tokenizer,
            fast_wordpiece,
            infer,
            bottom: OnceLock::new(),
            weights: paths.weights,
            split,
            bert_config,
            device,
            max_tokens,
            pooling,
            cls,
            sep,
        })
    }

    /// candle's model of the bottom layers (loaded from the backbone file on first use).
    fn candle_bottom(&self) -> Result<&BertModel, EncoderError> {
        if let Some(m) = self.bottom.get() {
            return Ok(m);
        }
        let tensors = candle_core::safetensors::load(&self.weights, &self.device)?;
        let mut cfg = self.bert_config.clone();
        cfg.num_hidden_layers = self.split;
        let model = BertModel::load(VarBuilder::from_tensors(tensors, DType::F32, &self.device), &cfg)?;
        // Another thread may have won the race; either copy is the same model.
        Ok(self.bottom.get_or_init(|| model))
    }

    /// The backbone's architecture.
    pub fn bert_config(&self) -> &BertConfig {
        &self.bert_config
    }

    /// Hidden size of the pooled embedding.
    pub fn hidden_size(&self) -> usize {
        self.bert_config.hidden_size
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Appends the router's fine-tuned top layers (`layers` layers named `layer.{i}.*`)
    /// to the inference model.
    pub fn push_top(&mut self, tensors: &HashMap<String, Tensor>, layers: usize) -> Result<(), EncoderError> {
        self.infer.push_layers(tensors, &self.bert_config, layers)
    }

    /// WordPiece ids of `text` without special tokens and without truncation: the fast
    /// path (`wordpiece.rs`) where it applies, else the tokenizer's pipeline.
    pub fn wordpiece_ids(&self, text: &str) -> Result<Vec<u32>, EncoderError> {
        if let Some(ids) = self.fast_wordpiece.as_ref().and_then(|w| w.encode(text)) {
            return Ok(ids);
        }
        let enc = self.tokenizer.encode(text, false).map_err(|e| EncoderError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// `[CLS]` and `[SEP]` ids.
    pub fn special_ids(&self) -> (u32, u32) {
        (self.cls, self.sep)
    }

    /// Vocabulary size of the tokenizer.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids with [CLS]/[SEP], cut to `max_tokens` keeping the head and the tail.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>, EncoderError> {
        let text = head_tail_bytes(text, self.max_tokens * BYTES_PER_TOKEN_BUDGET / 2);
        let ids = self.wordpiece_ids(&text)?;
        let budget = self.max_tokens.saturating_sub(2);
        let mut out = Vec::with_capacity(ids.len().min(budget) + 2);
        out.push(self.cls);
        if ids.len() <= budget {
            out.extend_from_slice(&ids);
        } else {
            // The start states the task and the end often holds the actual question
            // (after a pasted document), so both survive; the middle is dropped.
            let tail = budget / 2;
            let head = budget - tail;
            out.extend_from_slice(&ids[..head]);
            out.extend_from_slice(&ids[ids.len() - tail..]);
        }
        out.push(self.sep);
        Ok(out)
    }

    /// Pads token id lists to the longest one; the mask marks real tokens.
    pub fn pad(&self, seqs: &[Vec<u32>]) -> Result<Batch, EncoderError> {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(0u32, len - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, len - s.len()));
        }
        Ok(Batch {
            ids: Tensor::from_vec(ids, (seqs.len(), len), &self.device)?,
            mask: Tensor::from_vec(mask, (seqs.len(), len), &self.device)?,
        })
    }

    /// Hidden states after the bottom (frozen) layers, by candle's model (training):
    /// `[batch, len, hidden]`.
    pub fn bottom_forward(&self, batch: &Batch) -> Result<Tensor, EncoderError> {
        let token_types = batch.ids.zeros_like()?;
        let mask = batch.mask.to_dtype(DType::U32)?;
        Ok(self.candle_bottom()?.forward(&batch.ids, &token_types, Some(&mask))?)
    }

    /// Runs `top` (if any, differentiably: training) over bottom hidden states and pools
    /// them: `[batch, hidden]`.
    pub fn top_and_pool(&self, top: Option<&TrainTop>, hidden: &Tensor, mask: &Tensor) -> Result<Tensor, EncoderError> {
        let hidden = match top {
            Some(top) => top.forward(hidden, mask)?,
            None => hidden.clone(),
        };
        pool(&hidden, mask, self.pooling)
    }

    /// Pooled embeddings `[n, hidden]` of token id sequences (from [`Encoder::token_ids`])
    /// through bottom and top layers, on `threads` cores (`None`: [`default_threads`]).
    /// Each row depends only on its own sequence (no padding: sequences are packed, and
    /// attend only to themselves).
    pub fn embed_ids(&self, seqs: &[Vec<u32>], threads: Option<usize>) -> Result<Tensor, EncoderError> {
        let threads = threads.unwrap_or_else(|| default_threads(seqs.iter().map(Vec::len).sum()));
        let pooled = self.infer.embed(seqs, self.pooling, threads)?;
        Ok(Tensor::from_vec(pooled, (seqs.len(), self.hidden_size()), &self.device)?)
    }

    /// [`Encoder::embed_ids`] through candle's model of the bottom layers only (what
    /// training and distillation use).
    pub fn embed_ids_candle(&self, seqs: &[Vec<u32>]) -> Result<Tensor, EncoderError> {
        let batch = self.pad(seqs)?;
        let hidden = self.bottom_forward(&batch)?;
        self.top_and_pool(None, &hidden, &batch.mask)
    }
}

/// Below this many tokens a pass runs on one core. With the weights in panels
/// (`bert.rs`) each dense layer is split over the cores by panel, one rayon job per layer
/// product, and two cores beat one from a handful of tokens: in the classifier benchmark on
/// a 2-core AVX2 EPYC (`bench/results/2026-12-02-classifier-panels/`) a lone ~23-token pass
/// took 8.5-9.4 ms on two against 11.4-12.3 ms on one. (With one `[in, out]` gemm per
/// layer, two cores were slower below ~128 tokens: 22.5 against 10.5 ms for 32 tokens.)
/// The service's encoder workers ignore this when there are several of them: each keeps
/// to one core.
pub const PAR_MIN_TOKENS: usize = 8;

/// Cores a pass over `tokens` tokens uses unless told: one below [`PAR_MIN_TOKENS`],
/// else candle's thread count (`RAYON_NUM_THREADS`, or every core).
pub fn default_threads(tokens: usize) -> usize {
    if tokens < PAR_MIN_TOKENS {
        1
    } else {
        candle_core::utils::get_num_threads()
    }
}

/// `[b, len]` 0/1 mask -> additive `[b, 1, 1, len]` mask (0 keep, f32::MIN drop), as
/// `get_extended_attention_mask` in candle's (private) and HF's BERT.
pub fn extended_mask(mask: &Tensor) -> Result<Tensor, EncoderError> {
    let m = mask.to_dtype(DType::F32)?.unsqueeze(1)?.unsqueeze(1)?;
    Ok(((m.ones_like()? - &m)? * f64::from(f32::MIN))?)
}

/// Pools `[b, len, h]` token states into `[b, h]`, ignoring padding.
pub fn pool(hidden: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor, EncoderError> {
    match pooling {
        Pooling::Cls => Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?),
        Pooling::Mean => {
            let m = mask.to_dtype(hidden.dtype())?.unsqueeze(D::Minus1)?;
            let sum = hidden.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?;
            Ok(sum.broadcast_div(&count)?)
        }
    }
}

/// The backbone's layers `from..` renamed to `layer.{i}.*` (router-local numbering), to
/// initialise fine-tuning.
pub fn backbone_top_tensors(
    models_dir: &Path,
    backbone: &str,
    from: usize,
) -> Result<HashMap<String, Tensor>, EncoderError> {
    let paths = BackbonePaths::locate(models_dir, backbone)?;
    let tensors = candle_core::safetensors::load(&paths.weights, &Device::Cpu)?;
    let mut out = HashMap::new();
    for (name, t) in tensors {
        let Some(rest) = name.strip_prefix("encoder.layer.") else {
            continue;
        };
        let Some((idx, tail)) = rest.split_once('.') else {
            continue;
        };
        let Ok(idx) = idx.parse::<usize>() else {
            continue;
        };
        if idx >= from {
            out.insert(format!("layer.{}.{tail}", idx - from), t);
        }
    }
    Ok(out)
}
