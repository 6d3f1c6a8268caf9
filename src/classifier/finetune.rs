//! The router's top encoder layers as a differentiable candle graph, for fine-tuning.
//!
//! Why not candle-transformers' `BertEncoder`: its LayerNorm is `candle_nn::LayerNorm`,
//! which on a contiguous input calls the fused `ops::layer_norm`, an
//! `apply_op3_no_bwd`. Gradients stopped at the top layer's last LayerNorm, so until
//! this module existed `router train` trained only the head and saved the backbone's
//! layers unchanged. Here every step is a plain tensor op with a gradient; the model is
//! the same post-LayerNorm BERT layer as `bert.rs` (inference) computes.

use candle_core::{Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::bert::Config as BertConfig;

use super::bert::check_supported;
use super::encoder::{extended_mask, EncoderError};

/// LayerNorm through `candle_nn::ops::layer_norm_slow`, the unfused (differentiable) form.
struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self { weight: vb.get(size, "weight")?, bias: vb.get(size, "bias")?, eps })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, self.eps as f32)
    }
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// `layers` trainable BERT layers read from `vb` (`layer.{i}.attention.self.query.weight`
/// ..., the names of Hugging Face's `BertEncoder` and of a router's `model.safetensors`).
pub struct TrainTop {
    layers: Vec<Layer>,
    heads: usize,
}

impl TrainTop {
    pub fn load(vb: VarBuilder, cfg: &BertConfig, layers: usize) -> Result<Self, EncoderError> {
        check_supported(cfg)?;
        let (h, i, eps) = (cfg.hidden_size, cfg.intermediate_size, cfg.layer_norm_eps);
        let layer = |vb: VarBuilder| -> candle_core::Result<Layer> {
            let (att, out) = (vb.pp("attention"), vb.pp("output"));
            Ok(Layer {
                query: candle_nn::linear(h, h, att.pp("self").pp("query"))?,
                key: candle_nn::linear(h, h, att.pp("self").pp("key"))?,
                value: candle_nn::linear(h, h, att.pp("self").pp("value"))?,
                attn_out: candle_nn::linear(h, h, att.pp("output").pp("dense"))?,
                attn_norm: Norm::load(att.pp("output").pp("LayerNorm"), h, eps)?,
                intermediate: candle_nn::linear(h, i, vb.pp("intermediate").pp("dense"))?,
                output: candle_nn::linear(i, h, out.pp("dense"))?,
                output_norm: Norm::load(out.pp("LayerNorm"), h, eps)?,
            })
        };
        let layers = (0..layers)
            .map(|n| layer(vb.pp("layer").pp(n)))
            .collect::<candle_core::Result<Vec<_>>>()
            .map_err(|e| EncoderError::Mismatch(e.to_string()))?;
        Ok(Self { layers, heads: cfg.num_attention_heads })
    }

    /// `[b, len, hidden]` states with a `[b, len]` 0/1 mask -> the top layers' states.
    pub fn forward(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor, EncoderError> {
        let mask = extended_mask(mask)?;
        let mut x = hidden.clone();
        for layer in &self.layers {
            x = self.layer(layer, &x, &mask)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, len, h) = x.dims3()?;
        let d = h / self.heads;
        let split = |t: Tensor| t.reshape((b, len, self.heads, d))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (split(l.query.forward(x)?)?, split(l.key.forward(x)?)?, split(l.value.forward(x)?)?);
        let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, len, h))?;
        let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx)? + x)?)?;
        let inter = l.intermediate.forward(&a)?.gelu_erf()?;
        l.output_norm.forward(&(l.output.forward(&inter)? + &a)?)
    }
}
