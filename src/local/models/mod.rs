//! Decoder-only transformer architectures read from GGUF, one file per architecture (candle
//! style), plus the few building blocks they share.
//!
//! The project owns these files rather than calling `candle_transformers::models::quantized_*`
//! because (a) those build every `QMatMul` internally, so the only way to dequantize weights at
//! load is the process-wide `CANDLE_DEQUANTIZE_ALL[_F16]` environment variables, which cannot
//! differ per expert; (b) `quantized_gemma3` in 0.11.1 uses SiLU instead of GELU and builds a
//! 131,072-position RoPE table per layer (~2.2 GB); (c) decode-time grouped-query attention can
//! be done without `repeat_kv` copies, which matters for 100+ tokens/s on two cores.

pub mod gemma3;
pub mod llama;
pub mod qwen2;

use std::io::{Read, Seek};

use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};

use super::WeightFormat;

/// Parameters and in-memory bytes the weights of `content` will take once loaded in
/// `format`, read from the tensor table alone (no tensor data): mirrors `linear`,
/// `matmul_weight`, `embeddings` and `rms_norm` below. Tensors no architecture loads (e.g.
/// `rope_freqs`) are counted too, so the result is an upper bound of `ModelInfo::bytes`.
pub fn predict_weights(content: &gguf_file::Content, format: WeightFormat) -> (usize, usize) {
    let mut params = 0;
    let mut bytes = 0;
    for info in content.tensor_infos.values() {
        let elems = info.shape.elem_count();
        params += elems;
        let float = matches!(info.ggml_dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        bytes += if info.shape.rank() < 2 {
            // Norm weights and biases are always dequantized to f32.
            elems * 4
        } else {
            match (format, float) {
                (WeightFormat::F32, _) | (WeightFormat::Quantized, true) => elems * 4,
                (WeightFormat::Quantized, false) => elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size(),
                (WeightFormat::F16, _) => elems * 2,
            }
        };
    }
    (params, bytes)
}

/// Where a model's weights come from while it is being built.
pub enum Tensors<'a, R: Read + Seek> {
    /// Read from the GGUF one tensor at a time and converted to `format` on the device.
    File { reader: &'a mut R, format: WeightFormat },
    /// Already read and converted (the warm tier's [`HostWeights`]); only moved to the device,
    /// which on the CPU is a reference-count increment, not a copy.
    Host(&'a HostWeights),
}

/// One GGUF model being built: its parsed header, where its weights come from, and the device.
pub struct GgufSource<'a, R: Read + Seek> {
    pub content: &'a gguf_file::Content,
    pub tensors: Tensors<'a, R>,
    pub device: &'a Device,
    /// Positions the RoPE tables and masks are sized for.
    pub context_length: usize,
    /// Running totals for `ModelInfo`.
    pub params: usize,
    pub bytes: usize,
}

/// A weight as the compute kernels use it. Cloning shares the storage.
#[derive(Debug, Clone)]
pub enum Weight {
    /// A matrix (rank >= 2) in the configured [`WeightFormat`].
    Matrix(QMatMul),
    /// A norm weight or bias (rank < 2), always f32.
    Vector(Tensor),
}

/// Every tensor of a GGUF, read and converted to its compute format in host memory, keyed by
/// GGUF tensor name. What the warm tier keeps so a promotion does no file I/O, no parsing and
/// no dequantization.
#[derive(Debug, Default)]
pub struct HostWeights {
    weights: std::collections::HashMap<String, Weight>,
    /// Parameters and bytes of all of them (what `GgufSource` would count loading them).
    pub params: usize,
    pub bytes: usize,
}

impl HostWeights {
    /// Reads every tensor of `content` from `reader` (in file order) into CPU memory in
    /// `format`. Rank decides the kind, as the architectures use them: matrices go through
    /// [`GgufSource::linear`]/[`GgufSource::embeddings`], vectors through
    /// [`GgufSource::rms_norm`] or are biases.
    pub fn read<R: Read + Seek>(content: &gguf_file::Content, reader: &mut R, format: WeightFormat) -> Result<Self> {
        let mut infos: Vec<(&String, u64, usize)> =
            content.tensor_infos.iter().map(|(n, i)| (n, i.offset, i.shape.rank())).collect();
        infos.sort_by_key(|(_, offset, _)| *offset);
        let device = Device::Cpu;
        let mut src = GgufSource {
            content,
            tensors: Tensors::File { reader, format },
            device: &device,
            context_length: 0,
            params: 0,
            bytes: 0,
        };
        let mut weights = std::collections::HashMap::with_capacity(infos.len());
        for (name, _, rank) in infos {
            let w = if rank < 2 { Weight::Vector(src.vector(name)?) } else { Weight::Matrix(src.matrix(name)?) };
            weights.insert(name.clone(), w);
        }
        Ok(Self { weights, params: src.params, bytes: src.bytes })
    }
}

/// Bytes a matrix takes in memory.
fn matmul_bytes(m: &QMatMul) -> usize {
    match m {
        QMatMul::QTensor(q) => q.storage_size_in_bytes(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count() * t.dtype().size_in_bytes(),
    }
}

fn matmul_elems(m: &QMatMul) -> usize {
    match m {
        QMatMul::QTensor(q) => q.shape().elem_count(),
        QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.elem_count(),
    }
}

/// `m` on `device`: shared on the CPU (where host weights already live), uploaded elsewhere.
fn matmul_to_device(m: &QMatMul, device: &Device) -> Result<QMatMul> {
    if device.is_cpu() {
        return Ok(m.clone());
    }
    Ok(match m {
        QMatMul::QTensor(q) => {
            let storage = candle_core::quantized::QStorage::from_data(q.data()?, device, q.dtype())?;
            QMatMul::QTensor(std::sync::Arc::new(QTensor::new(storage, q.shape().clone())?))
        }
        QMatMul::Tensor(t) => QMatMul::Tensor(t.to_device(device)?),
        QMatMul::TensorF16(t) => QMatMul::TensorF16(t.to_device(device)?),
    })
}

impl<R: Read + Seek> GgufSource<'_, R> {
    fn qtensor(reader: &mut R, content: &gguf_file::Content, name: &str, device: &Device) -> Result<QTensor> {
        content.tensor(reader, name, device)
    }

    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn md(&self, key: &str) -> Result<&gguf_file::Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| candle_core::Error::Msg(format!("GGUF metadata key `{key}` is missing")))
    }

    pub fn md_usize(&self, key: &str) -> Result<usize> {
        let v = self.md(key)?;
        // Writers disagree on integer widths (u32 is usual, llama.cpp accepts any).
        v.to_u32()
            .map(|x| x as usize)
            .or_else(|_| v.to_u64().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x.max(0) as usize))
    }

    pub fn md_f32(&self, key: &str) -> Result<f32> {
        let v = self.md(key)?;
        v.to_f32().or_else(|_| v.to_f64().map(|x| x as f32))
    }

    pub fn md_usize_or(&self, key: &str, default: usize) -> usize {
        self.md_usize(key).unwrap_or(default)
    }

    pub fn md_f32_or(&self, key: &str, default: f32) -> f32 {
        self.md_f32(key).unwrap_or(default)
    }

    fn host(weights: &HostWeights, name: &str) -> Result<Weight> {
        weights
            .weights
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{name}` is not in the prepared weights")))
    }

    /// The weight matrix `name` (a full tensor name) in the configured format. Matrices
    /// stored as f32/f16 in the file are always used as plain tensors (quantizing them would
    /// lose precision for no gain).
    fn matrix(&mut self, name: &str) -> Result<QMatMul> {
        let m = match &mut self.tensors {
            Tensors::File { reader, format } => {
                let q = Self::qtensor(reader, self.content, name, self.device)?;
                matmul_weight(q, *format, self.device)?
            }
            Tensors::Host(w) => match Self::host(w, name)? {
                Weight::Matrix(m) => matmul_to_device(&m, self.device)?,
                Weight::Vector(_) => candle_core::bail!("tensor `{name}` was prepared as a vector, not a matrix"),
            },
        };
        self.params += matmul_elems(&m);
        self.bytes += matmul_bytes(&m);
        Ok(m)
    }

    /// The vector `name` (a norm weight or a bias), dequantized to f32.
    fn vector(&mut self, name: &str) -> Result<Tensor> {
        let t = match &mut self.tensors {
            Tensors::File { reader, .. } => {
                Self::qtensor(reader, self.content, name, self.device)?.dequantize(self.device)?
            }
            Tensors::Host(w) => match Self::host(w, name)? {
                Weight::Vector(t) => t.to_device(self.device)?,
                Weight::Matrix(_) => candle_core::bail!("tensor `{name}` was prepared as a matrix, not a vector"),
            },
        };
        self.params += t.elem_count();
        self.bytes += t.elem_count() * 4;
        Ok(t)
    }

    /// A weight matrix in the configured format, with its bias if the file has one.
    pub fn linear(&mut self, name: &str) -> Result<Linear> {
        let w = self.matrix(&format!("{name}.weight"))?;
        let bias_name = format!("{name}.bias");
        let bias = if self.has_tensor(&bias_name) { Some(self.vector(&bias_name)?) } else { None };
        Ok(Linear { w, bias })
    }

    /// The token embedding table and the output projection. When the file has no
    /// `output.weight` the two are tied and share one copy in memory.
    pub fn embeddings(&mut self) -> Result<(Embedding, Linear)> {
        let table = self.matrix("token_embd.weight")?;
        let output = if self.has_tensor("output.weight") {
            self.linear("output")?
        } else {
            Linear { w: table.clone(), bias: None }
        };
        Ok((Embedding { table }, output))
    }

    pub fn rms_norm(&mut self, name: &str, eps: f64) -> Result<RmsNorm> {
        let weight = self.vector(&format!("{name}.weight"))?;
        Ok(RmsNorm { weight, eps: eps as f32 })
    }
}

/// `q` converted to the compute format `format` asks for (see [`WeightFormat`]).
fn matmul_weight(q: QTensor, format: WeightFormat, device: &Device) -> Result<QMatMul> {
    Ok(match (format, q.dtype()) {
        (WeightFormat::Quantized, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) | (WeightFormat::F32, _) => {
            QMatMul::Tensor(q.dequantize(device)?)
        }
        (WeightFormat::Quantized, _) => QMatMul::QTensor(std::sync::Arc::new(q)),
        (WeightFormat::F16, _) => QMatMul::TensorF16(q.dequantize_f16(device)?),
    })
}

/// `y = x W^T (+ b)` over whichever representation the weight was loaded as.
#[derive(Debug, Clone)]
pub struct Linear {
    w: QMatMul,
    bias: Option<Tensor>,
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Quantized weights on the CPU go through the project's kernels where they cover
        // the format and the CPU (see `local::kernels`); everything else through candle.
        let y = match super::kernels::forward(&self.w, xs)? {
            Some(y) => y,
            None => self.w.forward(xs)?,
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Token embedding lookup. A quantized table is looked up row by row without dequantizing
/// the whole table (Gemma's 262k x 640 table would be 671 MB as f32).
#[derive(Debug, Clone)]
pub struct Embedding {
    table: QMatMul,
}

impl Embedding {
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.table.embedding(ids)?.to_dtype(DType::F32)
    }
}

#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(&xs.contiguous()?, &self.weight, self.eps)
    }
}

/// Rotary position embedding tables for one (base, dim) pair, sized to the configured
/// context. Cloning shares the storage, so every layer with the same base uses one table.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
    /// GGUF llama weights are permuted for the "interleaved" (GPT-J) pairing; Qwen and Gemma
    /// use the "neox" half-split pairing. See llama.cpp `llama_model_rope_type`.
    interleaved: bool,
}

impl Rope {
    pub fn new(dim: usize, base: f32, max_positions: usize, interleaved: bool, device: &Device) -> Result<Self> {
        let inv_freq: Vec<f32> = (0..dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / dim as f32)).collect();
        let inv_freq = Tensor::from_vec(inv_freq, (1, dim / 2), device)?;
        let positions =
            Tensor::arange(0u32, max_positions as u32, device)?.to_dtype(DType::F32)?.reshape((max_positions, 1))?;
        let freqs = positions.matmul(&inv_freq)?;
        Ok(Self { cos: freqs.cos()?, sin: freqs.sin()?, interleaved })
    }

    /// `x`: (batch, heads, seq, head_dim), positions `index_pos..index_pos+seq`.
    pub fn apply(&self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (_, _, seq_len, _) = x.dims4()?;
        let cos = self.cos.narrow(0, index_pos, seq_len)?;
        let sin = self.sin.narrow(0, index_pos, seq_len)?;
        let x = x.contiguous()?;
        if self.interleaved {
            candle_nn::rotary_emb::rope_i(&x, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&x, &cos, &sin)
        }
    }
}

/// Additive attention mask, shape (seq_len, index_pos + seq_len): 0 where query `i` (at
/// absolute position `index_pos + i`) may attend key `j`, -inf elsewhere. With a sliding
/// window `w`, keys at distance `>= w` are masked too (llama.cpp `is_masked_swa`, HF
/// `sliding_window_overlay`: a query sees itself and the `w - 1` keys before it).
/// Returns `None` when nothing needs masking (one query with no window or a short history).
pub fn attention_mask(
    seq_len: usize,
    index_pos: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let kv_len = index_pos + seq_len;
    let window_bites = window.is_some_and(|w| kv_len > w);
    if seq_len == 1 && !window_bites {
        return Ok(None);
    }
    let mut mask = Vec::with_capacity(seq_len * kv_len);
    for i in 0..seq_len {
        let q_pos = index_pos + i;
        for k_pos in 0..kv_len {
            let future = k_pos > q_pos;
            let too_far = window.is_some_and(|w| q_pos - k_pos.min(q_pos) >= w);
            mask.push(if future || too_far { f32::NEG_INFINITY } else { 0.0 });
        }
    }
    Tensor::from_vec(mask, (seq_len, kv_len), device).map(Some)
}

/// Keys and values of all positions seen so far for one layer, (batch, kv_heads, seq, dim).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    kv: Option<(Tensor, Tensor)>,
}

impl KvCache {
    pub fn append(&mut self, k: Tensor, v: Tensor) -> Result<(Tensor, Tensor)> {
        let (k, v) = match self.kv.take() {
            None => (k.contiguous()?, v.contiguous()?),
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
        };
        self.kv = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    pub fn reset(&mut self) {
        self.kv = None;
    }
}

/// Scaled dot-product attention with grouped-query heads.
///
/// q: (b, n_head, s, d); k, v: (b, n_kv, t, d); mask: additive (s, t). Query heads that share
/// a key/value head are folded into the sequence axis, (b, n_kv, n_rep * s, d), so keys and
/// values are never copied per query head (candle's `repeat_kv` would copy them every token).
/// Returns (b, s, n_head * d).
pub fn grouped_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>, scale: f64) -> Result<Tensor> {
    let (b, n_head, s, d) = q.dims4()?;
    let (_, n_kv, t, _) = k.dims4()?;
    let n_rep = n_head / n_kv;
    let q = q.contiguous()?.reshape((b, n_kv, n_rep * s, d))?;
    let att = (q.matmul(&k.t()?)? * scale)?;
    let att = match mask {
        None => att,
        Some(m) => att.reshape((b, n_kv, n_rep, s, t))?.broadcast_add(m)?.reshape((b, n_kv, n_rep * s, t))?,
    };
    let att = candle_nn::ops::softmax_last_dim(&att)?;
    let y = att.matmul(&v.contiguous()?)?; // (b, n_kv, n_rep * s, d)
    y.reshape((b, n_head, s, d))?.transpose(1, 2)?.reshape((b, s, n_head * d))
}

/// Logits of the last position as a flat f32 vector, shape (vocab,).
pub fn last_logits(logits: &Tensor) -> Result<Tensor> {
    let (_, seq_len, _) = logits.dims3()?;
    logits.narrow(1, seq_len - 1, 1)?.squeeze(1)?.squeeze(0)?.to_dtype(DType::F32)
}

/// Take the last position of hidden states (b, s, h) before the final norm and the output
/// projection, so prefill computes vocabulary logits once, not per prompt token.
pub fn last_position(xs: &Tensor) -> Result<Tensor> {
    let (_, seq_len, _) = xs.dims3()?;
    xs.narrow(1, seq_len - 1, 1)
}

pub fn last_dim(x: &Tensor) -> Result<usize> {
    x.dim(D::Minus1)
}

/// What the generation loop needs from an architecture.
pub trait LanguageModel: Send {
    /// Runs `ids` at positions `index_pos..`, extending the key/value cache, and returns the
    /// f32 logits of the last position, shape (vocab,).
    fn forward(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor>;
    /// Forgets the cache so the next call can start at position 0.
    fn reset(&mut self);
}

pub(crate) fn ids_tensor(ids: &[u32], device: &Device) -> Result<Tensor> {
    Tensor::new(ids, device)?.unsqueeze(0)
}

impl Rope {
    pub fn device(&self) -> Device {
        self.cos.device().clone()
    }
}
