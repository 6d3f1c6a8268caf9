//! Llama-family decoder (Llama 2/3, Mistral, SmolLM, and Qwen2 via `qwen2.rs`) from GGUF.
//!
//! Follows llama.cpp `src/models/llama.cpp` (`llm_build_llama`) and candle-transformers 0.11.1
//! `models/quantized_llama.rs`: pre-norm blocks, RMSNorm, SwiGLU MLP, rotary embeddings
//! (interleaved pairing for GGUF llama, whose q/k weights the converter permutes), grouped-query
//! attention, optional q/k/v biases (Qwen2). Mixture-of-experts llama files are not supported.

use std::io::{Read, Seek};

use candle_core::{Module, Result, Tensor};

use super::{
    attention_mask, grouped_attention, ids_tensor, last_logits, last_position, Embedding, GgufSource, KvCache,
    LanguageModel, Linear, RmsNorm, Rope,
};

/// llama.cpp's default when `rope.freq_base` is absent (Llama 1/2).
const DEFAULT_ROPE_BASE: f32 = 10_000.0;
/// llama.cpp's default when `attention.layer_norm_rms_epsilon` is absent.
const DEFAULT_RMS_EPS: f32 = 1e-5;

struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    cache: KvCache,
}

pub struct Model {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    rope: Rope,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
}

impl Model {
    /// `prefix` is the GGUF `general.architecture` ("llama", "qwen2", ...); `rope_interleaved`
    /// picks the rotary pairing that arch was converted with.
    pub fn load<R: Read + Seek>(src: &mut GgufSource<'_, R>, prefix: &str, rope_interleaved: bool) -> Result<Self> {
        let n_head = src.md_usize(&format!("{prefix}.attention.head_count"))?;
        let n_kv_head = src.md_usize_or(&format!("{prefix}.attention.head_count_kv"), n_head);
        let n_layer = src.md_usize(&format!("{prefix}.block_count"))?;
        let hidden = src.md_usize(&format!("{prefix}.embedding_length"))?;
        let head_dim = src.md_usize_or(&format!("{prefix}.attention.key_length"), hidden / n_head);
        let rope_dim = src.md_usize_or(&format!("{prefix}.rope.dimension_count"), head_dim);
        let eps = src.md_f32_or(&format!("{prefix}.attention.layer_norm_rms_epsilon"), DEFAULT_RMS_EPS) as f64;
        let base = src.md_f32_or(&format!("{prefix}.rope.freq_base"), DEFAULT_ROPE_BASE);
        if rope_dim != head_dim {
            candle_core::bail!("partial rotary embeddings ({rope_dim} of {head_dim}) are not supported");
        }
        if n_kv_head == 0 || n_head % n_kv_head != 0 {
            candle_core::bail!("{n_head} query heads cannot be grouped over {n_kv_head} key/value heads");
        }
        let rope = Rope::new(head_dim, base, src.context_length, rope_interleaved, src.device)?;
        let (embed, output) = src.embeddings()?;
        let norm = src.rms_norm("output_norm", eps)?;
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: src.rms_norm(&format!("{p}.attn_norm"), eps)?,
                wq: src.linear(&format!("{p}.attn_q"))?,
                wk: src.linear(&format!("{p}.attn_k"))?,
                wv: src.linear(&format!("{p}.attn_v"))?,
                wo: src.linear(&format!("{p}.attn_output"))?,
                ffn_norm: src.rms_norm(&format!("{p}.ffn_norm"), eps)?,
                gate: src.linear(&format!("{p}.ffn_gate"))?,
                up: src.linear(&format!("{p}.ffn_up"))?,
                down: src.linear(&format!("{p}.ffn_down"))?,
                cache: KvCache::default(),
            });
        }
        Ok(Self { embed, blocks, norm, output, rope, n_head, n_kv_head, head_dim })
    }
}

impl LanguageModel for Model {
    fn forward(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let device = self.rope.device();
        let ids = ids_tensor(ids, &device)?;
        let (b, s) = ids.dims2()?;
        let mask = attention_mask(s, index_pos, None, &device)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut x = self.embed.forward(&ids)?;
        for blk in &mut self.blocks {
            let h = blk.attn_norm.forward(&x)?;
            let q = blk.wq.forward(&h)?;
            let k = blk.wk.forward(&h)?;
            let v = blk.wv.forward(&h)?;
            let q = q.reshape((b, s, self.n_head, self.head_dim))?.transpose(1, 2)?;
            let k = k.reshape((b, s, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;
            let v = v.reshape((b, s, self.n_kv_head, self.head_dim))?.transpose(1, 2)?;
            let q = self.rope.apply(&q, index_pos)?;
            let k = self.rope.apply(&k, index_pos)?;
            let (k, v) = blk.cache.append(k, v)?;
            let y = grouped_attention(&q, &k, &v, mask.as_ref(), scale)?;
            x = (x + blk.wo.forward(&y)?)?;
            let h = blk.ffn_norm.forward(&x)?;
            let act = (candle_nn::ops::silu(&blk.gate.forward(&h)?)? * blk.up.forward(&h)?)?;
            x = (x + blk.down.forward(&act)?)?;
        }
        let x = self.norm.forward(&last_position(&x)?)?;
        last_logits(&self.output.forward(&x)?)
    }

    fn reset(&mut self) {
        for blk in &mut self.blocks {
            blk.cache.reset();
        }
    }
}
