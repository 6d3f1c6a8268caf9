//! The classification head: a linear layer over the pooled embedding. Its logits are
//! divided by the router's fitted temperature before the softmax (calibration).

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::encoder::EncoderError;

/// Tensor name prefix of the head inside a router's `model.safetensors`.
pub const HEAD_PREFIX: &str = "head";
/// Tensor name prefix of the fine-tuned encoder layers.
pub const TOP_PREFIX: &str = "encoder";

/// Linear head `[classes, hidden]`.
pub struct Head {
    linear: Linear,
}

impl Head {
    /// Loads `head.weight` / `head.bias` from `vb` (a router's weights or a training
    /// `VarMap`, whose variables then receive gradients).
    pub fn load(vb: VarBuilder, hidden: usize, classes: usize) -> Result<Self, EncoderError> {
        let linear = candle_nn::linear(hidden, classes, vb.pp(HEAD_PREFIX))
            .map_err(|e| EncoderError::Mismatch(format!("head: {e}")))?;
        Ok(Self { linear })
    }

    /// Raw logits `[n, classes]`.
    pub fn forward(&self, pooled: &Tensor) -> Result<Tensor, EncoderError> {
        Ok(self.linear.forward(pooled)?)
    }
}
