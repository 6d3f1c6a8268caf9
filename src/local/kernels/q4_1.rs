//! Q4_1 weights x Q8_1 activations. Follows llama.cpp `ggml_vec_dot_q4_1_q8_1`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch, at the llama.cpp vendored by
//! llama-cpp-python 0.3.36), in 128-bit registers. candle 0.11.1 has no x86 SIMD for Q4_1.
//!
//! Block (20 bytes): `d: f16`, `m: f16`, `qs: [u8; 16]`; element `i < 16` is the low nibble
//! of `qs[i]`, element `16 + i` its high nibble; `w = d * q + m`. So
//! `dot = sum_blocks d_w * d_x * sum(q * qx) + m_w * s_x` with `s_x = d_x * sum(qx)`.

use std::arch::x86_64::*;

use super::q8::BlockQ8;
use super::simd::{f16_at, hsum, load, load_i8, mul_sum_u8_pairs};
use super::Format;

pub struct Q4_1;

const BYTES: usize = 20;

impl Format for Q4_1 {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8;

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
