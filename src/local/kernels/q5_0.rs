//! Q5_0 weights x Q8_0 activations. Follows llama.cpp `ggml_vec_dot_q5_0_q8_0`
//! (`ggml-cpu/arch/x86/quants.c`, the `__AVX__` branch with `bytes_from_bits_32`, at the
//! llama.cpp vendored by llama-cpp-python 0.3.36), in 128-bit registers, and its
//! `__AVX2__` branch in 256-bit registers. candle 0.11.1 has no x86 SIMD for Q5_0.
//!
//! Block (22 bytes): `d: f16`, `qh: u32` (bit `i` is the fifth bit of element `i`),
//! `qs: [u8; 16]` (nibbles as in Q4_1); `w = d * (q - 16)`.

use std::arch::x86_64::*;

use super::q8::BlockQ8;
use super::simd::{
    bytes_from_nibbles_32, f16_at, hsum, hsum_256, load, load_i8, load_i8_256, mul_sum_i8_pairs, mul_sum_i8_pairs_256,
};
use super::{Dot, Format};

pub struct Q5_0;

const BYTES: usize = 22;

/// 0xFF in byte `i` of the result where bit `i` of `bits` is set (16 bits).
#[inline]
#[target_feature(enable = "ssse3")]
fn bytes_from_bits_16(bits: u16) -> __m128i {
    // Byte i takes source byte i / 8, then keeps only bit i % 8 clear in the mask so the
    // comparison with all-ones is true exactly when that bit is set.
    let spread = _mm_shuffle_epi8(_mm_set1_epi16(bits as i16), _mm_set_epi64x(0x0101010101010101, 0));
    let with_mask = _mm_or_si128(spread, _mm_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm_cmpeq_epi8(with_mask, _mm_set1_epi64x(-1))
}

/// 0xFF in byte `i` of the result where bit `i` of `bits` is set (32 bits,
/// `bytes_from_bits_32`): the 128-bit shuffle runs per lane, so each lane picks its two
/// source bytes from the broadcast word.
#[inline]
#[target_feature(enable = "avx2")]
fn bytes_from_bits_32(bits: u32) -> __m256i {
    let shuffle = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuffle);
    let with_mask = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(with_mask, _mm256_set1_epi64x(-1))
}

/// The `__AVX2__` branch: one block per iteration.
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(w: &[u8], a: &[BlockQ8]) -> f32 {
    let minus16 = _mm256_set1_epi8(0xF0u8 as i8);
    let mut acc = _mm256_setzero_ps();
    for (b, y) in w.chunks_exact(BYTES).zip(a) {
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        let qx = _mm256_or_si256(bytes_from_nibbles_32(b, 6), _mm256_andnot_si256(bytes_from_bits_32(qh), minus16));
        let p = mul_sum_i8_pairs_256(qx, load_i8_256(&y.qs, 0));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(f16_at(b, 0) * y.d), p, acc);
    }
    hsum_256(acc)
}

impl Format for Q5_0 {
    const BLOCK_BYTES: usize = BYTES;
    type Act = BlockQ8;
    const DOT_AVX2: Option<Dot<BlockQ8>> = Some(dot_avx2);

    #[target_feature(enable = "ssse3,sse4.1")]
    unsafe fn dot(w: &[u8], a: &[BlockQ8]) -> f32 {
        let low = _mm_set1_epi8(0xF);
        // OR-ed into elements whose fifth bit is clear: nibble | 0xF0 == nibble - 16 as i8.
        let minus16 = _mm_set1_epi8(0xF0u8 as i8);
        let mut acc = _mm_setzero_ps();
        for (b, y) in w.chunks_exact(BYTES).zip(a) {
            let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
            let q = load(b, 6);
            let lo = _mm_or_si128(_mm_and_si128(q, low), _mm_andnot_si128(bytes_from_bits_16(qh as u16), minus16));
            let hi = _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16(q, 4), low),
                _mm_andnot_si128(bytes_from_bits_16((qh >> 16) as u16), minus16),
            );
            let p = _mm_add_epi32(mul_sum_i8_pairs(lo, load_i8(&y.qs, 0)), mul_sum_i8_pairs(hi, load_i8(&y.qs, 16)));
            acc = _mm_add_ps(acc, _mm_mul_ps(_mm_set1_ps(f16_at(b, 0) * y.d), _mm_cvtepi32_ps(p)));
        }
        hsum(acc)
    }
}
