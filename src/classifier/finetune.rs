//! The router's top encoder layers as a differentiable candle graph, for fine-tuning.
//!
//! Why not candle-transformers' `BertEncoder`: its LayerNorm is `candle_nn::LayerNorm`,
//! which on a contiguous input calls the fused `ops::layer_norm`, an
//! `apply_op3_no_bwd`. Gradients stopped at the top layer's last LayerNorm, so until
//! this module existed `router train` trained only the head and saved the backbone's
//! layers unchanged. Here every step is a plain tensor op with a gradient; the model is
//! the same post-LayerNorm BERT layer as `bert.rs` (inference) computes.

use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config as BertConfig;

use super::bert::check_supported;
use super::encoder::{extended_mask, EncoderError};

struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: VarBuilder, input: usize, output: usize) -> candle_core::Result<Self> {
        Ok(Self { weight: vb.get((output, input), "weight")?, bias: vb.get(output, "bias")? })
    }

    /// `[b, len, input]` -> `[b, len, output]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_matmul(&self.weight.t()?)?.broadcast_add(&self.bias)
    }
}

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
        let centered = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        centered.broadcast_div(&(var + self.eps)?.sqrt()?)?.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)
    }
}

struct Layer {
    query: Dense,
    key: Dense,
    value: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    intermediate: Dense,
    output: Dense,
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
                query: Dense::load(att.pp("self").pp("query"), h, h)?,
                key: Dense::load(att.pp("self").pp("key"), h, h)?,
                value: Dense::load(att.pp("self").pp("value"), h, h)?,
                attn_out: Dense::load(att.pp("output").pp("dense"), h, h)?,
                attn_norm: Norm::load(att.pp("output").pp("LayerNorm"), h, eps)?,
                intermediate: Dense::load(vb.pp("intermediate").pp("dense"), h, i)?,
                output: Dense::load(out.pp("dense"), i, h)?,
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
