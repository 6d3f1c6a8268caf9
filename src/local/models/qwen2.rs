//! Qwen2 / Qwen2.5 decoder from GGUF.
//!
//! Follows llama.cpp `src/models/qwen2.cpp` (`llm_build_qwen2`) and candle-transformers 0.11.1
//! `models/quantized_qwen2.rs`: the llama block with biases on the q/k/v projections and
//! "neox" (half-split) rotary pairing, which is exactly what `llama::Model` does when the file
//! carries `attn_{q,k,v}.bias` and is asked for non-interleaved RoPE. Kept as its own file so
//! the architecture table stays one-entry-per-file.
//!
//! No Qwen2 GGUF is available from the registries here; the test
//! `local::tests::qwen2_file_with_smollm_weights_answers_as_the_llama_path_does` rewrites
//! SmolLM2 as a Qwen2 file (keys, Hugging Face q/k row order, biases) and checks that this
//! path gives the llama path's greedy tokens, and that v and k biases change them (a k bias
//! only does when it is added before RoPE, as here).

use std::io::{Read, Seek};

use candle_core::Result;

use super::{llama, GgufSource};

pub fn load<R: Read + Seek>(src: &mut GgufSource<'_, R>) -> Result<llama::Model> {
    llama::Model::load(src, "qwen2", false)
}
