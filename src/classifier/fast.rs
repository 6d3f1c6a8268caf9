//! Stage 1: a multinomial logistic regression over hashed word uni/bigrams, symbol
//! tokens and in-word char trigrams. It costs microseconds, so it decides the confident
//! majority of requests; only uncertain inputs pay for the transformer.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::text::head_tail_bytes;

/// Bounds stage-1 cost on huge inputs (linear in length up to here); 8 KiB of head and
/// tail carry all the vocabulary evidence a category needs.
const MAX_BYTES_EACH_END: usize = 8 * 1024;
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

/// The trained stage-1 model; weights are dense in memory for O(1) lookups.
#[derive(Debug, Clone, PartialEq)]
pub struct FastModel {
    bits: u32,
    classes: usize,
    /// `[2^bits * classes]`, row-major by bucket.
    weights: Vec<f32>,
    bias: Vec<f32>,
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
    let mut counts: HashMap<u32, f32> = HashMap::with_capacity(tokens.len() * 4);
    let mut add = |h: u64| *counts.entry((h & mask) as u32).or_insert(0.0) += 1.0;
    for (i, t) in tokens.iter().enumerate() {
        add(fnv1a(b'w', &[t]));
        if let Some(next) = tokens.get(i + 1) {
            add(fnv1a(b'b', &[t, next]));
        }
        // Char trigrams of "<word>" make "integrals"/"integrate" share evidence.
        if t.len() > 3 && t.is_ascii() {
            let padded = format!("<{t}>");
            for w in padded.as_bytes().windows(3) {
                if let Ok(s) = std::str::from_utf8(w) {
                    add(fnv1a(b'c', &[s]));
                }
            }
        }
    }
    // Sub-linear term frequency, then unit length, so long and short prompts are on one
    // scale and a repeated word does not dominate.
    let mut feats: Features = counts.into_iter().map(|(k, c)| (k, 1.0 + c.ln())).collect();
    feats.sort_unstable_by_key(|&(k, _)| k);
    let norm = feats.iter().map(|(_, v)| v * v).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    feats.iter_mut().for_each(|(_, v)| *v /= norm);
    feats
}

impl FastModel {
    pub fn bits(&self) -> u32 {
        self.bits
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

    /// Raw logits of `text`.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        self.logits_of(&features(text, self.bits))
    }

    /// Trains with Adagrad on softmax cross-entropy; deterministic for a given seed.
    pub fn train(data: &[(Features, usize)], classes: usize, bits: u32, epochs: usize, seed: u64) -> Self {
        let buckets = 1usize << bits;
        let mut m = Self { bits, classes, weights: vec![0.0; buckets * classes], bias: vec![0.0; classes] };
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
        let tensors: HashMap<String, Tensor> = [
            ("fast.index".to_owned(), Tensor::from_vec(idx, n, &dev).map_err(io)?),
            ("fast.weight".to_owned(), Tensor::from_vec(rows, (n, self.classes), &dev).map_err(io)?),
            ("fast.bias".to_owned(), Tensor::from_vec(self.bias.clone(), self.classes, &dev).map_err(io)?),
            ("fast.bits".to_owned(), Tensor::from_vec(vec![self.bits], 1, &dev).map_err(io)?),
        ]
        .into_iter()
        .collect();
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
        let mut weights = vec![0.0; (1usize << bits) * classes];
        for (k, row) in idx.iter().zip(rows) {
            let k = *k as usize;
            if k >= 1 << bits {
                return Err(bad(format!("bucket {k} out of range")));
            }
            weights[k * classes..(k + 1) * classes].copy_from_slice(&row);
        }
        Ok(Self { bits, classes, weights, bias })
    }
}
