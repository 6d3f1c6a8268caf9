//! Inference-only BERT forward for the classifier's encoder stage: the same model as
//! `candle_transformers::models::bert` (post-LayerNorm BERT, erf GELU, absolute position
//! embeddings, token type 0), computed over *packed* sequences instead of a padded batch.
//!
//! Why not candle's model: serving runs tiny batches (1-16 sequences of at most 32
//! tokens) where candle spends most of its time outside arithmetic: `perf` of the
//! classifier benchmark had gemm re-packing every `[out, in]` weight matrix on every
//! call (18.6 % of samples), scalar `erf` for GELU (7 %) and per-head attention as
//! `batch x heads` separate 32x32 products. Here:
//! - weights are stored as panels of 16 output columns, each panel's `[in, 16]` block
//!   contiguous: the exact stream gemm's micro-kernel reads, so nothing is packed and the
//!   kernel walks memory in order. (A plain `[in, out]` matrix needs no packing either, but
//!   then each step of the kernel reads its 64 bytes from the next row, `out` floats past
//!   the last: over 6 layers' 42 MB of weights that is a new page nearly every step, and a
//!   32-token pass took 36 ms instead of 21 on a 2-core AVX2 EPYC, an 8-token pass 17 ms
//!   instead of 7.4.)
//! - all sequences' tokens are rows of one matrix, so every dense layer is one pass over
//!   the weights and there is no padding to compute or mask (each sequence attends only to
//!   itself);
//! - attention is a direct loop per sequence and head (head size 32: a few hundred
//!   thousand multiply-adds per sequence, less than gemm's set-up);
//! - GELU uses a branch-free rational `erf` that the compiler vectorises.
//!
//! Training keeps candle's model (it needs autograd); `tests` checks that both give the
//! same pooled embeddings.

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use candle_transformers::models::bert::{Config as BertConfig, HiddenAct};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::config::Pooling;
use super::encoder::EncoderError;

/// Below this many elements GELU and LayerNorm run on the calling thread: splitting
/// ~64k cheap operations over rayon costs more than it saves.
const PAR_MIN_ELEMS: usize = 1 << 16;

/// Output columns per weight panel: the height of gemm's f32 micro-kernel on x86-64 (two
/// 8-lane registers), so one panel is one run of the kernel over `in`.
const PANEL: usize = 16;

/// A dense layer with its weight `[in, out]` stored as panels (see [`panels`]).
struct Dense {
    panels: Vec<f32>,
    bias: Vec<f32>,
    input: usize,
    output: usize,
}

struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Layer {
    /// Query, key and value projections fused: output row = `[q | k | v]`.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    intermediate: Dense,
    output: Dense,
    output_norm: Norm,
}

/// The embeddings and a stack of transformer layers, ready for inference.
pub struct InferBert {
    word: Vec<f32>,
    position: Vec<f32>,
    token_type0: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
    hidden: usize,
    heads: usize,
    max_positions: usize,
    eps: f32,
}

/// Looks tensors up by name and converts them to f32 vectors.
struct Source<'a> {
    tensors: &'a HashMap<String, Tensor>,
}

impl Source<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        let t = self.tensors.get(name).ok_or_else(|| EncoderError::Mismatch(format!("missing tensor {name}")))?;
        if t.dims() != shape {
            return Err(EncoderError::Mismatch(format!("{name}: shape {:?}, expected {shape:?}", t.dims())));
        }
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn dense(&self, prefix: &str, input: usize, output: usize) -> Result<Dense, EncoderError> {
        let w = self.get(&format!("{prefix}.weight"), &[output, input])?;
        Ok(Dense {
            panels: panels(&transpose(&w, output, input), input, output),
            bias: self.get(&format!("{prefix}.bias"), &[output])?,
            input,
            output,
        })
    }

    fn norm(&self, prefix: &str, size: usize) -> Result<Norm, EncoderError> {
        Ok(Norm {
            weight: self.get(&format!("{prefix}.weight"), &[size])?,
            bias: self.get(&format!("{prefix}.bias"), &[size])?,
        })
    }

    /// Layer `prefix` (`encoder.layer.3` in a backbone, `layer.0` in a router's top).
    fn layer(&self, prefix: &str, cfg: &BertConfig) -> Result<Layer, EncoderError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let q = self.dense(&format!("{prefix}.attention.self.query"), h, h)?;
        let k = self.dense(&format!("{prefix}.attention.self.key"), h, h)?;
        let v = self.dense(&format!("{prefix}.attention.self.value"), h, h)?;
        // Fuse the `[in, out]` matrices along `out`: row r is q's, k's, v's row r.
        let plain = [&q, &k, &v].map(|d| unpanel(&d.panels, h, h));
        let mut fused = Vec::with_capacity(h * 3 * h);
        for r in 0..h {
            plain.iter().for_each(|m| fused.extend_from_slice(&m[r * h..(r + 1) * h]));
        }
        let bias = [q.bias, k.bias, v.bias].concat();
        Ok(Layer {
            qkv: Dense { panels: panels(&fused, h, 3 * h), bias, input: h, output: 3 * h },
            attn_out: self.dense(&format!("{prefix}.attention.output.dense"), h, h)?,
            attn_norm: self.norm(&format!("{prefix}.attention.output.LayerNorm"), h)?,
            intermediate: self.dense(&format!("{prefix}.intermediate.dense"), h, i)?,
            output: self.dense(&format!("{prefix}.output.dense"), i, h)?,
            output_norm: self.norm(&format!("{prefix}.output.LayerNorm"), h)?,
        })
    }
}

/// Fails for a BERT variant this forward (and `finetune.rs`) does not compute: it
/// implements erf GELU and at least one attention head, as all-MiniLM uses. (Absolute
/// position embeddings are the only kind candle's config knows.)
pub fn check_supported(cfg: &BertConfig) -> Result<(), EncoderError> {
    if cfg.hidden_act != HiddenAct::Gelu {
        return Err(EncoderError::Mismatch(format!("hidden_act {:?} is not supported (only gelu)", cfg.hidden_act)));
    }
    if cfg.num_attention_heads == 0 || cfg.hidden_size % cfg.num_attention_heads != 0 {
        return Err(EncoderError::Mismatch(format!(
            "hidden size {} is not a multiple of {} heads",
            cfg.hidden_size, cfg.num_attention_heads
        )));
    }
    Ok(())
}

impl InferBert {
    /// The embeddings and layers `0..layers` of a backbone's tensors (names as in
    /// Hugging Face's `BertModel`, with or without a `bert.` prefix).
    pub fn from_backbone(
        tensors: &HashMap<String, Tensor>,
        cfg: &BertConfig,
        layers: usize,
    ) -> Result<Self, EncoderError> {
        let src = Source { tensors };
        let prefix = if tensors.contains_key("embeddings.word_embeddings.weight") { "" } else { "bert." };
        check_supported(cfg)?;
        let h = cfg.hidden_size;
        let word = src.get(&format!("{prefix}embeddings.word_embeddings.weight"), &[cfg.vocab_size, h])?;
        let position =
            src.get(&format!("{prefix}embeddings.position_embeddings.weight"), &[cfg.max_position_embeddings, h])?;
        let types = src.get(&format!("{prefix}embeddings.token_type_embeddings.weight"), &[cfg.type_vocab_size, h])?;
        let embed_norm = src.norm(&format!("{prefix}embeddings.LayerNorm"), h)?;
        let layers = (0..layers)
            .map(|i| src.layer(&format!("{prefix}encoder.layer.{i}"), cfg))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            word,
            position,
            token_type0: types[..h].to_vec(),
            embed_norm,
            layers,
            hidden: h,
            heads: cfg.num_attention_heads,
            max_positions: cfg.max_position_embeddings,
            eps: cfg.layer_norm_eps as f32,
        })
    }

    /// Appends `layers` layers named `layer.{i}.*` (a router's fine-tuned top).
    pub fn push_layers(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        cfg: &BertConfig,
        layers: usize,
    ) -> Result<(), EncoderError> {
        let src = Source { tensors };
        for i in 0..layers {
            self.layers.push(src.layer(&format!("layer.{i}"), cfg)?);
        }
        Ok(())
    }

    /// Pooled embeddings `[seqs.len(), hidden]` (row-major) of token id sequences
    /// (`[CLS] ... [SEP]` already added). `threads` > 1 lets gemm and the elementwise
    /// work use rayon's global pool (the one candle's own matmuls use).
    pub fn embed(&self, seqs: &[Vec<u32>], pooling: Pooling, threads: usize) -> Result<Vec<f32>, EncoderError> {
        let h = self.hidden;
        let vocab = self.word.len() / h;
        let mut x = Vec::with_capacity(seqs.iter().map(Vec::len).sum::<usize>() * h);
        for s in seqs {
            if s.is_empty() {
                return Err(EncoderError::Tokenizer("an empty token sequence".into()));
            }
            if s.len() > self.max_positions {
                return Err(EncoderError::Mismatch(format!(
                    "{} tokens, the backbone has {} positions",
                    s.len(),
                    self.max_positions
                )));
            }
            for (p, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= vocab {
                    return Err(EncoderError::Tokenizer(format!("token id {id} is outside the vocabulary ({vocab})")));
                }
                let (w, pos) = (&self.word[id * h..(id + 1) * h], &self.position[p * h..(p + 1) * h]);
                x.extend(w.iter().zip(pos).zip(&self.token_type0).map(|((a, b), c)| a + b + c));
            }
        }
        layer_norm(&mut x, &self.embed_norm, self.eps, h, threads);
        let lens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        for layer in &self.layers {
            x = self.layer_forward(layer, &x, &lens, threads);
        }
        let mut out = Vec::with_capacity(seqs.len() * h);
        let mut row = 0;
        for &len in &lens {
            let rows = &x[row * h..(row + len) * h];
            match pooling {
                Pooling::Cls => out.extend_from_slice(&rows[..h]),
                Pooling::Mean => {
                    let mut sum = vec![0f32; h];
                    for r in rows.chunks_exact(h) {
                        sum.iter_mut().zip(r).for_each(|(s, v)| *s += v);
                    }
                    out.extend(sum.iter().map(|s| s / len.max(1) as f32));
                }
            }
            row += len;
        }
        Ok(out)
    }

    fn layer_forward(&self, layer: &Layer, x: &[f32], lens: &[usize], threads: usize) -> Vec<f32> {
        let h = self.hidden;
        let rows = x.len() / h;
        let qkv = dense(&layer.qkv, x, None, threads);
        let ctx = self.attention(&qkv, lens, threads);
        let mut a = dense(&layer.attn_out, &ctx, Some(x), threads);
        layer_norm(&mut a, &layer.attn_norm, self.eps, h, threads);
        let mut inter = dense(&layer.intermediate, &a, None, threads);
        gelu(&mut inter, threads);
        let mut out = dense(&layer.output, &inter, Some(&a), threads);
        layer_norm(&mut out, &layer.output_norm, self.eps, h, threads);
        debug_assert_eq!(out.len(), rows * h);
        out
    }

    /// Softmax attention of each sequence over its own tokens; `qkv` rows are
    /// `[q | k | v]`. Returns the context rows `[tokens, hidden]`.
    fn attention(&self, qkv: &[f32], lens: &[usize], threads: usize) -> Vec<f32> {
        let h = self.hidden;
        let mut ctx = vec![0f32; qkv.len() / 3];
        // Split the output into one slice per sequence so sequences run in parallel.
        let mut parts = Vec::with_capacity(lens.len());
        let (mut rest, mut row) = (ctx.as_mut_slice(), 0);
        for &len in lens {
            let (part, tail) = rest.split_at_mut(len * h);
            parts.push((part, &qkv[row * 3 * h..(row + len) * 3 * h]));
            rest = tail;
            row += len;
        }
        let run = |(out, seq): (&mut [f32], &[f32])| attend(out, seq, h, self.heads);
        if threads > 1 && parts.len() > 1 {
            parts.into_par_iter().for_each(run);
        } else {
            parts.into_iter().for_each(run);
        }
        ctx
    }
}

/// One sequence's attention: `seq` holds its `[q | k | v]` rows, `out` its context rows.
fn attend(out: &mut [f32], seq: &[f32], hidden: usize, heads: usize) {
    let d = hidden / heads;
    let len = seq.len() / (3 * hidden);
    let scale = 1.0 / (d as f32).sqrt();
    let mut scores = vec![0f32; len];
    for head in 0..heads {
        let (qo, ko, vo) = (head * d, hidden + head * d, 2 * hidden + head * d);
        for i in 0..len {
            let q = &seq[i * 3 * hidden + qo..][..d];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q, &seq[j * 3 * hidden + ko..][..d]) * scale;
                max = max.max(*s);
            }
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - max).exp();
                sum += *s;
            }
            let o = &mut out[i * hidden + head * d..][..d];
            for (j, &p) in scores.iter().enumerate() {
                let v = &seq[j * 3 * hidden + vo..][..d];
                o.iter_mut().zip(v).for_each(|(o, v)| *o += p * v);
            }
            let inv = 1.0 / sum;
            o.iter_mut().for_each(|o| *o *= inv);
        }
    }
}

/// Dot product with eight independent accumulators (vectorisable; a plain iterator
/// `sum` must keep f32 addition order and stays scalar).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `x · W + b (+ residual)`: rows of `x` are tokens. One gemm per panel; with `threads`
/// > 1 the panels are split over rayon's pool.
#[expect(unsafe_code, reason = "gemm takes raw pointers and strides; the assert above the calls bounds them")]
fn dense(layer: &Dense, x: &[f32], residual: Option<&[f32]>, threads: usize) -> Vec<f32> {
    let rows = x.len() / layer.input;
    let mut out: Vec<f32> = Vec::with_capacity(rows * layer.output);
    match residual {
        Some(r) => {
            for row in r.chunks_exact(layer.output) {
                out.extend(row.iter().zip(&layer.bias).map(|(a, b)| a + b));
            }
        }
        None => (0..rows).for_each(|_| out.extend_from_slice(&layer.bias)),
    }
    // Callers pass whole token rows; a mismatch is a bug here, never input-dependent.
    assert!(
        out.len() == rows * layer.output
            && x.len() == rows * layer.input
            && layer.panels.len() == layer.input * layer.output,
        "dense: shapes do not match"
    );
    let dst = OutPtr(out.as_mut_ptr());
    let run = |p: usize| {
        let (col, width) = (p * PANEL, PANEL.min(layer.output - p * PANEL));
        // SAFETY: `out` is rows x output and `x` rows x input, row-major, and panel `p` is
        // the `input x width` row-major block at `col * input` of `panels` (all asserted
        // above); the strides describe exactly those layouts, so gemm reads inside them
        // and writes only columns `col..col + width` of `out`. No two panels share a
        // column, so the calls running in parallel write disjoint elements.
        unsafe {
            gemm(
                rows,
                width,
                layer.input,
                dst.get().add(col),
                1,
                layer.output as isize,
                true,
                x.as_ptr(),
                1,
                layer.input as isize,
                layer.panels.as_ptr().add(col * layer.input),
                1,
                width as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    };
    let count = layer.output.div_ceil(PANEL);
    if threads > 1 {
        (0..count).into_par_iter().with_min_len(count.div_ceil(threads)).for_each(run);
    } else {
        (0..count).for_each(run);
    }
    out
}

/// The output buffer of [`dense`], shared by the panels' gemm calls.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: only `dense` makes one, for a buffer that outlives the parallel loop, and its
// users write disjoint columns (see there).
#[expect(unsafe_code, reason = "a raw pointer shared by the panels of one product; dense says why that is sound")]
unsafe impl Send for OutPtr {}
// SAFETY: as for Send.
#[expect(unsafe_code, reason = "a raw pointer shared by the panels of one product; dense says why that is sound")]
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// A method, not field access, so closures capture the whole (Sync) wrapper.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Row-wise LayerNorm over rows of `size`, in place.
fn layer_norm(x: &mut [f32], norm: &Norm, eps: f32, size: usize, threads: usize) {
    let f = |row: &mut [f32]| {
        let n = size as f32;
        let mean = row.iter().sum::<f32>() / n;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
            *v = (*v - mean) * inv * w + b;
        }
    };
    if threads > 1 && x.len() >= PAR_MIN_ELEMS {
        x.par_chunks_mut(size).for_each(f);
    } else {
        x.chunks_mut(size).for_each(f);
    }
}

/// Exact (erf) GELU, in place: `x/2 (1 + erf(x/√2))`.
fn gelu(x: &mut [f32], threads: usize) {
    let f = |chunk: &mut [f32]| {
        for v in chunk {
            *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
        }
    };
    if threads > 1 && x.len() >= PAR_MIN_ELEMS {
        x.par_chunks_mut(PAR_MIN_ELEMS / 4).for_each(f);
    } else {
        f(x);
    }
}

/// `erf` for f32 as a rational function of x (Eigen's `generic_fast_erf_float`, also
/// XLA's): odd degree-13 numerator over even degree-8 denominator on [-4, 4], where f32
/// `erf` is ±1 outside. No branches and no `exp`, so loops over it vectorise; `tests`
/// bounds its error against libm.
pub(crate) fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2.mul_add(-2.726_142_3e-10, 2.770_681_4e-8);
    p = x2.mul_add(p, -2.101_024e-6);
    p = x2.mul_add(p, -5.692_506_4e-5);
    p = x2.mul_add(p, -7.349_906_3e-4);
    p = x2.mul_add(p, -2.954_6e-3);
    p = x2.mul_add(p, -1.609_603_3e-2);
    let p = x * p;
    let mut q = x2.mul_add(-1.456_607_2e-5, -2.133_740_6e-4);
    q = x2.mul_add(q, -1.682_827e-3);
    q = x2.mul_add(q, -7.373_329e-3);
    q = x2.mul_add(q, -1.426_474e-2);
    p / q
}

/// `[in, out]` row-major -> panels: panel `p` is columns `p*PANEL..` (at most `PANEL`
/// of them) of every row, stored `[in, width]` row-major, panels one after another.
fn panels(w: &[f32], input: usize, output: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(w.len());
    for col in (0..output).step_by(PANEL) {
        let width = PANEL.min(output - col);
        for r in 0..input {
            out.extend_from_slice(&w[r * output + col..][..width]);
        }
    }
    out
}

/// The inverse of [`panels`]: back to `[in, out]` row-major.
fn unpanel(p: &[f32], input: usize, output: usize) -> Vec<f32> {
    let mut w = vec![0f32; p.len()];
    let mut at = 0;
    for col in (0..output).step_by(PANEL) {
        let width = PANEL.min(output - col);
        for r in 0..input {
            w[r * output + col..][..width].copy_from_slice(&p[at..at + width]);
            at += width;
        }
    }
    w
}

/// `[rows, cols]` row-major -> `[cols, rows]` row-major.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{dense, erf, panels, unpanel, Dense};

    /// Every panel width (a narrower last panel included) and both thread counts give the
    /// plain product `x · W + b + residual`.
    #[test]
    fn dense_by_panels_is_the_plain_product() {
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 25.0;
        for (input, output) in [(5, 16), (7, 37), (24, 48), (3, 5)] {
            let w: Vec<f32> = (0..input * output).map(value).collect();
            let layer = Dense {
                panels: panels(&w, input, output),
                bias: (0..output).map(|i| value(i + 7)).collect(),
                input,
                output,
            };
            assert_eq!(unpanel(&layer.panels, input, output), w);
            let rows = 9;
            let x: Vec<f32> = (0..rows * input).map(|i| value(i + 3)).collect();
            let residual: Vec<f32> = (0..rows * output).map(|i| value(i + 11)).collect();
            let mut expected = vec![0f32; rows * output];
            for r in 0..rows {
                for c in 0..output {
                    let dot: f32 = (0..input).map(|k| x[r * input + k] * w[k * output + c]).sum();
                    expected[r * output + c] = dot + layer.bias[c] + residual[r * output + c];
                }
            }
            for threads in [1, 2] {
                let got = dense(&layer, &x, Some(&residual), threads);
                let worst = got.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-4, "{input}x{output} on {threads} threads: max error {worst}");
            }
        }
    }

    #[test]
    fn fast_erf_matches_libm_to_float_precision() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 / 1000.0;
            let exact = candle_core::cpu::erf::erf_f64(f64::from(x)) as f32;
            worst = worst.max((erf(x) - exact).abs());
        }
        assert!(worst < 2e-6, "max |erf error| {worst}");
    }
}
