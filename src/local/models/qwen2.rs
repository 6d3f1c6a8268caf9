//! Qwen2 / Qwen2.5 decoder from GGUF.
//!
//! Follows llama.cpp `src/models/qwen2.cpp` (`llm_build_qwen2`) and candle-transformers 0.11.1
//! `models/quantized_qwen2.rs`: the llama block with biases on the q/k/v projections and
//! "neox" (half-split) rotary pairing, which is exactly what `llama::Model` does when the file
//! carries `attn_{q,k,v}.bias` and is asked for non-interleaved RoPE. Kept as its own file so
//! the architecture table stays one-entry-per-file.
//!
//! Untested against a real model: no Qwen2 GGUF is available on the development machine.

use std::io::{Read, Seek};

use candle_core::Result;

use super::{llama, GgufSource};

pub fn load<R: Read + Seek>(src: &mut GgufSource<'_, R>) -> Result<llama::Model> {
    llama::Model::load(src, "qwen2", false)
}
