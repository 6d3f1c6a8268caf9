//! Stage 1: a multinomial logistic regression over hashed word uni/bigrams, symbol
//! tokens, in-word char trigrams and (optionally) the text's static embedding distilled
//! from the backbone (`distill.rs`). It costs microseconds, so it decides the confident
//! majority of requests; only uncertain inputs pay for the transformer.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::distill::StaticEmbeddings;
use super::text::head_tail_bytes;

/// Bounds stage-1 cost on huge inputs (linear in length up to here); 8 KiB of head and
/// tail carry all the vocabulary evidence a category needs.
const MAX_BYTES_EACH_END: usize = 8 * 1024;
/// The static embedding reads at most this many bytes from each end of a text: ~190
/// WordPiece tokens each, plenty for a mean, and tokenizing stays well under 1 ms even on
/// a loaded box. Above the longest training prompt (1064 bytes = 2 x 532), so a change of
/// this value below that would change the shipped router's features.
const STATIC_MAX_BYTES_EACH_END: usize = 768;
/// Tensor names of the static-embedding part inside `fast.safetensors`.
const STATIC_TABLE: &str = "static.table";
const STATIC_SCALE: &str = "static.scale";
/// Adagrad step size; the loss is convex, so this only trades speed for stability.
const LEARNING_RATE: f32 = 0.5;
/// L2 penalty on touched weights; keeps rare n-grams from dominating.
const L2: f32 = 1e-5;

/// Errors loading or saving a stage-1 model.
#[derive(Debug, thiserror::Error)]
pub enum FastError {
    #[error("stage-1 weights {path}: {source}")]
    Io { path: String, source: candle_core::Error },
    #[error("stage-1 weights {path} are malformed: {reason}")]
    Malformed { path: String, reason: String },
}

/// A sparse feature vector: (bucket, value), L2-normalised, buckets unique.
pub type Features = Vec<(u32, f32)>;

/// The dense part of stage 1's features: a static embedding of the text's WordPiece
/// tokens, scaled relative to the (unit-length) n-gram part.
#[derive(Debug, Clone, PartialEq)]
pub struct Statics {
    pub embeddings: StaticEmbeddings,
    /// Length of the dense part against the n-gram part's 1: how much say it gets at
    /// the start of training (the weights then adapt, but L2 and Adagrad see the scale).
    pub scale: f32,
}

/// The trained stage-1 model; weights are dense in memory for O(1) lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct FastModel {
    bits: u32,
    classes: usize,
    /// `[(2^bits + dense dims) * classes]`, row-major by bucket: the hashed n-gram
    /// buckets, then one row per static-embedding dimension.
    weights: Vec<f32>,
    bias: Vec<f32>,
    statics: Option<Statics>,
}

fn fnv1a(tag: u8, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(tag);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0x1f);
        }
        p.bytes().for_each(&mut eat);
    }
    h
}

/// Stage-1 features: hashed n-grams of `text` in buckets `0..2^bits`, then, with
/// `statics`, the static embedding of `wordpieces` (the text's WordPiece ids) in buckets
/// `2^bits..2^bits + dims`.
pub fn features_with(text: &str, bits: u32, statics: Option<&Statics>, wordpieces: &[u32]) -> Features {
    let mut feats = features(text, bits);
    if let Some(s) = statics {
        let base = 1u32 << bits;
        let dense = s.embeddings.embed(wordpieces);
        feats.extend(dense.into_iter().enumerate().map(|(d, v)| (base + d as u32, s.scale * v)));
    }
    feats
}

/// The part of `text` whose WordPiece ids feed the static embedding (head and tail).
pub fn wordpiece_window(text: &str) -> std::borrow::Cow<'_, str> {
    head_tail_bytes(text, STATIC_MAX_BYTES_EACH_END)
}

/// Hashed features of `text` into `2^bits` buckets.
pub fn features(text: &str, bits: u32) -> Features {
    let text = head_tail_bytes(text, MAX_BYTES_EACH_END).to_lowercase();
    // Words are alphanumeric runs; every other visible char is its own token, because
    // `{`, `;`, `=`, `^` and friends are strong evidence for code and math.
    let mut tokens: Vec<&str> = Vec::new();
    let mut start = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() || c == '_' {
            start.get_or_insert(i);
        } else {
            if let Some(s) = start.take() {
                tokens.push(&text[s..i]);
            }
            if !c.is_whitespace() {
                tokens.push(&text[i..i + c.len_utf8()]);
            }
        }
    }
    if let Some(s) = start {
        tokens.push(&text[s..]);
    }
    let mask = (1u64 << bits) - 1;
    // Every feature's bucket, once per occurrence; sorted, runs of a bucket are its count.
    let mut buckets: Vec<u32> = Vec::with_capacity(tokens.len() * 8);
    let mut add = |h: u64| buckets.push((h & mask) as u32);
    let mut padded = Vec::with_capacity(64);
    for (i, t) in tokens.iter().enumerate() {
        add(fnv1a(b'w', &[t]));
        if let Some(next) = tokens.get(i + 1) {
            add(fnv1a(b'b', &[t, next]));
        }
        // Char trigrams of "<word>" make "integrals"/"integrate" share evidence.
        if t.len() > 3 && t.is_ascii() {
            padded.clear();
            padded.push(b'<');
            padded.extend_from_slice(t.as_bytes());
            padded.push(b'>');
            for w in padded.windows(3) {
                if let Ok(s) = std::str::from_utf8(w) {
                    add(fnv1a(b'c', &[s]));
                }
            }
        }
    }
    buckets.sort_unstable();
    // Sub-linear term frequency, then unit length, so long and short prompts are on one
    // scale and a repeated word does not dominate.
    let mut feats: Features =
        buckets.chunk_by(|a, b| a == b).map(|run| (run[0], 1.0 + (run.len() as f32).ln())).collect();
    let norm = feats.iter().map(|(_, v)| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    feats.iter_mut().for_each(|(_, v)| *v /= norm);
    feats
}

impl FastModel {
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The static-embedding part, if this model has one (then it needs WordPiece ids).
    pub fn statics(&self) -> Option<&Statics> {
        self.statics.as_ref()
    }

    /// Features of `text` for this model; `wordpieces` matter only with statics.
    pub fn features(&self, text: &str, wordpieces: &[u32]) -> Features {
        features_with(text, self.bits, self.statics.as_ref(), wordpieces)
    }

    /// Raw (uncalibrated) logits for pre-computed features.
    pub fn logits_of(&self, feats: &Features) -> Vec<f32> {
        let mut out = self.bias.clone();
        for &(k, v) in feats {
            let row = &self.weights[k as usize * self.classes..(k as usize + 1) * self.classes];
            out.iter_mut().zip(row).for_each(|(o, w)| *o += w * v);
        }
        out
    }

    /// Trains with Adagrad on softmax cross-entropy; deterministic for a given seed.
    /// `data` must come from [`features_with`] with the same `bits` and `statics`.
    pub fn train(
        data: &[(Features, usize)],
        classes: usize,
        bits: u32,
        statics: Option<Statics>,
        epochs: usize,
        seed: u64,
    ) -> Self {
        let buckets = (1usize << bits) + statics.as_ref().map_or(0, |s| s.embeddings.dims());
        let mut m = Self { bits, classes, weights: vec![0.0; buckets * classes], bias: vec![0.0; classes], statics };
        let mut g2w = vec![1e-8f32; buckets * classes];
        let mut g2b = vec![1e-8f32; classes];
        let mut order: Vec<usize> = (0..data.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for &i in &order {
                let (feats, y) = &data[i];
                let probs = super::softmax_t(&m.logits_of(feats), 1.0);
                for c in 0..classes {
                    let err = probs[c] - if c == *y { 1.0 } else { 0.0 };
                    g2b[c] += err * err;
                    m.bias[c] -= LEARNING_RATE * err / g2b[c].sqrt();
                    for &(k, v) in feats {
                        let j = k as usize * classes + c;
                        let g = err * v + L2 * m.weights[j];
                        g2w[j] += g * g;
                        m.weights[j] -= LEARNING_RATE * g / g2w[j].sqrt();
                    }
                }
            }
        }
        m
    }

    /// Saves only the buckets that carry weight (most never occur in training).
    pub fn save(&self, path: &Path) -> Result<(), FastError> {
        let io = |source| FastError::Io { path: path.display().to_string(), source };
        let mut idx = Vec::new();
        let mut rows = Vec::new();
        for (k, row) in self.weights.chunks(self.classes).enumerate() {
            if row.iter().any(|&w| w != 0.0) {
                idx.push(k as u32);
                rows.extend_from_slice(row);
            }
        }
        let n = idx.len();
        let dev = Device::Cpu;
        let mut tensors: HashMap<String, Tensor> = [
            ("fast.index".to_owned(), Tensor::from_vec(idx, n, &dev).map_err(io)?),
            ("fast.weight".to_owned(), Tensor::from_vec(rows, (n, self.classes), &dev).map_err(io)?),
            ("fast.bias".to_owned(), Tensor::from_vec(self.bias.clone(), self.classes, &dev).map_err(io)?),
            ("fast.bits".to_owned(), Tensor::from_vec(vec![self.bits], 1, &dev).map_err(io)?),
        ]
        .into_iter()
        .collect();
        if let Some(s) = &self.statics {
            tensors.insert(STATIC_TABLE.to_owned(), s.embeddings.to_tensor().map_err(io)?);
            tensors.insert(STATIC_SCALE.to_owned(), Tensor::from_vec(vec![s.scale], 1, &dev).map_err(io)?);
        }
        candle_core::safetensors::save(&tensors, path).map_err(io)
    }

    /// Loads a model written by [`FastModel::save`] for `classes` labels.
    pub fn load(path: &Path, classes: usize) -> Result<Self, FastError> {
        let name = path.display().to_string();
        let io = |source| FastError::Io { path: name.clone(), source };
        let bad = |reason: String| FastError::Malformed { path: name.clone(), reason };
        let t = candle_core::safetensors::load(path, &Device::Cpu).map_err(io)?;
        let get = |k: &str| t.get(k).ok_or_else(|| bad(format!("missing tensor {k}")));
        let bits =
            get("fast.bits")?.to_vec1::<u32>().map_err(io)?.first().copied().ok_or_else(|| bad("empty bits".into()))?;
        if !(8..=24).contains(&bits) {
            return Err(bad(format!("hash bits {bits} outside 8..=24")));
        }
        let idx = get("fast.index")?.to_vec1::<u32>().map_err(io)?;
        let rows = get("fast.weight")?.to_vec2::<f32>().map_err(io)?;
        let bias = get("fast.bias")?.to_vec1::<f32>().map_err(io)?;
        if bias.len() != classes || rows.iter().any(|r| r.len() != classes) {
            return Err(bad(format!("expected {classes} classes, found {}", bias.len())));
        }
        let statics = match (t.get(STATIC_TABLE), t.get(STATIC_SCALE)) {
            (Some(table), Some(scale)) => Some(Statics {
                embeddings: StaticEmbeddings::from_tensor(table).map_err(io)?,
                scale: scale.to_vec1::<f32>().map_err(io)?.first().copied().ok_or_else(|| bad("empty scale".into()))?,
            }),
            (None, None) => None,
            _ => return Err(bad(format!("needs both {STATIC_TABLE} and {STATIC_SCALE} or neither"))),
        };
        let buckets = (1usize << bits) + statics.as_ref().map_or(0, |s| s.embeddings.dims());
        let mut weights = vec![0.0; buckets * classes];
        for (k, row) in idx.iter().zip(rows) {
            let k = *k as usize;
            if k >= buckets {
                return Err(bad(format!("bucket {k} out of range")));
            }
            weights[k * classes..(k + 1) * classes].copy_from_slice(&row);
        }
        Ok(Self { bits, classes, weights, bias, statics })
    }
}
