//! Q4_1 weights x Q8_1 activations. Follows llama.cpp `ggml_vec_dot_q4_1_q8_1`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch, at the llama.cpp vendored by
//! llama-cpp-python 0.3.36), in 128-bit registers, and its `__AVX2__` branch in 256-bit
//! registers. candle 0.11.1 has no x86 SIMD for Q4_1.
//!
//! Block (20 bytes): `d: f16`, `m: f16`, `qs: [u8; 16]`; element `i < 16` is the low nibble
//! of `qs[i]`, element `16 + i` its high nibble; `w = d * q + m`. So
//! `dot = sum_blocks d_w * d_x * sum(q * qx) + m_w * s_x` with `s_x = d_x * sum(qx)`.

use std::arch::x86_64::*;

use super::q8::BlockQ8;
use super::simd::{
    bytes_from_nibbles_32, f16_at, hsum, hsum_256, load, load_i8, load_i8_256, mul_sum_u8_pairs, mul_sum_u8_pairs_256,
};
use super::{Dot, Format};

pub struct Q4_1;

const BYTES: usize = 20;

/// The `__AVX2__` branch: one block per iteration.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], a: &[BlockQ8]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (b, y) in w.chunks_exact(BYTES).zip(a) {
        mins += f16_at(b, 2) * y.s;
        let p = mul_sum_u8_pairs_256(bytes_from_nibbles_32(b, 4), load_i8_256(&y.qs, 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * y.d), p, acc);
    }
    hsum_256(acc) + mins
}

impl Format for Q4_1 {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8;
    const DOT_AVX2: Option<Dot<BlockQ8>> = Some(dot_avx2);

    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn dot(w: &[u8], a: &[BlockQ8]) -> f32 {
        let low = _mm_set1_epi8(0xF);
        let mut acc = _mm_setzero_ps();
        let mut mins = 0f32;
        for (b, y) in w.chunks_exact(BYTES).zip(a) {
            mins += f16_at(b, 2) * y.s;
            let q = load(b, 4);
            let lo = _mm_and_si128(q, low);
            let hi = _mm_and_si128(_mm_srli_epi16(q, 4), low);
            let p = _mm_add_epi32(mul_sum_u8_pairs(lo, load_i8(&y.qs, 0)), mul_sum_u8_pairs(hi, load_i8(&y.qs, 16)));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(f16_at(b, 0) * y.d), _mm_cvtepi32_ps(p)));
        }
        hsum(acc) + mins
    }
}
