//! Gemma 3 (text) decoder from GGUF.
//!
//! Follows HF transformers `models/gemma3/modeling_gemma3.py` (Gemma3TextModel, v4.50+) and
//! llama.cpp `src/models/gemma3.cpp` (`llm_build_gemma3`):
//! - embeddings scaled by sqrt(hidden) (f32, as llama.cpp does);
//! - sandwich norms: input, post-attention, pre-feedforward and post-feedforward RMSNorm;
//! - RMSNorm on each query/key head before RoPE;
//! - Gemma's `(1 + weight)` RMSNorm: llama.cpp's converter (`Gemma3Model.modify_tensors`)
//!   already adds 1 to every `*norm.weight` in the GGUF, so the plain RMSNorm is correct here
//!   (checked: `output_norm.weight` averages ~26, not ~0, in gemma-3-270m-q4_k_m.gguf);
//! - GELU (tanh approximation) gated MLP, not SiLU (candle 0.11.1's `quantized_gemma3` bug);
//! - every `sliding_window_pattern`-th layer (6th) is global with RoPE base `rope.freq_base`;
//!   the others attend to the last `sliding_window` positions with base 10,000;
//! - attention scale `query_pre_attn_scalar^-0.5`, which equals head_dim^-0.5 for the Gemma 3
//!   GGUFs llama.cpp writes (it does not store the scalar);
//! - tied output projection, no logit soft-capping (Gemma 3 dropped it).
//!
//! One RoPE table per base, sized to the configured context, shared by all layers using it.

use std::io::{Read, Seek};

use candle_core::{Module, Result, Tensor};

use super::{
    attention_mask, grouped_attention, ids_tensor, last_logits, last_position, Embedding, GgufSource, KvCache,
    LanguageModel, Linear, RmsNorm, Rope,
};

/// HF `Gemma3TextConfig.sliding_window_pattern`; llama.cpp hard-codes the same 6 because the
/// GGUF does not store it (key read if a future converter writes it).
const DEFAULT_SLIDING_WINDOW_PATTERN: usize = 6;
/// HF `Gemma3TextConfig.rope_local_base_freq`; absent from the GGUFs llama.cpp writes.
const DEFAULT_LOCAL_ROPE_BASE: f32 = 10_000.0;
/// HF `Gemma3TextConfig.rope_theta` default.
const DEFAULT_GLOBAL_ROPE_BASE: f32 = 1_000_000.0;
/// HF `Gemma3TextConfig.rms_norm_eps` default.
const DEFAULT_RMS_EPS: f32 = 1e-6;

struct Block {
    attn_norm: RmsNorm,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    post_ffn_norm: RmsNorm,
    /// `Some(window)` for sliding-window layers.
    window: Option<usize>,
    rope: Rope,
    cache: KvCache,
}

pub struct Model {
    embed: Embedding,
    embed_scale: f64,
    blocks: Vec<Block>,
    norm: RmsNorm,
    output: Linear,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    sliding_window: usize,
    device: candle_core::Device,
}

impl Model {
    pub fn load<R: Read + Seek>(src: &mut GgufSource<'_, R>) -> Result<Self> {
        let p = "gemma3";
        let n_head = src.md_usize(&format!("{p}.attention.head_count"))?;
        let n_kv_head = src.md_usize_or(&format!("{p}.attention.head_count_kv"), n_head);
        let n_layer = src.md_usize(&format!("{p}.block_count"))?;
        let hidden = src.md_usize(&format!("{p}.embedding_length"))?;
        let head_dim = src.md_usize_or(&format!("{p}.attention.key_length"), hidden / n_head);
        let eps = src.md_f32_or(&format!("{p}.attention.layer_norm_rms_epsilon"), DEFAULT_RMS_EPS) as f64;
        let sliding_window = src.md_usize(&format!("{p}.attention.sliding_window"))?;
        let pattern = src.md_usize_or(&format!("{p}.attention.sliding_window_pattern"), DEFAULT_SLIDING_WINDOW_PATTERN);
        let global_base = src.md_f32_or(&format!("{p}.rope.freq_base"), DEFAULT_GLOBAL_ROPE_BASE);
        let local_base = src.md_f32_or(&format!("{p}.rope.local_freq_base"), DEFAULT_LOCAL_ROPE_BASE);
        if n_kv_head == 0 || n_head % n_kv_head != 0 || pattern == 0 {
            candle_core::bail!(
                "inconsistent Gemma 3 metadata: {n_head} heads, {n_kv_head} kv heads, pattern {pattern}"
            );
        }
        let ctx = src.context_length;
        let global_rope = Rope::new(head_dim, global_base, ctx, false, src.device)?;
        let local_rope = Rope::new(head_dim, local_base, ctx, false, src.device)?;
        let (embed, output) = src.embeddings()?;
        let norm = src.rms_norm("output_norm", eps)?;
        let mut blocks = Vec::with_capacity(n_layer);
        for i in 0..n_layer {
            let b = format!("blk.{i}");
            let is_global = (i + 1) % pattern == 0;
            blocks.push(Block {
                attn_norm: src.rms_norm(&format!("{b}.attn_norm"), eps)?,
                wq: src.linear(&format!("{b}.attn_q"))?,
                wk: src.linear(&format!("{b}.attn_k"))?,
                wv: src.linear(&format!("{b}.attn_v"))?,
                wo: src.linear(&format!("{b}.attn_output"))?,
                q_norm: src.rms_norm(&format!("{b}.attn_q_norm"), eps)?,
                k_norm: src.rms_norm(&format!("{b}.attn_k_norm"), eps)?,
                post_attn_norm: src.rms_norm(&format!("{b}.post_attention_norm"), eps)?,
                ffn_norm: src.rms_norm(&format!("{b}.ffn_norm"), eps)?,
                gate: src.linear(&format!("{b}.ffn_gate"))?,
                up: src.linear(&format!("{b}.ffn_up"))?,
                down: src.linear(&format!("{b}.ffn_down"))?,
                post_ffn_norm: src.rms_norm(&format!("{b}.post_ffw_norm"), eps)?,
                window: (!is_global).then_some(sliding_window),
                rope: if is_global { global_rope.clone() } else { local_rope.clone() },
                cache: KvCache::default(),
            });
        }
        Ok(Self {
            embed,
            embed_scale: (hidden as f64).sqrt(),
            blocks,
            norm,
            output,
            n_head,
            n_kv_head,
            head_dim,
            sliding_window,
            device: src.device.clone(),
        })
    }
}

impl LanguageModel for Model {
    fn forward(&mut self, ids: &[u32], index_pos: usize) -> Result<Tensor> {
        let ids = ids_tensor(ids, &self.device)?;
        let (b, s) = ids.dims2()?;
        let global_mask = attention_mask(s, index_pos, None, &self.device)?;
        let local_mask = attention_mask(s, index_pos, Some(self.sliding_window), &self.device)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut x = (self.embed.forward(&ids)? * self.embed_scale)?;
        for blk in &mut self.blocks {
            let h = blk.attn_norm.forward(&x)?;
            let q = blk.wq.forward(&h)?.reshape((b, s, self.n_head, self.head_dim))?;
            let k = blk.wk.forward(&h)?.reshape((b, s, self.n_kv_head, self.head_dim))?;
            let v = blk.wv.forward(&h)?.reshape((b, s, self.n_kv_head, self.head_dim))?;
            let q = blk.q_norm.forward(&q)?.transpose(1, 2)?;
            let k = blk.k_norm.forward(&k)?.transpose(1, 2)?;
            let v = v.transpose(1, 2)?;
            let q = blk.rope.apply(&q, index_pos)?;
            let k = blk.rope.apply(&k, index_pos)?;
            let (k, v) = blk.cache.append(k, v)?;
            let mask = if blk.window.is_some() { local_mask.as_ref() } else { global_mask.as_ref() };
            let y = grouped_attention(&q, &k, &v, mask, scale)?;
            let y = blk.post_attn_norm.forward(&blk.wo.forward(&y)?)?;
            x = (x + y)?;
            let h = blk.ffn_norm.forward(&x)?;
            let act = (blk.gate.forward(&h)?.gelu()? * blk.up.forward(&h)?)?;
            let y = blk.post_ffn_norm.forward(&blk.down.forward(&act)?)?;
            x = (x + y)?;
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
