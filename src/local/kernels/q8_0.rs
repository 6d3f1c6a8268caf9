//! Q8_0 weights x Q8_0 activations. Follows llama.cpp `ggml_vec_dot_q8_0_q8_0`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch, at the llama.cpp vendored by
//! llama-cpp-python 0.3.36), in 128-bit registers, and its `__AVX2__` branch in 256-bit
//! registers.
//!
//! Block (34 bytes): `d: f16`, `qs: [i8; 32]`; `w[i] = d * qs[i]`.

use std::arch::x86_64::*;

use super::q8::BlockQ8;
use super::simd::{
    f16_at, hsum, hsum_256, load, load_256, load_i8, load_i8_256, mul_sum_i8_pairs, mul_sum_i8_pairs_256,
};
use super::{Dot, Format};

pub struct Q8_0;

const BYTES: usize = 34;

/// The `__AVX2__` branch: one block per iteration.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.chunks_exact(BYTES).zip(a) {
        let p = mul_sum_i8_pairs_256(load_256(b, 2), load_i8_256(&y.qs, 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * y.d), p, acc);
    }
    hsum_256(acc)
}

impl Format for Q8_0 {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8;
    const DOT_AVX2: Option<Dot<BlockQ8>> = Some(dot_avx2);

    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn dot(w: &[u8], a: &[BlockQ8]) -> f32 {
        let mut acc = _mm_setzero_ps();
        for (b, y) in w.chunks_exact(BYTES).zip(a) {
            let d = _mm_set1_ps(f16_at(b, 0) * y.d);
            let p = _mm_add_epi32(
                mul_sum_i8_pairs(load(b, 2), load_i8(&y.qs, 0)),
                mul_sum_i8_pairs(load(b, 18), load_i8(&y.qs, 16)),
            );
            acc = _mm_add_ps(acc, _mm_mul_ps(d, _mm_cvtepi32_ps(p)));
        }
        hsum(acc)
    }
}
