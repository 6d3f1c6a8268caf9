//! A local expert made ready to promote: what the warm tier keeps.
//!
//! [`Prepared`] holds everything a model needs that does not depend on the device it runs on:
//! the parsed GGUF header, the built tokenizer, the compiled chat template, and every weight
//! read and converted to its compute format (quantized blocks, or f16/f32 when the config asks
//! for dequantized weights) in host memory. Building a hot model from it does no file I/O, no
//! parsing and no dequantization: on the CPU it shares the weights (reference counts), on a
//! GPU it copies them to the device.

use std::io::BufReader;
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file;

use super::engine::Header;
use super::models::{predict_weights, HostWeights};
use super::{LocalConfig, LocalError};

/// Heap bytes accounted per byte of GGUF header (metadata + tensor table) for what is built
/// from it: mostly the tokenizer's maps (token -> id, id -> token, merges, added tokens), plus
/// the kept metadata and the template. Measured by counting allocations (the
/// `warm_bytes_cover_what_a_prepared_copy_allocates` test): 4.0 for SmolLM2's byte-level BPE
/// (7.2 MB from a 1.8 MB header), 9.1 for Gemma 3's SentencePiece vocabulary (60 MB from
/// 6.5 MB), whose merges are derived from the scores (every split of every piece) and so
/// outnumber its tokens. Rounded up for margin; an unknown vocabulary type (or a
/// `tokenizer.json`) is charged the larger factor.
const HEADER_HEAP_FACTOR_BPE: f64 = 5.0;
const HEADER_HEAP_FACTOR_SENTENCEPIECE: f64 = 11.0;
/// What the tokenizer may still grow by once in use: its BPE word cache holds up to 10,000
/// words (HF `tokenizers` `DEFAULT_CACHE_CAPACITY`), each a key string plus its symbols.
const TOKENIZER_CACHE_BYTES: usize = 2 << 20;

/// Sizes of a local expert read from its GGUF header alone (milliseconds, no tensor data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Parameters (weights + norms).
    pub params: usize,
    /// Upper bound of [`ModelInfo::bytes`](super::ModelInfo::bytes): the loaded weights.
    pub hot_bytes: usize,
    /// Upper bound of [`Prepared::bytes`]: the weights plus the tokenizer, template and
    /// header a warm copy keeps.
    pub warm_bytes: usize,
}

impl Footprint {
    pub fn read(cfg: &LocalConfig) -> Result<Self, LocalError> {
        let file =
            std::fs::File::open(&cfg.path).map_err(|source| LocalError::Io { path: cfg.path.clone(), source })?;
        let content = gguf_file::Content::read(&mut BufReader::new(file))
            .map_err(|source| LocalError::Gguf { origin: cfg.path.display().to_string(), source })?;
        let (params, hot_bytes) = predict_weights(&content, cfg.weights);
        Ok(Self { params, hot_bytes, warm_bytes: hot_bytes + header_heap_bytes(&content, cfg) })
    }
}

/// What the non-weight part of a warm copy is accounted at (see [`HEADER_HEAP_FACTOR_BPE`]).
fn header_heap_bytes(content: &gguf_file::Content, cfg: &LocalConfig) -> usize {
    let tokenizer_json = cfg.tokenizer.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len() as usize);
    let vocab = content.metadata.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok());
    let factor = match (vocab.map(String::as_str), tokenizer_json) {
        (Some("gpt2"), 0) => HEADER_HEAP_FACTOR_BPE,
        _ => HEADER_HEAP_FACTOR_SENTENCEPIECE,
    };
    let header = content.tensor_data_offset as usize + tokenizer_json;
    (header as f64 * factor).ceil() as usize + TOKENIZER_CACHE_BYTES
}

/// A model ready to promote (see the module docs). Immutable; shared by `Arc` between the warm
/// tier and the hot model built from it.
pub struct Prepared {
    /// The header with the tokenizer's and template's sources dropped (they are built).
    pub(super) content: gguf_file::Content,
    pub(super) header: Header,
    pub(super) weights: HostWeights,
    pub(super) file_bytes: usize,
    bytes: usize,
    took: Duration,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("arch", &self.header.arch)
            .field("bytes", &self.bytes)
            .field("weight_bytes", &self.weights.bytes)
            .finish()
    }
}

impl Prepared {
    /// Reads `cfg.path` and builds everything but the device copy of the weights. Blocking
    /// (file I/O and, for `f16`/`f32` weights, dequantization): call from `spawn_blocking`.
    pub fn read(name: &str, cfg: &LocalConfig) -> Result<Self, LocalError> {
        let started = Instant::now();
        cfg.validate()?;
        let path = &cfg.path;
        let file = std::fs::File::open(path).map_err(|source| LocalError::Io { path: path.clone(), source })?;
        let file_bytes = file.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let origin = path.display().to_string();
        let mut reader = BufReader::new(file);
        let mut content = gguf_file::Content::read(&mut reader)
            .map_err(|source| LocalError::Gguf { origin: origin.clone(), source })?;
        let header_heap = header_heap_bytes(&content, cfg);
        let header = Header::read(name, cfg, &origin, &content)?;
        let weights = HostWeights::read(&content, &mut reader, cfg.weights)
            .map_err(|source| LocalError::Load { origin: origin.clone(), source })?;
        // Built into the tokenizer and template: the vocabulary arrays would be dead weight.
        content.metadata.retain(|k, _| !k.starts_with("tokenizer."));
        content.metadata.shrink_to_fit();
        Ok(Self { bytes: weights.bytes + header_heap, content, header, weights, file_bytes, took: started.elapsed() })
    }

    /// What this copy is accounted at in the warm budget: its weights exactly, plus an upper
    /// bound of the tokenizer, template and header (never above [`Footprint::warm_bytes`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes of the weights alone (what a hot model built from this copy holds).
    pub fn weight_bytes(&self) -> usize {
        self.weights.bytes
    }

    /// How long [`read`](Self::read) took.
    pub fn took(&self) -> Duration {
        self.took
    }
}
