//! 128- and 256-bit integer helpers shared by the block formats (llama.cpp
//! `ggml-cpu/arch/x86/quants.c`, the `__AVX__`/`__SSSE3__` and `__AVX2__` helpers of the same
//! names).

use std::arch::x86_64::*;

/// Four i32 sums of the pairwise products of 16 signed bytes (`mul_sum_i8_pairs`):
/// `_mm_maddubs_epi16` multiplies unsigned by signed, so `x`'s sign moves onto `y`.
#[inline]
#[target_feature(enable = "ssse3")]
pub fn mul_sum_i8_pairs(x: __m128i, y: __m128i) -> __m128i {
    let ax = _mm_sign_epi8(x, x);
    let sy = _mm_sign_epi8(y, x);
    _mm_madd_epi16(_mm_maddubs_epi16(ax, sy), _mm_set1_epi16(1))
}

/// Four i32 sums of the pairwise products of 16 unsigned bytes `ux` (< 128) and signed `y`.
#[inline]
#[target_feature(enable = "ssse3")]
pub fn mul_sum_u8_pairs(ux: __m128i, y: __m128i) -> __m128i {
    _mm_madd_epi16(_mm_maddubs_epi16(ux, y), _mm_set1_epi16(1))
}

/// Horizontal sum of four floats.
#[inline]
#[target_feature(enable = "sse3")]
pub fn hsum(v: __m128) -> f32 {
    let h = _mm_add_ps(v, _mm_movehl_ps(v, v));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
}

/// Sixteen unaligned bytes from `b[at..at + 16]`.
#[inline]
#[target_feature(enable = "sse2")]
pub fn load(b: &[u8], at: usize) -> __m128i {
    let s = &b[at..at + 16];
    // SAFETY: `s` is 16 readable bytes; the load is unaligned.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// Sixteen unaligned signed bytes from `q[at..at + 16]`.
#[inline]
#[target_feature(enable = "sse2")]
pub fn load_i8(q: &[i8], at: usize) -> __m128i {
    let s = &q[at..at + 16];
    // SAFETY: as in `load`.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// The f16 at `b[at..at + 2]` as f32.
#[inline]
pub fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Eight f32 sums of the pairwise products of 32 signed bytes (`mul_sum_i8_pairs_float`,
/// the AVX2 helper without VNNI).
#[inline]
#[target_feature(enable = "avx2")]
pub fn mul_sum_i8_pairs_256(x: __m256i, y: __m256i) -> __m256 {
    let ax = _mm256_sign_epi8(x, x);
    let sy = _mm256_sign_epi8(y, x);
    mul_sum_u8_pairs_256(ax, sy)
}

/// Eight f32 sums of the pairwise products of 32 unsigned bytes `ux` (< 128) and signed `y`
/// (`mul_sum_us8_pairs_float`).
#[inline]
#[target_feature(enable = "avx2")]
pub fn mul_sum_u8_pairs_256(ux: __m256i, y: __m256i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(ux, y), _mm256_set1_epi16(1)))
}

/// The 32 nibbles of `b[at..at + 16]` as bytes: low nibbles first, then high nibbles
/// (`bytes_from_nibbles_32`).
#[inline]
#[target_feature(enable = "avx2")]
pub fn bytes_from_nibbles_32(b: &[u8], at: usize) -> __m256i {
    let q = load(b, at);
    _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0xF))
}

/// Horizontal sum of eight floats.
#[inline]
#[target_feature(enable = "avx")]
pub fn hsum_256(v: __m256) -> f32 {
    hsum(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v)))
}

/// Thirty-two unaligned signed bytes from `q[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx")]
pub fn load_i8_256(q: &[i8], at: usize) -> __m256i {
    let s = &q[at..at + 32];
    // SAFETY: `s` is 32 readable bytes; the load is unaligned.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Thirty-two unaligned bytes from `b[at..at + 32]`.
#[inline]
#[target_feature(enable = "avx")]
pub fn load_256(b: &[u8], at: usize) -> __m256i {
    let s = &b[at..at + 32];
    // SAFETY: as in `load_i8_256`.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}
